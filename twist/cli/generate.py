"""``twist-generate``: continue spoken prompts with a speech LM and vocode the result.

prompt audio (~3 s) -> units (the tokenizer) -> speech-LM sampling -> units -> vocoder -> wav,
with the transcript when an ASR backend is configured. Thin entry point: settings in
twist.generate.GenerateRunConfig, the work in :func:`twist.generate.generate_run`; see
``docs/vocoder.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twist.cli.common import hydra_cli, save_resolved_config, user_errors
from twist.generate import GenerateRunConfig

PROG = "twist-generate"


@user_errors(PROG)
def run(cfg: Any) -> None:
    from twist.generate import generate_run
    from twist.schema import to_typed

    c = to_typed(GenerateRunConfig, cfg)
    Path(c.out_dir).mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, c.out_dir)
    if c.threads:
        import torch

        torch.set_num_threads(c.threads)
    records, n_rejected = generate_run(c)
    print(f"[{PROG}] {len(records)} new continuations ({n_rejected} prompts rejected) -> {c.out_dir}")


main = hydra_cli(PROG, "generate", GenerateRunConfig, run)

if __name__ == "__main__":
    main()
