"""``twist-train``: train a speech LM on a unit dataset (thin Hydra entry point).

    twist-train +model=opt-350m +init=warm data.path=/data/units out_dir=runs/twist-350m

Under torchrun the same command trains with DDP (or FSDP2 with ``train.strategy=fsdp``).
The library (twist.train) does the work; this module composes and checks the config
(twist/train/config.py), calls the trainer, and prints where the result is.
"""

from __future__ import annotations

from typing import Any

from twist.cli.common import RunDir, hydra_cli
from twist.train.config import TrainRunConfig

PROG = "twist-train"


def run(cfg: Any) -> None:
    from twist.dist import is_main_process, shutdown_distributed
    from twist.schema import to_typed
    from twist.train.trainer import Trainer

    typed = to_typed(TrainRunConfig, cfg)
    run_dir = RunDir("train", typed, cfg)  # a rerun with other settings stops here, writing nothing
    if not typed.train.progress:
        from twist.console import quiet_third_party_progress

        quiet_third_party_progress()  # transformers' own "Loading weights" bar
    from twist.atomic import disk_full_guard

    # metrics and logs are appended, not renamed into place: a full disk there is one line too
    with disk_full_guard(typed.out_dir, intact="checkpoints/last is intact; free space and rerun to resume"):
        trainer = Trainer(typed)  # data, model and checkpoint are checked before anything is written
        if is_main_process():
            run_dir.start(note={"step": trainer.state.step})
        result = trainer.fit()
    if is_main_process():
        from twist.console import say
        from twist.train.loggers import result_message

        say(result_message(PROG, stop_reason=result.stop_reason, step=result.step, tokens=result.tokens,
                           best_value=result.best_value, best_metric=result.best_metric, best_step=result.best_step,
                           export_dir=result.export_dir,
                           checkpoint=result.out_dir / "checkpoints" / "last"))
    del trainer  # free the wrapped model before the process group goes (see shutdown_distributed)
    shutdown_distributed()


main = hydra_cli(PROG, "train", TrainRunConfig, run)

if __name__ == "__main__":
    main()
