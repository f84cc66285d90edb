"""twist-eval through its Hydra config, with a real speech LM dir and a real tokenizer dir."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import twist
from tests.model_shapes import tiny_node
from twist.contract import ContractMismatchError

TINY_OPT = tiny_node("opt", max_position_embeddings=512)


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        return compose(config_name="eval", overrides=overrides)


@pytest.fixture
def artefacts(tmp_path):
    """A log-mel + random-codebook tokenizer dir, a speech LM dir for its contract, a wav pairs set."""
    import soundfile as sf

    from twist.lm import build_speech_lm, save_speech_lm
    from twist.tokenizer import KMeansQuantizer, UnitTokenizer
    from twist.tokenizer.logmel import LogMelEncoder

    rng = np.random.default_rng(0)
    tok = UnitTokenizer(LogMelEncoder(n_mels=16), KMeansQuantizer(rng.normal(size=(12, 16)).astype(np.float32)))
    tok.save(tmp_path / "tokenizer")
    model = build_speech_lm(TINY_OPT, "cold", tok.contract, verbose=False)
    save_speech_lm(model, tmp_path / "lm", tok.contract)
    rows = []
    (tmp_path / "sSC").mkdir()
    for i in range(3):
        for side in ("pos", "neg"):
            sf.write(str(tmp_path / "sSC" / f"{i}_{side}.wav"), rng.normal(scale=0.1, size=8000).astype(np.float32), 16000)
        rows.append({"id": f"story{i}", "positive": f"{i}_pos.wav", "negative": f"{i}_neg.wav"})
    (tmp_path / "sSC" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, tok


def test_cli_eval_then_compare(artefacts, capsys):
    from twist.cli.eval import main

    root, _ = artefacts
    for name in ("a", "b"):
        cfg = _compose([f"model_path={root / 'lm'}", f"tokenizer_dir={root / 'tokenizer'}", "tokenizer_device=cpu",
                        f"benchmarks.ssc.path={root / 'sSC'}", f"out_dir={root / name}", f"model_name=model-{name}",
                        f"cache_dir={root / 'cache'}", "device=cpu", "progress=false", "batch_size=2"])
        main.run(cfg)
        res = json.loads((root / name / "results.json").read_text())
        assert res["benchmarks"]["sSC"]["n_pairs"] == 3 and res["dtype"] == "float32"
        assert (root / name / "config.yaml").is_file() and (root / name / "items" / "sSC.jsonl").is_file()
        assert (root / name / "item_scores.json").is_file() and (root / name / "rejects.jsonl").read_text() == ""
    assert res["tokenizer_cache"]["hits"] == 6  # the second run tokenized nothing
    cfg = _compose(["mode=compare", f"compare.runs=[{root / 'a'},{root / 'b'}]", f"out_dir={root / 'cmp'}"])
    main.run(cfg)
    md = (root / "cmp" / "compare.md").read_text().splitlines()
    assert md[0] == "| model | sSC ↑ |" and md[2].startswith("| model-a |") and md[3].startswith("| model-b |")
    assert "model-b" in capsys.readouterr().out
    # the same model twice: identical item scores, a paired test that finds nothing
    table = json.loads((root / "cmp" / "compare.json").read_text())
    (t,) = table["paired_tests"]
    assert (t["metric"], t["a"], t["b"], t["n"], t["a_better"], t["b_better"], t["p_value"]) == \
        ("sSC", "model-a", "model-b", 3, 0, 0, 1.0)
    assert "| sSC | model-a | model-b | +0.0 | 3 | 0 | 0 | 1.000 | 0 / 0 |" in md


def test_cli_refuses_a_model_made_for_another_tokenizer(artefacts, capsys):
    from twist.cli.eval import main
    from twist.lm import build_speech_lm, save_speech_lm

    root, tok = artefacts
    other = dataclasses.replace(tok.contract, kmeans_fingerprint="someone-elses-codebook")
    save_speech_lm(build_speech_lm(TINY_OPT, "cold", other, verbose=False), root / "lm2", other)
    capsys.readouterr()
    cfg = _compose([f"model_path={root / 'lm2'}", f"tokenizer_dir={root / 'tokenizer'}", "tokenizer_device=cpu",
                    f"benchmarks.ssc.path={root / 'sSC'}", f"out_dir={root / 'bad'}", "device=cpu"])
    with pytest.raises(SystemExit) as e:
        main.run(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "twist-eval: error: unit contract mismatch between speech LM" in err
    assert "kmeans_fingerprint" in err and "someone-elses-codebook" in err and "tokenizer" in err
    assert issubclass(ContractMismatchError, ValueError)


def test_cli_names_an_empty_benchmark_dir(artefacts, capsys):
    from twist.cli.eval import main

    root, _ = artefacts
    (root / "empty_tsc").mkdir()
    cfg = _compose([f"model_path={root / 'lm'}", f"tokenizer_dir={root / 'tokenizer'}", "tokenizer_device=cpu",
                    f"benchmarks.tsc.path={root / 'empty_tsc'}", f"out_dir={root / 'e'}", "device=cpu"])
    with pytest.raises(SystemExit) as e:
        main.run(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("twist-eval: error: tSC benchmark dir") and "empty_tsc is empty" in err


def test_cli_says_what_bench_root_should_hold(artefacts, capsys):
    from twist.cli.eval import main

    root, _ = artefacts
    # a StoryCloze set given as bench_root (instead of benchmarks.ssc.path)
    cfg = _compose([f"model_path={root / 'lm'}", f"tokenizer_dir={root / 'tokenizer'}", "tokenizer_device=cpu",
                    f"bench_root={root / 'sSC'}", f"out_dir={root / 'e'}", "device=cpu"])
    with pytest.raises(SystemExit) as e:
        main.run(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"twist-eval: error: bench_root {root / 'sSC'}: no benchmark found in it")
    assert "storycloze/sSC/" in err and "lexical/<split>/gold.csv" in err
    assert "pass it as benchmarks.ssc.path or benchmarks.tsc.path" in err
