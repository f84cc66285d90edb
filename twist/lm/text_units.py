"""The text+units vocabulary: a text LM's tokenizer with speech units and modality markers appended.

Speech-text interleaving (SpiritLM, Nguyen et al. 2024; SIMS in Slam, Maimon et al. 2025)
trains one LM on text, speech and mixtures of the two, so it keeps the text LM's tokenizer
and embeddings and appends the units and two markers (slamkit's ``interleaving_tokeniser``
does the same). The ids are :class:`twist.contract.VocabLayout`'s text+units layout::

    0 .. V_text-1            the text tokenizer's ids (its bos/eos/pad are the model's)
    V_text + u               unit u, as the added token ``<unit_u>``
    V_text + K, V_text+K+1   ``<speech>``, ``<text>``: a marker opens a sequence and every switch

This module makes that layout from a text tokenizer (:func:`text_units_contract`), extends
the tokenizer with the tokens at exactly those ids (:func:`speech_tokenizer`), checks a
tokenizer against a contract (:func:`check_speech_tokenizer`), lays out spans of text and
speech with their markers (:func:`interleave`, :func:`text_span_ids`: cross-modal StoryCloze,
twist-generate's mixed prompts), and writes the generation configs an exported model carries
(:func:`generation_configs`): the default one, and one per modality, so that plain
``transformers`` continues a ``<speech>`` prompt with units only::

    gen = GenerationConfig.from_pretrained(model_dir, "speech_generation_config.json")
    model.generate(ids, generation_config=gen, do_sample=True, max_new_tokens=150)

The text tokenizer is identified by a fingerprint of its ``tokenizer.json`` (vocabulary,
merges, normaliser, pre-tokenizer, its own added tokens), so two models whose text ids mean
different strings have different contracts.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from typing import Any

import numpy as np

from twist.contract import TEXT_UNITS_LAYOUT, UnitContract, VocabLayout
from twist.errors import ConfigError, ContractMismatch, InputError

SPEECH_TOKEN = "<speech>"
TEXT_TOKEN = "<text>"
SPEECH_GENERATION_CONFIG = "speech_generation_config.json"
TEXT_GENERATION_CONFIG = "text_generation_config.json"


def unit_token(u: int) -> str:
    """The added token of unit ``u``."""
    return f"<unit_{int(u)}>"


def _backend_json(tokenizer: Any, where: str) -> dict[str, Any]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise InputError(f"{where}: {type(tokenizer).__name__} is not a fast (tokenizers) tokenizer; the text+units "
                         "vocabulary needs one (AutoTokenizer.from_pretrained(..., use_fast=True))")
    return json.loads(backend.to_str())


def tokenizer_fingerprint(tokenizer: Any, n_ids: int | None = None, *, where: str = "text tokenizer") -> str:
    """A short sha256 of the tokenizer's ids ``[0, n_ids)`` (default: all of them).

    Computed over its ``tokenizer.json`` with the added tokens at ids ``>= n_ids`` left out
    (and the padding/truncation state, which is not the vocabulary), so an extended tokenizer
    restricted to its text ids has its text tokenizer's fingerprint.
    """
    d = _backend_json(tokenizer, where)
    n = len(tokenizer) if n_ids is None else int(n_ids)
    d["added_tokens"] = [t for t in d.get("added_tokens", []) if int(t["id"]) < n]
    d["truncation"] = d["padding"] = None
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def text_units_layout(tokenizer: Any, n_units: int) -> VocabLayout:
    """The text+units layout for ``tokenizer``: V_text = its size, its bos/eos/pad (eos where it
    has no bos or pad)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise InputError(f"text tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no eos token; a text+units "
                         "vocabulary ends every sequence with the text LM's eos")
    return VocabLayout.text_units(n_units, text_vocab=len(tokenizer), bos_id=tokenizer.bos_token_id, eos_id=eos,
                                  pad_id=tokenizer.pad_token_id)


