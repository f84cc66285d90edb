"""Document masks in every form give the same model: flex BlockMask == dense mask == padded rows.

Flex attention has no CPU backward in torch 2.11-2.13, so on CPU the flex path is checked in
the forward (loss and per-token logits); the gradient equivalence is checked for the dense
packed path here, and for flex on GPU by benchmarks/gpu_suite.py (section ``correctness``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.train.conftest import tiny_family_model
from twist.contract import VocabLayout
from twist.lm.attention import (
    FLEX,
    alibi_slopes,
    causal_block_mask,
    document_alibi,
    document_block_mask,
    plan_attention,
)
from twist.lm.packing import document_mask, pack_sequences, pad_documents, token_loss_sum

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


def _windows(layout: VocabLayout, n_units: int, max_tokens: int, seed: int = 1, n: int = 14):
    """Random utterances laid greedily into windows, as the trainer's stream does."""
    rng = np.random.default_rng(seed)
    docs = [layout.encode(rng.integers(0, n_units, size=int(k))) for k in rng.integers(1, 40, size=n)]
    windows, cur = [], []
    for d in docs:
        if sum(map(len, cur)) + len(d) > max_tokens:
            windows.append(cur)
            cur = []
        cur.append(d)
    windows.append(cur)
    return docs, windows


def _loss(model, plan, batch, layout):
    logits = model(**plan.model_inputs(batch), use_cache=False).logits
    return token_loss_sum(logits, batch.targets, layout) / batch.n_targets, logits


