"""``twist-tokenize``: audio -> unit dataset (fit k-means, apply, merge) and legacy converters.

Thin entry point: settings in twist/tokenizer/config.py, the work in
:mod:`twist.tokenizer.pipeline` and the converters. See docs/tokenize.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twist.cli.common import RunDir, hydra_cli
from twist.tokenizer.config import TokenizeRunConfig

PROG = "twist-tokenize"


def run(cfg: Any) -> None:
    from twist.dist import rank_and_world
    from twist.schema import to_typed

    c = to_typed(TokenizeRunConfig, cfg)  # each mode's required settings are checked here
    out_dir = Path(c.out_dir)
    if c.mode == "convert-legacy":
        from twist.tokenizer.kmeans import convert_legacy_kmeans

        dst = Path(c.convert.dst or out_dir / "kmeans.safetensors")
        q = convert_legacy_kmeans(c.convert.src, dst, allow_pickle=c.convert.allow_pickle)
        print(f"[{PROG}] wrote {dst}: K={q.n_units}, dim={q.dim}, fingerprint {q.fingerprint()}")
        return
    if c.mode == "convert-fairseq":
        from twist.tokenizer.fairseq_convert import convert_fairseq_hubert

        dst = convert_fairseq_hubert(c.convert.src, c.convert.dst or out_dir / "hubert_hf",
                                     allow_pickle=c.convert.allow_pickle)
        print(f"[{PROG}] wrote the HF HuBERT directory {dst}")
        return
    from twist.tokenizer.pipeline import run_tokenize

    # a rerun with other settings stops here; the run's records are written once the inputs are checked
    run_dir = RunDir("tokenize", c, cfg) if c.identity_applies() else None
    start = run_dir.start if run_dir is not None and rank_and_world()[0] == 0 else None
    run_tokenize(c, mode=c.mode, on_start=start)


main = hydra_cli(PROG, "tokenize", TokenizeRunConfig, run)

if __name__ == "__main__":
    main()
