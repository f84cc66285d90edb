"""A speech LM on disk: a plain Hugging Face directory that carries its unit contract.

The TWIST speech LM (Hassid et al., 2023) is an ordinary causal LM over unit ids. It is
saved with ``save_pretrained`` (safetensors) and its :class:`~twist.contract.UnitContract`
is stored *inside* ``config.json`` under ``"twist"`` (plus a ``unit_contract.json`` copy for
tools that read contracts from files). ``from_pretrained(dir)`` therefore needs nothing but
the directory: not the text LM it came from, not the network.

:func:`load_speech_lm` checks the stored contract against the data or vocoder it will be used
with before reading any weights, and refuses a mismatch naming both sides.

Training keeps alignment-padding rows in the embedding and head (the vocabulary is a multiple
of 64, which is faster) and masks them. An export leaves them out: its head has exactly the
units and ``<bos>/<eos>/<pad>``, so plain ``from_pretrained`` gives twist's probabilities with
no masking, and ``generation_config.json`` names the specials and suppresses ``<bos>``/``<pad>``
so ``generate()`` samples only units and ``<eos>``. :func:`load_speech_lm` puts the padding rows
back (zeros, masked as ever) and also reads exports made before this, which kept them.

A speech LM in the text+units layout (twist.lm.text_units) also ships its tokenizer (the text
LM's, with ``<unit_u>``, ``<speech>`` and ``<text>`` added at the layout's ids), so plain
``AutoTokenizer.from_pretrained(dir)`` encodes interleaved prompts, and besides its default
``generation_config.json`` (the text tokenizer's bos/eos/pad, nothing suppressed) two configs
per modality: ``speech_generation_config.json`` (only units, ``<text>`` and eos) and
``text_generation_config.json`` (only text and ``<speech>``), each stopping at a switch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from twist.atomic import read_json_object
from twist.contract import ContractMismatchError, UnitContract, VocabLayout
from twist.errors import InputError, MissingInputError
from twist.lm.sources import model_class_for
from twist.lm.surgery import META_KEY, config_vocab_size

CONTRACT_FILE = "unit_contract.json"


def _meta(config: Any, where: str) -> dict[str, Any]:
    meta = getattr(config, META_KEY, None)
    if not isinstance(meta, dict) or "contract" not in meta:
        raise InputError(
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


def _check_vocab(config: Any, contract: UnitContract, where: str, *, exported_ok: bool = False) -> bool:
    """Check ``config.vocab_size`` against the contract; True when it is the exported (trimmed) size."""
    layout = contract.layout
    want = config_vocab_size(config.model_type, layout)
    trimmed = want - (layout.vocab_size - layout.n_real)
    if int(config.vocab_size) == want:
        return False
    if exported_ok and int(config.vocab_size) == trimmed:
        return True
    also = f" (or {trimmed} for an export)" if exported_ok else ""
    raise InputError(
        f"{where}: config.vocab_size={config.vocab_size} but the unit contract (K={contract.n_units}) "
        f"needs {want}{also}"
    )


def _vocab_modules(model: Any) -> tuple[list[torch.nn.Module], bool]:
    """The embedding and (if separate) the head, and whether they share one weight."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    return ([emb] if tied or head is None else [emb, head]), tied


