"""Vocoder inference: units (+ durations) -> 16 kHz waveform, loading and converting checkpoints.

A vocoder directory holds::

    vocoder.json            format tag, generator config (speech-resynthesis field names), hop
    generator.safetensors   the generator's weights (weight-norm ``weight_g`` / ``weight_v``)
    contract.json           the unit contract of the units it was trained on

:func:`load_vocoder` returns ``(Vocoder, UnitContract)``. :func:`convert_hifigan_checkpoint`
turns a published speech-resynthesis / textlesslib ``{"generator": state_dict}`` file plus its
JSON config into such a directory; the published files carry no unit contract, so the caller
names the tokenizer (or contract) the vocoder was trained for. Loading is pickle-free
(safetensors; ``torch.load(weights_only=True)`` for the published file).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.atomic import atomic_write_json, read_json_object
from twist.contract import UnitContract
from twist.errors import ContractMismatch, InputError, MissingInputError, UnsafeFileError
from twist.vocoder.generator import GeneratorConfig, UnitHifiGan, build_generator

FORMAT = "twist-vocoder"
FORMAT_VERSION = 1
CONFIG_FILE = "vocoder.json"
WEIGHTS_FILE = "generator.safetensors"
CONTRACT_FILE = "contract.json"


class Vocoder:
    """A unit HiFi-GAN ready for inference, with the unit contract it expects."""

    def __init__(self, generator: UnitHifiGan, contract: UnitContract, *, device: str | torch.device = "cpu") -> None:
        if generator.cfg.num_embeddings < contract.n_units:
            raise InputError(
                f"vocoder has {generator.cfg.num_embeddings} unit embeddings but its contract says K={contract.n_units}"
            )
        self.generator = generator.eval()
        self.contract = contract
        self.device = torch.device(device)
        self.generator.to(self.device)

    # -- facts -------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.generator.cfg.sampling_rate)

    @property
    def hop(self) -> int:
        return self.generator.hop

    @property
    def has_duration_predictor(self) -> bool:
        return self.generator.dur_predictor is not None

    def to(self, device: str | torch.device) -> Vocoder:
        self.device = torch.device(device)
        self.generator.to(self.device)
        return self

    # -- inference ---------------------------------------------------------------------------
    def frame_units(
        self, units: np.ndarray, durations: np.ndarray | None = None, *, predict_durations: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Resolve ``units`` to frame-level units; returns ``(frame_units, durations_used)``.

        Args:
            units: unit ids, deduplicated or frame-level.
            durations: run lengths per unit; given, they are used as they are.
            predict_durations: with ``durations=None``: ``True`` runs the duration predictor,
                ``False`` treats ``units`` as frame-level, ``None`` (default) predicts when the
                vocoder has a predictor and its contract says units are deduplicated.
        """
        units = np.asarray(units).reshape(-1).astype(np.int64)
        if units.size == 0:
            raise InputError("no units to synthesise (empty unit sequence)")
        t = torch.from_numpy(units)
        self.generator.check_units(t)
        if durations is not None:
            durations = np.asarray(durations).reshape(-1).astype(np.int64)
            if durations.shape != units.shape:
                raise InputError(f"{units.size} units but {durations.size} durations")
            if (durations < 0).any():
                raise InputError("durations must be >= 0")
        else:
            if predict_durations is None:
                predict_durations = self.has_duration_predictor and self.contract.dedup
            if predict_durations:
                with torch.inference_mode():
                    durations = self.generator.predict_durations(t[None].to(self.device))[0].cpu().numpy()
            else:
                durations = np.ones_like(units)
        return np.repeat(units, durations), durations

    @torch.inference_mode()
    def synthesize(
        self,
        units: np.ndarray,
        durations: np.ndarray | None = None,
        *,
        speaker: int | None = None,
        predict_durations: bool | None = None,
    ) -> np.ndarray:
        """Units -> float32 waveform at :attr:`sample_rate`, ``sum(durations) * hop`` samples long."""
        return self.synthesize_batch([units], None if durations is None else [durations], speaker=speaker,
                                     predict_durations=predict_durations)[0]

    @torch.inference_mode()
    def synthesize_batch(
        self,
        units: Sequence[np.ndarray],
        durations: Sequence[np.ndarray | None] | None = None,
        *,
        speaker: int | None = None,
        predict_durations: bool | None = None,
        max_batch_frames: int = 50_000,
    ) -> list[np.ndarray]:
        """Synthesise many utterances, batching them by length (padding is cut off again).

        Padding changes the last few samples of a shorter item only through the receptive
        field at its right edge; items are sorted by length so padding stays small.
        """
        if durations is None:
            durations = [None] * len(units)
        frames = [self.frame_units(u, d, predict_durations=predict_durations)[0] for u, d in zip(units, durations)]
        for i, f in enumerate(frames):
            if f.size == 0:
                raise InputError(f"item {i}: all durations are 0, nothing to synthesise")
        order = sorted(range(len(frames)), key=lambda i: len(frames[i]))
        out: list[np.ndarray | None] = [None] * len(frames)
        batch: list[int] = []

        def flush() -> None:
            if not batch:
                return
            n = max(len(frames[i]) for i in batch)
            x = torch.zeros(len(batch), n, dtype=torch.long)
            for row, i in enumerate(batch):
                x[row, : len(frames[i])] = torch.from_numpy(frames[i])
            spk = None if speaker is None else torch.full((len(batch),), int(speaker), dtype=torch.long)
            wav = self.generator(x.to(self.device), None if spk is None else spk.to(self.device))
            wav = wav[:, 0].float().cpu().numpy()
            for row, i in enumerate(batch):
                out[i] = np.ascontiguousarray(wav[row, : len(frames[i]) * self.hop], dtype=np.float32)
            batch.clear()

        for i in order:
            if batch and (len(batch) + 1) * len(frames[i]) > max_batch_frames:
                flush()
            batch.append(i)
        flush()
        return out  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------
