"""``twist-eval``: zero-shot benchmarks for a speech LM, or a comparison table over several runs.

Thin Hydra entry point (config: ``twist/configs/eval.yaml``); the work is done by
:func:`twist.eval.evaluate_model` and :func:`twist.eval.report.compare_runs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import save_resolved_config, user_errors
from twist.contract import UnitContract


def _device(name: str) -> Any:
    import torch

    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(name: str, device: Any) -> Any:
    import torch

    if name in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"dtype must be auto or one of {sorted(table)}, got {name!r}")
    return table[name]


def run_compare(cfg: dict[str, Any], out_dir: Path) -> str:
    from twist.atomic import atomic_write_json, atomic_write_text
    from twist.eval.report import compare_runs

    runs = list(cfg.get("compare", {}).get("runs") or [])
    if not runs:
        raise ValueError("mode=compare needs compare.runs=[<eval run dir>, ...]")
    md, table = compare_runs(runs, list(cfg["compare"].get("names") or []) or None)
    atomic_write_text(out_dir / "compare.md", md)
    atomic_write_json(out_dir / "compare.json", table)
    return md


def run_eval(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any]:
    from twist.eval import evaluate_model, plan_tasks
    from twist.lm import load_speech_lm, read_contract

    if not cfg.get("model_path"):
        raise ValueError("model_path is required in eval mode (a speech LM directory)")
    if cfg.get("progress") is False:
        from twist.console import quiet_third_party_progress

        quiet_third_party_progress()  # transformers draws its own "Loading weights" bar
    device = _device(cfg.get("device"))
    dtype = _dtype(cfg.get("dtype"), device)
    # Cheap checks first: the model's contract (no weights read) against the tokenizer's,
    # then every benchmark file; only then load the weights.
    contract = read_contract(cfg["model_path"])
    tokenizer = None
    if cfg.get("tokenizer_dir"):
        from twist.tokenizer import UnitTokenizer

        spec = UnitTokenizer.read_spec(cfg["tokenizer_dir"])
        tok_contract = UnitContract.from_dict(spec["contract"], source=str(cfg["tokenizer_dir"]))
        contract.check_compatible(tok_contract, mine=f"speech LM {cfg['model_path']}",
                                  theirs=f"tokenizer {cfg['tokenizer_dir']}")
    tasks = plan_tasks(cfg, contract)
    if cfg.get("tokenizer_dir"):
        tokenizer = UnitTokenizer.load(cfg["tokenizer_dir"], device=cfg.get("tokenizer_device") or "auto")
    expected = tokenizer.contract if tokenizer is not None else None
    model, contract = load_speech_lm(cfg["model_path"], expected=expected,
                                     expected_name=f"tokenizer {cfg.get('tokenizer_dir')}", device=device, dtype=dtype)
    results = evaluate_model(cfg, model, contract, out_dir, tokenizer=tokenizer, tasks=tasks)
    from twist.eval.zr2021 import require_complete

    require_complete(results, allow=bool(cfg.get("allow_incomplete")))
    return results


@user_errors("twist-eval")
def run(cfg: DictConfig) -> None:
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out_dir)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    mode = plain.get("mode", "eval")
    if mode == "compare":
        print(run_compare(plain, out_dir), end="")
    elif mode == "eval":
        results = run_eval(plain, out_dir)
        print(json.dumps({"metrics": results["metrics"], "pairs_per_second": results.get("pairs_per_second"),
                          "out_dir": str(out_dir)}, indent=2))
    else:
        raise ValueError(f"mode must be 'eval' or 'compare', got {mode!r}")


@hydra.main(config_path="../configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
