"""twist-vocoder mode=resynth on a directory tree: every input keeps its own output and transcript row."""

from __future__ import annotations

import json

import numpy as np

from tests.vocoder.conftest import tiny_generator_cfg, tone_audio


class _StemASR:
    """A fake ASR that 'hears' each clip's length, so every clip gets its own transcript."""

    name = "fake"

    def transcribe_batch(self, wavs):
        return [f"clip of {len(w)} samples" for w in wavs]


def _tokenizer_and_vocoder(tmp_path):
    from twist.tokenizer import KMeansQuantizer, UnitTokenizer
    from twist.tokenizer.logmel import LogMelEncoder
    from twist.vocoder import save_vocoder
    from twist.vocoder.generator import build_generator
    from twist.vocoder.train import generator_config_for

    rng = np.random.default_rng(0)
    tok = UnitTokenizer(LogMelEncoder(n_mels=16), KMeansQuantizer(rng.normal(size=(12, 16)).astype(np.float32)))
    tok.save(tmp_path / "tokenizer")
    shape = {k: v for k, v in tiny_generator_cfg(hop_rates=(4, 4, 5, 4)).items() if k != "num_embeddings"}
    gen = build_generator(generator_config_for(tok.contract, shape))  # K comes from the contract
    save_vocoder(gen, tok.contract, tmp_path / "vocoder")
    return tmp_path / "tokenizer", tmp_path / "vocoder"


def test_files_that_share_a_name_in_different_folders_each_keep_their_resynthesis(tmp_path, monkeypatch):
    import twist.asr
    from twist.audio import save_audio
    from twist.vocoder.resynth import resynthesise

    tok_dir, voc_dir = _tokenizer_and_vocoder(tmp_path)
    rng = np.random.default_rng(1)
    audio = tmp_path / "audio"
    for rel in ("spk1/u.wav", "spk2/u.wav", "v.wav"):
        save_audio(audio / rel, tone_audio(rng.integers(0, 12, 10 + len(rel))), 16000)
    monkeypatch.setattr(twist.asr, "get_asr", lambda cfg: _StemASR())
    report = resynthesise(voc_dir, tok_dir, audio, tmp_path / "out", asr={"backend": "fake"})
    written = sorted(p.name for p in (tmp_path / "out" / "wavs").iterdir())
    assert report["n"] == 3 and written == ["spk1__u.wav", "spk2__u.wav", "v.wav"]
    rows = json.loads((tmp_path / "out" / "transcripts.json").read_text())
    assert sorted(r["id"] for r in rows) == ["spk1__u", "spk2__u", "v"]

    texts = tmp_path / "texts.tsv"  # keyed three ways: by path, by output name, by a stem no other file has
    texts.write_text("spk1/u\tfirst\nspk2__u\tsecond\nv\tthird\n")
    resynthesise(voc_dir, tok_dir, audio, tmp_path / "out2", asr={"backend": "fake"}, transcripts=texts)
    refs = {r["id"]: r["reference"] for r in json.loads((tmp_path / "out2" / "transcripts.json").read_text())}
    assert refs == {"spk1__u": "first", "spk2__u": "second", "v": "third"}
