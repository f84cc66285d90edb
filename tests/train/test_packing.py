"""Packing: windows respect max_tokens and cover every utterance once; packed == padded loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.model_shapes import tiny_speech_lm
from twist.contract import VocabLayout
from twist.lm.packing import (
    IGNORE_INDEX,
    document_lengths,
    pack_sequences,
    pad_documents,
    plan_windows,
    token_loss_sum,
    utterance_documents,
)


def test_plan_covers_every_token_once_within_max_tokens():
    rng = np.random.default_rng(0)
    lengths = [(i, int(n)) for i, n in enumerate(rng.integers(0, 150, size=200))]
    windows = list(plan_windows(lengths, 64))
    seen: dict[int, list[tuple[int, int]]] = {}
    for w in windows:
        assert sum(p.stop - p.start for p in w) <= 64
        for p in w:
            seen.setdefault(p.index, []).append((p.start, p.stop))
    for i, n in lengths:
        spans = sorted(seen[i])
        assert spans[0][0] == 0 and spans[-1][1] == n + 2  # bos + units + eos, nothing lost
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    # greedy packing: a window is closed only when the next document does not fit
    for w, nxt in zip(windows, windows[1:]):
        assert sum(p.stop - p.start for p in w) + (nxt[0].stop - nxt[0].start) > 64


def test_long_utterance_is_cut_and_keeps_bos_eos():
    layout = VocabLayout(20)
    docs = utterance_documents(np.arange(20).repeat(4) % 20, layout, 30)
    assert [len(d) for d in docs] == document_lengths(80, 30) == [30, 30, 22]
    assert docs[0][0] == layout.bos_id and docs[-1][-1] == layout.eos_id
    assert np.concatenate(docs)[1:-1].tolist() == (np.arange(20).repeat(4) % 20).tolist()


def test_packed_batch_targets_and_positions():
    layout = VocabLayout(20)
    a, b = layout.encode(np.array([1, 2, 3])), layout.encode(np.array([4, 5]))
    batch = pack_sequences([[a, b]], layout, max_tokens=12)
    ids, tgt, pos = batch.input_ids[0].tolist(), batch.targets[0].tolist(), batch.position_ids[0].tolist()
    assert ids[:9] == [20, 1, 2, 3, 21, 20, 4, 5, 21] and ids[9:] == [layout.pad_id] * 3
    # the eos of a document does not predict the next document's bos
    assert tgt[:9] == [1, 2, 3, 21, IGNORE_INDEX, 4, 5, 21, IGNORE_INDEX]
    assert pos[:9] == [0, 1, 2, 3, 4, 0, 1, 2, 3]
    m = batch.model_inputs()["attention_mask"][0, 0]
    assert not m[6, 2] and m[6, 5] and not m[5, 6]  # no attention across the boundary, causal inside
    assert batch.n_tokens == 9


@pytest.mark.parametrize("family", ["opt", "llama", "gpt_neox"])
def test_packed_equals_unpacked_loss(family, contract):
    """The same utterances, packed into windows or one per padded row, give the same loss."""
    layout = contract.layout
    model = tiny_speech_lm(family, contract).eval()
    model.set_attn_implementation("sdpa")
    rng = np.random.default_rng(1)
    utts = [rng.integers(0, contract.n_units, size=int(n)) for n in rng.integers(1, 20, size=9)]
    docs = [layout.encode(u) for u in utts]
    windows, cur = [], []
    for d in docs:
        if sum(map(len, cur)) + len(d) > 48:
            windows.append(cur)
            cur = []
        cur.append(d)
    windows.append(cur)
    assert len(windows) < len(docs)  # several documents share a window
    packed = pack_sequences(windows, layout, max_tokens=48)
    padded = pad_documents(docs, layout)
    with torch.no_grad():
        lp = token_loss_sum(model(**packed.model_inputs()).logits, packed.targets, layout)
        lu = token_loss_sum(model(**padded.model_inputs()).logits, padded.targets, layout)
    assert packed.n_targets == padded.n_targets == sum(len(d) - 1 for d in docs)
    assert torch.allclose(lp / packed.n_targets, lu / padded.n_targets, atol=1e-5, rtol=0)
    # and without the document mask the packed loss would differ (the test can fail)
    leaky = dict(packed.model_inputs())
    leaky["attention_mask"] = (packed.input_ids != layout.pad_id).long()
    with torch.no_grad():
        ll = token_loss_sum(model(**leaky).logits, packed.targets, layout)
    assert not torch.allclose(ll, lp, atol=1e-4)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_trainer_packed_equals_padded_for_every_attention_implementation(attn, make_cfg, unit_data, tmp_path):
    """train.attn_implementation=eager adds the mask to the scores: a bool mask would add 0/1 and leak."""
    from twist.train.trainer import Trainer

    tr = Trainer(make_cfg(unit_data, tmp_path / "run", attn_implementation=attn))
    assert tr.objective.packing == "packed"
    assert tr.model.config._attn_implementation == attn
    tr.model.eval()
    windows = [tr.stream._next_window()[1] for _ in range(3)]
    assert sum(len(w) for w in windows) > len(windows)  # documents share windows
    packed = tr.stream.make_batch(windows)
    docs = [tr.stream._read(p) for w in windows for p in w]
    padded = pad_documents(docs, tr.contract.layout)
    with torch.no_grad():
        lp = tr.objective.forward_loss(packed) / packed.n_targets
        lu = tr.objective.forward_loss(padded) / padded.n_targets
    assert torch.allclose(lp, lu, atol=1e-5, rtol=0), (float(lp), float(lu))


def test_flash_attention_never_packs_without_a_document_mask():
    from twist.lm.packing import packing_mode

    assert packing_mode("llama", "auto", "sdpa") == "packed"
    assert packing_mode("llama", "auto", "flash_attention_2") == "padded"
    assert packing_mode("llama", "padded", "flash_attention_2") == "padded"
    with pytest.raises(ValueError, match="attn_implementation=flash_attention_2.*across utterances"):
        packing_mode("opt", "packed", "flash_attention_2")
