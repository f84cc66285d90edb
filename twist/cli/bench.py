"""``twist-bench``: build spoken benchmarks (sSC, tSC, sBLIMP, sWUGGY) and spoken preference pairs with offline TTS.

Thin entry point: settings in twist/bench/config.py, the work in :mod:`twist.bench.build`.
See docs/bench.md.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twist.bench.config import BenchRunConfig
from twist.cli.common import RunDir, hydra_cli

PROG = "twist-bench"


def run(cfg: Any) -> dict:
    from twist.bench.build import build_benchmarks
    from twist.schema import to_typed

    c = to_typed(BenchRunConfig, cfg)
    out_dir = Path(c.out_dir)
    run_dir = RunDir("bench", c, cfg)  # a rebuild with other settings stops here, writing nothing
    report = build_benchmarks(c.task, out_dir, tts=c.tts, seed=c.seed, workers=c.workers,
                              storycloze=c.storycloze, blimp=c.blimp, wuggy=c.wuggy, prefs=c.prefs,
                              tokenizer_dir=c.tokenizer_dir, strict=c.strict,
                              progress=c.progress, on_start=run_dir.start)
    for task, res in report["tasks"].items():
        print(f"[{PROG}] {task}: {json.dumps({k: v for k, v in res.items() if k != 'tts'})}")
        print(f"[{PROG}] {task} tts: {res['tts']}")
    print(f"[{PROG}] wrote {out_dir} ({report['rejects']} rejects in rejects.jsonl)")
    return report


main = hydra_cli(PROG, "bench", BenchRunConfig, run)

if __name__ == "__main__":
    main()
