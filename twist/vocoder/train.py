"""Training the unit HiFi-GAN on an audio directory and its unit dataset.

Follows the speech-resynthesis recipe (Polyak et al. 2021) on HiFi-GAN (Kong et al. 2020):
random segments of frame-level units and the matching audio; generator loss
``lambda_mel * mel L1 + lambda_fm * feature matching + LSGAN`` plus ``lambda_dur`` times the
duration predictor's MSE on ``log(d + 1)`` over each utterance's deduplicated units;
discriminators (MPD + MSD) trained with LSGAN; AdamW(0.8, 0.99), exponential LR decay.
``adv_start_step`` delays the GAN terms (mel-only warm-up), which is what makes a short CPU
run produce intelligible-ish audio at all.

Run directory::

    <out_dir>/checkpoints/last/   twist.checkpoint dir (generator, discriminators, optimisers, RNG, step)
    <out_dir>/vocoder/            a load_vocoder directory, refreshed at every checkpoint
    <out_dir>/metrics.jsonl       one JSON row per logged step
    <out_dir>/rejects.jsonl       utterances skipped (no audio, length mismatch, unreadable)

Batches are a function of ``(seed, step)``, and RNG states are checkpointed, so a resumed run
takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from twist.atomic import json_line
from twist.checkpoint import (
    capture_rng_state,
    is_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from twist.contract import UnitContract
from twist.errors import ConfigError, InputError
from twist.rejects import RejectsLog
from twist.schema import to_typed
from twist.units import UnitDataset, dedup, expand
from twist.vocoder.config import DiscriminatorSettings, GeneratorSettings, MelSettings, VocoderTrainConfig
from twist.vocoder.discriminators import Discriminators
from twist.vocoder.generator import GeneratorConfig, UnitHifiGan, build_generator, duration_loss
from twist.vocoder.infer import save_vocoder
from twist.vocoder.losses import (
    discriminator_adv_loss,
    feature_matching_loss,
    generator_adv_loss,
    mel_l1_loss,
)
from twist.vocoder.mel import MelSpectrogram


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
class PairedUnitAudio:
    """Utterances with both frame-level units and audio, aligned at ``hop`` samples per frame."""

    def __init__(
        self,
        units_dir: str | Path,
        audio_dir: str | Path,
        *,
        hop: int,
        rejects: RejectsLog | None = None,
        max_mismatch: int = 3,
    ) -> None:
        from twist.audio import BadAudioError, find_audio, load_audio

        self.ds = UnitDataset(units_dir)
        self.contract = self.ds.contract
        self.hop = hop
        audio_dir = Path(audio_dir)
        files = find_audio(audio_dir)
        by_key: dict[str, Path] = {}
        for f in files:
            rel = f.relative_to(audio_dir)
            for key in (str(f), str(rel), str(rel.with_suffix("")), f.stem):
                by_key.setdefault(key, f)
        self.units: list[np.ndarray] = []
        self.audio: list[np.ndarray] = []
        self.ids: list[str] = []
        rejects = rejects or RejectsLog(None, stage="vocoder-train")
        for i in range(len(self.ds)):
            utt = self.ds.get(i)
            src = utt.source
            path = None
            for key in (src, str(Path(src).with_suffix("")) if src else "", Path(src).stem if src else "", utt.id):
                if key and key in by_key:
                    path = by_key[key]
                    break
            if path is None:
                rejects.add(utt.id, f"no audio file for it under {audio_dir} (source {src!r})")
                continue
            frames = np.asarray(utt.units, dtype=np.int64)
            if utt.durations is not None:
                frames = expand(frames, np.asarray(utt.durations, dtype=np.int64))
            try:
                wav = load_audio(path, self.contract.sample_rate)
            except BadAudioError as e:
                rejects.add(str(path), e.reason)
                continue
            n_audio_frames = len(wav) / hop
            if abs(n_audio_frames - len(frames)) > max_mismatch:
                rejects.add(
                    str(path),
                    f"{len(frames)} unit frames but audio is {n_audio_frames:.1f} frames of {hop} samples "
                    "(a different frame rate or a different file)",
                )
                continue
            n = len(frames)
            wav = np.pad(wav, (0, max(0, n * hop - len(wav))))[: n * hop]
            self.units.append(frames)
            self.audio.append(wav.astype(np.float32))
            self.ids.append(utt.id)
        if not self.units:
            first = f" (first: {rejects.held[0][0]}: {rejects.held[0][1]})" if rejects.held else ""
            raise InputError(f"no usable (units, audio) pairs from {units_dir} and {audio_dir}: "
                             f"{rejects.count} rejected{first}")

    def __len__(self) -> int:
        return len(self.units)

    def batch(self, idx: np.ndarray, segment_frames: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """Random aligned segments (short items padded: audio with silence, units with their last id)."""
        seg_u = np.zeros((len(idx), segment_frames), dtype=np.int64)
        seg_a = np.zeros((len(idx), segment_frames * self.hop), dtype=np.float32)
        dd_units, dd_durs = [], []
        for row, i in enumerate(idx):
            u, a = self.units[i], self.audio[i]
            start = int(rng.integers(0, len(u) - segment_frames + 1)) if len(u) > segment_frames else 0
            part = u[start : start + segment_frames]
            seg_u[row, : len(part)] = part
            seg_u[row, len(part) :] = part[-1]
            wav = a[start * self.hop : (start + segment_frames) * self.hop]
            seg_a[row, : len(wav)] = wav
            du, dd = dedup(u)
            dd_units.append(du)
            dd_durs.append(dd)
        n = max(len(x) for x in dd_units)
        du_t = torch.zeros(len(idx), n, dtype=torch.long)
        dd_t = torch.zeros(len(idx), n, dtype=torch.long)
        mask = torch.zeros(len(idx), n, dtype=torch.bool)
        for row, (u, d) in enumerate(zip(dd_units, dd_durs)):
            du_t[row, : len(u)] = torch.from_numpy(u)
            dd_t[row, : len(d)] = torch.from_numpy(d)
            mask[row, : len(u)] = True
        return {
            "units": torch.from_numpy(seg_u),
            "audio": torch.from_numpy(seg_a).unsqueeze(1),
            "dedup_units": du_t,
            "dedup_durations": dd_t,
            "dedup_mask": mask,
        }


# ---------------------------------------------------------------------------------------
# model assembly
# ---------------------------------------------------------------------------------------
def generator_config_for(contract: UnitContract, generator: GeneratorSettings | Mapping[str, Any]) -> GeneratorConfig:
    """The generator's config for ``contract``: its shape (``vocoder_model.generator``) plus K and
    the sample rate, with the hop checked against the frame rate."""
    shape = to_typed(GeneratorSettings, generator, where="vocoder_model.generator")
    g = {f.name: getattr(shape, f.name) for f in dataclasses.fields(GeneratorSettings)}
    cfg = GeneratorConfig(**g, num_embeddings=contract.n_units, sampling_rate=contract.sample_rate)
    if not math.isclose(cfg.hop * contract.frame_rate, cfg.sampling_rate):
        raise ConfigError(
            f"vocoder upsample_rates {cfg.upsample_rates} give hop {cfg.hop} = "
            f"{cfg.sampling_rate / cfg.hop:g} frames/s, but the unit dataset has frame_rate={contract.frame_rate}; "
            "pick the vocoder_model config for this frame rate (hifigan-50hz / hifigan-25hz)"
        )
    return cfg


def _mels(mel: MelSettings | Mapping[str, Any] | None, sample_rate: int) -> nn.ModuleList:
    m = to_typed(MelSettings, mel, where="vocoder_model.mel")
    if m.n_ffts:  # multi-resolution: hop and window follow each n_fft
        return nn.ModuleList(MelSpectrogram(sample_rate, n_fft=n, hop_length=n // 4, win_length=n, n_mels=m.n_mels,
                                            fmin=m.fmin, fmax=m.fmax) for n in m.n_ffts)
    return nn.ModuleList([MelSpectrogram(sample_rate, n_fft=m.n_fft, hop_length=m.hop_length, win_length=m.win_length,
                                         n_mels=m.n_mels, fmin=m.fmin, fmax=m.fmax)])


# ---------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------
class VocoderTrainer:
    """Explicit training state: generator, discriminators, optimisers, step; resumable."""

    def __init__(
        self,
        data: PairedUnitAudio,
        out_dir: str | Path,
        *,
        generator: GeneratorSettings | Mapping[str, Any],
        discriminator: DiscriminatorSettings | Mapping[str, Any] | None = None,
        mel: MelSettings | Mapping[str, Any] | None = None,
        train: VocoderTrainConfig | Mapping[str, Any] | None = None,
        device: str = "cpu",
    ) -> None:
        self.data = data
        self.out = Path(out_dir)
        self.t = to_typed(VocoderTrainConfig, train or {})
        self.device = torch.device(device)
        self.contract = data.contract
        torch.manual_seed(int(self.t.seed))
        self.gcfg = generator_config_for(self.contract, generator)
        if self.gcfg.hop != data.hop:
            raise ValueError(f"data aligned at hop {data.hop} but the generator has hop {self.gcfg.hop}")
        self.gen: UnitHifiGan = build_generator(self.gcfg).to(self.device)
        dcfg = to_typed(DiscriminatorSettings, discriminator, where="vocoder_model.discriminator")
        self.disc = Discriminators(dcfg).to(self.device)
        self.mels = _mels(mel, self.gcfg.sampling_rate).to(self.device)
        betas = tuple(self.t.betas)
        self.opt_g = torch.optim.AdamW(self.gen.parameters(), lr=self.t.lr, betas=betas)
        self.opt_d = torch.optim.AdamW(self.disc.parameters(), lr=self.t.lr, betas=betas)
        self.step = 0
        # a fixed held-out set (by id hash, so it does not depend on the data order)
        order = sorted(range(len(data)), key=lambda i: hash_id(data.ids[i]))
        n_valid = min(int(self.t.n_valid), max(0, len(data) - 1))
        self.valid_idx = order[:n_valid]
        self.train_idx = np.asarray(order[n_valid:] or order)

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.gen.state_dict(),
            "discriminators": self.disc.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "step": self.step,
            "rng": capture_rng_state(),
            "generator_config": json.dumps(self.gcfg.to_dict()),
            "contract": json.dumps(self.contract.to_dict()),
        }

    def load_state_dict(self, st: Mapping[str, Any]) -> None:
        saved = UnitContract.from_dict(json.loads(st["contract"]), source="vocoder checkpoint")
        saved.check_compatible(self.contract, mine="vocoder checkpoint", theirs="unit dataset")
        if json.loads(st["generator_config"]) != self.gcfg.to_dict():
            raise ConfigError(f"{self.out / 'checkpoints' / 'last'} was made with a different generator config "
                              "(vocoder_model.generator); use a new out_dir, or resume=false to start over")
        self.gen.load_state_dict(st["generator"])
        self.disc.load_state_dict(st["discriminators"])
        self.opt_g.load_state_dict(st["opt_g"])
        self.opt_d.load_state_dict(st["opt_d"])
        self.step = int(st["step"])
        restore_rng_state(st["rng"])

    def save(self) -> None:
        save_checkpoint(self.out / "checkpoints" / "last", self.state_dict(), meta={"step": self.step})
        save_vocoder(self.gen, self.contract, self.out / "vocoder", extra={"step": self.step})

    def maybe_resume(self) -> bool:
        last = self.out / "checkpoints" / "last"
        if not is_checkpoint(last):
            return False
        self.load_state_dict(load_checkpoint(last, map_location=self.device))
        # drop metric rows logged after the checkpoint: they will be logged again
        mpath = self.out / "metrics.jsonl"
        if mpath.exists():
            rows = [r for r in mpath.read_text().splitlines() if r.strip() and _row_step(r) <= self.step]
            from twist.atomic import atomic_write_text

            atomic_write_text(mpath, "".join(r + "\n" for r in rows))
        return True

    # -- one step ----------------------------------------------------------------------------
    def _lr(self) -> float:
        return float(self.t.lr) * float(self.t.lr_decay) ** (self.step // int(self.t.lr_decay_every))

    def train_step(self) -> dict[str, float]:
        self.gen.train()
        self.disc.train()
        lr = self._lr()
        for opt in (self.opt_g, self.opt_d):
            for g in opt.param_groups:
                g["lr"] = lr
        rng = np.random.default_rng([int(self.t.seed), self.step])
        idx = rng.choice(self.train_idx, size=int(self.t.batch_size), replace=len(self.train_idx) < int(self.t.batch_size))
        b = {k: v.to(self.device) for k, v in self.data.batch(idx, int(self.t.segment_frames), rng).items()}
        y = b["audio"]
        y_hat = self.gen(b["units"])
        adv = self.step >= int(self.t.adv_start_step) and float(self.t.lambda_adv) > 0
        out: dict[str, float] = {}
        if adv:
            real, fake, _, _ = self.disc(y, y_hat.detach())
            loss_d = discriminator_adv_loss(real, fake)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            out["loss_d"] = loss_d.item()
        loss_mel = mel_l1_loss(self.mels, y, y_hat)
        loss_g = float(self.t.lambda_mel) * loss_mel
        if adv:
            _, fake, fr, fg = self.disc(y, y_hat)
            loss_fm = feature_matching_loss(fr, fg)
            loss_adv = generator_adv_loss(fake)
            loss_g = loss_g + float(self.t.lambda_fm) * loss_fm + float(self.t.lambda_adv) * loss_adv
            out["loss_fm"], out["loss_adv"] = loss_fm.item(), loss_adv.item()
        if self.gen.dur_predictor is not None:
            loss_dur = duration_loss(
                self.gen.dur_predictor, self.gen.embed(b["dedup_units"]), b["dedup_durations"], b["dedup_mask"]
            )
            loss_g = loss_g + float(self.t.lambda_dur) * loss_dur
            out["loss_dur"] = loss_dur.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self.step += 1
        out.update(loss_mel=loss_mel.item(), loss_g=loss_g.item(), lr=lr)
        return out

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        if not self.valid_idx:
            return {}
        self.gen.eval()
        losses, dur_losses = [], []
        for i in self.valid_idx:
            u = torch.from_numpy(self.data.units[i])[None].to(self.device)
            y = torch.from_numpy(self.data.audio[i])[None, None].to(self.device)
            losses.append(float(mel_l1_loss(self.mels, y, self.gen(u))))
            if self.gen.dur_predictor is not None:
                du, dd = dedup(self.data.units[i])
                du_t = torch.from_numpy(du)[None].to(self.device)
                dd_t = torch.from_numpy(dd)[None].to(self.device)
                dur_losses.append(float(duration_loss(self.gen.dur_predictor, self.gen.embed(du_t), dd_t, torch.ones_like(du_t, dtype=torch.bool))))
        out = {"valid_mel": float(np.mean(losses))}
        if dur_losses:
            out["valid_dur"] = float(np.mean(dur_losses))
        return out

    def fit(self, *, progress: bool = True) -> dict[str, Any]:
        """Train to ``steps`` (or the time budget), checkpointing; returns the last metrics."""
        from tqdm import tqdm

        steps = int(self.t.steps)
        budget = self.t.max_minutes
        t0 = time.time()
        mpath = self.out / "metrics.jsonl"
        self.out.mkdir(parents=True, exist_ok=True)
        last: dict[str, Any] = {}
        bar = tqdm(total=steps, initial=self.step, desc="vocoder", disable=not progress)
        with open(mpath, "a", encoding="utf-8") as mf:
            while self.step < steps:
                ts = time.time()
                m = self.train_step()
                m["step_seconds"] = round(time.time() - ts, 4)
                bar.update(1)
                out_of_time = budget is not None and (time.time() - t0) > float(budget) * 60
                if self.step % int(self.t.log_every) == 0 or self.step == steps or out_of_time:
                    row = {"step": self.step, **{k: round(v, 6) for k, v in m.items()}}
                    mf.write(json_line(row) + "\n")
                    mf.flush()
                    bar.set_postfix(mel=f"{m['loss_mel']:.3f}")
                    last = row
                if self.step % int(self.t.ckpt_every) == 0 or self.step == steps or out_of_time:
                    v = self.validate()
                    if v:
                        last = {"step": self.step, **v}
                        mf.write(json_line(last) + "\n")
                        mf.flush()
                    self.save()
                if out_of_time:
                    break
        bar.close()
        if not (self.out / "vocoder").exists():
            self.save()
        return {"step": self.step, **last}


def hash_id(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha1(s.encode()).digest()[:8], "big")


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def train_vocoder(
    *,
    units_dir: str | Path,
    audio_dir: str | Path,
    out_dir: str | Path,
    generator: GeneratorSettings | Mapping[str, Any],
    discriminator: DiscriminatorSettings | Mapping[str, Any] | None = None,
    mel: MelSettings | Mapping[str, Any] | None = None,
    train: VocoderTrainConfig | Mapping[str, Any] | None = None,
    device: str = "cpu",
    resume: bool = True,
    progress: bool = True,
    on_start: Any = None,
) -> dict[str, Any]:
    """Train (or resume) a unit HiFi-GAN; writes the run directory described in the module docstring.
    ``on_start`` is called once the data are paired and checked, before the first write."""
    out = Path(out_dir)
    contract = UnitDataset(units_dir).contract
    gcfg = generator_config_for(contract, generator)
    t = to_typed(VocoderTrainConfig, train or {})
    rej = RejectsLog(None, stage="vocoder-train")  # held until the run dir is started
    data = PairedUnitAudio(units_dir, audio_dir, hop=gcfg.hop, rejects=rej, max_mismatch=t.max_length_mismatch_frames)
    if on_start is not None:
        on_start()
    with RejectsLog(out / "rejects.jsonl", stage="vocoder-train") as log:
        log.replay(rej)
    trainer = VocoderTrainer(data, out, generator=generator, discriminator=discriminator, mel=mel, train=train, device=device)
    resumed = resume and trainer.maybe_resume()
    summary = trainer.fit(progress=progress)
    summary.update(resumed=bool(resumed), n_pairs=len(data), n_rejected=rej.count)
    return summary
