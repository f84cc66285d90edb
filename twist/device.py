"""Device and dtype names from configs, resolved one way for every stage.

``device``: ``auto`` (CUDA when visible, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; asking for
CUDA without one is refused with the key named. ``dtype``: ``float32``/``fp32``,
``bfloat16``/``bf16``, ``float16``/``fp16``, and ``auto``, whose meaning the caller gives
(bf16 on a GPU for scoring; "the checkpoint's own" for loading a text LM).
"""

from __future__ import annotations

from typing import Any

import torch

from twist.errors import ConfigError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def resolve_device(name: str | torch.device | None, *, key: str = "device") -> torch.device:
    """``auto``/``None`` -> CUDA when visible, else CPU; ``cuda`` without a GPU is a ConfigError."""
    if isinstance(name, torch.device):
        return name
    text = "auto" if name is None else str(name).strip().lower()
    if text == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"{key}: {name!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key}={name} but no CUDA device is visible")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{key}: {name!r} is not supported (auto, cpu, cuda or cuda:N)")
    return dev


def resolve_dtype(name: str | torch.dtype | None, *, auto: Any = None, default: Any = torch.float32,
                  key: str = "dtype") -> Any:
    """A dtype name -> ``torch.dtype``; ``auto`` -> ``auto`` (the caller's choice), ``None`` -> ``default``."""
    if isinstance(name, torch.dtype):
        return name
    if name is None:
        return default
    text = str(name).strip().lower().replace("torch.", "")
    if text == "auto":
        return auto
    if text not in DTYPES:
        raise ConfigError(f"{key}: {name!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[text]
