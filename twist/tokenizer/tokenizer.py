"""``UnitTokenizer``: waveform -> frame-level speech units (encoder + k-means), as one object.

This is what every later stage uses to turn audio into units (eval benchmarks, vocoder data,
generation prompts). A tokenizer directory holds ``tokenizer.json`` (the encoder spec, the
unit contract and k-means facts) and ``kmeans.safetensors`` (the centroids). Loading it
rebuilds the encoder and re-checks both fingerprints, so a directory whose HuBERT weights or
centroids changed since it was made is refused rather than silently giving other units.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.atomic import atomic_write_json, read_json_object
from twist.contract import ContractMismatchError, UnitContract
from twist.device import resolve_device
from twist.errors import ContractMismatch, InputError, MissingInputError
from twist.tokenizer.encoders import Encoder, build_encoder
from twist.tokenizer.kmeans import KMEANS_FILE, KMeansQuantizer

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_FORMAT = "twist-tokenizer"


class UnitTokenizer:
    """An encoder plus a k-means codebook, and the unit contract they define.

    Args:
        encoder: the feature encoder.
        quantizer: the k-means codebook (its dim must equal the encoder's).
        dedup: the contract's dedup flag (``encode`` itself never deduplicates).
    """

    def __init__(self, encoder: Encoder, quantizer: KMeansQuantizer, *, dedup: bool = True) -> None:
        if quantizer.dim != encoder.dim:
            raise ContractMismatch(
                f"k-means codebook has dim {quantizer.dim} but the {encoder.name} encoder gives dim {encoder.dim}"
            )
        self.encoder = encoder
        self.quantizer = quantizer.to(encoder.device)
        self.contract = UnitContract(
            encoder=encoder.name,
            encoder_fingerprint=encoder.fingerprint(),
            layer=encoder.layer,
            frame_rate=float(encoder.frame_rate),
            n_units=quantizer.n_units,
            kmeans_fingerprint=quantizer.fingerprint(),
            dedup=bool(dedup),
            sample_rate=int(encoder.sample_rate),
        )

    # -- facts -------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.encoder.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.encoder.frame_rate)

    @property
    def n_units(self) -> int:
        return self.quantizer.n_units

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    def to(self, device: str | torch.device) -> UnitTokenizer:
        self.encoder.to(device)
        self.quantizer.to(device)
        return self

    # -- encoding ----------------------------------------------------------------------------
    def encode_batch_tensors(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        """Units as int64 tensors on the tokenizer's device (the pipeline's fast path)."""
        feats = self.encoder.encode_batch(wavs)
        if not feats:
            return []
        lengths = [int(f.shape[0]) for f in feats]
        units = self.quantizer.assign(torch.cat(feats, dim=0))
        return list(torch.split(units, lengths))

    def encode_batch(self, wavs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Frame-level units (int64, no dedup) for mono float32 waveforms at ``sample_rate``."""
        return [u.cpu().numpy().astype(np.int64) for u in self.encode_batch_tensors(wavs)]

    def encode(self, wav: np.ndarray) -> np.ndarray:
        """Frame-level units (int64, no dedup) of one mono float32 waveform at ``sample_rate``."""
        return self.encode_batch([wav])[0]

    def encode_file(self, path: str | Path, *, min_seconds: float = 0.0) -> np.ndarray:
        """Read, mix to mono, resample and encode an audio file (raises ``BadAudioError``)."""
        from twist.audio import load_audio

        return self.encode(load_audio(path, self.sample_rate, min_seconds=min_seconds))

    # -- storage -----------------------------------------------------------------------------
    def save(self, out_dir: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
        """Write ``kmeans.safetensors`` then ``tokenizer.json`` (the commit marker)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.quantizer.save(out_dir / KMEANS_FILE)
        atomic_write_json(
            out_dir / TOKENIZER_FILE,
            {
                "format": TOKENIZER_FORMAT,
                "version": 1,
                "encoder": self.encoder.spec(),
                "contract": self.contract.to_dict(),
                "kmeans": {"file": KMEANS_FILE, "n_units": self.n_units, "dim": self.quantizer.dim,
                           **self.quantizer.info},
                **(extra or {}),
            },
        )
        return out_dir

    @staticmethod
    def read_spec(path: str | Path) -> dict[str, Any]:
        path = Path(path)
        f = path / TOKENIZER_FILE if path.is_dir() or not path.suffix else path
        if not f.exists():
            raise MissingInputError(f"not a tokenizer directory: {f} is missing")
        spec = read_json_object(f)
        if spec.get("format") != TOKENIZER_FORMAT:
            raise InputError(f"{f}: format is {spec.get('format')!r}, expected {TOKENIZER_FORMAT!r}")
        return spec

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str | torch.device | None = "cpu",
        encoder_overrides: dict[str, Any] | None = None,
    ) -> UnitTokenizer:
        """Load a tokenizer directory and verify it still is what its contract says.

        Args:
            device: ``"cpu"``, ``"cuda"``, or ``"auto"``/``None`` for cuda when available.
            encoder_overrides: spec fields to replace, e.g. ``{"path": "/new/place/hubert"}``
                when the HuBERT checkpoint moved. The fingerprint check still applies.
        """
        path = Path(path)
        spec = cls.read_spec(path)
        expected = UnitContract.from_dict(spec["contract"], source=str(path / TOKENIZER_FILE))
        enc_spec = {**spec["encoder"], **(encoder_overrides or {})}
        encoder = build_encoder(enc_spec, device=resolve_device(device if device is not None else "auto"))
        quantizer = KMeansQuantizer.load(path / spec.get("kmeans", {}).get("file", KMEANS_FILE))
        tok = cls(encoder, quantizer, dedup=expected.dedup)
        try:
            tok.contract.check_compatible(expected, mine="the rebuilt encoder + codebook", theirs=f"tokenizer {path}")
        except ContractMismatchError as e:
            raise ContractMismatchError(f"{e}\n(the encoder weights or centroids changed since {path} was made)") from None
        return tok