def save_vocoder(generator: UnitHifiGan, contract: UnitContract, out_dir: str | Path, *, extra: dict | None = None) -> Path:
    """Write a vocoder directory (each file atomically; the config last, as the commit marker)."""
    from safetensors.torch import save_file

    from twist.atomic import atomic_save

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if generator.cfg.num_embeddings < contract.n_units:
        raise ValueError(f"generator has {generator.cfg.num_embeddings} embeddings < contract K={contract.n_units}")
    sd = {k: v.detach().cpu().contiguous() for k, v in generator.state_dict().items()}
    atomic_save(out / WEIGHTS_FILE, lambda p: save_file(sd, str(p), metadata={"format": FORMAT}))
    contract.save(out / CONTRACT_FILE)
    atomic_write_json(
        out / CONFIG_FILE,
        {"format": FORMAT, "version": FORMAT_VERSION, "hop": generator.hop, "generator": generator.cfg.to_dict(), **(extra or {})},
    )
    return out


def _resolve_vocoder_dir(path: Path) -> Path:
    if (path / CONFIG_FILE).exists():
        return path
    if (path / "vocoder" / CONFIG_FILE).exists():  # a training run directory
        return path / "vocoder"
    if path.is_file():
        raise InputError(
            f"{path} is a file, not a vocoder directory; convert a published checkpoint first with "
            "`twist-vocoder mode=convert` (twist.vocoder.infer.convert_hifigan_checkpoint)"
        )
    raise MissingInputError(f"not a vocoder directory (no {CONFIG_FILE}): {path}")


