"""The device side of a training step: forward + loss (compiled once per kind), and an
optimiser update that skips non-finite gradients without making the host wait.

Forward + loss. ``train.compile=true`` compiles the model's forward *and* the summed token
loss as one graph (the fp32 upcast of the logits and the cross-entropy fuse into it). The
mask is built outside the graph, per micro-batch (twist.lm.attention.AttentionPlan), so
its only inputs are tensors of fixed shape: ``[micro_batch, max_tokens]`` ids, positions
and targets, plus the mask. Each kind of call (training or validation; document mask or
plain causal) has its own compiled entry point, so none of them recompiles when the run
moves between them (tested: zero recompiles after warm-up). That holds only while the
graph has no break: a break makes dynamo compile the frames below it (``_forward_loss``, the
model's forwards) on their own, and those frames are shared by every kind. So the step keeps
one known break out: an OPT decoder with ``layerdrop`` 0 is run with its own ``training``
flag off (:func:`inert_layerdrop_decoders`).

Updates. The gradient norm decides whether a step is applied (a NaN or inf gradient leaves
weights and optimiser state untouched, twist.train.trainer). Reading it on the host makes
the host wait for the whole backward every step. With a fused AdamW (the default on CUDA)
the decision stays on the device: the optimiser's ``found_inf`` input (the hook AMP's
gradient scaler uses) makes the fused kernel skip the update and leave its step count
alone, and the norms are read in one go when the trainer next needs numbers on the host
(a log, validation or checkpoint step). Other optimisers read the norm every step.

Validation. :func:`perplexity` runs the same forward + loss over a validation set, all ranks
together.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from twist.contract import VocabLayout
from twist.dist import all_reduce_sum
from twist.errors import Diverged
from twist.lm.attention import AttentionPlan
from twist.lm.packing import Batch, token_loss_sum

log = logging.getLogger("twist.train")


def _forward_loss(model: torch.nn.Module, layout: VocabLayout, autocast: torch.dtype | None, device_type: str,
                  input_ids: torch.Tensor, attention_mask: Any, position_ids: torch.Tensor | None,
                  targets: torch.Tensor) -> torch.Tensor:
    ctx = torch.autocast(device_type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    with ctx:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                       use_cache=False).logits
    return token_loss_sum(logits, targets, layout)


# One entry point per kind of call. Each has its own code object, hence its own compile
# cache: switching between them is not a recompile, and each is compiled at most once.
def _train_document(*args: Any) -> torch.Tensor:
    return _forward_loss(*args)


def _train_causal(*args: Any) -> torch.Tensor:
    return _forward_loss(*args)


def _train_padded(*args: Any) -> torch.Tensor:
    return _forward_loss(*args)


def _eval_document(*args: Any) -> torch.Tensor:
    return _forward_loss(*args)


def _eval_causal(*args: Any) -> torch.Tensor:
    return _forward_loss(*args)


def _eval_padded(*args: Any) -> torch.Tensor:
    return _forward_loss(*args)


_ENTRY_POINTS: dict[tuple[bool, str], Callable[..., torch.Tensor]] = {
    (True, "document"): _train_document, (True, "causal"): _train_causal, (True, "padded"): _train_padded,
    (False, "document"): _eval_document, (False, "causal"): _eval_causal, (False, "padded"): _eval_padded,
}


def inert_layerdrop_decoders(model: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    """The OPT decoders in ``model`` whose LayerDrop probability is 0.

    transformers 5.17 (the GPU image's version) draws a LayerDrop number in every training
    forward of an OPT decoder and branches on it, even when ``layerdrop`` is 0; later versions
    skip the draw then (5.24 does). Branching on a tensor breaks a compiled graph at every
    layer. In 5.17 and 5.24 the decoder's own ``training`` flag gates nothing else in a
    forward with ``use_cache=False`` (its layers, their dropout and activation checkpointing
    read their own flags), so with it off the decoder computes the same thing, draws nothing,
    and compiles as one graph on both.
    """
    try:
        from transformers.models.opt.modeling_opt import OPTDecoder
    except ImportError:
        return ()
    return tuple(m for m in model.modules() if isinstance(m, OPTDecoder) and not getattr(m, "layerdrop", 0))


class ForwardLoss:
    """``batch -> summed next-token loss`` (a 0-d tensor on the batch's device).

    Args:
        model: the model as the trainer runs it (possibly DDP-wrapped).
        layout: the unit vocabulary layout (invalid rows masked in the loss).
        attention: the run's attention plan (mask form per batch).
        autocast: autocast dtype, or ``None`` for none.
        compile: compile forward + loss with ``torch.compile``.
        backend: the ``torch.compile`` backend (``inductor``; ``aot_eager`` checks graphs without
            generating kernels).
    """

    def __init__(self, model: torch.nn.Module, layout: VocabLayout, attention: AttentionPlan, *,
                 autocast: torch.dtype | None = None, compile: bool = False, backend: str = "inductor") -> None:
        self.model = model
        self.layout = layout
        self.attention = attention
        self.autocast = autocast
        self.compile = compile
        self.backend = backend
        self._fns: dict[tuple[bool, str], Callable[..., torch.Tensor]] = {}
        self._inert_layerdrop = inert_layerdrop_decoders(model)

    def _fn(self, key: tuple[bool, str]) -> Callable[..., torch.Tensor]:
        fn = self._fns.get(key)
        if fn is None:
            fn = _ENTRY_POINTS[key]
            if self.compile:
                fn = torch.compile(fn, backend=self.backend)
            self._fns[key] = fn
        return fn

    def __call__(self, batch: Batch) -> torch.Tensor:
        inputs = self.attention.model_inputs(batch)  # outside the compiled region
        training = torch.is_grad_enabled() and self.model.training
        for decoder in self._inert_layerdrop:  # every call: model.train() turns it back on
            decoder.training = False
        fn = self._fn((training, self.attention.batch_kind(batch)))
        return fn(self.model, self.layout, self.autocast, batch.input_ids.device.type, inputs["input_ids"],
                  inputs["attention_mask"], inputs["position_ids"], batch.targets)


@torch.no_grad()
def perplexity(forward_loss: ForwardLoss, batches: Iterable[tuple[Batch, bool]], device: torch.device) -> float:
    """Token-level perplexity over ``batches``, all ranks together.

    ``batches`` yields ``(batch, counted)`` pairs (twist.train.data.valid_batches): a batch that
    only pads a rank's share to the others' length is run, so every rank makes the same calls,
    but not counted.
    """
    total, count = 0.0, 0.0
    for b, counted in batches:
        loss = float(forward_loss(b.to(device)))
        if counted:
            total += loss
            count += b.n_targets
    total, count = all_reduce_sum([total, count], device)
    return math.exp(total / max(1.0, count))


def supports_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer.step`` honours a ``found_inf`` tensor (fused Adam/AdamW)."""
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


class GuardedUpdate:
    """Clip gradients, then apply the optimiser step unless the global norm is NaN/inf.

    Skipped steps leave weights and optimiser state as they are. More than ``limit``
    skipped in a row raise :class:`twist.errors.Diverged` (the run stops; its last
    checkpoint holds finite weights).

    Args:
        params: the parameters to clip (the trainer's model).
        optimizer: the optimiser.
        clip: max gradient norm; 0 = no clipping (the norm is still computed).
        limit: ``train.skip_nonfinite``.
        defer: keep the decision on the device (needs :func:`supports_found_inf`); the
            norms are then read by :meth:`settle`.
        in_a_row: non-finite steps in a row so far (a resumed run's streak).
    """

    def __init__(self, params: Callable[[], Any], optimizer: torch.optim.Optimizer, *, clip: float, limit: int,
                 defer: bool, in_a_row: int = 0) -> None:
        if defer and not supports_found_inf(optimizer):
            raise ValueError("deferred non-finite checks need an optimiser with found_inf support (fused AdamW)")
        self.params = params
        self.optimizer = optimizer
        self.clip = clip if clip > 0 else math.inf
        self.limit = limit
        self.defer = defer
        self.in_a_row = in_a_row
        self.skipped = 0  # skipped steps seen by settle/step, to add to the run's count
        self._pending: list[tuple[int, torch.Tensor]] = []

    def __call__(self, step: int) -> torch.Tensor:
        """Update for optimiser step ``step`` (1-based); returns the gradient norm (0-d tensor)."""
        norm = torch.nn.utils.clip_grad_norm_(self.params(), self.clip)
        if hasattr(norm, "full_tensor"):  # a DTensor under FSDP2: every rank takes the same global value
            norm = norm.full_tensor()
        if self.defer:
            self.optimizer.found_inf = (~torch.isfinite(norm)).to(torch.float32)
            self.optimizer.grad_scale = None
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf, self.optimizer.grad_scale
            self._pending.append((step, norm.detach()))
            return norm
        value = float(norm)
        if math.isfinite(value):
            self.optimizer.step()
        self._count(step, value)
        return norm

    def settle(self) -> None:
        """Read the deferred norms (one host wait), count skipped steps, stop on divergence."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        values = torch.stack([n for _, n in pending]).double().cpu().tolist()
        for (step, _), value in zip(pending, values):
            self._count(step, value)

    def _count(self, step: int, value: float) -> None:
        if math.isfinite(value):
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.skipped += 1
        if self.in_a_row > self.limit:
            raise Diverged(
                f"step {step}: gradient norm is {value} for {self.in_a_row} step(s) in a row "
                f"(train.skip_nonfinite={self.limit}); stopping. checkpoints/last holds the last saved finite weights; "
                "lower the learning rate or check the data, then resume"
            )
        log.warning("step %d: gradient norm is %s; update skipped (%d in a row)", step, value, self.in_a_row)

    def take_skipped(self) -> int:
        """Skipped steps counted since the last call (the trainer adds them to its state)."""
        n, self.skipped = self.skipped, 0
        return n
