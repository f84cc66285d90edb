"""``twist-mos``: the MMOS listening test, ``build`` (the page) and ``score`` (the ratings).

    twist-mos build 'systems={warm: runs/gen-warm, cold: runs/gen-cold}' original=data/prompts out_dir=mos/t1
    twist-mos score key=mos/t1 'ratings=[collected/]' out_dir=mos/t1/results

Thin Hydra entry points (configs ``twist/configs/mos_build.yaml`` and ``mos_score.yaml``); the
work is done by :mod:`twist.mos`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import save_resolved_config, user_errors

USAGE = """usage: twist-mos build [key=value ...]   write the listening-test page (config: mos_build.yaml)
       twist-mos score [key=value ...]   score the ratings files (config: mos_score.yaml)
Hydra's own flags (--cfg job, --help, ...) go after the subcommand."""


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) or OmegaConf.is_list(node) else node


@user_errors("twist-mos build")
def run_build(cfg: DictConfig) -> Path:
    from twist.mos.build import build_page, minutes_per_rater

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out)
    key = build_page(_plain(cfg.systems) or {}, out, original=_plain(cfg.original), resynth=_plain(cfg.resynth),
                     settings=_plain(cfg.page), overwrite=bool(cfg.overwrite), progress=bool(cfg.progress))
    page = (out / "page" / "index.html").resolve()
    print(f"[twist-mos] test {key['test_id']}: {len(key['items'])} clips ({', '.join(key['systems'] + key['toplines'])}) "
          f"over {len(key['prompts'])} prompts, about {minutes_per_rater(key):.1f} min of audio per rater")
    print(f"[twist-mos] listening-test page: {page}")
    print(f"[twist-mos] key (keep private; score with it): {out / 'key.json'}")
    return page


@user_errors("twist-mos score")
def run_score(cfg: DictConfig) -> dict[str, Any]:
    from twist.mos.build import load_key
    from twist.mos.score import score_ratings

    out = Path(cfg.out_dir)
    key = load_key(cfg.key)
    ratings = _plain(cfg.ratings)
    ratings = [ratings] if isinstance(ratings, str) else list(ratings or [])
    out.mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, out)
    res = score_ratings(key, ratings, out, screening=_plain(cfg.screening), confidence=float(cfg.confidence),
                        strict=bool(cfg.strict), plot=bool(cfg.plot))
    print((out / "mmos.md").read_text(encoding="utf-8"), end="")
    print(f"\n[twist-mos] wrote {out / 'mmos.md'}, {out / 'mmos.json'}" + (f", {out / 'mmos.png'}" if cfg.plot else ""))
    return res


_SUBCOMMANDS = {"build": ("mos_build", run_build), "score": ("mos_score", run_score)}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in _SUBCOMMANDS:
        print(USAGE, file=sys.stderr)
        sys.exit(0 if args and args[0] in ("-h", "--help") else 2)
    config_name, body = _SUBCOMMANDS[args[0]]
    # Hydra parses sys.argv itself: hand it the overrides that follow the subcommand
    sys.argv = [sys.argv[0]] + args[1:]

    @hydra.main(config_path="../configs", config_name=config_name, version_base="1.3")
    def _entry(cfg: DictConfig) -> None:
        body(cfg)

    _entry()


if __name__ == "__main__":
    main()
