"""twist-demo: run the whole pipeline offline on the built-in default (configs/demo.yaml)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from twist.cli.common import RunDir, hydra_cli
from twist.demo.config import DemoConfig

PROG = "twist-demo"


def run(raw: Any) -> None:
    from twist.demo.pipeline import build_steps, summarize
    from twist.demo.steps import StepFailed, run_steps
    from twist.schema import to_typed

    cfg = to_typed(DemoConfig, raw)
    out = Path(cfg.out_dir).resolve()
    # the demo keeps no run identity: each step's cache key rebuilds what other settings change
    RunDir("demo", cfg, raw, out_dir=out, config_name="demo_config.yaml").start()
    t0 = time.time()
    only, force = _names(cfg.only), _names(cfg.force)
    try:
        # Two passes: the prompt steps pick a held-out utterance from the unit dataset, which
        # exists only after `tokenize`; the step list is rebuilt once it does.
        first = [s for s in build_steps(cfg) if s.name in ("corpus", "tokenize")]
        if not only or set(only) & {"corpus", "tokenize"}:
            run_steps(first, only=[n for n in only if n in ("corpus", "tokenize")] or None,
                      force=[f for f in force if f in ("corpus", "tokenize")], log_dir=out / "logs")  # fmt: skip
        rest = build_steps(cfg)
        rest_only = [n for n in only if n not in ("corpus", "tokenize")]
        if not only or rest_only:
            # corpus/tokenize were forced (if at all) in the first pass: not a second time
            run_steps(rest, only=rest_only or None, force=[f for f in force if f not in ("corpus", "tokenize")],
                      log_dir=out / "logs")  # fmt: skip
    except StepFailed as e:
        print(f"\ntwist-demo: {e}", file=sys.stderr)
        sys.exit(1)
    print(summarize(out))
    print(f"\ntwist-demo: finished in {time.time() - t0:.0f} s (logs: {out / 'logs'})")


def _names(value: object) -> list[str]:
    """``only=corpus`` and ``only=[corpus,tokenize]`` both mean a list of step names."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return [str(v) for v in value]  # type: ignore[union-attr]


main = hydra_cli(PROG, "demo", DemoConfig, run)

if __name__ == "__main__":
    main()