def text_units_contract(contract: UnitContract, tokenizer: Any, label: str | None = None) -> UnitContract:
    """``contract``'s units in the text+units layout of ``tokenizer`` (what a speech LM built
    with ``init.vocab=text+units`` carries)."""
    layout = text_units_layout(tokenizer, contract.n_units)
    taken = [t for t in (*[unit_token(u) for u in range(contract.n_units)], SPEECH_TOKEN, TEXT_TOKEN)
             if tokenizer.convert_tokens_to_ids(t) not in (None, tokenizer.unk_token_id)]
    if taken:
        raise InputError(f"text tokenizer {label or ''} already has the token(s) {taken[:5]}: the text+units "
                         "vocabulary appends them as new ids")
    return dataclasses.replace(
        contract, layout_name=TEXT_UNITS_LAYOUT, text_vocab=layout.text_vocab, text_bos_id=layout.bos_id,
        text_eos_id=layout.eos_id, text_pad_id=layout.pad_id,
        text_tokenizer=label or getattr(tokenizer, "name_or_path", None) or None,
        text_tokenizer_fingerprint=tokenizer_fingerprint(tokenizer))


def speech_tokenizer(text_tokenizer: Any, contract: UnitContract) -> Any:
    """A copy of ``text_tokenizer`` with ``<unit_0>`` .. ``<unit_{K-1}>``, ``<speech>`` and
    ``<text>`` added at the ids of ``contract``'s text+units layout.

    They are special added tokens: never split, not normalised, left out by
    ``decode(..., skip_special_tokens=True)`` (which then gives the text spans alone). Text
    without them encodes to the same ids as before.
    """
    from tokenizers import AddedToken

    layout = contract.layout
    if not layout.has_text:
        raise ConfigError(f"speech_tokenizer: the contract's layout is {contract.layout_name!r}, not {TEXT_UNITS_LAYOUT}")
    fp = tokenizer_fingerprint(text_tokenizer)
    if len(text_tokenizer) != layout.text_vocab or fp != contract.text_tokenizer_fingerprint:
        raise ContractMismatch(
            f"text tokenizer {getattr(text_tokenizer, 'name_or_path', '')!r} ({len(text_tokenizer)} ids, fingerprint "
            f"{fp}) is not the one the contract records ({contract.text_tokenizer!r}: {layout.text_vocab} ids, "
            f"fingerprint {contract.text_tokenizer_fingerprint})")
    tok = copy.deepcopy(text_tokenizer)
    names = [unit_token(u) for u in range(layout.n_units)] + [SPEECH_TOKEN, TEXT_TOKEN]
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in names], special_tokens=True)
    check_speech_tokenizer(tok, contract, where="the extended text tokenizer")
    return tok


def check_speech_tokenizer(tokenizer: Any, contract: UnitContract, *, where: str = "tokenizer") -> None:
    """Refuse a tokenizer whose ids are not ``contract``'s text+units layout, naming what differs."""
    layout = contract.layout
    want = {unit_token(0): layout.unit_offset, unit_token(layout.n_units - 1): layout.unit_offset + layout.n_units - 1,
            SPEECH_TOKEN: layout.speech_id, TEXT_TOKEN: layout.text_id}
    got = {t: tokenizer.convert_tokens_to_ids(t) for t in want}
    bad = [f"{t} is {got[t]} (the layout says {i})" for t, i in want.items() if got[t] != i]
    if len(tokenizer) != layout.n_real:
        bad.insert(0, f"it has {len(tokenizer)} ids (the layout has {layout.n_real})")
    if not bad:
        fp = tokenizer_fingerprint(tokenizer, layout.text_vocab, where=where)
        if fp != contract.text_tokenizer_fingerprint:
            bad.append(f"its text ids have fingerprint {fp}, the contract's text tokenizer "
                       f"{contract.text_tokenizer!r} has {contract.text_tokenizer_fingerprint}")
    if bad:
        raise ContractMismatch(f"{where} does not match the speech LM's text+units layout: " + "; ".join(bad))


