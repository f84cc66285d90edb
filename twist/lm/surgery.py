"""Warm and cold start: a text LM's body with a speech-unit vocabulary (TWIST, §2.2).

TWIST (Hassid et al., 2023) keeps a pretrained text LM's transformer body and replaces its
text vocabulary by the speech units of a :class:`~twist.contract.UnitContract` plus
``<bos>/<eos>/<pad>``, with a fresh, randomly initialised embedding table (and head):

* :func:`warm_start` (the paper's TWIST): every tensor except the token embedding and the
  output head is copied bit for bit from the text LM; the new rows (``embed_init``) are

  - ``random``: the model family's own ``_init_weights`` under the seed (the paper's choice);
  - ``mean``: that random init shifted by the mean text embedding row (an ablation);
  - ``text_rows``: row i is a copy of the text LM's row i (Slam, Maimon et al. 2025: slamkit
    keeps the pretrained LM and calls ``resize_token_embeddings(vocab_size)``, so unit i
    keeps text row i; bos, eos and pad keep the text rows of their ids too);
  - ``mean_cov``: drawn from a normal with the text rows' mean and covariance (what
    transformers' ``resize_token_embeddings(mean_resizing=True)`` names, there with the
    covariance scaled by 1e-9; here the covariance itself).

  An untied head gets the same treatment from the text LM's head; a tied one is the embedding.
* :func:`cold_start` (the paper's COLD-INIT): the same architecture, every weight fresh.

The vocabulary follows the contract's :class:`~twist.contract.VocabLayout`: units ``0..K-1``,
then bos, eos, pad, then alignment padding up to a multiple of 64 that never receives
probability mass. A contract in the text+units layout (speech-text interleaving, as SpiritLM
and Slam's SIMS; twist.lm.text_units) keeps the text vocabulary instead: the warm start copies
the text LM's rows ``[0, V_text)`` (embedding and untied head) bit for bit, and only the rows
of the units and of ``<speech>``/``<text>`` are new, filled by the same ``embed_init`` rule
(``text_rows``: new row j, of unit j or marker j-K, starts as text row j, the units-first
rule for units; ``mean_cov`` draws only the new rows).

Both build the speech LM from the text LM's config with only the vocabulary fields changed,
so each family's quirks are kept by construction and checked in tests:

* OPT: ``project_in``/``project_out`` (OPT-350M: word_embed_proj_dim 512 != hidden 1024)
  are body weights and are kept; the learned positions (with OPT's +2 offset) are kept;
  the embedding is ``word_embed_proj_dim`` wide and tied to the head as in OPT.
* BLOOM: ``word_embeddings_layernorm`` is kept; ALiBi has no weights to move (BLOOM's
  forward takes no ``position_ids``; positions come from the attention mask).
* GPT-NeoX/Pythia: the untied ``embed_out`` head is replaced by a fresh, still untied head.
* LLaMA/SmolLM2: tied embeddings stay tied; RoPE has no weights (``inv_freq`` is recomputed
  from the unchanged config).
* ImageGPT (the image-pretrained ablation, Table 8): its head predicts ``vocab_size - 1``
  classes (no logit for its start token), so the config's ``vocab_size`` is the padded
  speech vocabulary + 1; logits have exactly the padded vocabulary's width and the one extra
  embedding row is never used (bos is the contract's ``<bos>``, not ImageGPT's SOS).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from twist.contract import UnitContract, VocabLayout
from twist.errors import ConfigError
from twist.lm.config import EMBED_INITS
from twist.lm.families import family
from twist.lm.sources import model_class_for

log = logging.getLogger(__name__)

META_KEY = "twist"  # the speech-LM metadata lives at config.twist (see twist.lm.speech_lm)


def config_vocab_size(model_type: str, layout: VocabLayout) -> int:
    """``config.vocab_size`` that gives logits of exactly ``layout.vocab_size`` columns (the
    family table's ``extra_vocab_rows``: ImageGPT's head has one logit fewer than its table)."""
    return layout.vocab_size + family(model_type).extra_vocab_rows


def speech_config(
    text_config: Any,
    contract: UnitContract,
    *,
    init: str,
    embed_init: str = "random",
    text_lm: str | None = None,
) -> Any:
    """The text LM's config with the vocabulary fields set for the speech units.

    Only ``vocab_size`` and the special-token ids change; everything architectural stays, so
    the body is the same shape. The unit contract and provenance are stored in
    ``config.twist`` so the saved directory is self-describing.
    """
    layout = contract.layout
    cfg = copy.deepcopy(text_config)
    text_vocab = int(text_config.vocab_size)
    if layout.has_text:
        check_text_vocab(cfg, layout)
    cfg.vocab_size = config_vocab_size(cfg.model_type, layout)
    cfg.bos_token_id = layout.bos_id
    cfg.eos_token_id = layout.eos_id
    cfg.pad_token_id = layout.pad_id
    for stale in ("unk_token_id", "sep_token_id", "decoder_start_token_id"):
        # text ids: stale once units replace the text vocabulary, still right when it is kept
        if getattr(cfg, stale, None) is not None and not layout.has_text:
            setattr(cfg, stale, None)
    cfg._name_or_path = ""
    cls = model_class_for(cfg)
    cfg.architectures = [cls.__name__]
    setattr(
        cfg,
        META_KEY,
        {
            "contract": contract.to_dict(),
            "layout": layout.describe(),
            "init": init,
            "embed_init": embed_init if init == "warm" else None,
            "text_lm": text_lm,
            "text_vocab_size": text_vocab,
        },
    )
    return cfg


def check_text_vocab(text_config: Any, layout: VocabLayout) -> None:
    """A text+units layout keeps text ids ``[0, V_text)``: the text LM must have those rows, and
    its family a head as wide as its table (ImageGPT's is one narrower, and it has no text)."""
    if family(text_config.model_type).extra_vocab_rows:
        raise ConfigError(f"init.vocab=text+units: the {text_config.model_type} family has no text tokenizer to keep; "
                          "use init.vocab=units")
    if int(text_config.vocab_size) < layout.text_vocab:
        raise ConfigError(f"init.vocab=text+units: the text tokenizer has {layout.text_vocab} ids but the text LM "
                          f"only {text_config.vocab_size} embedding rows; model.tokenizer must be the text LM's own")


def _instantiate(cfg: Any, seed: int, dtype: torch.dtype | None) -> Any:
    """Build a model from its config with the family's own init, deterministically.

    The global RNG is forked so building a model does not shift the caller's random stream.
    """
    cls = model_class_for(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    if dtype is not None:
        model = model.to(dtype)
    return model


def vocab_param_names(model: Any) -> set[str]:
    """State-dict names of the token embedding and output head (tied aliases included)."""
    targets = set()
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is not None:
            targets.update(id(p) for p in mod.parameters(recurse=False))
    return {n for n, p in model.named_parameters(remove_duplicate=False) if id(p) in targets}


def _text_label(text_lm: Any) -> str | None:
    return getattr(text_lm.config, "_name_or_path", None) or None


@torch.no_grad()
def warm_start(
    text_lm: Any,
    contract: UnitContract,
    *,
    embed_init: str = "random",
    seed: int = 0,
    text_label: str | None = None,
    share_body: bool = False,
) -> Any:
    """TWIST: the text LM's body with a new speech-unit embedding table and head.

    The speech LM is laid out on the meta device (no memory, no random init of the body);
    its body then takes the text LM's tensors, and only the embedding table and head are
    allocated and initialised with the family's own init (``_init_weights``) under ``seed``.

    Args:
        text_lm: a pretrained ``transformers`` causal LM (from :func:`twist.lm.sources.load_text_lm`).
        contract: the unit contract; its layout fixes the vocabulary (see :class:`VocabLayout`):
            units only, or text+units (the text rows kept bit for bit, module doc).
        embed_init: ``"random"`` (the paper's: the family's own init), ``"mean"`` (that init
            shifted by the mean of the text LM's embedding rows), ``"text_rows"`` (row i of the
            text LM's table, Slam's) or ``"mean_cov"`` (a normal with the text rows' mean and
            covariance); an untied head likewise from the text LM's head (module doc). In the
            text+units layout they fill the unit and marker rows only.
        seed: seeds the new rows.
        text_label: provenance stored in the config (defaults to the text LM's name or path).
        share_body: ``False``: the body is copied and ``text_lm`` is left untouched. ``True``:
            the speech LM takes the text LM's body tensors themselves (no copy, so one model's
            memory instead of two: what a 7B warm start needs); ``text_lm`` must not be used
            afterwards.

    Returns:
        A model in eval mode (like ``from_pretrained``) whose every tensor other than the
        embedding and head equals the text LM's bit for bit (and, text+units, whose text rows
        of those do too).
    """
    if embed_init not in EMBED_INITS:
        raise ConfigError(f"init.embed_init: {embed_init!r} is not one of {', '.join(EMBED_INITS)}")
    first = next(text_lm.parameters())
    layout = contract.layout
    cfg = speech_config(text_lm.config, contract, init="warm", embed_init=embed_init,
                        text_lm=text_label or _text_label(text_lm))
    with torch.device("meta"):
        model = model_class_for(cfg)(cfg)
    _take_body(model, text_lm, share=share_body)
    _allocate_new_vocab(model, seed=seed, dtype=first.dtype, device=first.device)
    if embed_init == "mean":
        _shift_by_text_mean(model, text_lm)
    elif embed_init == "text_rows":
        _copy_text_rows(model, text_lm, layout)
    elif embed_init == "mean_cov":
        _draw_from_text_mean_cov(model, text_lm, seed=seed, first=layout.unit_offset)
    if layout.has_text:
        _keep_text_rows(model, text_lm, layout)
    model.tie_weights()
    return model.eval()


def _take_body(model: Any, text_lm: Any, *, share: bool) -> None:
    """Give the meta-device speech LM every body tensor of the text LM (all but the vocabulary)."""
    fresh = vocab_param_names(model)
    src_params = dict(text_lm.named_parameters(remove_duplicate=False))
    src_buffers = dict(text_lm.named_buffers(remove_duplicate=False))
    body = [(n, p) for n, p in model.named_parameters(remove_duplicate=False) if n not in fresh]
    buffers = list(model.named_buffers(remove_duplicate=False))
    missing = [n for n, _ in body if n not in src_params] + [n for n, _ in buffers if n not in src_buffers]
    if missing:
        raise ValueError(f"warm start: the text LM lacks body tensors {missing[:5]} (of {len(missing)})")
    for name, t in body + buffers:
        s = src_params[name] if name in src_params else src_buffers[name]
        if s.shape != t.shape:
            raise ValueError(f"warm start: {name} has shape {tuple(s.shape)} in the text LM, {tuple(t.shape)} here")
    for name, _ in body:
        p = src_params[name]
        set_module_tensor(model, name, p if share else torch.nn.Parameter(p.detach().clone(), p.requires_grad))
    for name, _ in buffers:
        b = src_buffers[name]
        set_module_tensor(model, name, b if share else b.clone(), buffer=True)


def _allocate_new_vocab(model: Any, *, seed: int, dtype: torch.dtype, device: torch.device) -> None:
    """The unit embedding table (and an untied head): allocated now, initialised as the family
    initialises them, under ``seed``."""
    new_modules = [model.get_input_embeddings()]
    head = model.get_output_embeddings()
    if head is not None and head is not new_modules[0] and any(p.is_meta for p in head.parameters(recurse=False)):
        new_modules.append(head)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for mod in new_modules:
            if any(p.is_meta for p in mod.parameters(recurse=False)):
                mod.to_empty(device=device, recurse=False)
                model._init_weights(mod)
                mod.to(dtype)
    model.tie_weights()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"warm start left tensors unallocated: {left[:5]}")


@torch.no_grad()
def _shift_by_text_mean(model: Any, text_lm: Any) -> None:
    """``embed_init=mean``: add the mean text embedding row to every new row (and to an untied head)."""
    for new, old in _vocab_pairs(model, text_lm):
        new.weight.add_(old.weight.float().mean(0).to(new.weight.dtype))
        pad = getattr(new, "padding_idx", None)
        if pad is not None:  # keep the family's convention: the padding row is zero
            new.weight[pad].zero_()


def _vocab_pairs(model: Any, text_lm: Any) -> list[tuple[Any, Any]]:
    """``(new, text)`` modules whose rows the embed_init fills: the embedding, and an untied head."""
    emb, head = model.get_input_embeddings(), model.get_output_embeddings()
    pairs = [(emb, text_lm.get_input_embeddings())]
    if head is not None and head.weight is not emb.weight:  # a tied head is the embedding
        pairs.append((head, text_lm.get_output_embeddings()))
    return [(new, old) for new, old in pairs if old is not None]


@torch.no_grad()
def _copy_text_rows(model: Any, text_lm: Any, layout: VocabLayout) -> None:
    """``embed_init=text_rows``: id i (unit, bos, eos, pad) starts as the text LM's row i.

    The rows of the alignment padding past the text vocabulary (ids that never receive
    probability mass) have no text row and keep the family's init. Text+units: the text
    rows are kept anyway; new row j (unit j, then the markers) starts as text row j.
    """
    if layout.has_text:
        _copy_text_rows_to_new_ids(model, text_lm, layout)
        return
    for new, old in _vocab_pairs(model, text_lm):
        n_text = old.weight.shape[0]
        if n_text < layout.n_real:
            raise ConfigError(
                f"init.embed_init=text_rows copies text row i to id i, but the text LM's "
                f"{'embedding' if new is model.get_input_embeddings() else 'head'} has {n_text} rows for "
                f"{layout.n_real} unit and special ids; choose embed_init=random, mean or mean_cov")
        n = min(n_text, new.weight.shape[0])
        new.weight[:n].copy_(old.weight[:n])


@torch.no_grad()
def _copy_text_rows_to_new_ids(model: Any, text_lm: Any, layout: VocabLayout) -> None:
    """Text+units ``text_rows``: the row of unit u is text row u, the markers' are text rows K and
    K+1: what the units-first ``text_rows`` gives unit u, at the unit's new id."""
    n_new = layout.n_units + len(layout.marker_ids)
    for new, old in _vocab_pairs(model, text_lm):
        if old.weight.shape[0] < n_new:
            raise ConfigError(
                f"init.embed_init=text_rows copies text row j to the j-th unit or marker row, but the text LM's "
                f"{'embedding' if new is model.get_input_embeddings() else 'head'} has {old.weight.shape[0]} rows "
                f"for {n_new} units and markers; choose embed_init=random, mean or mean_cov")
        new.weight[layout.unit_offset : layout.unit_offset + n_new].copy_(old.weight[:n_new])


@torch.no_grad()
def _keep_text_rows(model: Any, text_lm: Any, layout: VocabLayout) -> None:
    """Text+units: ids ``[0, V_text)`` keep the text LM's rows bit for bit (embedding and untied head)."""
    n = layout.text_vocab
    for new, old in _vocab_pairs(model, text_lm):
        if old.weight.shape[0] < n:
            raise ConfigError(f"init.vocab=text+units: the text tokenizer has {n} ids but the text LM's table "
                              f"{old.weight.shape[0]} rows")
        new.weight[:n].copy_(old.weight[:n])


def sample_mean_cov(weight: torch.Tensor, n_rows: int, generator: torch.Generator) -> torch.Tensor:
    """``n_rows`` rows drawn from a normal with the mean and covariance of ``weight``'s rows.

    The covariance is the population one (divided by the number of rows), as transformers'
    ``mean_resizing`` computes it; the arithmetic is float64 on the CPU and the result has
    ``weight``'s dtype. A singular covariance (fewer rows than dimensions, repeated rows)
    is sampled through its eigen-decomposition, so the draw stays in the rows' span.
    """
    w = weight.detach().to("cpu", torch.float64)
    mean = w.mean(0)
    centred = w - mean
    cov = centred.T @ centred / w.shape[0]
    factor, info = torch.linalg.cholesky_ex(cov)
    if int(info) != 0:
        vals, vecs = torch.linalg.eigh(cov)
        factor = vecs * vals.clamp(min=0).sqrt()
    z = torch.randn(n_rows, w.shape[1], generator=generator, dtype=torch.float64)
    return (mean + z @ factor.T).to(weight.dtype)


@torch.no_grad()
def _draw_from_text_mean_cov(model: Any, text_lm: Any, *, seed: int, first: int = 0) -> None:
    """``embed_init=mean_cov``: every new row (from id ``first`` on: the text+units layout keeps
    the text rows) from the text rows' normal, the embedding first, then an untied head, from
    one generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    for new, old in _vocab_pairs(model, text_lm):
        rows = sample_mean_cov(old.weight, new.weight.shape[0] - first, generator)
        new.weight[first:].copy_(rows.to(new.weight.device))
        pad = getattr(new, "padding_idx", None)
        if pad is not None:  # keep the family's convention: the padding row is zero
            new.weight[pad].zero_()


def set_module_tensor(model: torch.nn.Module, name: str, value: torch.Tensor, *, buffer: bool = False) -> None:
    """Put ``value`` at dotted ``name`` in ``model`` (a parameter, or a buffer)."""
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    (owner._buffers if buffer else owner._parameters)[leaf] = value


def cold_start(
    text_config: Any,
    contract: UnitContract,
    *,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    text_label: str | None = None,
) -> Any:
    """COLD-INIT: the text LM's architecture with the speech vocabulary, every weight fresh."""
    cfg = speech_config(text_config, contract, init="cold", text_lm=text_label or _text_label_cfg(text_config))
    return _instantiate(cfg, seed, dtype).eval()


def _text_label_cfg(config: Any) -> str | None:
    return getattr(config, "_name_or_path", None) or None


def count_params(model: Any) -> int:
    """Unique parameters (a tied embedding/head counts once)."""
    return sum(p.numel() for p in model.parameters())


def vocab_params(model: Any) -> int:
    seen, n = set(), 0
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is None:
            continue
        for p in mod.parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
    return n


def text_param_count_from_speech(model: Any, text_vocab_size: int) -> int:
    """The text LM's parameter count, derived from the speech LM (same body, other vocab).

    Each embedding/head matrix has ``config.vocab_size + c`` rows (c = 0, or -1 for the
    ImageGPT head), so swapping the vocabulary changes each by ``delta * width`` parameters.
    """
    delta = int(text_vocab_size) - int(model.config.vocab_size)
    seen, n = set(), count_params(model)
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is None:
            continue
        w = mod.weight
        if id(w) in seen:
            continue
        seen.add(id(w))
        n += delta * w.shape[1]
    return n
