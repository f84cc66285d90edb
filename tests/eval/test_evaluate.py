"""evaluate_model end to end on every benchmark kind, and the comparison table."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from twist.contract import ContractMismatchError
from twist.eval import evaluate_model, zr2021
from twist.eval.likelihood import LikelihoodScorer
from twist.eval.pairs import decide
from twist.eval.report import compare_table, load_results
from twist.eval.stats import wilson_interval
from twist.rejects import RejectedItemError
from twist.units import UnitDataset, UnitShardWriter, merge_shards


def _rand_units(rng, k, n):
    u = [int(rng.integers(k))]
    while len(u) < n:  # no repeats, so dedup keeps every unit and we know the exact sequence
        x = int(rng.integers(k))
        if x != u[-1]:
            u.append(x)
    return u


@pytest.fixture
def bench(tmp_path, ev, small_contract):
    """A miniature of every benchmark layout, with the units each wav holds."""
    k = small_contract.n_units
    rng = np.random.default_rng(0)
    units: dict[str, list[int]] = {}
    root = tmp_path / "bench"

    def wav(path, n):
        u = _rand_units(rng, k, n)
        ev.write_units_wav(path, u, k)
        units[str(path)] = u
        return path

    rows = []
    for wid, freq in (("1", "0"), ("2", "3"), ("3", "40")):
        for voice in ("A", "B"):
            for correct in (1, 0):
                fn = f"lex{wid}{voice}{correct}"
                wav(root / "lexical" / "dev" / f"{fn}.wav", 5)
                rows.append({"id": wid, "filename": fn, "word": "w", "frequency": freq, "correct": correct,
                             "voice": voice, "phones": "w", "length": 1})
    ev.write_gold(root / "lexical" / "dev" / "gold.csv", list(zr2021.COLUMNS["lexical"]), rows)
    rows = []
    for sid in ("1", "2"):
        for voice in ("A", "B"):
            for correct in (1, 0):
                fn = f"syn{sid}{voice}{correct}"
                wav(root / "syntactic" / "dev" / f"{fn}.wav", 8)
                rows.append({"id": sid, "filename": fn, "type": "t", "subtype": "s", "transcription": "x",
                             "correct": correct, "voice": voice})
    ev.write_gold(root / "syntactic" / "dev" / "gold.csv", list(zr2021.COLUMNS["syntactic"]), rows)
    pairs = []
    for i in range(4):
        pairs.append({"id": f"s{i}", "positive": f"wav/s{i}_pos.wav", "negative": f"wav/s{i}_neg.wav"})
        wav(root / "sSC" / "wav" / f"s{i}_pos.wav", 12)
        wav(root / "sSC" / "wav" / f"s{i}_neg.wav", 12)
    pairs.append({"id": "inline", "positive_units": [1, 2, 3], "negative_units": [3, 2, 1]})
    (root / "sSC" / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    for i, sid in enumerate(("ab-1", "cd-2", "ef-3")):
        wav(root / "tSC" / f"{2 * i}_{sid}_correct.wav", 10)
        wav(root / "tSC" / f"{2 * i + 1}_{sid}_incorrect.wav", 10)
    with UnitShardWriter(tmp_path / "units", small_contract) as w:
        for i in range(30):
            w.add(f"utt{i:03d}", np.array(_rand_units(rng, k, 6 + i % 7)), raw=False)
    merge_shards(tmp_path / "units", split={"seed": 0, "valid": 0.0, "test": 0.5})
    return root, units, tmp_path / "units"


def _cfg(root, units_ds, tmp_path, **kw):
    cfg = {"bench_root": str(root), "benchmarks": {"ppl": {"dataset": str(units_ds), "split": "test"}},
           "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "progress": False, "model_name": "tiny"}
    cfg.update(kw)
    return cfg


def test_every_benchmark_end_to_end(tmp_path, ev, bench, small_contract, fake_tokenizer):
    root, units, ds_root = bench
    model = ev.tiny_llama(small_contract)
    out = tmp_path / "run"
    res = evaluate_model(_cfg(root, ds_root, tmp_path), model, small_contract, out, tokenizer=fake_tokenizer)

    assert list(res["metrics"]) == ["PPL", "sWUGGY (dev)", "sWUGGY in-vocab (dev)", "sBLIMP (dev)", "sSC", "tSC"]
    direct = LikelihoodScorer(model, small_contract, batch_size=1)

    # sSC: per-item scores equal a direct batch-1 computation on the units each wav holds
    rows = [json.loads(x) for x in (out / "items" / "sSC.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    by_id = {r["id"]: r for r in rows}
    for i in range(4):
        want = direct.score_units([np.array(units[str(root / "sSC" / "wav" / f"s{i}_{s}.wav")]) for s in ("pos", "neg")])
        r = by_id[f"s{i}"]
        assert r["positive_logprob_sum"] == pytest.approx(want.sum[0], abs=1e-4)
        assert r["negative_logprob_sum"] == pytest.approx(want.sum[1], abs=1e-4)
        assert r["score"] == decide(want.sum[0], want.sum[1])
    inline = direct.score_units([np.array([1, 2, 3]), np.array([3, 2, 1])])
    assert by_id["inline"]["positive_logprob_sum"] == pytest.approx(inline.sum[0], abs=1e-4)
    assert res["metrics"]["sSC"] == pytest.approx(np.mean([r["score"] for r in rows]))
    assert res["benchmarks"]["sSC"]["n_pairs"] == 5 and res["benchmarks"]["sSC"]["pairs_per_second"] > 0

    # sWUGGY: the submission file, fed back through the aggregation, gives the reported numbers
    sub = out / "submission" / "lexical" / "dev.txt"
    file_scores = {a: float(b) for a, b in (ln.split() for ln in sub.read_text().splitlines())}
    assert len(file_scores) == 12 and res["benchmarks"]["sWUGGY/dev"]["submission_complete"]
    gold = zr2021.load_split(root / "lexical", "dev", "lexical")
    summary, _ = zr2021.evaluate_split(gold, file_scores)
    assert res["metrics"]["sWUGGY (dev)"] == pytest.approx(summary["all"])
    assert res["metrics"]["sWUGGY in-vocab (dev)"] == pytest.approx(summary["in_vocab"])
    assert (out / "submission" / "syntactic" / "dev.txt").is_file()
    assert res["benchmarks"]["tSC"]["n_pairs"] == 3 and res["benchmarks"]["tSC"]["layout"] == "released"

    # PPL: pooled over tokens of the test split
    view = UnitDataset(ds_root).split("test")
    s = direct.score_units([np.asarray(view[i], dtype=np.int64) for i in range(len(view))])
    assert res["metrics"]["PPL"] == pytest.approx(math.exp(-s.sum.sum() / s.n_tokens.sum()), rel=1e-5)
    assert res["benchmarks"]["PPL"]["n_utterances"] == len(view)

    # every accuracy is the mean of its item scores, with the Wilson interval over those items
    items = json.loads((out / "item_scores.json").read_text())
    assert items["decide_by"] == "sum"
    n_items = {m: len(v) for m, v in items["metrics"].items()}
    # sWUGGY: 3 word ids, of which ids 2 and 3 (frequency 3 and 40) are in-vocab; sBLIMP: 2 groups
    assert n_items == {"sWUGGY (dev)": 3, "sWUGGY in-vocab (dev)": 2, "sBLIMP (dev)": 2, "sSC": 5, "tSC": 3}
    for m, scores in items["metrics"].items():
        assert res["metrics"][m] == pytest.approx(np.mean(list(scores.values())), abs=1e-12), m
        assert res["ci95"][m] == pytest.approx(list(wilson_interval(res["metrics"][m], n_items[m]))), m
        assert res["rules"][m]["sum"]["accuracy"] == pytest.approx(res["metrics"][m]) and res["rules"][m]["n_items"] == n_items[m]
    assert "PPL" not in res["ci95"]

    # outputs: JSON, markdown, a second run reads every wav from the cache
    on_disk = load_results(out)
    assert on_disk["metrics"]["sSC"] == res["metrics"]["sSC"] and on_disk["decide_by"] == "sum"
    md = (out / "results.md").read_text()
    assert "| model | PPL ↓ | sWUGGY (dev) ↑ | sWUGGY in-vocab (dev) ↑ | sBLIMP (dev) ↑ | sSC ↑ | tSC ↑ |" in md and "by frequency" in md
    n_calls = len(fake_tokenizer.calls)
    res2 = evaluate_model(_cfg(root, ds_root, tmp_path, decide_by="mean"), model, small_contract, tmp_path / "run2",
                          tokenizer=fake_tokenizer)
    assert len(fake_tokenizer.calls) == n_calls and res2["tokenizer_cache"]["encoded"] == 0
    rows2 = [json.loads(x) for x in (tmp_path / "run2" / "items" / "sSC.jsonl").read_text().splitlines()]
    assert [r["score"] for r in rows2] == [decide(r["positive_logprob_mean"], r["negative_logprob_mean"]) for r in rows2]


def test_bad_audio_is_skipped_or_stops_in_strict_mode(tmp_path, ev, bench, small_contract, fake_tokenizer):
    root, _, ds_root = bench
    (root / "sSC" / "wav" / "s2_neg.wav").write_bytes(b"garbage")
    model = ev.tiny_llama(small_contract)
    res = evaluate_model(_cfg(root, ds_root, tmp_path), model, small_contract, tmp_path / "run", tokenizer=fake_tokenizer)
    assert res["n_rejected"] == 1 and res["benchmarks"]["sSC"]["n_pairs_skipped"] == 1
    assert "s2_neg.wav" in (tmp_path / "run" / "rejects.jsonl").read_text()
    with pytest.raises(RejectedItemError, match="s2_neg.wav"):
        evaluate_model(_cfg(root, ds_root, tmp_path, strict=True), model, small_contract, tmp_path / "run3",
                       tokenizer=fake_tokenizer)


def test_configuration_errors(tmp_path, ev, bench, small_contract, fake_tokenizer):
    root, _, ds_root = bench
    model = ev.tiny_llama(small_contract)
    other = ev.FakeTokenizer(dataclasses.replace(small_contract, encoder_fingerprint="another-encoder"))
    with pytest.raises(ContractMismatchError, match="encoder_fingerprint: model has 'fake-enc', tokenizer has 'another-encoder'"):
        evaluate_model(_cfg(root, ds_root, tmp_path), model, small_contract, tmp_path / "r", tokenizer=other)
    with pytest.raises(ValueError, match="benchmark sWUGGY/dev reads audio: set tokenizer_dir"):
        evaluate_model(_cfg(root, ds_root, tmp_path), model, small_contract, tmp_path / "r")
    with pytest.raises(ValueError, match="no benchmark configured"):
        evaluate_model({"progress": False}, model, small_contract, tmp_path / "r")
    with pytest.raises(ValueError, match="decide_by: 'max' is not one of sum, mean"):
        evaluate_model(_cfg(root, ds_root, tmp_path, decide_by="max"), model, small_contract, tmp_path / "r")


def test_compare_table_has_models_as_rows_and_metrics_as_columns():
    a = {"model_name": "TWIST-tiny", "metrics": {"sSC": 0.5, "PPL": 12.3456, "sWUGGY (dev)": 0.7}}
    b = {"model_name": "COLD-tiny", "metrics": {"PPL": 20.0, "sWUGGY (dev)": 0.61, "tSC": 0.55}}
    md, table = compare_table([a, b])
    lines = md.splitlines()
    assert lines[0] == "| model | PPL ↓ | sWUGGY (dev) ↑ | sSC ↑ | tSC ↑ |"
    assert lines[2] == "| TWIST-tiny | 12.35 | 70.0 | 50.0 | – |"
    assert lines[3] == "| COLD-tiny | 20.00 | 61.0 | – | 55.0 |"
    assert table["columns"] == ["PPL", "sWUGGY (dev)", "sSC", "tSC"] and table["rows"][1]["tSC"] == 0.55
    md2, _ = compare_table([a, b], names=["x", "y"])
    assert md2.splitlines()[2].startswith("| x |")
    with pytest.raises(ValueError, match="2 names for 1 runs"):
        compare_table([a], names=["x", "y"])


def test_length_only_baseline_and_both_rules_on_a_hand_made_case(tmp_path, ev, small_contract):
    """A model that gives every token the same probability: the sum rule is then exactly "the
    shorter sequence wins", the length-only baseline."""
    import torch


    v = small_contract.layout.vocab_size
    uniform = ev.FixedLogitsLM(torch.zeros(v, v))
    # (positive, negative) unit counts -> length-only decisions 1, 0, 0.5, 1
    lengths = {"p1": (3, 5), "p2": (6, 2), "p3": (4, 4), "p4": (2, 7)}
    rows = [{"id": i, "positive_units": [u % 2 for u in range(a)], "negative_units": [u % 2 for u in range(b)]}
            for i, (a, b) in lengths.items()]  # alternating 0 1 0 1: nothing for dedup to collapse
    (tmp_path / "sSC").mkdir()
    (tmp_path / "sSC" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"benchmarks": {"ssc": {"path": str(tmp_path / "sSC")}}, "progress": False, "model_name": "uniform"}
    res = evaluate_model(cfg, uniform, small_contract, tmp_path / "run")
    r = res["rules"]["sSC"]
    assert r["n_items"] == 4
    assert r["length"]["accuracy"] == 0.625 and r["length"]["ci95"] == pytest.approx(list(wilson_interval(0.625, 4)))
    assert r["sum"]["accuracy"] == 0.625 and r["agree_with_length"]["sum"] == 1.0
    assert res["metrics"]["sSC"] == 0.625 and res["ci95"]["sSC"] == r["sum"]["ci95"]
    items = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "run" / "items" / "sSC.jsonl").read_text().splitlines()}
    assert {i: items[i]["length_score"] for i in lengths} == {"p1": 1.0, "p2": 0.0, "p3": 0.5, "p4": 1.0}
    assert {i: (items[i]["positive_n_units"], items[i]["negative_n_units"]) for i in lengths} == lengths
    # the mean rule (per-token scores are equal up to float rounding here) is reported from the same rows
    mean_dec = [decide(x["positive_logprob_mean"], x["negative_logprob_mean"]) for x in items.values()]
    assert r["mean"]["accuracy"] == pytest.approx(np.mean(mean_dec))
    assert r["agree_with_length"]["mean"] == pytest.approx(np.mean([d == x["length_score"] for d, x in zip(mean_dec, items.values())]))
    md = (tmp_path / "run" / "results.md").read_text()
    lo, hi = (100 * x for x in wilson_interval(0.625, 4))
    assert "| metric | items | sum ↑ | mean ↑ | length-only ↑ | sum agrees | mean agrees |" in md
    assert f"| sSC | 4 | 62.5 [{lo:.1f}, {hi:.1f}] | " in md and f"| 62.5 [{lo:.1f}, {hi:.1f}] | 100.0 |" in md
    assert f"| uniform | 62.5 [{lo:.1f}, {hi:.1f}] |" in md
    res = evaluate_model({**cfg, "decide_by": "mean"}, uniform, small_contract, tmp_path / "run_mean")
    assert res["metrics"]["sSC"] == pytest.approx(np.mean(mean_dec)) and res["rules"]["sSC"]["length"]["accuracy"] == 0.625


