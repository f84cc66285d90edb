"""The spoken preference-pair dataset on disk: written, read back, refused when it does not fit."""

import dataclasses
import json

import numpy as np
import pytest

from twist.contract import ContractMismatchError
from twist.errors import InputError, MissingInputError
from twist.pairs import PairDataset, PreferencePair, assign_pair_split, write_pair_dataset


def _pair(i, split="train", k=20):
    rng = np.random.default_rng(i)
    return PreferencePair(
        id=f"p{i}", split=split, voice="en-us",
        prompt=rng.integers(0, k, 7), chosen=rng.integers(0, k, 5), rejected=rng.integers(0, k, 6),
        prompt_text=f"prompt {i}", chosen_text=f"chosen {i}", rejected_text=f"rejected {i}",
    )


def _write(root, contract, pairs=None):
    pairs = pairs if pairs is not None else [_pair(0), _pair(1, "valid"), _pair(2)]
    return write_pair_dataset(root, pairs, contract, made_by={"source": {"format": "pairs"}},
                              split={"seed": 0, "valid": 0.1})


def test_written_pairs_read_back_by_split_with_their_contract(tmp_path, contract):
    meta = _write(tmp_path, contract)
    assert meta["counts"] == {"train": 2, "valid": 1} and meta["format"] == "twist-pairs"
    ds = PairDataset(tmp_path, expected=contract)
    assert ds.contract == contract and len(ds) == 3
    assert [p.id for p in ds.split("train")] == ["p0", "p2"] and [p.id for p in ds.split("valid")] == ["p1"]
    back = ds.split("valid")[0]
    ref = _pair(1, "valid")
    for f in ("prompt", "chosen", "rejected"):
        assert getattr(back, f).tolist() == getattr(ref, f).tolist()
    assert (back.voice, back.chosen_text) == ("en-us", "chosen 1")
    row = json.loads((tmp_path / "pairs.jsonl").read_text().splitlines()[0])
    assert list(row) == ["id", "split", "voice", "prompt", "chosen", "rejected", "prompt_text", "chosen_text",
                         "rejected_text"]
    assert all(isinstance(x, int) for x in row["prompt"])


def test_another_contract_is_refused_naming_both_sides(tmp_path, contract):
    _write(tmp_path, contract)
    other = dataclasses.replace(contract, n_units=50)
    with pytest.raises(ContractMismatchError) as e:
        PairDataset(tmp_path, expected=other, expected_name="speech LM runs/lm")
    msg = str(e.value)
    assert "speech LM runs/lm" in msg and f"pair dataset {tmp_path}" in msg and "n_units" in msg
    assert "50" in msg and "20" in msg


def test_unit_out_of_range_is_refused_naming_the_row(tmp_path, contract):
    _write(tmp_path, contract)
    path = tmp_path / "pairs.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[1]["chosen"][2] = contract.n_units  # one past the last unit id
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"pairs\.jsonl:2\b.*'p1'.*chosen.*unit id 20 is outside \[0, 20\)"):
        PairDataset(tmp_path)


def test_writer_refuses_units_outside_the_contract(tmp_path, contract):
    bad = dataclasses.replace(_pair(0), rejected=np.array([1, -1]))
    with pytest.raises(InputError, match=r"'p0'.*rejected.*unit id -1"):
        _write(tmp_path, contract, [bad])
    assert not (tmp_path / "meta.json").exists()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda meta, rows: meta.update(format="twist-units"), r"format is 'twist-units', expected 'twist-pairs'"),
    (lambda meta, rows: meta.update(version=99), r"version 99.*reads version 1"),
    (lambda meta, rows: rows[0].pop("voice"), r"pairs\.jsonl:1\b.*missing key 'voice'"),
    (lambda meta, rows: rows[0].update(split="test"), r"pairs\.jsonl:1\b.*split must be train or valid"),
    (lambda meta, rows: rows[1].update(id="p0"), r"pairs\.jsonl:2\b.*'p0' is listed twice"),
    (lambda meta, rows: rows[0].update(prompt="1 2 3"), r"pairs\.jsonl:1\b.*prompt must be a list of unit ids"),
    (lambda meta, rows: rows.pop(), r"meta\.json counts .*pairs\.jsonl holds"),
])  # fmt: skip
def test_a_damaged_dataset_is_refused_in_one_line(tmp_path, contract, edit, match):
    _write(tmp_path, contract)
    meta = json.loads((tmp_path / "meta.json").read_text())
    rows = [json.loads(x) for x in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    edit(meta, rows)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=match) as e:
        PairDataset(tmp_path)
    assert "\n" not in str(e.value)


def test_not_a_pair_dataset(tmp_path):
    with pytest.raises(MissingInputError, match="not a pair dataset"):
        PairDataset(tmp_path)


def test_split_is_a_seeded_hash_of_the_id():
    ids = [f"x{i}" for i in range(2000)]
    a = [assign_pair_split(i, seed=0, valid=0.1) for i in ids]
    assert a == [assign_pair_split(i, seed=0, valid=0.1) for i in ids]
    assert 150 < a.count("valid") < 250 and set(a) == {"train", "valid"}
    assert a != [assign_pair_split(i, seed=1, valid=0.1) for i in ids]
    assert {assign_pair_split(i, seed=0, valid=0.0) for i in ids} == {"train"}
