"""``twist-bench``: build spoken benchmarks (sSC, tSC, sBLIMP, sWUGGY) with offline TTS.

Thin Hydra entry point; the work is in :mod:`twist.bench.build`. See docs/bench.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import save_resolved_config, user_errors


@user_errors("twist-bench")
def run(cfg: DictConfig) -> dict:
    from twist.bench.build import build_benchmarks, remove_unfinished_out_dir

    c = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(c, dict)
    out_dir = Path(str(c["out_dir"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out_dir)
    tts = dict(c["tts"])
    name = tts.pop("name")
    try:
        report = build_benchmarks(
            c["task"], out_dir, tts=name, tts_kwargs=tts, seed=int(c["seed"]), workers=c["workers"],
            storycloze=c["storycloze"], blimp=c["blimp"], wuggy=c["wuggy"], strict=bool(c["strict"]),
            progress=bool(c["progress"]),
        )  # fmt: skip
    except BaseException:
        remove_unfinished_out_dir(out_dir)  # a bad input leaves no directory of logs behind
        raise
    for task, res in report["tasks"].items():
        print(f"[twist-bench] {task}: {json.dumps({k: v for k, v in res.items() if k != 'tts'})}")
        print(f"[twist-bench] {task} tts: {res['tts']}")
    print(f"[twist-bench] wrote {out_dir} ({report['rejects']} rejects in rejects.jsonl)")
    return report


@hydra.main(config_path="../configs", config_name="bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