def test_shared_recordings_of_a_bench_build_are_encoded_once(tmp_path, ev, small_contract, fake_tokenizer):
    from twist.bench.storycloze import build_storycloze
    from twist.bench.tts import get_backend

    csv = tmp_path / "stories.csv"
    csv.write_text("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
                   "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
                   "a,Tom made tea,He drank it,It was warm,He felt good,He slept well,He ran to Mars,1\n"
                   "b,Ann got a cat,It was small,She fed it,It grew big,The cat ate a car,The cat was happy,2\n"
                   "c,Bob lost a key,He looked for it,He found it,He was glad,He went home,He ate the key,1\n")
    build_storycloze(csv, tmp_path / "bench" / "storycloze", get_backend("espeak"), progress=False)
    cfg = {"bench_root": str(tmp_path / "bench"), "cache_dir": "off", "progress": False, "max_length": 100000}
    res = evaluate_model(cfg, ev.tiny_llama(small_contract, max_positions=100000), small_contract, tmp_path / "run",
                         tokenizer=fake_tokenizer)
    assert res["benchmarks"]["sSC"]["n_pairs"] == 3 and res["benchmarks"]["tSC"]["n_pairs"] == 3
    # 12 paths (3 stories x 2 variants x 2 sides), 9 distinct recordings: 9 encoder calls
    assert len(fake_tokenizer.calls) == 9 == res["tokenizer_cache"]["encoded"]
    assert res["tokenizer_cache"]["same_content"] == 3


