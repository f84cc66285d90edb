"""``twist-eval``: zero-shot benchmarks for a speech LM, or a comparison table over several runs.

Thin entry point: settings in twist/eval/config.py (benchmarks: twist/eval/registry.py); the
work is :func:`twist.eval.evaluate.evaluate_run` and :func:`twist.eval.report.compare_runs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twist.cli.common import RunDir, hydra_cli
from twist.eval.config import EvalRunConfig

PROG = "twist-eval"


def run(cfg: Any) -> None:
    from twist.schema import to_typed

    c = to_typed(EvalRunConfig, cfg)
    out_dir = Path(c.out_dir)
    run_dir = RunDir("eval", c, cfg)  # a rerun with another model or benchmark stops here
    if c.mode == "compare":
        from twist.atomic import atomic_write_json, atomic_write_text
        from twist.eval.report import compare_runs

        md, table = compare_runs(c.compare.runs, c.compare.names or None)
        run_dir.start()
        atomic_write_text(out_dir / "compare.md", md)
        atomic_write_json(out_dir / "compare.json", table)
        print(md, end="")
        return
    from twist.eval.evaluate import evaluate_run

    results = evaluate_run(c, on_start=run_dir.start)
    print(json.dumps({"metrics": results["metrics"], "pairs_per_second": results.get("pairs_per_second"),
                      "out_dir": str(out_dir)}, indent=2))


main = hydra_cli(PROG, "eval", EvalRunConfig, run)

if __name__ == "__main__":
    main()
