import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from twist.errors import InputError
from twist.units import (
    UnitDataset,
    UnitShardWriter,
    assign_split,
    dedup,
    expand,
    export_lines,
    import_lines,
    in_fraction,
    merge_shards,
)


def _make(root, contract, n=30, shard_items=4, seed=0):
    rng = np.random.default_rng(seed)
    seqs = {}
    with UnitShardWriter(root, contract, shard_items=shard_items) as w:
        for i in range(n):
            u = rng.integers(0, contract.n_units, size=rng.integers(5, 40))
            seqs[f"utt{i:03d}"] = u
            w.add(f"utt{i:03d}", u, source=f"/audio/{i}.wav")
    merge_shards(root)
    return seqs


def test_dedup_expand_roundtrip():
    u = np.array([5, 5, 5, 1, 2, 2, 5])
    d_units, durs = dedup(u)
    assert d_units.tolist() == [5, 1, 2, 5] and durs.tolist() == [3, 1, 2, 1]
    assert expand(d_units, durs).tolist() == u.tolist()


def test_write_read_roundtrip_with_dedup(tmp_path, contract):
    seqs = _make(tmp_path, contract)
    ds = UnitDataset(tmp_path)
    assert len(ds) == 30 and ds.has_durations
    for i, utt_id in enumerate(ds.ids):
        utt = ds.get(i)
        assert expand(utt.units, utt.durations).tolist() == seqs[utt_id].tolist()
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["n_utterances"] == 30 and meta["contract"]["n_units"] == contract.n_units


def test_merge_is_idempotent(tmp_path, contract):
    _make(tmp_path, contract)
    first = (tmp_path / "manifest.jsonl").read_bytes(), (tmp_path / "meta.json").read_bytes()
    merge_shards(tmp_path)
    assert ((tmp_path / "manifest.jsonl").read_bytes(), (tmp_path / "meta.json").read_bytes()) == first


def test_resume_skips_committed_and_drops_uncommitted(tmp_path, contract):
    w = UnitShardWriter(tmp_path, contract, shard_items=3)
    for i in range(7):  # two shards committed (6 items), one item buffered
        w.add(f"u{i}", np.arange(5) % contract.n_units)
    # simulate a kill: buffered item lost, plus a torn binary left behind
    (tmp_path / "shards" / "r0000-000099.units.u16").write_bytes(b"\x00\x01")
    (tmp_path / "shards" / ".r0000-000002.units.u16.x1y2.u16.tmp").write_bytes(b"\x00")  # torn temp
    w2 = UnitShardWriter(tmp_path, contract, shard_items=3)
    assert w2.done_ids == {f"u{i}" for i in range(6)}
    assert not (tmp_path / "shards" / "r0000-000099.units.u16").exists()
    assert not list((tmp_path / "shards").glob(".*.tmp"))
    for i in range(10):
        w2.add(f"u{i}", np.arange(5) % contract.n_units)
    w2.close()
    merge_shards(tmp_path)
    ds = UnitDataset(tmp_path)
    assert sorted(ds.ids) == sorted(f"u{i}" for i in range(10))


def test_kill9_mid_write_loses_nothing_committed(tmp_path, contract):
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from twist.contract import UnitContract
        from twist.units import UnitShardWriter
        c = UnitContract.from_dict({contract.to_dict()!r})
        w = UnitShardWriter({str(tmp_path)!r}, c, shard_items=4)
        for i in range(50):
            w.add(f"u{{i:03d}}", np.arange(7) % c.n_units)
            if i == 22:
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    p = subprocess.run([sys.executable, "-c", script], env={**os.environ})
    assert p.returncode == -9
    w = UnitShardWriter(tmp_path, contract, shard_items=4)
    assert len(w.done_ids) == 20  # five committed shards of 4
    for i in range(50):
        w.add(f"u{i:03d}", np.arange(7) % contract.n_units)
    w.close()
    merge_shards(tmp_path)
    ids = UnitDataset(tmp_path).ids
    assert ids == sorted(set(ids)) and len(ids) == 50


def test_splits_are_deterministic_disjoint_and_default_2_percent(tmp_path, contract):
    ids = [f"x{i}" for i in range(20000)]
    splits = [assign_split(i) for i in ids]
    assert splits == [assign_split(i) for i in ids]
    frac_valid = splits.count("valid") / len(ids)
    frac_test = splits.count("test") / len(ids)
    assert 0.015 < frac_valid < 0.025 and 0.015 < frac_test < 0.025
    assert [assign_split(i, seed=1) for i in ids[:200]] != splits[:200]
    _make(tmp_path, contract, n=60)
    ds = UnitDataset(tmp_path)
    parts = [set(ds.split(s, valid=0.2, test=0.2).ids) for s in ("train", "valid", "test")]
    assert set.union(*parts) == set(ds.ids) and sum(map(len, parts)) == len(ds)


def test_fractions_are_nested_and_sized():
    ids = [f"y{i}" for i in range(20000)]
    one = {i for i in ids if in_fraction(i, 0.01)}
    ten = {i for i in ids if in_fraction(i, 0.1)}
    assert one <= ten and 0.007 < len(one) / len(ids) < 0.013 and 0.09 < len(ten) / len(ids) < 0.11
    with pytest.raises(ValueError, match="fraction"):
        in_fraction("a", 0.0)


