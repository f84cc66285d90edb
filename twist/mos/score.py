"""``twist-mos score``: ratings files -> screened raters -> MMOS per system, with 95 % CIs.

Rater screening follows CrowdMOS (Ribeiro et al., ICASSP 2011), in two stages, every threshold
a field of :class:`Screening` (``screening:`` in ``configs/mos_score.yaml``):

1. attention checks, per rater on their own:
   * gold items: the original recordings should sound natural; a score below
     ``gold_min_score`` is a failed gold item, and more than ``max_gold_fail_fraction`` of
     them failed screens the rater out;
   * the repeated item: its two scores may differ by at most ``repeat_max_diff``;
   * listening time: a rating given after less than ``min_listen_fraction`` of its clip was
     played is a short listen; more than ``max_short_listen_fraction`` of them screens out;
2. agreement: Pearson's r between the rater's scores and the mean score of the *other* raters
   who passed stage 1, over the items they share (at least ``min_overlap`` of them, or the check
   is skipped); r below ``min_correlation``, or scores that never vary (r undefined), screen out.

MMOS per system is the mean of the kept raters' scores (first hearings; the repeat only serves
the check) with a Student-t confidence interval over those ratings. Systems are compared in
pairs on the same rater and prompt: mean difference with its t interval, the paired t test and
the exact sign test on wins and losses.

Outputs in ``out_dir``: ``mmos.json`` (everything), ``mmos.md`` (tables), ``mmos.png`` (bars
with CI error bars) and ``rejects.jsonl`` (ratings files refused, each with file and row).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from twist.errors import ConfigError, InputError
from twist.mos.config import Screening
from twist.mos.ratings import RaterSession, read_sessions
from twist.mos.stats import mean_ci, paired_t_p, pearson, sign_test_p
from twist.schema import to_typed


def _item_index(key: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {it["id"]: it for it in key["items"]}


def screen_raters(
    sessions: Sequence[RaterSession], key: Mapping[str, Any], screening: Screening
) -> list[dict[str, Any]]:
    """One record per rater: the numbers behind each check, ``kept``, and the ``reasons`` if not."""
    items = _item_index(key)
    out: list[dict[str, Any]] = []
    for s in sessions:
        first = s.first
        rec: dict[str, Any] = {"rater": s.rater, "file": str(s.path), "n_ratings": len(first), "reasons": []}
        gold = [r for r in first.values() if items[r.item]["kind"] == "gold"]
        rec["n_gold"] = len(gold)
        rec["gold_failed"] = None
        if screening.gold_min_score is not None and gold:
            failed = sum(r.score < float(screening.gold_min_score) for r in gold)
            rec["gold_failed"] = failed
            if failed / len(gold) > float(screening.max_gold_fail_fraction):
                rec["reasons"].append(f"failed {failed} of {len(gold)} gold items (score < {screening.gold_min_score:g})")
        rep = s.repeated
        rec["repeat_diff"] = abs(rep.score - first[rep.item].score) if rep is not None else None
        if screening.repeat_max_diff is not None and rec["repeat_diff"] is not None:
            if rec["repeat_diff"] > float(screening.repeat_max_diff):
                rec["reasons"].append(f"repeated item scored {first[rep.item].score:g} then {rep.score:g}")
        rec["short_listens"] = None
        if screening.min_listen_fraction is not None:
            short = sum(r.listen_seconds < float(screening.min_listen_fraction) * float(items[r.item]["duration"])
                        for r in s.ratings)
            rec["short_listens"] = short
            if short / len(s.ratings) > float(screening.max_short_listen_fraction):
                rec["reasons"].append(f"{short} of {len(s.ratings)} clips rated after playing less than "
                                      f"{100 * float(screening.min_listen_fraction):g}% of them")
        out.append(rec)
    # stage 2: agreement with the raters who passed the attention checks
    passed = [s for s, rec in zip(sessions, out) if not rec["reasons"]]
    for s, rec in zip(sessions, out):
        others: dict[str, list[float]] = defaultdict(list)
        for o in passed:
            if o is s:
                continue
            for item, r in o.first.items():
                others[item].append(r.score)
        shared = sorted(i for i in s.first if others.get(i))
        rec["n_shared"] = len(shared)
        rec["correlation"] = None
        if screening.min_correlation is None or len(shared) < int(screening.min_overlap):
            continue
        mine = [s.first[i].score for i in shared]
        theirs = [math.fsum(others[i]) / len(others[i]) for i in shared]
        r = pearson(mine, theirs)
        if math.isnan(r):
            if len(set(mine)) == 1:
                rec["reasons"].append(f"gave every item the same score ({mine[0]:g})")
            continue  # the others' means do not vary: nothing to correlate with
        rec["correlation"] = r
        if r < float(screening.min_correlation):
            rec["reasons"].append(f"correlation {r:.2f} with the other raters' mean is below {screening.min_correlation:g}")
    for rec in out:
        rec["kept"] = not rec["reasons"]
    return out


def system_scores(
    sessions: Sequence[RaterSession], key: Mapping[str, Any], *, confidence: float = 0.95
) -> list[dict[str, Any]]:
    """MMOS per system (systems first, then top-lines) over the given raters' first hearings."""
    items = _item_index(key)
    scores: dict[str, list[float]] = defaultdict(list)
    raters: dict[str, set[str]] = defaultdict(set)
    prompts: dict[str, set[str]] = defaultdict(set)
    for s in sessions:
        for r in s.first.values():
            it = items[r.item]
            scores[it["system"]].append(r.score)
            raters[it["system"]].add(s.rater)
            prompts[it["system"]].add(it["prompt"])
    rows = []
    for name in list(key.get("systems", [])) + list(key.get("toplines", [])):
        mean, sd, half = mean_ci(scores[name], confidence)
        rows.append({"system": name, "kind": "system" if name in key.get("systems", []) else "topline",
                     "mmos": mean, "ci": half, "ci_low": mean - half, "ci_high": mean + half, "sd": sd,
                     "n_ratings": len(scores[name]), "n_raters": len(raters[name]), "n_prompts": len(prompts[name])})
    return rows


