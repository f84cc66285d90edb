"""Cross-modal StoryCloze: the story told in one modality, its ending in the other.

SIMS (Maimon et al. 2025; slamkit's ``metric/cross_modal_metric.py``) scores speech-text
interleaved LMs on StoryCloze across modalities, next to speech→speech sSC and tSC. twist does so
for a speech LM in the text+units layout (twist.lm.text_units), in two directions per set:

* **T→S** (``t2s``): the story's first four sentences as text, the ending spoken::

      <bos> <text> context text ids <speech> ending units <eos>

  the ending's units and eos are scored over the units and eos (the speech support, as every
  speech-only benchmark of such a model: the text logits masked);
* **S→T** (``s2t``): the context spoken, the ending as text::

      <bos> <speech> context units <text> ending text ids <eos>

  the ending's text ids and eos are scored over the text ids
  (:meth:`twist.contract.VocabLayout.text_support`: the units and markers masked).

An item's score is the ending's log-probability given the context: the context and the markers
are context, not scored (``score_eos`` decides about eos, as everywhere). Every pair is then
decided as every pair benchmark's (twist.eval.pair_scoring.decide_pairs): the ending with the
higher sum (or mean per scored token, ``decide_by``) wins, a tie is worth 0.5, the length-only
baseline counts the ending's tokens, and each accuracy has its 95 % interval and its item scores
(paired tests in ``mode=compare``).

**Inputs.** A StoryCloze set as twist-bench builds it (``storycloze/sSC``, ``tSC``): ``pairs.jsonl``
names both recordings of each story (the context, a gap, then one ending), ``texts.jsonl`` its
sentences and where, in both recordings, the spoken context ends and the ending begins
(``context_end``, ``ending_start``, seconds). The spoken parts are cut there and encoded by the
model's unit tokenizer on their own (:meth:`twist.eval.inputs.AudioUnits.clip_units`, cached):
each ending from its recording, the context from the positive one (the negative holds the same
samples). The text parts are encoded by the model's tokenizer (the one its directory ships), a
span without the bos the tokenizer puts before a whole text
(:func:`twist.lm.text_units.text_span_ids`); the four sentences are joined by one space.

**Against slamkit.** Its cross-modal sets ship the context and each ending as recordings and texts
of their own (``<n>_mutual.wav``, ``<n>_correct.wav``, ``.txt`` beside them); twist cuts
twist-bench's joined recordings where the ending begins, so the same sets serve sSC/tSC and their
cross-modal directions. slamkit's ``log_likelihood`` scores the whole sequence, context included,
by its per-token mean; twist scores the ending alone: the sum rule decides every pair the same
way (the context's log-probability is the same for both endings), the mean is over the ending's
tokens only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twist.atomic import read_jsonl_objects
from twist.errors import ConfigError, InputError, MissingInputError
from twist.eval.pair_scoring import decide_pairs
from twist.eval.pairs import Pair
from twist.eval.registry import RunContext, Task, TaskResult
from twist.eval.storycloze import PairSet, load_pairs
from twist.lm.text_units import interleave, text_span_ids

TEXTS = "texts.jsonl"
ARROWS = {"t2s": "T→S", "s2t": "S→T"}
WHAT = {"t2s": "text context, spoken endings scored over the units and eos",
        "s2t": "spoken context, text endings scored over the text ids"}


@dataclass(frozen=True)
class ClozeStory:
    """One story of a twist-bench StoryCloze set, as cross-modal scoring reads it."""

    id: str
    context: tuple[str, ...]
    positive: str
    negative: str
    positive_wav: Path
    negative_wav: Path
    context_end: float
    """Seconds: where the spoken context ends in both recordings."""
    ending_start: float
    """Seconds: where the spoken ending begins in both recordings (after the gap)."""


@dataclass(frozen=True)
class CrossModalSet:
    """What a cross-modal task scores: its direction and the stories of its set."""

    direction: str
    stories: tuple[ClozeStory, ...]


# ---------------------------------------------------------------------------------------
# planning: read and check the set before any model loads
# ---------------------------------------------------------------------------------------
def plan_ssc(settings: Any, ctx: Any) -> list[Task]:
    """sSC T→S and S→T: ``benchmarks.ssc_cross.path``, or the set the sSC row scores."""
    return _plan(settings, ctx)


def plan_tsc(settings: Any, ctx: Any) -> list[Task]:
    """tSC T→S and S→T: ``benchmarks.tsc_cross.path``, or the set the tSC row scores."""
    return _plan(settings, ctx)


def _plan(settings: Any, ctx: Any) -> list[Task]:
    key, label = ctx.benchmark.key, ctx.benchmark.label
    if not settings.directions:
        return []
    layout = ctx.contract.layout
    if not layout.has_text:
        if settings.path:
            raise ConfigError(f"benchmarks.{key}.path: cross-modal StoryCloze scores a text+units speech LM "
                              f"(+init=warm_interleaved); this model's layout is {layout.name}, whose ids are units only")
        return []  # a units-first model is scored speech→speech only
    if settings.path:
        pairs, from_root = load_pairs(settings.path, name=f"{label} cross-modal"), False
    else:  # follow the set this run scores speech→speech
        followed = next((t for t in ctx.planned if t.name == label and t.pairs is not None), None)
        if followed is None:
            return []
        pairs, from_root = followed.pairs, followed.from_root
    stories = read_stories(pairs, key, label)
    return [Task(f"{label}/{d}", f"{label} ({ARROWS[d]})", ctx.benchmark, pairs=_items(pairs, stories),
                 data=CrossModalSet(d, stories), from_root=from_root) for d in settings.directions]


def read_stories(pairs: PairSet, key: str, label: str) -> tuple[ClozeStory, ...]:
    """The stories of ``pairs`` with their texts and where their endings begin, from the
    ``texts.jsonl`` beside its ``pairs.jsonl``; every problem named in one line."""
    texts = pairs.root / TEXTS
    if pairs.layout != "manifest" or not texts.is_file():
        raise MissingInputError(
            f"{label} cross-modal StoryCloze reads each story's sentences from {TEXTS}, and {pairs.root} has no "
            f"{TEXTS} (twist-bench writes one beside pairs.jsonl): set benchmarks.{key}.path to a twist-bench set, "
            f"or benchmarks.{key}.directions=[] to score {label} speech→speech only")
    rows: dict[str, dict[str, Any]] = {}
    for where, row in read_jsonl_objects(texts, what="texts row", require=("id",)):
        sid = str(row["id"])
        for field in ("context_end", "ending_start"):
            if not isinstance(row.get(field), (int, float)) or row[field] < 0:
                raise InputError(
                    f"{where}: story {sid!r} has no {field} (where the spoken ending begins, which twist-bench records "
                    "since cross-modal StoryCloze): rerun twist-bench on its out_dir, which reuses the recordings "
                    "and rewrites the manifests")
        if row["context_end"] > row["ending_start"]:
            raise InputError(f"{where}: story {sid!r}: context_end {row['context_end']} is after ending_start "
                             f"{row['ending_start']}")
        context = row.get("context")
        if not (isinstance(context, list) and context and all(isinstance(t, str) and t.strip() for t in context)):
            raise InputError(f"{where}: story {sid!r}: 'context' must be a list of its sentences")
        for side in ("positive", "negative"):
            if not (isinstance(row.get(side), str) and row[side].strip()):
                raise InputError(f"{where}: story {sid!r} has no {side} ending text")
        rows[sid] = row
    out = []
    for p in pairs.pairs:
        if p.positive not in pairs.paths or p.negative not in pairs.paths:
            raise InputError(f"{label} cross-modal: pair {p.id!r} of {pairs.root / 'pairs.jsonl'} gives units, not "
                             "recordings; the spoken context and endings are cut from the recordings")
        row = rows.get(p.id)
        if row is None:
            raise InputError(f"{texts}: no row for story {p.id!r} of {pairs.root / 'pairs.jsonl'}")
        out.append(ClozeStory(p.id, tuple(row["context"]), row["positive"], row["negative"], pairs.paths[p.positive],
                              pairs.paths[p.negative], float(row["context_end"]), float(row["ending_start"])))
    return tuple(out)


def _items(pairs: PairSet, stories: tuple[ClozeStory, ...]) -> PairSet:
    """The pairs as decide_pairs reads them: an item per story and ending, with its texts and recording."""
    return PairSet(name=pairs.name, root=pairs.root, layout=pairs.layout, pairs=[
        Pair(s.id, f"{s.id}#positive", f"{s.id}#negative",
             meta={"positive_text": s.positive, "negative_text": s.negative, "positive_wav": str(s.positive_wav),
                   "negative_wav": str(s.negative_wav)}) for s in stories])


# ---------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------
def run(task: Task, ctx: RunContext) -> TaskResult:
    """Score one direction of one set (a row runner of twist.eval.registry)."""
    data: CrossModalSet = task.data
    if ctx.text_tokenizer is None:
        raise ConfigError(f"{task.name}: cross-modal StoryCloze encodes the story texts with the model's tokenizer; "
                          "pass evaluate_model(..., text_tokenizer=twist.lm.load_speech_tokenizer(<model dir>))")
    if ctx.audio is None:
        raise ConfigError(f"benchmark {task.name} reads audio: set tokenizer_dir")
    layout, tok = ctx.contract.layout, ctx.text_tokenizer
    t0 = time.perf_counter()
    t2s = data.direction == "t2s"
    clips = ([(s.positive_wav, s.ending_start, None) for s in data.stories]
             + [(s.negative_wav, s.ending_start, None) for s in data.stories]) if t2s else \
        [(s.positive_wav, 0.0, s.context_end) for s in data.stories]
    units = ctx.audio.clip_units(clips, ctx.rejects, desc=f"{task.name}: tokenizing")
    keys: list[str] = []
    seqs: list[np.ndarray] = []
    starts: list[int] = []
    endings: dict[str, np.ndarray] = {}
    for s in data.stories:
        where = f"{task.name}: story {s.id!r}"
        if t2s:
            context = text_span_ids(tok, " ".join(s.context), layout, where=where)
            sides = [(side, units.get((str(wav), s.ending_start, None))) for side, wav in
                     (("positive", s.positive_wav), ("negative", s.negative_wav))]
            spans = [(side, [("text", context), ("speech", u)], u) for side, u in sides if u is not None]
        else:
            context = units.get((str(s.positive_wav), 0.0, s.context_end))
            if context is None:  # the recording was rejected: the pair is skipped and counted
                continue
            ends = [(side, np.asarray(text_span_ids(tok, text, layout, where=where), dtype=np.int64))
                    for side, text in (("positive", s.positive), ("negative", s.negative))]
            spans = [(side, [("speech", context), ("text", e)], e) for side, e in ends]
        for side, parts, ending in spans:
            ids, at = interleave(layout, parts, eos=True)
            key = f"{s.id}#{side}"
            keys.append(key)
            seqs.append(ids)
            starts.append(at[1])
            endings[key] = np.asarray(ending)
    t_units = time.perf_counter() - t0
    scores = ctx.scorer.score_token_ids(seqs, names=[f"{task.name}: {k}" for k in keys], desc=f"{task.name}: scoring",
                                        score_from=starts, support="speech" if t2s else "text")
    result = decide_pairs(task, ctx, keys, scores, endings, t_units)
    result.summary["direction"] = f"{ARROWS[data.direction]}: {WHAT[data.direction]}"
    return result