def load_vocoder(path: str | Path, *, device: str | torch.device = "cpu") -> tuple[Vocoder, UnitContract]:
    """Load a vocoder directory (or a ``twist-vocoder train`` run dir); returns ``(vocoder, contract)``."""
    from safetensors.torch import load_file

    d = _resolve_vocoder_dir(Path(path))
    meta = read_json_object(d / CONFIG_FILE)
    if meta.get("format") != FORMAT:
        raise InputError(f"{d / CONFIG_FILE}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    contract = UnitContract.load(d / CONTRACT_FILE)
    gen = build_generator(_generator_config(meta.get("generator") or {}, d / CONFIG_FILE, GeneratorConfig.from_dict))
    try:
        weights = load_file(str(d / WEIGHTS_FILE))
    except FileNotFoundError:
        raise MissingInputError(f"vocoder {d}: {WEIGHTS_FILE} is missing") from None
    except Exception as e:  # safetensors' SafetensorError: a header that is not safetensors
        raise InputError(f"vocoder {d}: {d / WEIGHTS_FILE} is not a safetensors file ({str(e).strip()[:120]}); "
                         "convert a published checkpoint with twist-vocoder mode=convert") from None
    gen.load_state_dict(weights, strict=True)
    return Vocoder(gen, contract, device=device), contract


def _generator_config(
    d: dict[str, Any], path: Path, parse: Callable[[dict[str, Any]], GeneratorConfig]
) -> GeneratorConfig:
    """``parse(d)``, with a refusal of its fields (wrong, missing, mistyped) naming the file they came from."""
    try:
        return parse(d)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: {e}") from None


def read_published_generator(ckpt: str | Path, *, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The generator state dict of a speech-resynthesis ``g_XXXXXXXX`` file (``{"generator": sd}``)."""
    ckpt = Path(ckpt)
    if not ckpt.is_file():
        raise MissingInputError(f"vocoder checkpoint not found: {ckpt}")
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=not allow_pickle)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"{ckpt} cannot be read without unpickling code ({type(e).__name__}); if you trust it, "
            "convert it once with allow_pickle=true"
        ) from None
    except Exception as e:  # not a torch file at all, or torn
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InputError(f"vocoder checkpoint {ckpt} cannot be read: {type(e).__name__}: {first}") from None
    sd = obj.get("generator", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{ckpt}: expected a {{'generator': state_dict}} file")
    return sd


def convert_hifigan_checkpoint(
    ckpt: str | Path,
    config_json: str | Path,
    contract: UnitContract,
    out_dir: str | Path,
    *,
    allow_pickle: bool = False,
) -> Path:
    """Convert a published unit HiFi-GAN (checkpoint + JSON config) into a vocoder directory.

    The state dict must load with ``strict=True``; a unit contract whose K differs from the
    checkpoint's ``num_embeddings`` is refused (the units would mean different sounds).
    """
    cfg_path = Path(config_json)
    if not cfg_path.is_file():
        raise MissingInputError(f"vocoder config not found: {cfg_path}")
    cfg = _generator_config(read_json_object(cfg_path), cfg_path, GeneratorConfig.from_hifigan_json)
    if cfg.num_embeddings != contract.n_units:
        raise ContractMismatch(
            f"vocoder {ckpt} has num_embeddings={cfg.num_embeddings} but the tokenizer contract has "
            f"K={contract.n_units}; use the tokenizer this vocoder was trained for"
        )
    if cfg.hop * contract.frame_rate != cfg.sampling_rate:
        raise ContractMismatch(
            f"vocoder hop {cfg.hop} at {cfg.sampling_rate} Hz is {cfg.sampling_rate / cfg.hop:g} frames/s "
            f"but the tokenizer contract has frame_rate={contract.frame_rate}"
        )
    gen = build_generator(cfg)
    sd = read_published_generator(ckpt, allow_pickle=allow_pickle)
    try:
        gen.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise InputError(f"{ckpt} does not match its config {cfg_path}: {e}") from None
    return save_vocoder(gen, contract, out_dir, extra={"converted_from": str(ckpt)})


def measure_rtf(vocoder: Vocoder, *, seconds: float, batch: int = 1, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Real-time factor (compute seconds per second of audio, lower is faster) on the vocoder's device."""
    rng = np.random.default_rng(seed)
    n = int(seconds * vocoder.sample_rate / vocoder.hop)
    units = [rng.integers(0, vocoder.contract.n_units, n) for _ in range(batch)]
    ones = [np.ones(n, dtype=np.int64)] * batch
    vocoder.synthesize_batch(units, ones)  # warm-up (allocator, cuDNN autotune)
    times = []
    for _ in range(repeats):
        if vocoder.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        vocoder.synthesize_batch(units, ones)
        if vocoder.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    audio_s = batch * n * vocoder.hop / vocoder.sample_rate
    best = min(times)
    return {"device": str(vocoder.device), "audio_seconds": audio_s, "compute_seconds": best, "rtf": best / audio_s,
            "threads": torch.get_num_threads()}