def paired_comparisons(
    sessions: Sequence[RaterSession], key: Mapping[str, Any], *, confidence: float = 0.95
) -> list[dict[str, Any]]:
    """Every pair of systems, on the (rater, prompt) pairs where both were scored."""
    items = _item_index(key)
    by: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)  # (rater, prompt) -> {system: score}
    for s in sessions:
        for r in s.first.values():
            it = items[r.item]
            by[(s.rater, it["prompt"])][it["system"]] = r.score
    names = list(key.get("systems", [])) + list(key.get("toplines", []))
    out = []
    for a, b in itertools.combinations(names, 2):
        diffs = [v[a] - v[b] for v in by.values() if a in v and b in v]
        wins, losses = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
        mean, _, half = mean_ci(diffs, confidence)
        out.append({"a": a, "b": b, "n_pairs": len(diffs), "mean_diff": mean, "ci": half,
                    "ci_low": mean - half, "ci_high": mean + half, "a_better": wins, "ties": len(diffs) - wins - losses,
                    "b_better": losses, "p_paired_t": paired_t_p(diffs), "p_sign": sign_test_p(wins, losses)})
    return out


# ---------------------------------------------------------------------------------------
# reports
# ---------------------------------------------------------------------------------------
def _f(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _p(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.3g}" if x >= 1e-4 else "<1e-4"


def _strict_json(x: Any) -> Any:
    """NaN/inf -> None, so mmos.json is strict JSON (an empty system has no mean)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {k: _strict_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_strict_json(v) for v in x]
    return x


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]) + "\n"


def results_markdown(res: Mapping[str, Any]) -> str:
    c = f"{100 * res['confidence']:g}%"
    out = [f"# twist-mos: MMOS, test {res['test_id']}\n\n",
           f"{res['n_raters_kept']} of {res['n_raters']} raters kept ({res['n_raters'] - res['n_raters_kept']} screened "
           f"out), {res['n_items_kept']} items, {res['n_ratings_kept']} ratings; {res['n_files_rejected']} ratings "
           f"file(s) rejected. MMOS on a 1-5 scale; {c} CI: Student t over the kept ratings.\n\n"]
    out.append(markdown_table(
        ["system", "MMOS ↑", f"{c} CI", "ratings", "raters", "prompts"],
        [[r["system"] + (" (top-line)" if r["kind"] == "topline" else ""), f"{_f(r['mmos'])} ± {_f(r['ci'])}",
          f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]", r["n_ratings"], r["n_raters"], r["n_prompts"]]
         for r in res["systems"]]))
    if res["paired"]:
        out.append("\n## Paired comparisons (same rater, same prompt)\n\n")
        out.append(markdown_table(
            ["A vs B", "pairs", "mean A − B", f"{c} CI", "A better / tie / B better", "p (paired t)", "p (sign test)"],
            [[f"{r['a']} vs {r['b']}", r["n_pairs"], _f(r["mean_diff"]), f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
              f"{r['a_better']} / {r['ties']} / {r['b_better']}", _p(r["p_paired_t"]), _p(r["p_sign"])]
             for r in res["paired"]]))
    out.append("\n## Raters\n\n")
    out.append(markdown_table(
        ["rater", "ratings", "gold failed", "repeat Δ", "short listens", "r with others", "kept", "why not"],
        [[r["rater"], r["n_ratings"], "–" if r["gold_failed"] is None else f"{r['gold_failed']}/{r['n_gold']}",
          _f(r["repeat_diff"], 1), _f(r["short_listens"]), _f(r["correlation"]), "yes" if r["kept"] else "no",
          "; ".join(r["reasons"])] for r in res["raters"]]))
    if res["rejected_files"]:
        out.append("\n## Rejected ratings files\n\n")
        out.extend(f"- {r['reason']}\n" for r in res["rejected_files"])
    return "".join(out)


def plot_scores(rows: Sequence[Mapping[str, Any]], path: str | Path, *, title: str) -> Path:
    """Bars of MMOS per system with their CI as error bars; top-lines hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from twist.atomic import atomic_path

    rows = [r for r in rows if r["n_ratings"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 1.5), 3.6), dpi=120)
    xs = range(len(rows))
    means = [r["mmos"] for r in rows]
    errs = [r["ci"] if math.isfinite(r["ci"]) else 0.0 for r in rows]
    bars = ax.bar(xs, means, yerr=errs, capsize=6, color=["#4c78a8" if r["kind"] == "system" else "#bbbbbb" for r in rows],
                  edgecolor="black", linewidth=0.6)
    for bar, r in zip(bars, rows):
        if r["kind"] == "topline":
            bar.set_hatch("//")
        ax.annotate(f"{r['mmos']:.2f}", (bar.get_x() + bar.get_width() / 2, 1.05), ha="center", va="bottom",
                    fontsize=9, color="white" if r["kind"] == "system" else "black")
    ax.set_xticks(list(xs), [r["system"] for r in rows], rotation=20 if len(rows) > 4 else 0)
    ax.set_ylim(1, 5)
    ax.set_ylabel("MMOS (1-5)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def score_ratings(
    key: Mapping[str, Any],
    ratings: Sequence[str | Path],
    out_dir: str | Path,
    *,
    screening: Screening | Mapping[str, Any] | None = None,
    confidence: float = 0.95,
    strict: bool = False,
    plot: bool = True,
) -> dict[str, Any]:
    """Read, screen, score and report; write the outputs; return the results.

    Args:
        key: the test's key (:func:`twist.mos.build.load_key`).
        ratings: ratings files, or directories of them.
        out_dir: where ``mmos.json``, ``mmos.md``, ``mmos.png`` and ``rejects.jsonl`` go.
        screening: :class:`Screening` or a mapping of its fields.
        confidence: the confidence level of every interval.
        strict: the first bad ratings file stops the run instead of being set aside.
        plot: write ``mmos.png``.
    """
    from twist.atomic import atomic_write_json, atomic_write_text
    from twist.rejects import RejectsLog

    if not isinstance(screening, Screening):
        screening = to_typed(Screening, screening)
    if not 0 < float(confidence) < 1:
        raise ConfigError(f"confidence must be in (0, 1), got {confidence}")
    if not ratings:
        raise ConfigError("ratings is empty: give the ratings files (or directories of them) to score")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rejects_path = out / "rejects.jsonl"
    rejects_path.unlink(missing_ok=True)  # this run's rejects only
    with RejectsLog(rejects_path, stage="mos-score") as rej:
        sessions = read_sessions(ratings, key, rejects=None if strict else rej)
    rejected = RejectsLog.read(rejects_path)
    if not sessions:
        raise InputError(f"no usable ratings file among {len(rejected)} given; see {rejects_path}")
    raters = screen_raters(sessions, key, screening)
    kept = [s for s, r in zip(sessions, raters) if r["kept"]]
    systems = system_scores(kept, key, confidence=confidence)
    res: dict[str, Any] = {
        "test_id": key["test_id"], "confidence": float(confidence), "screening": dataclasses.asdict(screening),
        "n_files_rejected": len(rejected), "rejected_files": rejected,
        "n_raters": len(sessions), "n_raters_kept": len(kept),
        "n_items_kept": len({i for s in kept for i in s.first}), "n_ratings_kept": sum(len(s.first) for s in kept),
        "systems": systems, "paired": paired_comparisons(kept, key, confidence=confidence), "raters": raters,
    }
    atomic_write_json(out / "mmos.json", _strict_json(res))
    atomic_write_text(out / "mmos.md", results_markdown(res))
    if plot and kept:
        plot_scores(systems, out / "mmos.png", title=f"MMOS with {100 * confidence:g}% CI ({len(kept)} raters)")
    return res