def _set_vocab_rows(model: Any, rows: dict[int, torch.Tensor], tied: bool) -> None:
    """Give the vocabulary modules new weights (``rows``: module id -> weight), keeping ties."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    for m in (emb, head):
        if m is None or id(m) not in rows:
            continue
        w = rows[id(m)]
        m.weight = torch.nn.Parameter(w, requires_grad=m.weight.requires_grad)
        if isinstance(m, torch.nn.Embedding):
            m.num_embeddings = int(w.shape[0])
        elif isinstance(m, torch.nn.Linear):
            m.out_features = int(w.shape[0])
    if tied:
        head.weight = emb.weight


@contextlib.contextmanager
def _exported_vocab(model: Any, layout: VocabLayout) -> Iterator[None]:
    """While saving: embedding and head without the alignment-padding rows, and a generation
    config that names the specials and never samples ``<bos>``/``<pad>`` (text+units: the
    default of :func:`twist.lm.text_units.generation_configs`, which suppresses nothing).

    Outside twist nothing masks the padding rows, so they must not exist in the export: plain
    ``from_pretrained`` then gives exactly twist's masked probabilities. The rows are views of
    the training weights (no copy); everything is put back afterwards.
    """
    from transformers import GenerationConfig

    n_pad = layout.vocab_size - layout.n_real
    mods, tied = _vocab_modules(model)
    saved = [(m, m.weight) for m in mods] + ([(model.get_output_embeddings(), model.get_output_embeddings().weight)]
                                              if tied else [])
    biases = [(m, m.bias) for m in mods if isinstance(getattr(m, "bias", None), torch.Tensor)]
    vocab, gen = model.config.vocab_size, getattr(model, "generation_config", None)
    try:
        if n_pad:
            _set_vocab_rows(model, {id(m): m.weight.detach()[: m.weight.shape[0] - n_pad] for m in mods}, tied)
            for m, b in biases:
                m.bias = torch.nn.Parameter(b.detach()[: b.shape[0] - n_pad], requires_grad=b.requires_grad)
            model.config.vocab_size = int(vocab) - n_pad
        if layout.has_text:
            from twist.lm.text_units import generation_configs

            g = generation_configs(layout, gen)["generation_config.json"]
        else:
            g = GenerationConfig.from_dict(gen.to_dict()) if gen is not None else GenerationConfig()
            g.bos_token_id, g.eos_token_id, g.pad_token_id = layout.bos_id, layout.eos_id, layout.pad_id
            g.suppress_tokens = [layout.bos_id, layout.pad_id]
        model.generation_config = g
        yield
    finally:
        for m, w in saved:
            m.weight = w
            if isinstance(m, torch.nn.Embedding):
                m.num_embeddings = int(w.shape[0])
            elif isinstance(m, torch.nn.Linear):
                m.out_features = int(w.shape[0])
        for m, b in biases:
            m.bias = b
        model.config.vocab_size = vocab
        if gen is not None:
            model.generation_config = gen


def _restore_padding_rows(model: Any, layout: VocabLayout) -> None:
    """An export without padding rows, loaded for twist: add them back (zeros; always masked)."""
    n_pad = layout.vocab_size - layout.n_real
    mods, tied = _vocab_modules(model)
    grown = {}
    with torch.no_grad():
        for m in mods:
            w = m.weight
            grown[id(m)] = torch.cat([w.detach(), w.new_zeros(n_pad, *w.shape[1:])])
        _set_vocab_rows(model, grown, tied)
        for m in mods:
            b = getattr(m, "bias", None)
            if isinstance(b, torch.Tensor) and b.shape[0] == m.weight.shape[0] - n_pad:
                m.bias = torch.nn.Parameter(torch.cat([b.detach(), b.new_zeros(n_pad)]), requires_grad=b.requires_grad)
    model.config.vocab_size = int(model.config.vocab_size) + n_pad


def save_speech_lm(model: Any, out_dir: str | os.PathLike, contract: UnitContract | None = None, *,
                   tokenizer: Any = None) -> Path:
    """Save ``model`` as a self-contained speech-LM directory, atomically.

    Args:
        model: a speech LM from :func:`twist.lm.build_speech_lm` (or one you made).
        out_dir: destination; replaced as a whole by rename, never left half-written.
        contract: the unit contract. If the model already carries one they must agree.
        tokenizer: text+units layout only, and required there: the model's tokenizer
            (:func:`twist.lm.build.speech_tokenizer_for`, or :func:`load_speech_tokenizer` of
            the directory the model came from), checked against the contract and saved with it.

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
    layout = contract.layout
    if layout.has_text:
        from twist.lm.text_units import check_speech_tokenizer, generation_configs

        if tokenizer is None:
            raise InputError("save_speech_lm: a text+units speech LM is saved with its tokenizer (tokenizer=: "
                             "twist.lm.build.speech_tokenizer_for(model_cfg, contract), or "
                             "twist.lm.load_speech_tokenizer(dir) of the model it came from)")
        check_speech_tokenizer(tokenizer, contract, where="the tokenizer passed to save_speech_lm")
    elif tokenizer is not None:
        raise InputError(f"save_speech_lm: the model's layout {contract.layout_name} has no text tokenizer to save "
                         "(its ids are units)")
    meta = dict(existing) if isinstance(existing, dict) else {}
    meta["contract"] = contract.to_dict()
    setattr(model.config, META_KEY, meta)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with _exported_vocab(model, layout):
            model.save_pretrained(tmp, safe_serialization=True)
        if layout.has_text:
            tokenizer.save_pretrained(tmp)
            for name, g in generation_configs(layout).items():
                if name != "generation_config.json":  # the default one came with the model
                    g.save_pretrained(tmp, config_file_name=name)
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
        raise MissingInputError(f"speech LM {path}: no config.json (not a saved model directory)")
    raw = read_json_object(cfg_file)
    meta = raw.get(META_KEY)
    if not isinstance(meta, dict) or "contract" not in meta:
        _meta(object(), f"{path}")  # raises the explanatory error
    return UnitContract.from_dict(meta["contract"], source=str(cfg_file))


def load_speech_tokenizer(path: str | os.PathLike) -> Any:
    """The tokenizer a text+units speech LM directory ships, checked against its contract.

    Plain ``AutoTokenizer.from_pretrained(path)`` reads the same; this also refuses a directory
    whose tokenizer does not give the contract's ids (an edited or mixed-up directory).
    """
    from transformers import AutoTokenizer

    from twist.lm.text_units import check_speech_tokenizer

    path = Path(path)
    contract = read_contract(path)
    if not contract.layout.has_text:
        raise InputError(f"speech LM {path} is in the {contract.layout_name} layout: its ids are units and it ships "
                         "no text tokenizer")
    tok = AutoTokenizer.from_pretrained(path)
    check_speech_tokenizer(tok, contract, where=f"the tokenizer of speech LM {path}")
    return tok


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
            vocoder); different units raise :class:`ContractMismatchError` before weights
            load (the units alone are compared: those artefacts' ids are units, which a
            model of either layout reads).
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
        contract.check_same_units(expected, mine=f"speech LM {path}", theirs=expected_name)
    config = AutoConfig.from_pretrained(path)
    exported = _check_vocab(config, contract, f"speech LM {path}", exported_ok=True)
    if isinstance(dtype, str) and dtype != "auto":
        from twist.lm.sources import resolve_dtype

        dtype = resolve_dtype(dtype)
    from twist.checkpoint import refuse_pickled_weights

    with refuse_pickled_weights(path):
        model = model_class_for(config).from_pretrained(path, config=config, dtype=dtype or "auto")
    if exported:
        _restore_padding_rows(model, contract.layout)
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
        layout = layout.layout
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
    "load_speech_tokenizer",
    "logits_width",
    "mask_invalid_logits",
    "read_contract",
    "save_speech_lm",
]
