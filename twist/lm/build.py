"""The one builder of speech LMs: ``model/`` + ``init/`` configs -> a speech LM.

Follows TWIST (Hassid et al., 2023, §2.2): ``init=warm`` loads the text LM named by the
``model/`` node and swaps its vocabulary for the unit contract's (:func:`warm_start`);
``init=cold`` builds the same architecture from its config alone (:func:`cold_start`, the
paper's COLD-INIT; no text-LM weights are read). It prints the speech LM's parameter count
against the text LM's: replacing a 50k-250k text vocabulary by a few hundred units removes
parameters (the paper reports 10-25% fewer).

``init.vocab=text+units`` (``+init=warm_interleaved``) keeps the text vocabulary and appends
the units (twist.lm.text_units): :func:`speech_contract` gives the contract such a model
carries (the data's units, in the layout of the text LM's tokenizer), and
:func:`speech_tokenizer_for` the tokenizer its directory ships.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from twist.contract import UnitContract
from twist.errors import ConfigError
from twist.lm.config import VOCABS, InitConfig
from twist.lm.sources import (
    _get,
    load_text_config,
    load_text_lm,
    load_text_tokenizer,
    resolve_dtype,
    tokenizer_source,
)
from twist.lm.surgery import (
    EMBED_INITS,
    META_KEY,
    cold_start,
    count_params,
    text_param_count_from_speech,
    warm_start,
)
from twist.schema import to_typed

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ParamReport:
    """Parameter counts of a speech LM and the text LM it shares a body with."""

    name: str
    init: str
    speech_lm: int
    text_lm: int

    @property
    def fewer_fraction(self) -> float:
        return 1.0 - self.speech_lm / self.text_lm if self.text_lm else 0.0

    def __str__(self) -> str:
        return (
            f"[twist.lm] {self.name} ({self.init} start): speech LM {self.speech_lm / 1e6:.2f}M parameters, "
            f"text LM {self.text_lm / 1e6:.2f}M ({100 * self.fewer_fraction:.1f}% fewer)"
        )


def param_report(model: Any, name: str = "speech LM") -> ParamReport:
    """Count the speech LM's parameters and derive the text LM's (same body, text vocab)."""
    meta = getattr(model.config, META_KEY, {}) or {}
    text_vocab = meta.get("text_vocab_size", model.config.vocab_size)
    return ParamReport(
        name=name,
        init=str(meta.get("init", "?")),
        speech_lm=count_params(model),
        text_lm=text_param_count_from_speech(model, text_vocab),
    )


def _init_fields(init: str | Mapping[str, Any] | InitConfig, embed_init: str,
                 vocab: str | None) -> tuple[str, str, str | None]:
    """Accept ``"warm"``/``"cold"`` or the whole ``init/`` node (its unset keys take InitConfig's defaults)."""
    if isinstance(init, str):
        return init, embed_init, vocab
    typed = to_typed(InitConfig, init, where="init")
    return typed.name, typed.embed_init, vocab or typed.vocab


def speech_contract(model_cfg: Mapping[str, Any], contract: UnitContract, vocab: str = "units") -> UnitContract:
    """The contract a speech LM built from ``model_cfg`` for ``contract``'s units carries.

    ``vocab="units"``: the units' own (units-first). ``"text+units"``: the same units in the
    text+units layout of the text LM's tokenizer (``model.tokenizer``, else ``model.source``'s),
    which is read here; a contract already in that layout is returned as it is.
    """
    if vocab not in VOCABS:
        raise ConfigError(f"init.vocab={vocab!r} must be one of {VOCABS}")
    if contract.layout.has_text:
        if vocab != "text+units":
            raise ConfigError(f"init.vocab={vocab}, but the contract is in the {contract.layout_name} layout")
        return contract
    if vocab == "units":
        return contract
    from twist.lm.text_units import text_units_contract

    return text_units_contract(contract, load_text_tokenizer(model_cfg), label=tokenizer_source(model_cfg)[2])


def speech_tokenizer_for(model_cfg: Mapping[str, Any], contract: UnitContract) -> Any:
    """The tokenizer a text+units speech LM ships: the text LM's, read again from ``model_cfg``,
    checked against the contract's fingerprint, with the units and markers added. ``None`` for
    a units-first contract (its ids are units; twist.tokenizer makes them from audio)."""
    if not contract.layout.has_text:
        return None
    from twist.lm.text_units import speech_tokenizer

    return speech_tokenizer(load_text_tokenizer(model_cfg), contract)


def build_speech_lm(
    model_cfg: Mapping[str, Any],
    init: str | Mapping[str, Any],
    contract: UnitContract,
    *,
    embed_init: str = InitConfig.embed_init,
    vocab: str | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> Any:
    """Build a speech LM for ``contract`` from a ``model/`` node.

    Args:
        model_cfg: the ``model/`` node (``name``, ``family``, ``source``, ``gguf_file``,
            ``config``, ``num_layers``, ``dtype``, ``tokenizer``; see ``twist/configs/model/*.yaml``).
        init: ``"warm"`` (TWIST) or ``"cold"`` (COLD-INIT), or the ``init/`` node.
        contract: the unit contract of the data the model will be trained on (or the
            model's own, from :func:`speech_contract`).
        embed_init: ``"random"`` (the paper's), ``"mean"``, ``"text_rows"`` (Slam's) or
            ``"mean_cov"`` (see :func:`twist.lm.surgery.warm_start`); warm start only.
        vocab: ``"units"`` (TWIST) or ``"text+units"`` (the text vocabulary kept, the units
            appended; the text tokenizer is read); ``None``: the ``init/`` node's, else the
            contract's layout.
        seed: seeds every freshly initialised weight.
        verbose: print the parameter-count comparison (rank 0 only).

    Returns:
        A ``transformers.PreTrainedModel`` (eval mode) whose logits have
        ``layout.vocab_size`` columns, ``layout`` being its contract's (``contract_of(model)``).
    """
    init_name, embed_init, vocab = _init_fields(init, embed_init, vocab)
    if init_name not in ("warm", "cold"):
        raise ConfigError(f"init={init_name!r} must be 'warm' or 'cold'")
    if embed_init not in EMBED_INITS:
        raise ConfigError(f"init.embed_init={embed_init!r} must be one of {EMBED_INITS}")
    contract = speech_contract(model_cfg, contract, vocab or ("text+units" if contract.layout.has_text else "units"))
    name = str(_get(model_cfg, "name") or _get(model_cfg, "family") or "model")
    label = str(_get(model_cfg, "source") or f"{_get(model_cfg, 'family')} (random, from config class)")
    if _get(model_cfg, "gguf_file"):
        label += f" [{_get(model_cfg, 'gguf_file')}]"
    if init_name == "warm":
        text_lm = load_text_lm(model_cfg, seed=seed + 1)
        model = warm_start(text_lm, contract, embed_init=embed_init, seed=seed, text_label=label,
                           share_body=True)  # the text LM is dropped next: take its tensors, do not copy
        del text_lm
    else:
        dtype = resolve_dtype(_get(model_cfg, "dtype"))
        config = load_text_config(model_cfg)
        model = cold_start(config, contract, seed=seed, dtype=dtype if dtype != "auto" else None, text_label=label)
    report = param_report(model, name)
    meta = dict(getattr(model.config, META_KEY))
    meta.update(model_name=name, speech_lm_params=report.speech_lm, text_lm_params=report.text_lm)
    setattr(model.config, META_KEY, meta)
    if verbose:
        from twist.dist import is_main_process

        if is_main_process():
            print(report, flush=True)
    return model
