"""The demo corpus records the TTS engine's word timings beside each wav, for twist-tokenize align=tts."""

import json

from twist.alignment import read_word_times, word_times_path
from twist.contract import sha256_file
from twist.demo.corpus import build_corpus


def test_corpus_records_word_times_and_its_audio_is_the_same_without_them(tmp_path):
    kw = dict(n_sentences=3, voices=["en-us", "en-us+f3"], voices_per_sentence=2, tts="espeak", workers=2, seed=0)
    build_corpus(tmp_path / "timed", word_times=True, **kw)
    build_corpus(tmp_path / "plain", word_times=False, **kw)
    rows = [json.loads(line) for line in (tmp_path / "timed" / "transcripts.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        wav = tmp_path / "timed" / row["path"]
        rec = read_word_times(word_times_path(wav))
        assert rec["audio_sha256"] == sha256_file(wav) and rec["engine"]["voice"] == row["voice"]
        assert rec["text"] == " ".join(row["text"].split())
        assert len(rec["words"]) >= len(row["text"].split()) // 2
        assert wav.read_bytes() == (tmp_path / "plain" / row["path"]).read_bytes()
        assert not word_times_path(tmp_path / "plain" / row["path"]).exists()
    assert (tmp_path / "timed" / "transcripts.jsonl").read_text() == (tmp_path / "plain" / "transcripts.jsonl").read_text()
