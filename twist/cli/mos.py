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

from twist.cli.common import RunDir, fail, hydra_cli
from twist.mos.config import MosBuildConfig, MosScoreConfig

USAGE = """usage: twist-mos build [key=value ...]   write the listening-test page (config: mos_build.yaml)
       twist-mos score [key=value ...]   score the ratings files (config: mos_score.yaml)
Hydra's own flags (--cfg job, --help, ...) go after the subcommand."""


def run_build(cfg: Any) -> Path:
    from twist.mos.build import build_page, minutes_per_rater
    from twist.schema import to_typed

    c = to_typed(MosBuildConfig, cfg)
    out = Path(c.out_dir)
    run_dir = RunDir("mos_build", c, cfg)  # a rebuild with other settings or clips stops here
    key = build_page(c.systems or {}, out, original=c.original, resynth=c.resynth, settings=c.page,
                     overwrite=c.overwrite, progress=c.progress, on_start=run_dir.start)
    page = (out / "page" / "index.html").resolve()
    print(f"[twist-mos] test {key['test_id']}: {len(key['items'])} clips ({', '.join(key['systems'] + key['toplines'])}) "
          f"over {len(key['prompts'])} prompts, about {minutes_per_rater(key):.1f} min of audio per rater")
    print(f"[twist-mos] listening-test page: {page}")
    print(f"[twist-mos] key (keep private; score with it): {out / 'key.json'}")
    return page


def run_score(cfg: Any) -> dict[str, Any]:
    from twist.mos.build import load_key
    from twist.mos.score import score_ratings
    from twist.schema import to_typed

    c = to_typed(MosScoreConfig, cfg)
    out = Path(c.out_dir)
    key = load_key(c.key)
    ratings = [c.ratings] if isinstance(c.ratings, str) else list(c.ratings or [])
    RunDir("mos_score", c, cfg).start()  # after the key is read: a bad key writes nothing
    res = score_ratings(key, ratings, out, screening=c.screening, confidence=c.confidence, strict=c.strict,
                        plot=c.plot)
    print((out / "mmos.md").read_text(encoding="utf-8"), end="")
    print(f"\n[twist-mos] wrote {out / 'mmos.md'}, {out / 'mmos.json'}" + (f", {out / 'mmos.png'}" if c.plot else ""))
    return res


build = hydra_cli("twist-mos build", "mos_build", MosBuildConfig, run_build)
score = hydra_cli("twist-mos score", "mos_score", MosScoreConfig, run_score)
_SUBCOMMANDS = {"build": build, "score": score}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in _SUBCOMMANDS:
        if args and args[0] in ("-h", "--help"):
            print(USAGE)
            sys.exit(0)
        print(USAGE, file=sys.stderr)
        fail("twist-mos", f"choose a subcommand, build or score{f' (got {args[0]!r})' if args else ''}")
    # Hydra parses sys.argv itself: hand it the overrides that follow the subcommand
    sys.argv = [sys.argv[0]] + args[1:]
    _SUBCOMMANDS[args[0]]()


if __name__ == "__main__":
    main()
