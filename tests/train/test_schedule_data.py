"""Schedules follow the recipe; the data stream is deterministic, sharded and resumable."""

from __future__ import annotations

import math

import pytest
import torch

from twist.train.data import TrainStream, open_split
from twist.train.schedule import LRSchedule


def _opt():
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_inverse_sqrt_warmup_then_decay_toward_final():
    s = LRSchedule(_opt(), kind="inverse_sqrt", lr_max=1e-3, lr_final=1e-4, warmup_steps=100)
    lrs = [s.lr_at(i) for i in range(100_000)]
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(lrs[:99], lrs[1:100]))  # linear warmup
    assert all(a > b for a, b in zip(lrs[100:], lrs[101:]))  # then strictly decreasing
    assert lrs[399] == pytest.approx(1e-4 + 9e-4 * math.sqrt(100 / 400))
    assert 1e-4 < lrs[-1] < 1.3e-4  # approaches lr_final, never below


def test_cosine_reaches_final_at_total_steps_and_schedule_sets_optimizer():
    opt = _opt()
    s = LRSchedule(opt, kind="cosine", lr_max=1e-4, lr_final=1e-5, warmup_steps=500, total_steps=75_000)
    assert s.lr_at(499) == pytest.approx(1e-4)
    assert s.lr_at(74_999) == pytest.approx(1e-5)
    assert s.lr_at(37_749) == pytest.approx(5.5e-5, rel=1e-3)
    for _ in range(10):
        s.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(s.lr_at(10))
    s2 = LRSchedule(_opt(), kind="cosine", lr_max=1e-4, lr_final=1e-5, warmup_steps=500, total_steps=75_000)
    s2.load_state_dict(s.state_dict())
    assert s2.lr == s.lr


def _windows(stream, steps):
    out = []
    for _ in range(steps):
        out.append([b.input_ids.clone() for b in stream.next_step()])
    return out


def test_stream_is_seeded_sharded_and_resumable(unit_data):
    ds = open_split(unit_data, "train")
    kw = {"max_tokens": 64, "global_batch": 4, "packing": "packed"}
    one = TrainStream(ds, micro_batch=4, seed=3, **kw)
    rows1 = [torch.cat(s)[i] for s in _windows(one, 12) for i in range(4)]  # crosses an epoch boundary
    assert one.position.epoch >= 1
    # two ranks: rank r gets windows r, r+2 of every global batch
    r0 = TrainStream(ds, micro_batch=1, rank=0, world_size=2, seed=3, **kw)
    r1 = TrainStream(ds, micro_batch=1, rank=1, world_size=2, seed=3, **kw)
    for step, (a, b) in enumerate(zip(_windows(r0, 12), _windows(r1, 12))):
        assert torch.equal(torch.cat(a), torch.stack([rows1[4 * step], rows1[4 * step + 2]]))
        assert torch.equal(torch.cat(b), torch.stack([rows1[4 * step + 1], rows1[4 * step + 3]]))
    # another seed gives another order
    other = TrainStream(ds, micro_batch=4, seed=4, **kw)
    assert not torch.equal(torch.cat(_windows(other, 1)[0]), torch.stack(rows1[:4]))
    # resume from a saved position continues identically
    fresh = TrainStream(ds, micro_batch=4, seed=3, **kw)
    _windows(fresh, 5)
    state = fresh.state_dict()
    resumed = TrainStream(ds, micro_batch=4, seed=3, **kw)
    resumed.load_state_dict(state)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(_windows(fresh, 7), _windows(resumed, 7)))


def test_fractions_are_nested(unit_data):
    ids = {f: set(open_split(unit_data, "train", fraction=f).ids) for f in (0.3, 0.6, 1.0)}
    assert ids[0.3] < ids[0.6] < ids[1.0]


def test_global_batch_must_divide(unit_data):
    ds = open_split(unit_data, "train")
    with pytest.raises(ValueError, match="train.global_batch 64 is not a multiple"):
        TrainStream(ds, max_tokens=64, global_batch=64, micro_batch=3, world_size=2)


def test_valid_batches_same_count_on_every_rank_and_cover_once(unit_data):
    from twist.train.data import valid_batches

    ds = open_split(unit_data, "train")
    ref = [b.input_ids for b, _ in valid_batches(ds, max_tokens=64, micro_batch=1)]
    per_rank = [list(valid_batches(ds, max_tokens=64, micro_batch=2, rank=r, world_size=3)) for r in range(3)]
    assert len({len(x) for x in per_rank}) == 1  # FSDP needs every rank in every forward
    counted = [row for x in per_rank for b, c in x if c for row in b.input_ids]
    assert len(counted) == len(ref)
    assert {tuple(r.tolist()) for r in counted} == {tuple(r[0].tolist()) for r in ref}
