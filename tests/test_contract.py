import dataclasses

import numpy as np
import pytest
import torch

from twist.contract import (
    LAYOUT_NAME,
    TEXT_UNITS_LAYOUT,
    ContractMismatchError,
    UnitContract,
    VocabLayout,
    fingerprint_state_dict,
)
from twist.errors import ConfigError, InputError, MissingInputError


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


# ---- the text+units layout ----------------------------------------------------------------
def _text_units(contract, **kw):
    fields = {"layout_name": TEXT_UNITS_LAYOUT, "text_vocab": 50, "text_bos_id": 1, "text_eos_id": 2,
              "text_pad_id": 2, "text_tokenizer": "tiny-words", "text_tokenizer_fingerprint": "abc123"}
    return dataclasses.replace(contract, **{**fields, **kw})


def test_text_units_layout_keeps_text_ids_and_puts_units_at_their_offset():
    """Text ids [0, V_text) are the text tokenizer's (bos/eos/pad too), unit u is V_text + u,
    then <speech> and <text>; a speech sequence opens with <bos> <speech>."""
    lay = VocabLayout.text_units(10, text_vocab=50, bos_id=1, eos_id=2)  # no pad in the tokenizer: eos pads
    assert lay.has_text and lay.name == TEXT_UNITS_LAYOUT
    assert (lay.unit_offset, lay.bos_id, lay.eos_id, lay.pad_id) == (50, 1, 2, 2)
    assert (lay.speech_id, lay.text_id, lay.marker_ids) == (60, 61, (60, 61))
    assert (lay.n_real, lay.vocab_size, lay.framing_tokens) == (62, 64, 3)
    ids = lay.encode(np.array([3, 4, 9]))
    assert ids.tolist() == [1, 60, 53, 54, 59, 2]
    assert lay.encode(np.array([3]), bos=False).tolist() == [53, 2]  # a continuation: no opening marker
    assert lay.decode([7, 60, 53, 61, 54, 2, 55]).tolist() == [3, 4]  # text ids and markers dropped, stops at eos
    assert lay.unit_ids(np.array([0, 9])).tolist() == [50, 59]
    with pytest.raises(InputError, match="unit id 10"):
        lay.encode(np.array([1, 10]))
    m = lay.valid_mask()
    assert m[:62].all() and not m[62:].any()
    s = lay.valid_mask(allow_specials=False)  # sampling speech: units and eos only
    assert s.nonzero().flatten().tolist() == [2, *range(50, 60)]
    assert torch.equal(lay.speech_support(), s)
    assert torch.equal(lay.unit_mask(), s)  # units (+ eos, + the markers asked for): what later stages sample
    assert lay.unit_mask(eos=False, markers=(lay.text_id,)).nonzero().flatten().tolist() == [*range(50, 60), 61]
    with pytest.raises(ConfigError, match="not a marker id"):
        lay.unit_mask(markers=(2,))


def test_the_text_support_is_every_text_id_and_text_sampling_leaves_out_bos_and_pad():
    """Cross-modal scoring of a text ending normalises over the text ids (eos among them), as speech
    is over the units and eos; sampling text never emits the tokenizer's bos or pad (unless it is eos)."""
    lay = VocabLayout.text_units(10, text_vocab=50, bos_id=1, eos_id=2, pad_id=0)
    assert lay.text_mask().nonzero().flatten().tolist() == list(range(50))
    assert torch.equal(lay.text_support(), lay.text_mask())
    assert lay.text_mask(bos_pad=False, markers=(lay.speech_id,)).nonzero().flatten().tolist() == [*range(2, 50), 60]
    no_pad = VocabLayout.text_units(10, text_vocab=50, bos_id=None, eos_id=2)  # bos and pad are eos: it stays
    assert no_pad.text_mask(bos_pad=False).nonzero().flatten().tolist() == list(range(50))
    with pytest.raises(ConfigError, match="units-first.*has no text ids"):
        VocabLayout(10).text_mask()


