"""Vocoder training: losses fall, checkpoints round-trip, a resumed run equals an uninterrupted one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.vocoder.conftest import tiny_generator_cfg
from twist.errors import ConfigError
from twist.vocoder.infer import load_vocoder
from twist.vocoder.train import PairedUnitAudio, VocoderTrainer, train_vocoder

GEN = {k: v for k, v in tiny_generator_cfg().items() if k != "num_embeddings"}  # K comes from the dataset
DISC = {"periods": [2, 3], "n_scales": 2, "width": 1 / 32}
MEL = {"n_fft": 512, "hop_length": 128, "win_length": 512, "n_mels": 40}
TRAIN = {"batch_size": 2, "segment_frames": 8, "adv_start_step": 2, "log_every": 1, "ckpt_every": 3, "n_valid": 2, "seed": 3}


def _run(units_dir, audio_dir, out, steps, **kw):
    return train_vocoder(
        units_dir=units_dir, audio_dir=audio_dir, out_dir=out, generator=GEN, discriminator=DISC, mel=MEL,
        train={**TRAIN, "steps": steps, **kw}, progress=False,
    )


def test_resume_continues_the_same_run(tone_dataset, tmp_path):
    units_dir, audio_dir, _ = tone_dataset
    full = _run(units_dir, audio_dir, tmp_path / "full", 5)
    assert full["step"] == 5 and not full["resumed"]
    # interrupted after 3 steps (a checkpoint is written at step 3), then resumed to 5
    _run(units_dir, audio_dir, tmp_path / "split", 3)
    resumed = _run(units_dir, audio_dir, tmp_path / "split", 5)
    assert resumed["resumed"]
    a = load_vocoder(tmp_path / "full")[0].generator.state_dict()
    b = load_vocoder(tmp_path / "split")[0].generator.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    rows_full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    rows_split = [json.loads(x) for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    strip = [{k: v for k, v in r.items() if k != "step_seconds"} for r in rows_full]
    assert strip == [{k: v for k, v in r.items() if k != "step_seconds"} for r in rows_split]
    # the GAN terms switched on at adv_start_step
    assert "loss_d" not in rows_full[0] and "loss_d" in rows_full[2] and "loss_fm" in rows_full[2]


def test_checkpoint_round_trip_and_exported_vocoder(tone_dataset, tmp_path):
    units_dir, audio_dir, contract = tone_dataset
    data = PairedUnitAudio(units_dir, audio_dir, hop=320)
    tr = VocoderTrainer(data, tmp_path / "run", generator=GEN, discriminator=DISC, mel=MEL, train={**TRAIN, "steps": 2})
    tr.fit(progress=False)
    tr.save()
    voc, c = load_vocoder(tmp_path / "run")
    assert c == contract
    units = np.array([1, 5, 7])
    durs = np.array([2, 1, 3])
    tr.gen.eval()
    with torch.no_grad():
        expect = tr.gen(torch.from_numpy(np.repeat(units, durs))[None])[0, 0].numpy()
    np.testing.assert_allclose(voc.synthesize(units, durs), expect, atol=1e-6)
    # a fresh trainer resumes the exact state (optimisers and step included)
    tr2 = VocoderTrainer(data, tmp_path / "run", generator=GEN, discriminator=DISC, mel=MEL, train={**TRAIN, "steps": 2})
    assert tr2.maybe_resume() and tr2.step == tr.step
    for k, v in tr.opt_g.state_dict()["state"].items():
        torch.testing.assert_close(tr2.opt_g.state_dict()["state"][k]["exp_avg"], v["exp_avg"])
    # a different generator config refuses to resume in the same directory
    other = dict(GEN, upsample_initial_channel=16)
    tr3 = VocoderTrainer(data, tmp_path / "run", generator=other, discriminator=DISC, mel=MEL, train={**TRAIN, "steps": 2})
    with pytest.raises(ConfigError, match="different generator config") as err:
        tr3.maybe_resume()
    assert str(tmp_path / "run" / "checkpoints" / "last") in str(err.value)
    # a mel-loss setting the spectrogram does not take is named, not a TypeError deep inside
    with pytest.raises(ConfigError, match=r"unknown setting vocoder_model.mel.nfft \(did you mean vocoder_model.mel.n_fft\?\)"):
        VocoderTrainer(data, tmp_path / "run2", generator=GEN, discriminator=DISC, mel={**MEL, "nfft": 256}, train=TRAIN)


def test_mel_loss_falls_when_training(tone_dataset, tmp_path):
    units_dir, audio_dir, _ = tone_dataset
    torch.manual_seed(0)
    data = PairedUnitAudio(units_dir, audio_dir, hop=320)
    tr = VocoderTrainer(data, tmp_path / "r", generator=GEN, mel=MEL,
                        train={**TRAIN, "steps": 40, "lr": 3e-3, "adv_start_step": 10**9, "batch_size": 4})
    before = tr.validate()["valid_mel"]
    for _ in range(40):
        tr.train_step()
    after = tr.validate()["valid_mel"]
    assert after < 0.8 * before


def test_bad_pairs_are_rejected_and_frame_rate_checked(tone_dataset, tmp_path):
    units_dir, audio_dir, _ = tone_dataset
    (audio_dir / "utt03.wav").unlink()  # missing audio
    (audio_dir / "utt04.wav").write_bytes(b"not audio")  # unreadable
    from twist.rejects import RejectsLog

    log = RejectsLog(tmp_path / "rej.jsonl", stage="t")
    data = PairedUnitAudio(units_dir, audio_dir, hop=320, rejects=log)
    log.close()
    assert len(data) == 8
    reasons = {r["item"].split("/")[-1]: r["reason"] for r in RejectsLog.read(tmp_path / "rej.jsonl")}
    assert "no audio file" in reasons["utt03"] and "unreadable" in reasons["utt04.wav"]
    # a 25 Hz generator on 50 Hz units is refused, naming both rates
    gen25 = dict(GEN, upsample_rates=[4, 4, 5, 4, 2], upsample_kernel_sizes=[8, 8, 11, 8, 4])
    with pytest.raises(ValueError, match="frame_rate=50"):
        train_vocoder(units_dir=units_dir, audio_dir=audio_dir, out_dir=tmp_path / "x", generator=gen25,
                      train={"steps": 1}, progress=False)
