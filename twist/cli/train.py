"""``twist-train``: train a speech LM on a unit dataset (thin Hydra entry point).

    twist-train +model=opt-350m +init=warm data.path=/data/units out_dir=runs/twist-350m

Under torchrun the same command trains with DDP (or FSDP2 with ``train.strategy=fsdp``).
The library (twist.train) does the work; this module parses the config and checks that a
model and an init were chosen.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import save_resolved_config, user_errors

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
PROG = "twist-train"

if not OmegaConf.has_resolver("basename"):
    OmegaConf.register_new_resolver("basename", lambda p: Path(str(p)).name)


def choices(group: str) -> list[str]:
    """The config files available in a group (``configs/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def _check_choices(argv: list[str]) -> None:
    """Reject an unknown ``+model=`` / ``+init=`` before Hydra composes (its error is long)."""
    for arg in argv:
        m = re.match(r"^\+{0,2}(model|init)=(.*)$", arg)
        if not m:
            continue
        group, value = m.groups()
        for v in value.split(","):  # multirun: a,b,c
            v = v.strip()
            if v and v not in choices(group):
                print(f"{PROG}: error: unknown {group} {v!r}; choose one of: {', '.join(choices(group))} "
                      f"(files in {CONFIGS / group})", file=sys.stderr)
                sys.exit(2)


@user_errors(PROG)
def run(cfg: DictConfig) -> None:
    for group in ("model", "init"):
        if cfg.get(group) is None:
            raise ValueError(
                f"no {group} chosen: add +{group}=<name> to the command line; choose one of: {', '.join(choices(group))}"
            )
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"missing required setting(s): {', '.join(missing)} (e.g. data.path=/data/units out_dir=runs/x)")
    from twist.dist import is_main_process
    from twist.train.trainer import Trainer

    if is_main_process():
        save_resolved_config(cfg, cfg.out_dir)
    if not cfg.train.get("progress", True):
        from twist.console import quiet_third_party_progress

        quiet_third_party_progress()  # transformers' own "Loading weights" bar
    from twist.atomic import disk_full_guard

    # metrics and logs are appended, not renamed into place: a full disk there is one line too
    with disk_full_guard(cfg.out_dir, intact="checkpoints/last is intact; free space and rerun to resume"):
        trainer = Trainer(cfg)
        result = trainer.fit()
    if is_main_process():
        from twist.console import say
        from twist.train.loggers import result_message

        say(result_message(PROG, stop_reason=result.stop_reason, step=result.step, tokens=result.tokens,
                           best_ppl=result.best_ppl, best_step=result.best_step, export_dir=result.export_dir,
                           checkpoint=result.out_dir / "checkpoints" / "last"))
    from twist.train.distributed import shutdown_distributed

    del trainer  # free the wrapped model before the process group goes (see shutdown_distributed)
    shutdown_distributed()


@hydra.main(config_path="../configs", config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run(cfg)


def _check_out_dir(argv: list[str]) -> None:
    """Hydra resolves ``hydra.run.dir: ${out_dir}`` before our code runs; say plainly what is missing."""
    if any(a.startswith(("-h", "--help", "--hydra-help", "--info", "--cfg", "-c", "--shell-completion")) for a in argv):
        return
    if any(re.match(r"^\+{0,2}out_dir=", a) for a in argv):
        return
    for a in argv:  # an experiment file may set out_dir itself
        m = re.match(r"^\+{0,2}experiment=(.*)$", a)
        if m and all("\nout_dir:" in (CONFIGS / "experiment" / f"{e}.yaml").read_text() for e in m.group(1).split(",")
                      if (CONFIGS / "experiment" / f"{e}.yaml").exists()):
            return
    print(f"{PROG}: error: missing required setting out_dir (the run directory), e.g. out_dir=runs/twist-350m",
          file=sys.stderr)
    sys.exit(2)


def main() -> None:
    argv = sys.argv[1:]
    _check_choices(argv)
    _check_out_dir(argv)
    _hydra_main()


if __name__ == "__main__":
    main()
