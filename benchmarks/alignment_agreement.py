"""How well twist-tokenize's two word aligners agree on synthetic speech (align=tts vs align=whisper).

For each utterance of a demo corpus, both aligners time the words of the same transcript, exactly
as ``twist-tokenize`` does (:mod:`twist.tokenizer.aligners`): ``tts`` from the espeak-ng timings
recorded beside the wav, ``whisper`` from faster-whisper's word timestamps (Whisper tiny.en,
int8, beam 5, temperature 0) matched to the transcript. A word's boundary errors are
``|start_tts - start_whisper|`` and ``|end_tts - end_whisper|``, over the words that both aligners
timed themselves (``how == "timed"``: not substituted, split or interpolated). Printed: the median
and 95th percentile in ms (starts, ends, both), the signed mean (whisper minus tts), the share of
boundaries within 20/50/100 ms, per voice, and the share of words each aligner timed.

    twist-demo only=corpus out_dir=/tmp/demo-align       # ~700 sentences x 2 voices, espeak-ng
    python benchmarks/alignment_agreement.py /tmp/demo-align/corpus [--limit N] [--jobs 2] [--json out.json]

The figures in docs/tokenize.md (#agreement-of-the-aligners) come from this script.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

_WHISPER = None


def _init_worker() -> None:
    global _WHISPER
    from twist.tokenizer.aligners import WhisperAligner
    from twist.tokenizer.config import WhisperAlignSettings

    _WHISPER = WhisperAligner(WhisperAlignSettings())


def _align(job: tuple[str, str, str]) -> dict:
    """Both aligners on one utterance: the per-word times and how each got them."""
    from twist.alignment import AlignmentRejected
    from twist.audio import load_audio
    from twist.contract import sha256_file
    from twist.tokenizer.aligners import TtsAligner

    utt_id, path, text = job
    wav = load_audio(path, 16000)
    out: dict = {"id": utt_id}
    try:
        tts = TtsAligner().align(utt_id, path, wav, 16000, source_sha256=sha256_file(path))
        assert _WHISPER is not None
        whisper = _WHISPER.align(utt_id, path, wav, 16000, text=tts["transcript"])
    except AlignmentRejected as e:
        return {**out, "rejected": str(e)}
    out["words"] = [(a["word"], a["start"], a["end"], a["how"], b["start"], b["end"], b["how"])
                    for a, b in zip(tts["words"], whisper["words"])]
    out["mismatches"] = whisper["mismatches"]
    return out


def _figures(starts: np.ndarray, ends: np.ndarray) -> dict:
    both = np.abs(np.concatenate([starts, ends]))
    return {
        "boundaries": int(both.size),
        "median_ms": round(float(np.median(both)) * 1000, 1),
        "p95_ms": round(float(np.percentile(both, 95)) * 1000, 1),
        "start_median_ms": round(float(np.median(np.abs(starts))) * 1000, 1),
        "start_p95_ms": round(float(np.percentile(np.abs(starts), 95)) * 1000, 1),
        "end_median_ms": round(float(np.median(np.abs(ends))) * 1000, 1),
        "end_p95_ms": round(float(np.percentile(np.abs(ends), 95)) * 1000, 1),
        "start_signed_mean_ms": round(float(starts.mean()) * 1000, 1),
        "end_signed_mean_ms": round(float(ends.mean()) * 1000, 1),
        **{f"within_{ms}ms": round(float((both <= ms / 1000 + 1e-9).mean()), 3) for ms in (20, 50, 100)},
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path, help="a demo corpus dir (transcripts.jsonl, audio/ with .words.json)")
    ap.add_argument("--limit", type=int, default=None, help="the first N utterances of transcripts.jsonl only")
    ap.add_argument("--jobs", type=int, default=1, help="processes, each with its own Whisper")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures and per-word times here")
    a = ap.parse_args(argv)
    rows = [json.loads(line) for line in (a.corpus / "transcripts.jsonl").read_text().splitlines() if line.strip()]
    rows = rows[: a.limit] if a.limit else rows
    voice_of = {r["id"]: r.get("voice", "") for r in rows}
    jobs = [(r["id"], str(a.corpus / r["path"]), r["text"]) for r in rows]
    t0 = time.time()
    if a.jobs > 1:
        with mp.get_context("fork").Pool(a.jobs, initializer=_init_worker) as pool:
            results = list(pool.imap(_align, jobs, chunksize=4))
    else:
        _init_worker()
        results = [_align(j) for j in jobs]
    seconds = time.time() - t0
    starts: dict[str, list[float]] = defaultdict(list)
    ends: dict[str, list[float]] = defaultdict(list)
    n_words = tts_timed = whisper_timed = both_timed = 0
    rejected = [r for r in results if "rejected" in r]
    for r in results:
        for _, s1, e1, h1, s2, e2, h2 in r.get("words", []):
            n_words += 1
            tts_timed += h1 == "timed"
            whisper_timed += h2 == "timed"
            if h1 == h2 == "timed":
                both_timed += 1
                for key in ("all", voice_of[r["id"]]):
                    starts[key].append(s2 - s1)
                    ends[key].append(e2 - e1)
    figures = {
        "corpus": str(a.corpus), "utterances": len(results), "rejected": len(rejected), "words": n_words,
        "tts_timed": round(tts_timed / max(n_words, 1), 3), "whisper_timed": round(whisper_timed / max(n_words, 1), 3),
        "both_timed": both_timed, "seconds": round(seconds, 1),
        **_figures(np.array(starts["all"]), np.array(ends["all"])),
        "per_voice": {v: _figures(np.array(starts[v]), np.array(ends[v])) for v in sorted(starts) if v != "all"},
    }
    print(f"{figures['utterances']} utterances ({figures['rejected']} rejected by whisper), {n_words} words; "
          f"timed by tts {figures['tts_timed']:.1%}, by whisper {figures['whisper_timed']:.1%}; "
          f"{both_timed} words timed by both, in {seconds:.0f} s")
    print(f"boundary error |whisper - tts| over {figures['boundaries']} boundaries: median {figures['median_ms']} ms, "
          f"95th percentile {figures['p95_ms']} ms")
    print(f"  starts: median {figures['start_median_ms']} ms, p95 {figures['start_p95_ms']} ms, "
          f"signed mean {figures['start_signed_mean_ms']:+} ms")
    print(f"  ends:   median {figures['end_median_ms']} ms, p95 {figures['end_p95_ms']} ms, "
          f"signed mean {figures['end_signed_mean_ms']:+} ms")
    print(f"  within 20 / 50 / 100 ms: {figures['within_20ms']:.1%} / {figures['within_50ms']:.1%} / "
          f"{figures['within_100ms']:.1%}")
    print("| voice | boundaries | median ms | p95 ms |\n|---|---|---|---|")
    for v, f in figures["per_voice"].items():
        print(f"| {v} | {f['boundaries']} | {f['median_ms']} | {f['p95_ms']} |")
    if a.json:
        a.json.write_text(json.dumps({**figures, "results": results}, indent=1))
    return figures


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
