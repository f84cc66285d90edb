"""TTS throughput for benchmark building: items/s per backend, serial vs parallel.

Synthesises the sentences of the built-in StoryCloze stories and minimal pairs (the items
the benchmark builders make) with ``twist.bench.tts.synthesize_many``, once with one worker
and once with ``--workers`` workers, each into a fresh directory, and prints items/s, the
real-time factor and the parallel/serial ratio.

    python benchmarks/tts_throughput.py --backend espeak --items 200 --workers 2
    python benchmarks/tts_throughput.py --backend piper --items 40 --piper-python /path/to/venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from twist.bench.minimal_pairs import generate_minimal_pairs
from twist.bench.storycloze import BUILTIN_STORIES, read_storycloze_csv
from twist.bench.tts import default_workers, get_backend, synthesize_many


def benchmark_items(n: int) -> list[str]:
    texts = []
    for s in read_storycloze_csv(BUILTIN_STORIES):
        texts += [*s.context, s.right, s.wrong]
    for p in generate_minimal_pairs(5):
        texts += [p["sentence_good"], p["sentence_bad"]]
    out = []
    while len(out) < n:  # numbered so repeats are distinct jobs, not cache hits
        out += [f"{t} {len(out) + i}" for i, t in enumerate(texts)]
    return out[:n]


def run(backend_name: str, n_items: int, workers: int, backend_kwargs: dict) -> dict:
    backend = get_backend(backend_name, **backend_kwargs)
    items = benchmark_items(n_items)
    res = {"backend": backend_name, "items": n_items}
    for label, w in (("serial", 1), ("parallel", workers)):
        with tempfile.TemporaryDirectory(prefix="twist-tts-bench-") as tmp:
            jobs = [(t, backend.voices[i % len(backend.voices)], Path(tmp) / f"{i}.wav") for i, t in enumerate(items)]
            rep = synthesize_many(backend, jobs, workers=w, progress=False)
            if rep.n_failed:
                raise RuntimeError(f"{rep.n_failed} items failed: {rep.failures[:3]}")
            res[label] = {"workers": w, "seconds": round(rep.seconds, 2), "items_per_s": round(rep.items_per_s, 1),
                          "x_realtime": round(rep.realtime_factor, 1)}  # fmt: skip
    res["parallel_over_serial"] = round(res["parallel"]["items_per_s"] / res["serial"]["items_per_s"], 2)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="espeak", choices=["espeak", "piper", "festival"])
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--workers", type=int, default=default_workers())
    ap.add_argument("--piper-python", default=None, help="interpreter with piper-tts installed")
    args = ap.parse_args()
    kw = {"python": args.piper_python} if args.backend == "piper" and args.piper_python else {}
    print(json.dumps(run(args.backend, args.items, args.workers, kw)))


if __name__ == "__main__":
    main()
