import dataclasses

import numpy as np
import pytest
import torch

from twist.contract import ContractMismatchError, UnitContract, VocabLayout, fingerprint_state_dict
from twist.errors import InputError, MissingInputError


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
