import numpy as np
import pytest
import torch

from twist.tokenizer import build_encoder
from twist.tokenizer.logmel import LogMelEncoder


@pytest.mark.parametrize("seconds", [0.1, 0.37, 1.0, 2.51, 7.0])
def test_frame_count_within_one_frame_of_duration(seconds, make_tone):
    enc = LogMelEncoder()
    wav = make_tone(seconds)
    feats = enc.encode(wav)
    assert feats.shape == (enc.n_frames(wav.size), 80)
    assert abs(feats.shape[0] - seconds * 50) <= 1 + 1e-9
    assert enc.frame_rate == 50.0


def test_batch_invariance(make_tone):
    enc = LogMelEncoder()
    wavs = [make_tone(s, seed=i) for i, s in enumerate([0.3, 1.7, 0.9, 1.7])]
    alone = [enc.encode(w) for w in wavs]
    together = enc.encode_batch(wavs)
    reordered = enc.encode_batch(wavs[::-1])[::-1]
    for a, b, c in zip(alone, together, reordered):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_matches_direct_log_mel(make_tone):
    """Frame i is the log mel energy of samples [320 i, 320 i + 400) under a Hann window."""
    from twist.tokenizer.logmel import mel_filterbank

    enc = LogMelEncoder(cmvn=False)
    wav = make_tone(0.5)
    feats = enc.encode(wav).numpy()
    win = torch.hann_window(400, periodic=True).numpy()
    fb = mel_filterbank(512, 80, 16000, 0.0, 8000.0)
    for i in (0, 7, feats.shape[0] - 1):
        seg = wav[320 * i : 320 * i + 400] * win
        spec = np.abs(np.fft.rfft(seg, n=512)) ** 2
        np.testing.assert_allclose(feats[i], np.log(spec @ fb + 1e-6), rtol=1e-3, atol=1e-3)


def test_cmvn_and_loudness_invariance(make_tone):
    enc = LogMelEncoder()
    wav = make_tone(1.0)
    f = enc.encode(wav)
    torch.testing.assert_close(f.mean(0), torch.zeros(80), atol=1e-4, rtol=0)
    torch.testing.assert_close(enc.encode(wav * 0.5), f, atol=0.05, rtol=0)  # up to the log floor


def test_fingerprint_tracks_parameters_and_spec_rebuilds():
    a = LogMelEncoder()
    assert a.fingerprint() == LogMelEncoder().fingerprint()
    assert a.fingerprint() != LogMelEncoder(n_mels=40).fingerprint()
    assert a.fingerprint() != LogMelEncoder(cmvn=False).fingerprint()
    b = build_encoder(a.spec())
    assert b.fingerprint() == a.fingerprint()
    assert a.n_frames(399) == 0 and a.n_frames(400) == 1 and a.min_samples == 400
