import json

import numpy as np
import pytest
import torch

from twist.tokenizer import build_encoder
from twist.tokenizer.hubert import HubertEncoder

LENGTHS = [16000, 9000, 12345, 16000]


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_layer_output_matches_hubertmodel(tmp_path, make_hubert, norm):
    model = make_hubert(tmp_path / "h", norm=norm, do_normalize=False)
    enc = HubertEncoder(path=str(tmp_path / "h"), layer=2)
    wav = np.random.default_rng(0).standard_normal(12345).astype(np.float32)
    ref = model(torch.from_numpy(wav)[None], output_hidden_states=True).hidden_states[2][0]
    torch.testing.assert_close(enc.encode(wav), ref, atol=1e-5, rtol=1e-5)
    assert enc.frame_rate == 50.0 and enc.n_frames(wav.size) == ref.shape[0]


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_batch_invariance(tmp_path, make_hubert, norm):
    make_hubert(tmp_path / "h", norm=norm)
    enc = HubertEncoder(path=str(tmp_path / "h"), layer=3)
    rng = np.random.default_rng(1)
    wavs = [rng.standard_normal(n).astype(np.float32) for n in LENGTHS]
    alone = [enc.encode(w) for w in wavs]
    batched = enc.encode_batch(wavs)
    other_company = enc.encode_batch([wavs[1], rng.standard_normal(30000).astype(np.float32)])[0]
    for a, b in zip(alone, batched):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(alone[1], other_company, atol=1e-4, rtol=1e-4)


def test_normalisation_flag_is_respected(tmp_path, make_hubert):
    model = make_hubert(tmp_path / "h", do_normalize=True)
    enc = HubertEncoder(path=str(tmp_path / "h"), layer=1)
    assert enc.normalize is True
    wav = (0.1 * np.random.default_rng(2).standard_normal(8000) + 0.3).astype(np.float32)
    normed = (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)
    ref = model(torch.from_numpy(normed)[None], output_hidden_states=True).hidden_states[1][0]
    torch.testing.assert_close(enc.encode(wav), ref, atol=1e-4, rtol=1e-4)
    # an explicit override wins, and changes the features
    raw = HubertEncoder(path=str(tmp_path / "h"), layer=1, normalize=False).encode(wav)
    assert not torch.allclose(raw, ref, atol=1e-3)


def test_25hz_model_adds_a_stride(tmp_path, make_hubert):
    make_hubert(tmp_path / "h25", extra_stride=True)
    enc = build_encoder({"name": "hubert", "path": str(tmp_path / "h25"), "layer": 2, "expected_frame_rate": 25})
    assert enc.frame_rate == 25.0
    wav = np.zeros(32000, dtype=np.float32)
    assert abs(enc.encode(wav).shape[0] - 2.0 * 25) <= 1
    with pytest.raises(ValueError, match="25 Hz"):
        HubertEncoder(path=str(tmp_path / "h25"), layer=2, expected_frame_rate=50)


def test_fingerprint_is_of_the_weights(tmp_path, make_hubert):
    make_hubert(tmp_path / "a", seed=0)
    make_hubert(tmp_path / "b", seed=1)
    a, b = HubertEncoder(path=str(tmp_path / "a"), layer=1), HubertEncoder(path=str(tmp_path / "b"), layer=1)
    assert a.fingerprint() != b.fingerprint()
    assert a.fingerprint() == HubertEncoder(path=str(tmp_path / "a"), layer=2).fingerprint()
    with pytest.raises(ValueError, match="out of range"):
        HubertEncoder(path=str(tmp_path / "a"), layer=9)
    spec = a.spec()
    assert json.loads(json.dumps(spec)) == spec