def test_the_units_first_layout_is_unchanged_through_the_new_api():
    lay = VocabLayout(100)
    assert not lay.has_text and lay.name == LAYOUT_NAME
    assert (lay.unit_offset, lay.speech_id, lay.text_id, lay.marker_ids, lay.framing_tokens) == (0, None, None, (), 2)
    assert torch.equal(lay.speech_support(), lay.valid_mask())  # scoring keeps every real id, as ever
    assert lay.describe() == {"name": LAYOUT_NAME, "n_units": 100, "bos_id": 100, "eos_id": 101, "pad_id": 102,
                              "vocab_size": 128}


def test_a_text_units_layout_needs_a_sane_text_vocabulary():
    with pytest.raises(ConfigError, match="eos"):
        VocabLayout(10, text_vocab=50)
    with pytest.raises(ConfigError, match=r"bos_id=50 is not a text id"):
        VocabLayout.text_units(10, text_vocab=50, bos_id=50, eos_id=2)


def test_a_text_units_contract_records_its_layout_and_reads_back(contract):
    tu = _text_units(contract)
    assert tu.layout == VocabLayout.text_units(20, text_vocab=50, bos_id=1, eos_id=2, pad_id=2)
    d = tu.to_dict()
    assert d["layout"] == TEXT_UNITS_LAYOUT
    assert (d["text_vocab"], d["unit_offset"], d["speech_id"], d["text_id"]) == (50, 50, 70, 71)
    assert (d["text_bos_id"], d["text_eos_id"], d["text_pad_id"]) == (1, 2, 2)
    assert (d["text_tokenizer"], d["text_tokenizer_fingerprint"]) == ("tiny-words", "abc123")
    assert UnitContract.from_dict(d) == tu
    # a units-first contract writes exactly the keys it always wrote
    assert not {"text_vocab", "unit_offset", "speech_id"} & set(contract.to_dict())
    with pytest.raises(InputError, match="speech_id"):  # a recorded id that the fields do not give
        UnitContract.from_dict({**d, "speech_id": 3}, source="m/config.json")
    with pytest.raises(InputError, match="text_vocab"):
        UnitContract.from_dict({**contract.to_dict(), "layout": TEXT_UNITS_LAYOUT})
    with pytest.raises(InputError, match="unknown token-id layout"):
        UnitContract.from_dict({**contract.to_dict(), "layout": "ids-after-text/v2"}).layout  # noqa: B018


def test_unit_artefacts_fit_a_text_units_model_but_two_layouts_are_told_apart(contract):
    """A unit dataset, tokenizer or vocoder is units-first by nature: it fits any model of the
    same units. Two models with different layouts (or text tokenizers) do not fit each other."""
    tu = _text_units(contract)
    tu.check_same_units(contract, mine="speech LM /m", theirs="dataset /d")
    contract.check_same_units(tu, mine="vocoder /v", theirs="speech LM /m")
    with pytest.raises(ContractMismatchError, match="n_units: speech LM /m has 20, dataset /d has 50"):
        tu.check_same_units(dataclasses.replace(contract, n_units=50), mine="speech LM /m", theirs="dataset /d")
    with pytest.raises(ContractMismatchError) as e:
        tu.check_compatible(contract, mine="speech LM /a", theirs="speech LM /b")
    assert f"layout: speech LM /a has '{TEXT_UNITS_LAYOUT}', speech LM /b has '{LAYOUT_NAME}'" in str(e.value)
    assert "text_vocab: speech LM /a has 50, speech LM /b has None" in str(e.value)
    with pytest.raises(ContractMismatchError, match="text_tokenizer_fingerprint: speech LM /a has 'abc123'"):
        tu.check_compatible(_text_units(contract, text_tokenizer_fingerprint="other"), mine="speech LM /a",
                            theirs="speech LM /b")
    tu.check_compatible(_text_units(contract, text_tokenizer="renamed"))  # the label alone is not identity
