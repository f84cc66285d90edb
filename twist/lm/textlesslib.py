"""Import the published TWIST LMs (textlesslib release) into twist's token-id layout.

The TWIST checkpoints released with Hassid et al. (2023) through facebookresearch/textlesslib
(``TWIST-350M``, ``TWIST-1.3B``, ``TWIST-7B``; OPT and LLaMA) are Hugging Face directories
whose ``config.json`` carries an integer ``offset``: unit ``u`` is token id ``u + offset``
(ids below the offset are the fairseq dictionary's specials, ``<s>``=0, ``<pad>``=1,
``</s>``=2, ``<unk>``=3 in their release). textlesslib adds the offset before calling the model
and subtracts it from what ``generate`` returns.

:func:`import_textlesslib_lm` permutes the embedding rows and head rows into twist's layout
(units ``0..K-1``, then bos/eos/pad from the source's special ids, then alignment padding)
and keeps every other tensor as is, so the imported model gives the same distribution over
units as the published one. The published directories do not describe their tokenizer, so
the caller supplies the unit contract (for the release: mHuBERT-25Hz, layer 11, K=500).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from twist.contract import UnitContract
from twist.errors import ConfigError, ContractMismatch, InputError, MissingInputError
from twist.lm.sources import model_class_for, resolve_dtype
from twist.lm.surgery import _instantiate, speech_config, vocab_param_names


@torch.no_grad()
def import_textlesslib_lm(
    src: str | os.PathLike,
    contract: UnitContract,
    *,
    out_dir: str | os.PathLike | None = None,
    offset: int | None = None,
    dtype: str | torch.dtype | None = None,
) -> Any:
    """Load a textlesslib TWIST LM directory and return it in twist's id layout.

    Args:
        src: the published model directory (``config.json`` with ``offset``, weights).
        contract: the unit contract of the tokenizer the model was trained with.
        out_dir: if given, also save the result there with :func:`twist.lm.save_speech_lm`.
        offset: overrides ``config.offset``.
        dtype: weight dtype (default float32).

    Returns:
        A speech LM: ``logits[..., u]`` equals the source's ``logits[..., u + offset]``.
    """
    from transformers import AutoConfig

    if contract.layout.has_text:
        raise ConfigError(f"import_textlesslib_lm: published TWIST LMs are unit-only; the contract's layout is "
                          f"{contract.layout_name}, give the units-first contract of their tokenizer")
    src = Path(src)
    if not (src / "config.json").is_file():
        raise MissingInputError(f"{src} has no config.json: not a Hugging Face model directory")
    src_cfg = AutoConfig.from_pretrained(src)
    if offset is None:
        offset = getattr(src_cfg, "offset", None)
    if offset is None:
        raise InputError(f"{src}/config.json has no 'offset': not a textlesslib TWIST LM (pass offset= explicitly)")
    offset = int(offset)
    k = contract.n_units
    if offset < 0 or offset + k > src_cfg.vocab_size:
        raise ContractMismatch(
            f"{src}: offset {offset} + K={k} units exceeds its vocab_size {src_cfg.vocab_size}; "
            f"the contract's K does not fit this model"
        )
    source = model_class_for(src_cfg).from_pretrained(src, dtype=resolve_dtype(dtype)).eval()
    layout = contract.layout

    cfg = speech_config(source.config, contract, init="imported", text_lm=str(src))
    if hasattr(cfg, "offset"):
        del cfg.offset  # ids are no longer offset
    model = _instantiate(cfg, 0, next(source.parameters()).dtype).eval()

    fresh = vocab_param_names(model)
    src_sd, dst_sd = source.state_dict(), model.state_dict()
    for name, t in dst_sd.items():
        if name not in fresh:
            if name not in src_sd or src_sd[name].shape != t.shape:
                raise InputError(f"import: tensor {name} missing or of another shape in {src}")
            t.copy_(src_sd[name])

    # Row map: new id -> old id. Specials come from the source config when they lie below the
    # offset (so they cannot collide with a unit); alignment padding rows are zeroed.
    row_map = {u: u + offset for u in range(k)}
    for new_id, key in ((layout.bos_id, "bos_token_id"), (layout.eos_id, "eos_token_id"), (layout.pad_id, "pad_token_id")):
        old = getattr(src_cfg, key, None)
        if isinstance(old, int) and 0 <= old < offset:
            row_map[new_id] = old
    new_ids = torch.tensor(sorted(row_map))
    old_ids = torch.tensor([row_map[i] for i in sorted(row_map)])
    pairs = [(model.get_input_embeddings(), source.get_input_embeddings())]
    if not getattr(model.config, "tie_word_embeddings", False):
        pairs.append((model.get_output_embeddings(), source.get_output_embeddings()))
    for new, old in pairs:
        new.weight[layout.n_real :].zero_()
        new.weight[new_ids] = old.weight[old_ids]
        bias_new, bias_old = getattr(new, "bias", None), getattr(old, "bias", None)
        if bias_new is not None and bias_old is not None:
            bias_new.zero_()
            bias_new[new_ids] = bias_old[old_ids]
    model.tie_weights()
    if out_dir is not None:
        from twist.lm.speech_lm import save_speech_lm

        save_speech_lm(model, out_dir, contract)
    return model
