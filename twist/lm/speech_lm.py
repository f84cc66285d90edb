"""A speech LM on disk: a plain Hugging Face directory that carries its unit contract.

The TWIST speech LM (Hassid et al., 2023) is an ordinary causal LM over unit ids. It is
saved with ``save_pretrained`` (safetensors) and its :class:`~twist.contract.UnitContract`
is stored *inside* ``config.json`` under ``"twist"`` (plus a ``unit_contract.json`` copy for
tools that read contracts from files). ``from_pretrained(dir)`` therefore needs nothing but
the directory: not the text LM it came from, not the network.

:func:`load_speech_lm` checks the stored contract against the data or vocoder it will be used
with before reading any weights, and refuses a mismatch naming both sides.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from twist.contract import ContractMismatchError, UnitContract, VocabLayout
from twist.lm.sources import model_class_for
from twist.lm.surgery import META_KEY, config_vocab_size

CONTRACT_FILE = "unit_contract.json"


def _meta(config: Any, where: str) -> dict[str, Any]:
    meta = getattr(config, META_KEY, None)
    if not isinstance(meta, dict) or "contract" not in meta:
        raise ValueError(
            f"{where} is not a twist speech LM (its config has no '{META_KEY}.contract'). "
            "Build one with twist.lm.build_speech_lm, or import a published TWIST LM with "
            "twist.lm.import_textlesslib_lm."
        )
    return meta


def contract_of(model: Any) -> UnitContract:
    """The unit contract a speech LM was built for (read from ``model.config``)."""
    config = getattr(model, "config", model)
    return UnitContract.from_dict(_meta(config, "this model")["contract"], source="model config")


def logits_width(model: Any) -> int:
    """Number of logit columns (the output head's rows)."""
    head = model.get_output_embeddings()
    if head is not None:
        return int(head.weight.shape[0])
    return int(model.config.vocab_size)


def _check_vocab(config: Any, contract: UnitContract, where: str) -> None:
    want = config_vocab_size(config.model_type, VocabLayout(contract.n_units))
    if int(config.vocab_size) != want:
        raise ValueError(
            f"{where}: config.vocab_size={config.vocab_size} but the unit contract (K={contract.n_units}) "
            f"needs {want}"
        )


def save_speech_lm(model: Any, out_dir: str | os.PathLike, contract: UnitContract | None = None) -> Path:
    """Save ``model`` as a self-contained speech-LM directory, atomically.

    Args:
        model: a speech LM from :func:`twist.lm.build_speech_lm` (or one you made).
        out_dir: destination; replaced as a whole by rename, never left half-written.
        contract: the unit contract. If the model already carries one they must agree.

    Returns:
        ``out_dir`` as a Path.
    """
    from twist.atomic import atomic_replace_dir

    out = Path(out_dir)
    existing = getattr(model.config, META_KEY, None)
    if contract is None:
        contract = contract_of(model)
    elif isinstance(existing, dict) and "contract" in existing:
        contract_of(model).check_compatible(contract, mine="the model's config", theirs="the contract passed to save")
    _check_vocab(model.config, contract, "save_speech_lm")
    meta = dict(existing) if isinstance(existing, dict) else {}
    meta["contract"] = contract.to_dict()
    setattr(model.config, META_KEY, meta)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        contract.save(tmp / CONTRACT_FILE)
        atomic_replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_contract(path: str | os.PathLike) -> UnitContract:
    """The contract of a saved speech LM, from its ``config.json`` (no weights read)."""
    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"speech LM {path}: no config.json (not a saved model directory)")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"speech LM {path}: config.json is not valid JSON: {e}") from None
    meta = raw.get(META_KEY)
    if not isinstance(meta, dict) or "contract" not in meta:
        _meta(object(), f"{path}")  # raises the explanatory error
    return UnitContract.from_dict(meta["contract"], source=str(cfg_file))


def load_speech_lm(
    path: str | os.PathLike,
    *,
    expected: UnitContract | None = None,
    expected_name: str = "data",
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, UnitContract]:
    """Load a speech LM and its contract, refusing one made for other units.

    Args:
        path: a directory written by :func:`save_speech_lm` (or by the trainer's export).
        expected: the contract of what the model will be used with (a unit dataset, a
            vocoder); a mismatch raises :class:`ContractMismatchError` before weights load.
        expected_name: how to name that other side in the error, e.g. ``"dataset /data/units"``.
        device: where to put the model.
        dtype: weight dtype; default keeps the saved one.

    Returns:
        ``(model, contract)``; the model is in eval mode.
    """
    from transformers import AutoConfig

    path = Path(path)
    contract = read_contract(path)
    if expected is not None:
        contract.check_compatible(expected, mine=f"speech LM {path}", theirs=expected_name)
    config = AutoConfig.from_pretrained(path)
    _check_vocab(config, contract, f"speech LM {path}")
    if isinstance(dtype, str) and dtype != "auto":
        from twist.lm.sources import resolve_dtype

        dtype = resolve_dtype(dtype)
    from twist.checkpoint import refuse_pickled_weights

    with refuse_pickled_weights(path):
        model = model_class_for(config).from_pretrained(path, config=config, dtype=dtype or "auto")
    if device is not None:
        model = model.to(device)
    return model.eval(), contract


def mask_invalid_logits(
    logits: torch.Tensor,
    layout: VocabLayout | UnitContract | int,
    allow_specials: bool = True,
) -> torch.Tensor:
    """Set logits of ids that must never be predicted to ``-inf`` (out of place).

    Alignment-padding ids (``K+3 .. V-1``) are always masked. With ``allow_specials=False``
    only units and ``<eos>`` remain (what sampling may emit).
    """
    if isinstance(layout, UnitContract):
        layout = VocabLayout(layout.n_units)
    elif isinstance(layout, int):
        layout = VocabLayout(layout)
    if logits.shape[-1] != layout.vocab_size:
        raise ValueError(f"logits have {logits.shape[-1]} columns, the layout for K={layout.n_units} has {layout.vocab_size}")
    mask = layout.valid_mask(allow_specials=allow_specials).to(logits.device)
    return logits.masked_fill(~mask, float("-inf"))


__all__ = [
    "CONTRACT_FILE",
    "ContractMismatchError",
    "contract_of",
    "load_speech_lm",
    "logits_width",
    "mask_invalid_logits",
    "read_contract",
    "save_speech_lm",
]
