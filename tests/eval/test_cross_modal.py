"""Cross-modal StoryCloze: a text context with spoken endings (T→S) and a spoken context with
text endings (S→T), scored for a text+units model next to speech→speech sSC/tSC.

The sets are laid out as twist-bench writes them (``storycloze/{sSC,tSC}/pairs.jsonl`` and
``texts.jsonl``, recordings in ``storycloze/wav``); the recordings are made of frames the fake
tokenizer reads back as chosen units, and the text tokenizer is the tiny ``w0 w1 ...`` one.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.text_tokenizers import tiny_text_tokenizer
from twist.eval import evaluate_model
from twist.eval.stats import wilson_interval
from twist.lm.text_units import speech_tokenizer, text_units_contract
from twist.units import dedup

FRAME_S = 0.02  # one fake-tokenizer frame: 320 samples at 16 kHz

# story id -> (context sentences, positive ending, negative ending, context units, positive units, negative units)
STORIES = {
    "s1": (["w1 w2", "w3", "w4 w5", "w6"], "w7 w8", "w9", [1, 2, 3], [4, 5], [6, 6, 7]),
    "s2": (["w10", "w11 w12", "w13", "w14"], "w15", "w16 w17 w18", [2, 1], [3], [5, 4]),
}


def _write_set(root, ev, k, variant="sSC", stories=STORIES):
    """A twist-bench StoryCloze build: context frames, one silent frame (the gap), ending frames."""
    rows, texts = [], []
    for sid, (context, pos, neg, cu, pu, nu) in stories.items():
        for side, units in (("pos", pu), ("neg", nu)):
            ev.write_units_wav(root / "wav" / f"{sid}_{side}.wav", [*cu, 0, *units], k)
        rows.append({"id": sid, "positive": f"../wav/{sid}_pos.wav", "negative": f"../wav/{sid}_neg.wav"})
        texts.append({"id": sid, "context": context, "positive": pos, "negative": neg,
                      "context_end": len(cu) * FRAME_S, "ending_start": (len(cu) + 1) * FRAME_S})
    (root / variant).mkdir(parents=True, exist_ok=True)
    (root / variant / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / variant / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    return root / variant


@pytest.fixture
def tu(small_contract):
    """The text+units contract of the 8-unit fake tokenizer and the tiny 300-id text tokenizer, and
    the model's (extended) tokenizer: text ids 0..299 (<pad> 0, <s> 1, </s> 2, wN = 4 + N), unit u
    at 300 + u, <speech> 308, <text> 309."""
    text_tok = tiny_text_tokenizer()
    contract = text_units_contract(small_contract, text_tok, "tiny-words")
    return contract, speech_tokenizer(text_tok, contract)


def _table(contract) -> torch.Tensor:
    """Fixed logits: each row (the previous token) a different spread over every id, text, units,
    markers and padding alike, so a wrong support or a scored context changes every number."""
    v = contract.layout.vocab_size
    g = torch.Generator().manual_seed(0)
    return torch.randn(v, v, generator=g) * 2


def _by_hand(table, seq, start, support):
    """sum over targets from ``start`` of log( exp t[prev, tgt] / sum_{s in support} exp t[prev, s] )."""
    total = 0.0
    for i in range(start, len(seq)):
        row = table[seq[i - 1]].double()
        total += float(row[seq[i]]) - math.log(sum(math.exp(float(row[s])) for s in support))
    return total


def _w(text):
    return [4 + int(w[1:]) for w in text.split()]


@pytest.mark.parametrize("direction", ["t2s", "s2t"])
def test_a_cross_modal_item_is_the_endings_log_probability_given_the_context_as_computed_by_hand(
        direction, tmp_path, ev, tu, fake_tokenizer):
    contract, tok = tu
    lay = contract.layout
    table = _table(contract)
    path = _write_set(tmp_path / "storycloze", ev, contract.n_units)
    cfg = {"benchmarks": {"ssc_cross": {"path": str(path), "directions": [direction]}}, "progress": False,
           "cache_dir": "off"}
    res = evaluate_model(cfg, ev.FixedLogitsLM(table), contract, tmp_path / "run", tokenizer=fake_tokenizer,
                         text_tokenizer=tok)
    name, metric = f"sSC/{direction}", "sSC (T→S)" if direction == "t2s" else "sSC (S→T)"
    assert list(res["metrics"]) == [metric]
    rows = {json.loads(x)["id"]: json.loads(x) for x in
            (tmp_path / "run" / "items" / f"sSC_{direction}.jsonl").read_text().splitlines()}
    units_and_eos = [*range(300, 308), 2]
    decisions = []
    for sid, (context, pos, neg, cu, pu, nu) in STORIES.items():
        got = {}
        for side, text, frames in (("positive", pos, pu), ("negative", neg, nu)):
            units = dedup(np.asarray(frames))[0].tolist()  # the ending's frames, deduplicated as the contract says
            if direction == "t2s":  # <bos> <text> the four sentences <speech> the ending's units <eos>
                seq = [1, 309, *_w(" ".join(context)), 308, *[300 + u for u in units], 2]
                start, support, n = len(seq) - len(units) - 1, units_and_eos, len(units) + 1
            else:  # <bos> <speech> the context's units <text> the ending's words <eos>
                seq = [1, 308, *[300 + u for u in cu], 309, *_w(text), 2]
                start, support, n = len(seq) - len(_w(text)) - 1, range(300), len(_w(text)) + 1
            want = _by_hand(table, seq, start, support)
            assert rows[sid][f"{side}_logprob_sum"] == pytest.approx(want, abs=1e-4), (sid, side)
            assert rows[sid][f"{side}_n_tokens"] == n
            assert rows[sid][f"{side}_logprob_mean"] == pytest.approx(want / n, abs=1e-4)
            got[side] = want
        decisions.append(0.5 * (got["positive"] == got["negative"]) + (got["positive"] > got["negative"]))
        assert rows[sid]["score"] == decisions[-1]
        assert rows[sid]["positive_text"] == pos and rows[sid]["negative_text"] == neg
    assert res["metrics"][metric] == np.mean(decisions)
    assert res["benchmarks"][name]["n_pairs"] == 2
    assert lay.unit_offset == 300 and (lay.speech_id, lay.text_id) == (308, 309)


def test_the_report_holds_both_directions_next_to_speech_to_speech_with_intervals(tmp_path, ev, tu, fake_tokenizer):
    """bench_root: a text+units model is scored on sSC and tSC speech→speech and, from the same
    sets, in both cross-modal directions; each accuracy has its interval, every rule and its item
    scores (paired tests in mode=compare), and the tables put T→S and S→T right after their set."""
    from twist.eval.report import compare_runs

    contract, tok = tu
    root = tmp_path / "bench" / "storycloze"
    _write_set(root, ev, contract.n_units, "sSC")
    _write_set(root, ev, contract.n_units, "tSC")
    cfg = {"bench_root": str(tmp_path / "bench"), "progress": False, "cache_dir": str(tmp_path / "cache"),
           "model_name": "tu"}
    model = ev.FixedLogitsLM(_table(contract))
    res = evaluate_model(cfg, model, contract, tmp_path / "run", tokenizer=fake_tokenizer, text_tokenizer=tok)
    metrics = ["sSC", "sSC (T→S)", "sSC (S→T)", "tSC", "tSC (T→S)", "tSC (S→T)"]
    assert sorted(res["metrics"]) == sorted(metrics)
    for m in metrics:
        assert res["ci95"][m] == pytest.approx(list(wilson_interval(res["metrics"][m], 2)))
        assert set(res["rules"][m]) >= {"sum", "mean", "length", "agree_with_length"}
    md = (tmp_path / "run" / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert header == "| model | " + " | ".join(f"{m} ↑" for m in metrics) + " |"
    scores = json.loads((tmp_path / "run" / "item_scores.json").read_text())["metrics"]
    assert set(scores["sSC (S→T)"]) == {"s1", "s2"}
    # the recordings are encoded once whole (speech→speech) and once per part (the context, each ending)
    assert res["tokenizer_cache"]["encoded"] == 4 + 2 + 4
    again = evaluate_model(cfg, model, contract, tmp_path / "run2", tokenizer=fake_tokenizer, text_tokenizer=tok)
    assert again["metrics"] == res["metrics"] and again["tokenizer_cache"]["encoded"] == 0
    md, table = compare_runs([tmp_path / "run", tmp_path / "run2"], ["a", "b"])
    assert {t["metric"] for t in table["paired_tests"]} == set(metrics)


def test_a_units_first_model_is_refused_for_cross_modal_scoring_in_one_line(tmp_path, ev, small_contract,
                                                                           fake_tokenizer):
    from twist.errors import ConfigError

    path = _write_set(tmp_path / "storycloze", ev, small_contract.n_units)
    cfg = {"benchmarks": {"ssc_cross": {"path": str(path)}}, "progress": False, "cache_dir": "off"}
    model = ev.FixedLogitsLM(torch.zeros(small_contract.layout.vocab_size, small_contract.layout.vocab_size))
    with pytest.raises(ConfigError) as e:
        evaluate_model(cfg, model, small_contract, tmp_path / "run", tokenizer=fake_tokenizer)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "benchmarks.ssc_cross" in msg and "text+units" in msg
    assert "units-first" in msg
    # from bench_root a units-first model is scored speech→speech only, as before
    res = evaluate_model({"bench_root": str(tmp_path), "progress": False, "cache_dir": "off"}, model, small_contract,
                         tmp_path / "run2", tokenizer=fake_tokenizer)
    assert list(res["metrics"]) == ["sSC"]


def test_cross_modal_inputs_are_checked_before_any_model_loads(tmp_path, ev, tu):
    """The planner reads texts.jsonl and refuses, in one line naming the file and the fix, a set
    without story texts (the released layout) or one made before twist-bench recorded where the
    ending begins; directions=[] scores speech→speech only."""
    from twist.errors import ConfigError, InputError, MissingInputError
    from twist.eval import plan_tasks

    contract, _ = tu
    path = _write_set(tmp_path / "storycloze", ev, contract.n_units)
    tasks = plan_tasks({"out_dir": "x", "benchmarks": {"ssc": {"path": str(path)}}}, contract)
    assert [t.metric for t in tasks] == ["sSC", "sSC (T→S)", "sSC (S→T)"]
    rows = [json.loads(x) for x in (path / "texts.jsonl").read_text().splitlines()]
    (path / "texts.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "ending_start"}) + "\n"
                                              for r in rows))
    with pytest.raises(InputError, match=r"texts.jsonl:1: story 's1' has no ending_start.*rerun twist-bench"):
        plan_tasks({"out_dir": "x", "benchmarks": {"ssc": {"path": str(path)}}}, contract)
    (path / "texts.jsonl").unlink()
    with pytest.raises(MissingInputError, match=r"no texts.jsonl.*benchmarks.ssc_cross.directions=\[\]"):
        plan_tasks({"out_dir": "x", "benchmarks": {"ssc": {"path": str(path)}}}, contract)
    tasks = plan_tasks({"out_dir": "x", "benchmarks": {"ssc": {"path": str(path)}, "ssc_cross": {"directions": []}}},
                       contract)
    assert [t.metric for t in tasks] == ["sSC"]
    with pytest.raises(ConfigError, match=r"benchmarks.tsc_cross.directions: 'both' is not one of t2s, s2t"):
        plan_tasks({"out_dir": "x", "benchmarks": {"tsc_cross": {"directions": ["both"]}}}, contract)


def test_twist_eval_on_a_text_units_model_dir_scores_both_directions_from_bench_root(tmp_path, capsys):
    """The command: the model dir's own tokenizer encodes the texts (read and checked before the
    weights load), a real unit tokenizer the recordings' parts."""
    from pathlib import Path

    import soundfile as sf
    from hydra import compose, initialize_config_dir

    import twist
    from tests.text_units_lm import save_tiny_text_units_lm
    from twist.cli.eval import main
    from twist.tokenizer import KMeansQuantizer, UnitTokenizer
    from twist.tokenizer.logmel import LogMelEncoder

    rng = np.random.default_rng(0)
    unit_tok = UnitTokenizer(LogMelEncoder(n_mels=16), KMeansQuantizer(rng.normal(size=(12, 16)).astype(np.float32)))
    unit_tok.save(tmp_path / "tokenizer")
    lm = save_tiny_text_units_lm(tmp_path / "lm", unit_tok.contract)
    root = tmp_path / "bench" / "storycloze"
    rows, texts = [], []
    for sid, (context, pos, neg, *_) in STORIES.items():
        spoken = rng.normal(scale=0.1, size=8000).astype(np.float32)
        gap = np.zeros(1600, np.float32)
        for side in ("pos", "neg"):
            (root / "wav").mkdir(parents=True, exist_ok=True)
            sf.write(root / "wav" / f"{sid}_{side}.wav",
                     np.concatenate([spoken, gap, rng.normal(scale=0.1, size=4800).astype(np.float32)]), 16000)
        rows.append({"id": sid, "positive": f"../wav/{sid}_pos.wav", "negative": f"../wav/{sid}_neg.wav"})
        texts.append({"id": sid, "context": context, "positive": pos, "negative": neg, "context_end": 0.5,
                      "ending_start": 0.6})
    (root / "sSC").mkdir()
    (root / "sSC" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "sSC" / "texts.jsonl").write_text("".join(json.dumps(t) + "\n" for t in texts))
    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[
            f"model_path={lm}", f"tokenizer_dir={tmp_path / 'tokenizer'}", "tokenizer_device=cpu", "device=cpu",
            f"bench_root={tmp_path / 'bench'}", f"out_dir={tmp_path / 'run'}", "cache_dir=off", "progress=false"])
    main.run(cfg)
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(res["metrics"]) == ["sSC", "sSC (T→S)", "sSC (S→T)"]
    assert all(res["benchmarks"][b]["n_pairs"] == 2 for b in ("sSC", "sSC/t2s", "sSC/s2t"))
    assert res["benchmarks"]["sSC/s2t"]["direction"].startswith("S→T: spoken context, text endings")