@pytest.mark.parametrize("fmt", ["plain", "ids", "jsonl"])
def test_line_formats_roundtrip(tmp_path, contract, fmt):
    _make(tmp_path / "ds", contract, n=8)
    ds = UnitDataset(tmp_path / "ds")
    export_lines(ds, tmp_path / "out.txt", fmt=fmt, expand_durations=True)
    back = import_lines(tmp_path / "out.txt", tmp_path / "imported", contract, fmt=fmt)
    assert len(back) == 8
    got = sorted(expand(back.get(i).units, back.get(i).durations).tolist() for i in range(8))
    want = sorted(expand(ds.get(i).units, ds.get(i).durations).tolist() for i in range(8))
    assert got == want


def test_bad_inputs_named(tmp_path, contract):
    with pytest.raises(FileNotFoundError, match="meta.json"):
        UnitDataset(tmp_path)
    w = UnitShardWriter(tmp_path / "d", contract)
    with pytest.raises(ValueError, match="'bad'.*outside"):
        w.add("bad", np.array([0, contract.n_units]))
    with pytest.raises(ValueError, match=r"'neg': unit id -1 is outside \[0, 20\) at position 1"):  # the bad id, not max()
        w.add("neg", np.array([3, -1, 5]))
    (tmp_path / "lines.txt").write_text("a\t1 2 x\n")
    with pytest.raises(ValueError, match="lines.txt:1"):
        import_lines(tmp_path / "lines.txt", tmp_path / "imp", contract)


def test_empty_utterances_read_back_even_when_their_shard_file_is_empty(tmp_path, contract):
    # a shard holding only empty utterances has a 0-byte .u16 file, which np.memmap refuses
    (tmp_path / "in.txt").write_text("a\t\nb\t\n")
    ds = import_lines(tmp_path / "in.txt", tmp_path / "out", contract, fmt="ids")
    assert len(ds) == 2 and ds[0].size == 0 and ds.get(1).units.size == 0
    assert ds.get(0).durations is None or ds.get(0).durations.size == 0


# ---------------------------------------------------------------------------------------
# word alignments kept with the units
# ---------------------------------------------------------------------------------------
ALIGNER = {"aligner": "tts", "fingerprint": "tts-test"}


def _record(uid, n_words=2):
    return {"id": uid, "aligner": "tts", "transcript": " ".join(f"w{k}" for k in range(n_words)),
            "words": [{"word": f"w{k}", "start": 0.1 * k, "end": 0.1 * (k + 1), "how": "timed"} for k in range(n_words)]}


def test_alignments_are_committed_with_their_shard_and_resume_like_the_units(tmp_path, contract):
    w = UnitShardWriter(tmp_path, contract, shard_items=3, alignment=ALIGNER)
    for i in range(7):  # two shards committed, one utterance buffered (lost by the "kill")
        w.add(f"u{i}", np.arange(5 + i) % contract.n_units, alignment=_record(f"u{i}", 1 + i % 3))
    # a torn shard of a killed run: its alignments landed, its commit marker never did
    (tmp_path / "shards" / "r0000-000002.units.u16").write_bytes(b"\x00\x01")
    (tmp_path / "shards" / "r0000-000002.align.jsonl").write_text(json.dumps(_record("u6")) + "\n")
    w2 = UnitShardWriter(tmp_path, contract, shard_items=3, alignment=ALIGNER)
    assert w2.done_ids == {f"u{i}" for i in range(6)}
    assert sorted(p.name for p in (tmp_path / "shards").glob("r0000-000002*")) == []
    for i in range(9):
        w2.add(f"u{i}", np.arange(5 + i) % contract.n_units, alignment=_record(f"u{i}", 1 + i % 3))
    w2.close()
    meta = merge_shards(tmp_path)
    assert meta["alignment"] == {**ALIGNER, "n_aligned": 9} and meta["has_alignments"] is True
    ds = UnitDataset(tmp_path)
    assert ds.ids == [f"u{i}" for i in range(9)]
    for i in range(9):
        assert ds.alignment(i) == _record(f"u{i}", 1 + i % 3)
    # the merge is idempotent with alignments too
    first = (tmp_path / "manifest.jsonl").read_bytes(), (tmp_path / "meta.json").read_bytes()
    merge_shards(tmp_path)
    assert ((tmp_path / "manifest.jsonl").read_bytes(), (tmp_path / "meta.json").read_bytes()) == first
    assert UnitDataset(tmp_path).split("train").alignment(0)["id"] == UnitDataset(tmp_path).split("train").ids[0]


def test_an_aligned_dataset_refuses_an_utterance_without_its_alignment_or_another_aligner(tmp_path, contract):
    w = UnitShardWriter(tmp_path, contract, alignment=ALIGNER)
    with pytest.raises(InputError, match="u0.*no alignment"):
        w.add("u0", np.arange(5) % contract.n_units)
    with pytest.raises(InputError, match="u0.*alignment of 'other'"):
        w.add("u0", np.arange(5) % contract.n_units, alignment=_record("other"))
    w.add("u0", np.arange(5) % contract.n_units, alignment=_record("u0"))
    w.close()
    with pytest.raises(InputError, match="alignments.*tts-test.*whisper-x"):
        UnitShardWriter(tmp_path, contract, alignment={"aligner": "whisper", "fingerprint": "whisper-x"})
    # without alignments the dataset is as it always was
    plain = tmp_path / "plain"
    _make(plain, contract, n=5)
    meta = json.loads((plain / "meta.json").read_text())
    assert "alignment" not in meta and "has_alignments" not in meta
    assert not list(plain.rglob("*.align.jsonl")) and not (plain / "alignment.json").exists()
    assert all("align_offset" not in r for r in UnitDataset(plain).rows)
    with pytest.raises(InputError, match="no word alignments"):
        UnitDataset(plain).alignment(0)
