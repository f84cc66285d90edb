"""The device side of a step: compiled forward + loss without recompiles or graph breaks, and
non-finite updates skipped on the device exactly as the host-side check skips them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.train.conftest import tiny_family_model
from twist.lm.attention import FLEX, AttentionPlan, plan_attention, register_flex
from twist.lm.packing import pack_sequences
from twist.train.step import ForwardLoss, _forward_loss
from twist.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")



@pytest.mark.slow
@pytest.mark.parametrize("family", ["opt", "llama", "gpt_neox", "bloom"])
def test_forward_and_loss_trace_as_one_graph(family, contract):
    """Zero graph breaks in forward + loss: under the flex BlockMask for the flex families
    (no grad: flex has no CPU backward), under the dense additive mask with grad for BLOOM."""
    layout = contract.layout
    model = tiny_family_model(family, contract)
    rng = np.random.default_rng(0)
    docs = [layout.encode(rng.integers(0, contract.n_units, size=n)) for n in (10, 20, 5, 30)]
    batch = pack_sequences([docs[:2], docs[2:]], layout, max_tokens=64)
    if family == "bloom":
        plan = plan_attention(model, "auto", "auto", device=torch.device("cpu"), announce=False)
        grad = torch.enable_grad()
        model.train()
    else:
        register_flex()
        model.set_attn_implementation(FLEX)
        plan = AttentionPlan(FLEX, "packed", "block", None, "test")
        grad = torch.no_grad()
        model.eval()
    inputs = plan.model_inputs(batch)
    torch._dynamo.reset()
    with grad:
        e = torch._dynamo.explain(_forward_loss)(model, layout, None, "cpu", inputs["input_ids"],
                                                  inputs["attention_mask"], inputs["position_ids"], batch.targets)
    assert e.graph_break_count == 0, [r.reason for r in e.break_reasons]
    assert e.graph_count == 1


@pytest.mark.parametrize("family", ["opt", "llama"])
def test_compiled_training_moves_between_whole_and_packed_rows_without_recompiling(family, contract):
    """A compiled training forward + loss (dense masks, as on CPU) meets rows that are each one
    whole document (no mask: the model's causal path) first, then packed rows (the document
    mask). The packed kind compiles its own entry point: a first compile, not a recompile, so
    with dynamo's error_on_recompile set from the second batch on, nothing raises, each kind
    has one graph and no graph breaks. (transformers 5.17's OPT decoder drew a LayerDrop
    number in every training forward even at layerdrop 0; branching on it broke the graph at
    every layer, the pieces were compiled as frames shared by both kinds, and the second kind
    recompiled them.)"""
    from torch._dynamo.utils import counters

    layout = contract.layout
    model = tiny_family_model(family, contract).train()
    plan = plan_attention(model, "auto", "auto", device=torch.device("cpu"), announce=False)
    rng = np.random.default_rng(0)

    def doc(n):
        return layout.encode(rng.integers(0, contract.n_units, size=n - 2))

    whole = pack_sequences([[doc(32)], [doc(32)]], layout, max_tokens=32)
    packed = pack_sequences([[doc(10), doc(12)], [doc(20)]], layout, max_tokens=32)
    assert plan.batch_kind(whole) == "causal" and plan.batch_kind(packed) == "document"
    torch._dynamo.reset()
    counters.clear()
    forward_loss = ForwardLoss(model, layout, plan, compile=True, backend="aot_eager")
    forward_loss(whole).backward()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for batch in (packed, whole, packed):
            forward_loss(batch).backward()
    assert counters["stats"]["unique_graphs"] == 2
    assert not counters["graph_break"], dict(counters["graph_break"])


@pytest.mark.slow
def test_compiled_step_does_not_recompile_after_warm_up(make_cfg, unit_data, tmp_path):
    """train.compile=true: the first training step and the first validation compile; after
    that, more steps and another validation compile nothing (dynamo would raise)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    cfg = make_cfg(unit_data, tmp_path / "run", compile=True, compile_backend="aot_eager", max_steps=6,
                   valid_every=0, save_every=0)
    trainer = Trainer(cfg)
    assert trainer.objective.forward_loss.compile
    first = trainer.train_step()
    assert math.isfinite(float(first["loss"]))
    trainer.validate()
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 2  # one training graph, one validation graph
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(4):
            trainer.train_step()
        trainer.validate()
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["graph_break"], dict(counters["graph_break"])


def test_deferred_nonfinite_skip_equals_the_host_side_skip(make_cfg, unit_data, tmp_path):
    """Fused AdamW: the skip is decided on the device (found_inf) and the norms are read at the
    next log step. Weights and optimiser state after a NaN step are exactly those of the
    host-side check, the skip is counted at the log step, and too many in a row still stop the
    run, naming the step."""
    def trainer(out, defer):
        cfg = make_cfg(unit_data, out, max_steps=10, valid_every=0, save_every=0, log_every=3, skip_nonfinite=1)
        cfg["optim"]["fused"] = True
        tr = Trainer(cfg)
        assert tr.update.defer  # fused: deferred by default
        tr.update.defer = defer
        real, poison = tr.objective.forward_loss, {2}

        def loss_sum(batch):
            ls = real(batch)
            return ls * float("nan") if tr.state.step + 1 in poison else ls

        tr.objective.forward_loss = loss_sum
        return tr, poison

    ref, _ = trainer(tmp_path / "host", defer=False)  # run first: the two share torch's RNG (dropout)
    for step in (1, 2, 3):
        ref.train_step()
        if step == 2:
            assert ref.state.skipped_steps == 1
    want = {k: v.clone() for k, v in ref.model.state_dict().items()}
    tr, poison = trainer(tmp_path / "device", defer=True)
    tr.train_step()
    before = {k: v.clone() for k, v in tr.model.state_dict().items()}
    opt_before = {k: v.clone() for k, v in tr.optimizer.state[next(iter(tr.model.parameters()))].items()}
    m = tr.train_step()  # step 2: NaN, skipped on the device
    assert math.isnan(float(m["grad_norm"]))
    assert tr.state.skipped_steps == 0  # not read yet: step 2 is no log step
    assert all(torch.equal(v, before[k]) for k, v in tr.model.state_dict().items())
    opt_after = tr.optimizer.state[next(iter(tr.model.parameters()))]
    assert all(torch.equal(opt_after[k], v) for k, v in opt_before.items())  # moments and step count too
    tr.train_step()  # step 3: a log step, the norms are read
    assert tr.state.skipped_steps == 1
    for k, v in tr.model.state_dict().items():
        assert torch.equal(v, want[k]), k  # bit-identical to the host-side decision
    poison.update({4, 5})
    tr.train_step()  # step 4: skipped, one in a row
    tr.train_step()  # step 5: two in a row, but not read until step 6
    with pytest.raises(FloatingPointError, match=r"step 5: gradient norm is nan for 2 step\(s\) in a row"):
        tr.train_step()