def generation_configs(layout: VocabLayout, base: Any = None) -> dict[str, Any]:
    """The generation configs of an exported text+units model, by file name.

    * ``generation_config.json`` (``base`` with the layout's bos/eos/pad): free-running, text
      or speech as the model chooses;
    * ``speech_generation_config.json``: only units, ``<text>`` and eos may be sampled (every
      text id but eos, and ``<speech>``, suppressed); generation stops at eos or at ``<text>``
      (the model switching to text). Put ``<speech>`` at the end of the prompt;
    * ``text_generation_config.json``: only text ids and ``<speech>`` (units and ``<text>``
      suppressed); stops at eos or ``<speech>``.
    """
    from transformers import GenerationConfig

    g = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
    g.bos_token_id, g.eos_token_id, g.pad_token_id = layout.bos_id, layout.eos_id, layout.pad_id
    g.suppress_tokens = None
    units = range(layout.unit_offset, layout.unit_offset + layout.n_units)
    text = [i for i in range(layout.text_vocab) if i != layout.eos_id]
    speech = GenerationConfig(bos_token_id=layout.bos_id, eos_token_id=[layout.eos_id, layout.text_id],
                              pad_token_id=layout.pad_id, suppress_tokens=[*text, layout.speech_id])
    text_only = GenerationConfig(bos_token_id=layout.bos_id, eos_token_id=[layout.eos_id, layout.speech_id],
                                 pad_token_id=layout.pad_id, suppress_tokens=[*units, layout.text_id])
    return {"generation_config.json": g, SPEECH_GENERATION_CONFIG: speech, TEXT_GENERATION_CONFIG: text_only}


MODALITIES = ("text", "speech")


def text_span_ids(tokenizer: Any, text: str, layout: VocabLayout, *, where: str = "text") -> list[int]:
    """The text ids of one text span: ``text`` as the tokenizer encodes it, without the specials it
    adds around a whole sequence (its bos), so the span can sit after a marker.

    Raises:
        InputError: the text spells a unit or a marker token (``<speech>`` in a story), which the
            extended tokenizer would read as that token rather than as text.
    """
    ids = [int(i) for i in tokenizer(text, add_special_tokens=False).input_ids]
    bad = [i for i in ids if not 0 <= i < layout.text_vocab]
    if bad:
        raise InputError(f"{where}: {text[:60]!r} encodes to id(s) {bad[:3]} outside the text ids [0, "
                         f"{layout.text_vocab}): it spells a unit or marker token")
    return ids


def interleave(layout: VocabLayout, spans: Any, *, bos: bool = True, eos: bool = False) -> tuple[np.ndarray, list[int]]:
    """Token ids of modality spans in the text+units layout, and where each span's tokens start.

    Args:
        spans: ``("text", text ids)`` or ``("speech", units)`` pairs, in order (units, not ids:
            they are put at their offset). A marker (``<text>`` / ``<speech>``) opens the first
            span and every switch of modality, as in the interleaved sequences a text+units model
            is trained on; two spans of one modality in a row share theirs.
        bos: begin with ``<bos>``.
        eos: end with ``<eos>``.

    Returns:
        ``(ids, starts)``: ``starts[i]`` is the index in ``ids`` of span ``i``'s first token
        (after its marker), e.g. where cross-modal StoryCloze scores an ending from.
    """
    if not layout.has_text:
        raise ConfigError(f"interleave: the {layout.name} layout has no text ids or markers")
    out: list[int] = [layout.bos_id] if bos else []
    starts, previous = [], None
    for modality, tokens in spans:
        if modality not in MODALITIES:
            raise ConfigError(f"interleave: a span's modality is one of {MODALITIES}, got {modality!r}")
        if modality != previous:
            out.append(layout.text_id if modality == "text" else layout.speech_id)
        starts.append(len(out))
        out += [int(i) for i in tokens] if modality == "text" else layout.unit_ids(np.asarray(tokens)).tolist()
        previous = modality
    if eos:
        out.append(layout.eos_id)
    return np.asarray(out, dtype=np.int64), starts


__all__ = [
    "MODALITIES",
    "SPEECH_GENERATION_CONFIG",
    "SPEECH_TOKEN",
    "TEXT_GENERATION_CONFIG",
    "TEXT_TOKEN",
    "check_speech_tokenizer",
    "generation_configs",
    "interleave",
    "speech_tokenizer",
    "text_units_contract",
    "text_span_ids",
    "text_units_layout",
    "tokenizer_fingerprint",
    "unit_token",
]