def test_bench_root_reports_the_multi_speaker_sets_next_to_the_single_speaker_ones(tmp_path, ev, small_contract,
                                                                                  fake_tokenizer):
    import shutil

    from twist.bench.storycloze import build_storycloze
    from twist.bench.tts import get_backend
    from twist.eval.registry import metric_order

    csv = tmp_path / "stories.csv"
    csv.write_text("InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,"
                   "RandomFifthSentenceQuiz1,RandomFifthSentenceQuiz2,AnswerRightEnding\n"
                   "a,Tom made tea,He drank it,It was warm,He felt good,He slept well,He ran to Mars,1\n"
                   "b,Ann got a cat,It was small,She fed it,It grew big,The cat ate a car,The cat was happy,2\n")
    build_storycloze(csv, tmp_path / "bench" / "storycloze", get_backend("espeak"), voices=["en-us", "en-us+f3"],
                     progress=False)
    cfg = {"bench_root": str(tmp_path / "bench"), "cache_dir": "off", "progress": False, "max_length": 100000}
    res = evaluate_model(cfg, ev.tiny_llama(small_contract, max_positions=100000), small_contract, tmp_path / "run",
                         tokenizer=fake_tokenizer)
    assert list(res["metrics"]) == ["sSC", "sSC_ms", "tSC", "tSC_ms"]
    assert all(res["benchmarks"][k]["n_pairs"] == 2 for k in res["metrics"])
    order = metric_order()
    assert order.index("sSC_ms") == order.index("sSC") + 1 and order.index("tSC_ms") == order.index("tSC") + 1
    md = (tmp_path / "run" / "results.md").read_text()
    assert md.index("| sSC |") < md.index("| sSC_ms |") < md.index("| tSC |") < md.index("| tSC_ms |")
    # without the multi-speaker build the rows are skipped, as any benchmark whose input is absent
    for task in ("sSC_ms", "tSC_ms"):
        shutil.rmtree(tmp_path / "bench" / "storycloze" / task)
    res = evaluate_model(cfg, ev.tiny_llama(small_contract, max_positions=100000), small_contract, tmp_path / "run2",
                         tokenizer=fake_tokenizer)
    assert list(res["metrics"]) == ["sSC", "tSC"]


