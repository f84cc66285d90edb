import dataclasses

import numpy as np
import pytest
import torch

from twist.contract import ContractMismatchError, UnitContract, VocabLayout, fingerprint_state_dict
from twist.errors import InputError, MissingInputError


def test_the_unit_range_check_names_the_bad_id_negative_or_too_large_and_where_it_is():
    from twist.contract import check_unit_range

    with pytest.raises(InputError, match=r"^utterance 'u1': unit id -3 is outside \[0, 10\) at position 2$"):
        check_unit_range(np.array([1, 2, -3, 12]), 10, where="utterance 'u1'")  # the first bad one, not max()
    with pytest.raises(InputError, match=r"^units: unit id 12 is outside \[0, 10\) at position 1$"):
        check_unit_range(np.array([1, 12, 0]), 10)
    with pytest.raises(InputError, match=r"^batch: unit id -1 is outside \[0, 10\) at position \(1, 0\)$"):
        check_unit_range(torch.tensor([[0, 1], [-1, 2]]), 10, where="batch")  # tensors too, any shape
    check_unit_range(np.array([0, 9]), 10)
    check_unit_range(np.array([], dtype=np.int64), 10)


def test_no_module_checks_unit_ranges_around_contract_check_unit_range():
    """Every reader of units uses the one check; none compares ids to K on its own."""
    import re
    from pathlib import Path

    import twist

    root = Path(twist.__file__).parent
    pattern = re.compile(r"\.min\(\)\)? < 0|\.max\(\)\)? >= ")
    offenders = [f"{f.relative_to(root)}:{i}" for f in sorted(root.rglob("*.py")) if f.name != "contract.py"
                 for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not offenders, offenders


def test_layout_ids_and_padding():
    lay = VocabLayout(100)
    assert (lay.bos_id, lay.eos_id, lay.pad_id, lay.n_real) == (100, 101, 102, 103)
    assert lay.vocab_size == 128 and lay.vocab_size % 64 == 0
    assert VocabLayout(61).vocab_size == 64 and VocabLayout(62).vocab_size == 128
    m = lay.valid_mask()
    assert m[:103].all() and not m[103:].any()
    s = lay.valid_mask(allow_specials=False)
    assert s[:100].all() and s[101] and not s[100] and not s[102]


def test_encode_decode_roundtrip_and_bad_unit():
    lay = VocabLayout(10)
    ids = lay.encode(np.array([3, 4, 9]))
    assert ids.tolist() == [10, 3, 4, 9, 11]
    assert lay.decode(ids.tolist() + [5]).tolist() == [3, 4, 9]
    with pytest.raises(InputError, match="unit id 10"):
        lay.encode(np.array([1, 10]))


def test_mismatch_names_both_sides_and_field(contract):
    other = dataclasses.replace(contract, n_units=50, frame_rate=25.0)
    with pytest.raises(ContractMismatchError) as e:
        contract.check_compatible(other, mine="model /m", theirs="dataset /d")
    msg = str(e.value)
    assert "model /m" in msg and "dataset /d" in msg and "n_units" in msg and "frame_rate" in msg
    assert "20" in msg and "50" in msg
    contract.check_compatible(dataclasses.replace(contract, dedup=False), ignore=("dedup",))


def test_contract_layout_is_its_vocabulary_layout_and_files_keep_the_layout_name(contract):
    """``contract.layout`` is the token-id layout every stage builds batches with; the layout's
    name stays under ``layout`` in the files, so contracts written before read back the same."""
    from twist.contract import LAYOUT_NAME

    assert contract.layout == VocabLayout(contract.n_units)
    d = contract.to_dict()
    assert d["layout"] == LAYOUT_NAME and "layout_name" not in d
    assert list(d)[-2:] == ["layout", "version"]  # the key order of older files, for any hash of them
    assert UnitContract.from_dict(d) == contract
    other = dataclasses.replace(contract, layout_name="ids-after-text/v2")
    with pytest.raises(ContractMismatchError, match=f"layout: model has '{LAYOUT_NAME}', data has 'ids-after-text/v2'"):
        contract.check_compatible(other)


def test_save_load_roundtrip(tmp_path, contract):
    contract.save(tmp_path / "c.json")
    assert UnitContract.load(tmp_path / "c.json") == contract
    (tmp_path / "bad.json").write_text('{"encoder": "x"}')
    with pytest.raises(ValueError, match="lacks field"):
        UnitContract.load(tmp_path / "bad.json")


def test_fingerprint_depends_on_values_not_order():
    a = {"w": torch.ones(2), "b": torch.zeros(3)}
    b = {"b": torch.zeros(3), "w": torch.ones(2)}
    assert fingerprint_state_dict(a) == fingerprint_state_dict(b)
    b["w"] = torch.full((2,), 2.0)
    assert fingerprint_state_dict(a) != fingerprint_state_dict(b)


@pytest.mark.parametrize("text, why", [
    ("{", "is not valid JSON"),
    ("[]", "expected a JSON object"),
    ('{"encoder": "logmel"}', r"lacks field\(s\)"),
    ('{"encoder": "logmel", "encoder_fingerprint": "e", "layer": null, "frame_rate": 50.0, "n_units": 0, '
     '"kmeans_fingerprint": "k"}', r"n_units must be in \[1, 65000\]"),
    ('{"encoder": "logmel", "encoder_fingerprint": "e", "layer": null, "frame_rate": 50.0, "n_units": "500", '
     '"kmeans_fingerprint": "k"}', "not supported between"),
])
def test_a_malformed_contract_file_is_refused_naming_it(tmp_path, text, why):
    path = tmp_path / "contract.json"
    path.write_text(text)
    with pytest.raises(InputError, match=why) as err:
        UnitContract.load(path)
    assert str(path) in str(err.value)
    with pytest.raises(MissingInputError, match="unit contract file not found"):
        UnitContract.load(tmp_path / "absent.json")
