"""``twist-train``: train a speech LM on a unit dataset (thin Hydra entry point).

    twist-train +model=opt-350m +init=warm data.path=/data/units out_dir=runs/twist-350m

Under torchrun the same command trains with DDP (or FSDP2 with ``train.strategy=fsdp``).
The library (twist.train) does the work; this module composes and checks the config
(twist/train/config.py), calls the trainer, and prints where the result is.
"""

from __future__ import annotations

from typing import Any

from twist.cli.common import hydra_cli, save_resolved_config, user_errors
from twist.train.config import TrainRunConfig

PROG = "twist-train"


@user_errors(PROG)
def run(cfg: Any) -> None:
    from twist.dist import is_main_process
    from twist.schema import to_typed
    from twist.train.distributed import shutdown_distributed
    from twist.train.trainer import Trainer

    typed = to_typed(TrainRunConfig, cfg)
    if is_main_process():
        save_resolved_config(cfg, typed.out_dir)
    trainer = Trainer(typed)
    result = trainer.fit()
    if is_main_process():
        where = (f"speech LM in {result.export_dir}" if result.export_dir is not None
                 else f"checkpoint in {result.out_dir / 'checkpoints' / 'last'}; run the same command to resume")
        best = (f"best valid PPL {result.best_ppl:.3f} at step {result.best_step}" if result.best_step >= 0
                else "no validation yet")
        print(f"{PROG}: {result.stop_reason or 'done'} at step {result.step} ({result.tokens} tokens); {best}; {where}",
              flush=True)
    del trainer  # free the wrapped model before the process group goes (see shutdown_distributed)
    shutdown_distributed()


main = hydra_cli(PROG, "train", TrainRunConfig, run)

if __name__ == "__main__":
    main()