def test_compare_table_tests_rows_on_items_matched_by_id():
    a = {"model_name": "A", "metrics": {"sSC": 0.75, "PPL": 10.0}, "ci95": {"sSC": [0.5, 0.9]}}
    b = {"model_name": "B", "metrics": {"sSC": 0.35, "PPL": 12.0}, "ci95": {"sSC": [0.2, 0.55]}}
    sa = {f"s{k}": 1.0 for k in range(8)} | {"s8": 0.0, "s9": 0.0, "only_a": 1.0}
    sb = {f"s{k}": 0.0 for k in range(8)} | {"s8": 1.0, "s9": 1.0, "only_b": 0.0}
    md, table = compare_table([a, b], item_scores=[{"sSC": sa}, {"sSC": sb}])
    lines = md.splitlines()
    assert lines[2] == "| A | 10.00 | 75.0 [50.0, 90.0] |" and lines[3] == "| B | 12.00 | 35.0 [20.0, 55.0] |"
    (t,) = table["paired_tests"]  # PPL is not an accuracy: no test
    assert (t["n"], t["a_better"], t["b_better"], t["n_only_a"], t["n_only_b"]) == (10, 8, 2, 1, 1)
    assert t["p_value"] == pytest.approx(112 / 1024) and t["difference"] == pytest.approx(0.6)
    assert "| sSC | A | B | +60.0 | 10 | 8 | 2 | 0.109 | 1 / 1 |" in md
    md_old, table_old = compare_table([a, b])  # runs made before item_scores.json existed
    assert table_old["paired_tests"] == [] and "No paired tests" in md_old
