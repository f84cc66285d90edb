"""Audio -> units with the tokenizer, cached on disk; pre-tokenized units."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

from twist.contract import ContractMismatchError
from twist.errors import InputError
from twist.eval.inputs import AudioUnits, PretokenizedUnits, tokenizer_fingerprint
from twist.rejects import RejectsLog
from twist.units import UnitShardWriter, merge_shards


def test_audio_is_tokenized_once_then_read_from_the_cache(tmp_path, ev, fake_tokenizer):
    k = fake_tokenizer.contract.n_units
    a = ev.write_units_wav(tmp_path / "a.wav", [1, 1, 2, 2, 2, 5], k)
    b = ev.write_units_wav(tmp_path / "b.wav", [7, 0, 0], k)
    src = AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache")
    got = src.units([a, b])
    # frame-level [1 1 2 2 2 5] deduplicated, as the contract says
    assert got[str(a)].tolist() == [1, 2, 5] and got[str(b)].tolist() == [7, 0]
    assert len(fake_tokenizer.calls) == 2 and src.n_encoded == 2
    again = AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache").units([a, b])
    assert len(fake_tokenizer.calls) == 2  # no new encoder call
    assert {k_: v.tolist() for k_, v in again.items()} == {k_: v.tolist() for k_, v in got.items()}
    # a changed file is re-encoded
    ev.write_units_wav(a, [3, 3, 4], k)
    os.utime(a, ns=(os.stat(a).st_atime_ns, os.stat(a).st_mtime_ns + 10**9))
    assert AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache").units([a])[str(a)].tolist() == [3, 4]
    assert len(fake_tokenizer.calls) == 3


def test_cache_is_keyed_by_tokenizer_fingerprint(tmp_path, ev, fake_tokenizer):
    a = ev.write_units_wav(tmp_path / "a.wav", [1, 2], fake_tokenizer.contract.n_units)
    AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache").units([a])
    other = ev.FakeTokenizer(dataclasses.replace(fake_tokenizer.contract, kmeans_fingerprint="other-km"))
    AudioUnits(other, cache_dir=tmp_path / "cache").units([a])
    assert len(other.calls) == 1  # a different codebook never reads the first one's units
    assert tokenizer_fingerprint(other.contract) != tokenizer_fingerprint(fake_tokenizer.contract)
    # dedup is applied on read, so it does not split the cache
    assert tokenizer_fingerprint(dataclasses.replace(fake_tokenizer.contract, dedup=False)) == \
        tokenizer_fingerprint(fake_tokenizer.contract)


def test_bad_audio_is_rejected_and_missing_audio_named(tmp_path, ev, fake_tokenizer):
    good = ev.write_units_wav(tmp_path / "good.wav", [1], fake_tokenizer.contract.n_units)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with RejectsLog(tmp_path / "rejects.jsonl", stage="eval") as rej:
        got = AudioUnits(fake_tokenizer, cache_dir=None).units([good, bad], rej)
    assert list(got) == [str(good)]
    assert [r["item"] for r in RejectsLog.read(tmp_path / "rejects.jsonl")] == [str(bad)]
    with pytest.raises(FileNotFoundError, match="audio file not found: .*gone.wav"):
        AudioUnits(fake_tokenizer).units([tmp_path / "gone.wav"])


def test_pretokenized_unit_dataset_and_line_file(tmp_path, small_contract):
    with UnitShardWriter(tmp_path / "ds", small_contract) as w:
        w.add("a_pos", np.array([1, 1, 2]), raw=True)
        w.add("sub/a_neg", np.array([3, 4]), raw=True)
    merge_shards(tmp_path / "ds")
    src = PretokenizedUnits(tmp_path / "ds", small_contract)
    root = tmp_path / "bench"
    got = src.units([root / "wav" / "a_pos.wav", root / "sub" / "a_neg.wav"], root)
    assert got[str(root / "wav" / "a_pos.wav")].tolist() == [1, 2]  # by stem
    assert got[str(root / "sub" / "a_neg.wav")].tolist() == [3, 4]  # by relative path
    with pytest.raises(InputError, match="have no entry for .*zzz.wav"):
        src.units([root / "zzz.wav"], root)
    lines = tmp_path / "units.txt"
    lines.write_text("a_pos\t5 5 6\n")
    assert PretokenizedUnits(lines, small_contract).units([root / "a_pos.wav"], root)[str(root / "a_pos.wav")].tolist() == [5, 6]
    other = dataclasses.replace(small_contract, n_units=16)
    with pytest.raises(ContractMismatchError, match="n_units: model has 16, pre-tokenized units"):
        PretokenizedUnits(tmp_path / "ds", other)


def test_identical_audio_is_encoded_once_whatever_its_path(tmp_path, ev, fake_tokenizer):
    import shutil

    k = fake_tokenizer.contract.n_units
    a = ev.write_units_wav(tmp_path / "sSC" / "a.wav", [1, 2, 3], k)
    twin = tmp_path / "tSC" / "a_copy.wav"
    twin.parent.mkdir()
    shutil.copyfile(a, twin)  # the same bytes under another name, as an sSC and tSC positive
    b = ev.write_units_wav(tmp_path / "b.wav", [4, 5], k)
    src = AudioUnits(fake_tokenizer, cache_dir=None)  # no disk cache: still one encoder call per content
    got = src.units([a, twin, b])
    assert len(fake_tokenizer.calls) == 2 and src.n_encoded == 2 and src.n_same_content == 1
    assert got[str(a)].tolist() == got[str(twin)].tolist() == [1, 2, 3] and got[str(b)].tolist() == [4, 5]
    # a later call on the same object (the next benchmark of the run) reuses what it has
    assert src.units([twin])[str(twin)].tolist() == [1, 2, 3] and len(fake_tokenizer.calls) == 2
    # the disk cache is keyed by content: a moved copy of the benchmark is not encoded again
    AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache").units([a, b])
    moved = tmp_path / "moved.wav"
    shutil.copyfile(b, moved)
    again = AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache")
    assert again.units([moved])[str(moved)].tolist() == [4, 5]
    assert len(fake_tokenizer.calls) == 4 and again.n_cache_hits == 1 and again.n_encoded == 0


def test_a_clip_of_a_file_is_the_units_of_that_part_of_its_audio_and_is_cached(tmp_path, ev, fake_tokenizer):
    """Cross-modal StoryCloze reads a story's spoken context and its spoken ending apart: clips
    ``(path, start, end)`` in seconds (end None = to the end), cached by content and bounds."""
    k = fake_tokenizer.contract.n_units
    a = ev.write_units_wav(tmp_path / "a.wav", [1, 2, 3, 3, 4, 5, 6], k)  # one frame = 0.02 s
    src = AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache")
    got = src.clip_units([(a, 0.0, 0.04), (a, 0.06, None), (a, 0.04, 0.1)])
    assert {c: u.tolist() for c, u in got.items()} == {(str(a), 0.0, 0.04): [1, 2], (str(a), 0.06, None): [3, 4, 5, 6],
                                                       (str(a), 0.04, 0.1): [3, 4]}  # deduplicated
    assert len(fake_tokenizer.calls) == 3 and src.n_encoded == 3
    again = AudioUnits(fake_tokenizer, cache_dir=tmp_path / "cache")
    assert again.clip_units([(a, 0.06, None)])[(str(a), 0.06, None)].tolist() == [3, 4, 5, 6]
    assert len(fake_tokenizer.calls) == 3 and again.n_cache_hits == 1  # no new encoder call
    with RejectsLog(tmp_path / "rej.jsonl", stage="eval") as rej:
        assert again.clip_units([(a, 0.2, None)], rej) == {}  # past the end: nothing to encode
    assert "empty" in RejectsLog.read(tmp_path / "rej.jsonl")[0]["reason"]
