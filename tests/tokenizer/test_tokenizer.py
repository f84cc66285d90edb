import json

import numpy as np
import pytest
import soundfile as sf

from twist.audio import BadAudioError
from twist.contract import ContractMismatchError
from twist.tokenizer import UnitTokenizer, build_encoder, fit_kmeans
from twist.tokenizer.kmeans import KMeansQuantizer


def _fit(encoder, make_tone, k=12):
    feats = np.concatenate([encoder.encode(make_tone(1.0, f0=120 + 30 * i, seed=i)).cpu().numpy() for i in range(4)])
    return UnitTokenizer(encoder, fit_kmeans(feats, k, niter=5))


def test_save_load_encode_roundtrip(tmp_path, make_tone):
    tok = _fit(build_encoder({"name": "logmel"}), make_tone)
    tok.save(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["kmeans.safetensors", "tokenizer.json"]
    back = UnitTokenizer.load(tmp_path / "tok")
    assert back.contract == tok.contract
    assert back.sample_rate == 16000 and back.frame_rate == 50.0
    wavs = [make_tone(s, seed=7) for s in (0.5, 1.2)]
    for a, b, w in zip(tok.encode_batch(wavs), back.encode_batch(wavs), wavs):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == np.int64 and a.size == tok.encoder.n_frames(w.size)
        assert a.min() >= 0 and a.max() < 12
        np.testing.assert_array_equal(back.encode(w), a)


def test_encode_file_mixes_and_resamples(tmp_path, make_tone):
    tok = _fit(build_encoder({"name": "logmel"}), make_tone)
    mono16 = make_tone(1.0, seed=3)
    sf.write(tmp_path / "a.wav", mono16, 16000)
    np.testing.assert_array_equal(tok.encode_file(tmp_path / "a.wav"), tok.encode(mono16))
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "st.wav", np.stack([np.sin(2 * np.pi * 200 * t)] * 2, 1).astype(np.float32) * 0.3, 44100)
    assert abs(tok.encode_file(tmp_path / "st.wav").size - 50) <= 1
    (tmp_path / "e.wav").write_bytes(b"")
    with pytest.raises(BadAudioError, match="e.wav"):
        tok.encode_file(tmp_path / "e.wav")


def test_changed_centroids_or_weights_are_refused(tmp_path, make_tone, make_hubert):
    tok = _fit(build_encoder({"name": "logmel"}), make_tone)
    tok.save(tmp_path / "tok")
    other = KMeansQuantizer(tok.quantizer.centroids.cpu().numpy() + 0.5)
    other.save(tmp_path / "tok" / "kmeans.safetensors")
    with pytest.raises(ContractMismatchError, match="kmeans_fingerprint"):
        UnitTokenizer.load(tmp_path / "tok")

    make_hubert(tmp_path / "h", seed=0)
    htok = _fit(build_encoder({"name": "hubert", "path": str(tmp_path / "h"), "layer": 2}), make_tone, k=6)
    htok.save(tmp_path / "htok")
    assert UnitTokenizer.load(tmp_path / "htok").contract.layer == 2
    make_hubert(tmp_path / "h2", seed=1)  # same shape, other weights
    with pytest.raises(ContractMismatchError, match="encoder_fingerprint"):
        UnitTokenizer.load(tmp_path / "htok", encoder_overrides={"path": str(tmp_path / "h2")})
    spec = json.loads((tmp_path / "htok" / "tokenizer.json").read_text())
    assert spec["contract"]["encoder"] == "hubert" and spec["encoder"]["layer"] == 2
