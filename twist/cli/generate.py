"""``twist-generate``: continue spoken prompts with a speech LM and vocode the result.

prompt audio (~3 s) -> units (the tokenizer) -> speech-LM sampling -> units -> vocoder -> wav,
with the transcript when an ASR backend is configured. Thin entry point: settings in
twist.generate.GenerateRunConfig, the work in :func:`twist.generate.generate_run`; see
``docs/vocoder.md``.
"""

from __future__ import annotations

from typing import Any

from twist.cli.common import RunDir, hydra_cli
from twist.generate import GenerateRunConfig

PROG = "twist-generate"


def run(cfg: Any) -> None:
    from twist.generate import generate_run
    from twist.schema import to_typed

    c = to_typed(GenerateRunConfig, cfg)
    run_dir = RunDir("generate", c, cfg)  # a rerun with another model or sampling stops here
    if c.threads:
        import torch

        torch.set_num_threads(c.threads)
    records, n_rejected = generate_run(c, on_start=run_dir.start)
    print(f"[{PROG}] {len(records)} new continuations ({n_rejected} prompts rejected) -> {c.out_dir}")


main = hydra_cli(PROG, "generate", GenerateRunConfig, run)

if __name__ == "__main__":
    main()
