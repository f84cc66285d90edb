"""Time and disk of building sSC + tSC with ``twist-bench``, per 1,000 stories.

The StoryCloze CSV cannot be downloaded here, so this makes a stand-in with the release's
exact columns and quoting (``InputStoryid, InputSentence1..4, RandomFifthSentenceQuiz1/2,
AnswerRightEnding``, every field double-quoted, CRLF lines, UUID story ids) from English
sentences found in packaged text: the comments and docstrings of the Python standard
library's ``.py`` files and the ``fortunes-min`` Debian package. The sentences are not
stories, but they are short English sentences (4 to 18 words, 10.5 on average), each used
once, so the work per story (six sentences to synthesise, three recordings to write) is
the real file's; TTS time grows with the length of the audio, so the figures are an
estimate for the real text. Then it runs the command a user runs and measures it:

    python benchmarks/storycloze_build.py --stories 1000 --out /tmp/sc_bench

prints the command, its wall time, and the disk of ``wav/`` (the recordings eval reads),
``_segments/`` (the sentence cache) and the rest, per 1,000 stories.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import uuid
from pathlib import Path

from twist.bench.storycloze import STORYCLOZE_COLUMNS

# One plain sentence: a capital, 4 to 18 words of letters, ending in . ! or ?
SENTENCE = re.compile(r"^[A-Z][A-Za-z']*(?:[,;:]? [A-Za-z'-]+){3,17}[.!?]$")
FORTUNES = Path("/usr/share/games/fortunes")


def packaged_sentences() -> list[str]:
    """Distinct sentences from the standard library sources and fortunes-min, in a fixed order."""
    texts: list[str] = []
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(stdlib.rglob("*.py")):
        if "site-packages" in f.relative_to(stdlib).parts:
            continue
        try:
            texts.append(re.sub(r"^\s*#+\s?", " ", f.read_text(encoding="utf-8"), flags=re.M))
        except (UnicodeDecodeError, OSError):
            continue
    for name in ("fortunes", "literature", "riddles"):
        if (FORTUNES / name).is_file():
            texts.append((FORTUNES / name).read_text(encoding="utf-8", errors="replace").replace("\n%\n", "\n\n"))
    seen: dict[str, None] = {}
    for text in texts:
        for chunk in re.split(r"\n\s*\n", text):
            for s in re.split(r"(?<=[.!?])\s+", " ".join(chunk.split())):
                if SENTENCE.match(s):
                    seen.setdefault(s, None)
    return list(seen)


def write_standin_csv(path: Path, n_stories: int, seed: int = 0) -> int:
    """Write ``n_stories`` stories of six distinct sentences each; returns the sentences available."""
    pool = packaged_sentences()
    if len(pool) < 6 * n_stories:
        raise SystemExit(f"only {len(pool)} distinct packaged sentences, {6 * n_stories} needed; ask for fewer stories")
    rng = random.Random(seed)
    rng.shuffle(pool)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
        w.writerow(STORYCLOZE_COLUMNS)
        for i in range(n_stories):
            six = pool[6 * i : 6 * i + 6]
            w.writerow([str(uuid.UUID(int=rng.getrandbits(128), version=4)), *six, rng.choice("12")])
    return len(pool)


def _mb(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6 if root.exists() else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stories", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path("/tmp/twist_storycloze_bench"))
    ap.add_argument("--workers", type=int, default=None, help="TTS processes (default: the cores)")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    csv_path = args.out / "cloze_standin.csv"
    n_pool = write_standin_csv(csv_path, args.stories)
    bench = args.out / "bench"
    cmd = ["twist-bench", "task=storycloze", f"storycloze.csv={csv_path}", f"out_dir={bench}", "progress=false"]
    if args.workers:
        cmd.append(f"workers={args.workers}")
    exe = shutil.which("twist-bench")
    argv = cmd if exe else [sys.executable, "-m", "twist.cli.bench", *cmd[1:]]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    report = json.loads((bench / "bench_report.json").read_text())["tasks"]["storycloze"]
    sc = bench / "storycloze"
    per_k = 1000.0 / args.stories
    wav, seg = _mb(sc / "wav"), _mb(sc / "_segments")
    print(json.dumps({
        "command": " ".join(cmd),
        "stories": args.stories,
        "packaged_sentences_available": n_pool,
        "pairs": report["pairs"],
        "sentences_synthesised": report["sentences"],
        "recordings": report["recordings"],
        "tts": report["tts"],
        "wall_s": round(wall, 1),
        "wall_s_per_1000_stories": round(wall * per_k, 1),
        "mb_per_1000_stories": {
            "wav (read by twist-eval)": round(wav * per_k, 1),
            "_segments (sentence cache, may be deleted)": round(seg * per_k, 1),
            "total": round(_mb(sc) * per_k, 1),
        },
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