def test_block_mask_is_the_dense_document_mask():
    """Every tile the BlockMask skips is empty in the dense mask, every tile it calls full is
    all-True, and its element rule reproduces the dense mask, for rows of several lengths,
    padding, a document spanning tiles, and T not a multiple of the tile."""
    from torch.nn.attention.flex_attention import create_mask

    rng = np.random.default_rng(0)
    t, block = 300, 32
    seg = np.zeros((3, t), dtype=np.int64)
    for r in range(3):
        at, d = 0, 1
        while True:
            n = int(rng.integers(1, 120)) if r < 2 else 90
            if at + n > t - (25 if r == 0 else 0):
                break
            seg[r, at : at + n] = d
            at, d = at + n, d + 1
    seg = torch.from_numpy(seg)
    dense = document_mask(seg)[:, 0]  # [B, T, T]
    bm = document_block_mask(seg, block_size=block)
    assert torch.equal(create_mask(bm.mask_mod, 3, 1, t, t, device="cpu")[:, 0], dense)
    nb = -(-t // block)
    padded = torch.nn.functional.pad(dense, (0, nb * block - t, 0, nb * block - t))
    tiles = padded.view(3, nb, block, nb, block)
    any_ = tiles.any(4).any(2)
    all_ = tiles.all(4).all(2)
    listed = torch.zeros(3, nb, nb, dtype=torch.bool)
    full = torch.zeros(3, nb, nb, dtype=torch.bool)
    for b in range(3):
        for q in range(nb):
            listed[b, q, bm.kv_indices[b, 0, q, : bm.kv_num_blocks[b, 0, q]].long()] = True
            full[b, q, bm.full_kv_indices[b, 0, q, : bm.full_kv_num_blocks[b, 0, q]].long()] = True
    assert not (listed & full).any()
    assert torch.equal(listed | full, any_)  # nothing allowed is skipped, nothing empty is visited
    assert not (full & ~all_).any()  # a full tile really is all-True
    assert full.sum() > 0 and (all_[:, :-1, :-1] & ~full[:, :-1, :-1]).sum() == 0  # and complete tiles are used

    # the by-key-tile lists (backward) equal those flex would derive from the by-query-tile lists
    from torch.nn.attention.flex_attention import BlockMask

    ref = BlockMask.from_kv_blocks(bm.kv_num_blocks, bm.kv_indices, bm.full_kv_num_blocks, bm.full_kv_indices,
                                   BLOCK_SIZE=block, mask_mod=bm.mask_mod, seq_lengths=(t, t))
    for name in ("q_num_blocks", "q_indices", "full_q_num_blocks", "full_q_indices"):
        assert torch.equal(getattr(bm, name), getattr(ref, name)), name

    causal = causal_block_mask(2, t, "cpu", block_size=block)
    ones = torch.ones(2, t, dtype=torch.long)
    assert torch.equal(create_mask(causal.mask_mod, 2, 1, t, t, device="cpu")[:, 0], document_mask(ones)[:, 0])
    assert torch.equal(causal.to_dense(), document_block_mask(ones, block_size=block).to_dense())


@pytest.mark.parametrize("family", ["opt", "llama", "gpt_neox", "bloom", "qwen2"])
def test_every_mask_form_gives_the_padded_loss_and_gradients(family, contract):
    """fp32: flex-masked packed loss == dense-mask packed loss == padded loss within 1e-5, and
    the dense packed gradients equal the padded ones (flex: no CPU backward, see module doc)."""
    layout = contract.layout
    model = tiny_family_model(family, contract).train()
    docs, windows = _windows(layout, contract.n_units, 96)
    assert len(windows) < len(docs)
    packed = pack_sequences(windows, layout, max_tokens=96)
    padded = pad_documents(docs, layout)

    dense_plan = plan_attention(model, "sdpa", "packed", device=CPU, announce=False)
    assert dense_plan.packing == "packed" and dense_plan.mask in ("bool", "additive")
    if family == "bloom":
        assert dense_plan.mask == "additive"  # BLOOM adds the mask to its scores
    padded_plan = plan_attention(model, "sdpa", "padded", device=CPU, announce=False)

    def grads(plan, batch):
        model.zero_grad(set_to_none=True)
        loss, _ = _loss(model, plan, batch, layout)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    lp, gp = grads(dense_plan, packed)
    lu, gu = grads(padded_plan, padded)
    assert packed.n_targets == padded.n_targets
    assert torch.allclose(lp, lu, atol=1e-5, rtol=0), (float(lp), float(lu))
    assert gp.keys() == gu.keys() and len(gp) > 4
    for n in gp:
        assert torch.allclose(gp[n], gu[n], atol=1e-5, rtol=1e-4), n

    if family == "bloom":  # no flex for BLOOM: it never dispatches through the attention registry
        with pytest.raises(ValueError, match="does not dispatch attention"):
            plan_attention(model, "flex", "packed", device=torch.device("cuda"), announce=False)
        return
    # flex on CPU: forward only (the plan refuses to train with it there)
    with pytest.raises(ValueError, match="no flex-attention backward on CPU"):
        plan_attention(model, "flex", "packed", device=CPU, announce=False)
    from twist.lm.attention import AttentionPlan, register_flex

    register_flex()
    model.set_attn_implementation(FLEX)
    flex_plan = AttentionPlan(FLEX, "packed", "block", None, "test")
    model.eval()
    with torch.no_grad():
        lf, logits_f = _loss(model, flex_plan, packed, layout)
        model.set_attn_implementation("sdpa")
        ld, logits_d = _loss(model, dense_plan, packed, layout)
        lu2, _ = _loss(model, padded_plan, padded, layout)
    assert torch.allclose(lf, ld, atol=1e-5, rtol=0) and torch.allclose(lf, lu2, atol=1e-5, rtol=0)
    real = packed.segments > 0
    assert torch.allclose(logits_f[real], logits_d[real], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["opt", "llama", "bloom"])
def test_no_token_sees_another_document(family, contract):
    """Change one document of a window: the logits of every other document stay the same,
    under the flex BlockMask (forward) and under the dense mask (forward and gradients)."""
    layout = contract.layout
    model = tiny_family_model(family, contract).eval()
    _, windows = _windows(layout, contract.n_units, 96, seed=3)
    window = max(windows, key=len)
    assert len(window) >= 3
    changed = [d.copy() for d in window]
    changed[1][1:-1] = (changed[1][1:-1] + 7) % contract.n_units  # same length, other units
    a = pack_sequences([window], layout, max_tokens=96)
    b = pack_sequences([changed], layout, max_tokens=96)
    others = (a.segments > 0) & (a.segments != 2)
    plans = [plan_attention(model, "sdpa", "packed", device=CPU, announce=False)]
    if family != "bloom":
        from twist.lm.attention import AttentionPlan, register_flex

        register_flex()
        plans.append(AttentionPlan(FLEX, "packed", "block", None, "test"))
    for plan in plans:
        if plan.implementation == FLEX:
            model.set_attn_implementation(FLEX)
        with torch.no_grad():
            la = model(**plan.model_inputs(a)).logits
            lb = model(**plan.model_inputs(b)).logits
        assert torch.equal(la[others], lb[others]), plan.implementation
        assert not torch.allclose(la[a.segments == 2], lb[a.segments == 2])  # the changed document did change
    # gradients: the loss of the other documents does not depend on the changed document's embeddings
    model.train()
    emb = model.get_input_embeddings()
    x = emb(a.input_ids).detach().requires_grad_(True)
    inputs = plans[0].model_inputs(a)
    inputs.pop("input_ids")
    logits = model(inputs_embeds=x, **inputs).logits
    token_loss_sum(logits, a.targets.masked_fill(~others, -100), layout).backward()
    assert x.grad[a.segments == 2].abs().max() == 0
    assert x.grad[others].abs().max() > 0


def test_document_alibi_matches_bloom_for_single_documents():
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    for heads in (1, 4, 6, 12):
        ones = torch.ones(3, 50, dtype=torch.long)
        want = build_alibi_tensor(ones, heads, torch.float32)
        got = document_alibi(document_mask(ones), heads, torch.float32)
        assert torch.equal(got, want), heads
        assert alibi_slopes(heads).shape == (heads,)
    # two documents: positions restart at the second
    seg = torch.tensor([[1, 1, 1, 2, 2, 0]])
    got = document_alibi(document_mask(seg, dtype=torch.float32), 1, torch.float32)
    assert (got[0, 0] / alibi_slopes(1)[0]).tolist() == [0, 1, 2, 0, 1, 0]


def test_auto_choice_per_device_and_family(contract, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="twist.lm")
    cuda = torch.device("cuda")
    for family in ("opt", "llama", "gpt_neox"):
        m = tiny_family_model(family, contract)
        p = plan_attention(m, "auto", "auto", device=CPU)
        assert (p.implementation, p.packing, p.mask) == ("sdpa", "packed", "bool")
        assert "no flex-attention backward" in p.reason
        p = plan_attention(m, "auto", "auto", device=cuda)  # nothing runs: the plan only sets the kernel
        assert (p.implementation, p.packing, p.mask) == (FLEX, "packed", "block")
        assert m.config._attn_implementation == FLEX
    m = tiny_family_model("bloom", contract)
    p = plan_attention(m, "auto", "auto", device=cuda)
    assert (p.implementation, p.packing, p.mask) == ("eager", "packed", "additive")
    m = tiny_family_model("opt", contract, attention_dropout=0.1)
    p = plan_attention(m, "auto", "auto", device=cuda)
    assert p.implementation == "sdpa" and "dropout" in p.reason
    with pytest.raises(ValueError, match="attention dropout is 0.1"):
        plan_attention(m, "flex", "auto", device=cuda)
    with pytest.raises(ValueError, match="must be one of auto, flex"):
        plan_attention(m, "fast", "auto", device=cuda)
    assert sum("attention: " in r.getMessage() for r in caplog.records) == 8  # one line per choice


def test_flex_model_exports_and_reloads_without_twist(contract, tmp_path):
    """The registered implementation is a run-time choice: a saved model does not need it."""
    import json

    from twist.lm import load_speech_lm, save_speech_lm

    m = tiny_family_model("opt", contract)
    plan_attention(m, "flex", "packed", device=torch.device("cuda"), announce=False)
    save_speech_lm(m, tmp_path / "lm", contract)
    cfg = json.loads((tmp_path / "lm" / "config.json").read_text())
    assert FLEX not in json.dumps(cfg)
    loaded, _ = load_speech_lm(tmp_path / "lm")
    assert loaded.config._attn_implementation != FLEX


@pytest.mark.parametrize("family", ["opt", "llama", "gpt_neox", "bloom"])
def test_whole_single_document_rows_take_the_plain_causal_path(family, contract):
    """Full windows of one document each (chunked long-form data) need no document mask: under
    SDPA the batch passes none, so SDPA can use its causal kernel, as a plain loop's full rows do.
    Loss and gradients equal the dense document mask's. BLOOM keeps its additive mask (ALiBi)."""
    layout = contract.layout
    model = tiny_family_model(family, contract).train()
    rng = np.random.default_rng(3)
    t = 48
    windows = [[layout.encode(rng.integers(0, contract.n_units, size=t - 2))] for _ in range(3)]
    batch = pack_sequences(windows, layout, max_tokens=t)
    assert batch.single_documents
    plan = plan_attention(model, "sdpa", "packed", device=CPU, announce=False)
    inputs = plan.model_inputs(batch)
    if family == "bloom":
        assert inputs["attention_mask"] is not None and plan.batch_kind(batch) == "document"
        return
    assert inputs["attention_mask"] is None and plan.batch_kind(batch) == "causal"

    def grads(mask):
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids,
                       use_cache=False).logits
        loss = token_loss_sum(logits, batch.targets, layout) / batch.n_targets
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    lc, gc = grads(None)
    ld, gd = grads(document_mask(batch.segments))
    assert torch.allclose(lc, ld, atol=1e-6, rtol=0)
    for n in gd:
        assert torch.allclose(gc[n], gd[n], atol=1e-6, rtol=1e-5), n
