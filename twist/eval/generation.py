"""Automatic metrics for spoken continuations: GenPPL, auto-BLEU and distinct-n, over seeds.

Human MMOS (:mod:`twist.mos`) is the paper's generative measure; these are the cheap automatic
ones of Lakhotia et al. (2021, GSLM), computed on an ASR transcript of each continuation:

* **GenPPL**: the perplexity of the transcripts under a text LM (by default the offline
  SmolLM2-135M; any Hugging Face causal-LM directory works): ``exp(total NLL / total tokens)``
  over a seed's transcripts, each scored after the tokenizer's bos (else eos) token;
* **auto-BLEU** (GSLM's within-utterance repetition): for n = 1..N, the share of an utterance's
  n-grams that occur again elsewhere in it without overlapping, averaged over n (equal
  weights), then over utterances; an utterance of 0 or 1 word scores 0, as in GSLM;
* **distinct-n** (Li et al. 2016): unique n-grams / all n-grams over a seed's transcripts, a
  diversity measure.

auto-BLEU and distinct-n read normalised words (:func:`twist.asr.normalize_text`); GenPPL reads
the ASR text as it comes (cased, punctuated), since text LMs are trained on such text.

The protocol (``benchmarks.generation`` in ``configs/eval.yaml``): a fixed, versioned prompt
set (a JSON file naming each prompt's audio and its SHA-256, the prompt length and the seeds;
``librivox-v1`` ships with twist; or derived by a fixed rule from a dir of audio or from the true
stories of a spoken StoryCloze set), each prompt cut to ``prompt_seconds`` and continued once per
seed with the sampling settings, vocoded, transcribed. The ``genppl/slam`` preset
(``twist-eval +genppl=slam``) is Slam's protocol (Maimon et al. 2025, slamkit's
``config/metric/asr_perplexity.yaml``) with offline stand-ins for its ASR and text LM (docs/mos.md). Every metric is computed per seed and
reported as the mean over seeds with its standard deviation, minimum and maximum: the paper
warns these numbers are noisy, and the spread says how noisy. The continuations are kept as
``twist-generate`` directories (``generation/seed<k>/``), so a listening test
(``twist-mos build``) can be made from the very clips that were scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twist.contract import sha256_file
from twist.errors import ConfigError, InputError, MissingInputError
from twist.eval.registry import GenerationSettings, TextLMConfig, check_generation_asr
from twist.schema import to_typed

PROMPT_SET_FORMAT = "twist-prompt-set"
DATA = Path(__file__).parent / "data"
BUILTIN_PROMPT_SETS = {"librivox-v1": DATA / "generation_prompts_librivox-v1.json"}
METRICS = ("GenPPL", "auto-BLEU", "distinct-2")


# ---------------------------------------------------------------------------------------
# the metrics on text
# ---------------------------------------------------------------------------------------
def words_of(text: str) -> list[str]:
    from twist.asr import normalize_text

    return normalize_text(text).split()


def _ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def auto_bleu(words: Sequence[str], max_n: int = GenerationSettings.auto_bleu_n, *, min_n: int = 1) -> float:
    """GSLM's auto-BLEU of one utterance: how much of it repeats itself (see the module doc).

    ``min_n`` drops the lower orders: ``min_n=max_n=2`` is the share of bigrams alone, as
    Slam's repetition filter of its preference pairs reads it.
    """
    if max_n < 1:
        raise ConfigError(f"auto_bleu_n must be >= 1, got {max_n}")
    if not 1 <= min_n <= max_n:
        raise ConfigError(f"auto-BLEU min_n must be in [1, {max_n}], got {min_n}")
    if len(words) <= 1:
        return 0.0
    shares = []
    for n in range(min_n, max_n + 1):
        grams = _ngrams(words, n)
        if not grams:
            shares.append(0.0)
            continue
        repeated = 0
        for i, g in enumerate(grams):
            # only occurrences that share no word with this one count (left of it or right of it)
            elsewhere = _ngrams(words[:i], n) + _ngrams(words[i + n :], n)
            repeated += g in elsewhere
        shares.append(repeated / len(grams))
    return float(np.mean(shares))


def distinct_n(texts: Sequence[Sequence[str]], n: int = 2) -> float:
    """Unique n-grams / all n-grams over several word lists (NaN when there is no n-gram)."""
    grams = Counter(g for words in texts for g in _ngrams(words, n))
    total = sum(grams.values())
    return len(grams) / total if total else math.nan


class TextScorer:
    """Summed negative log-likelihood of texts under a causal text LM.

    Args:
        model: a causal LM (``model(input_ids=..., attention_mask=...).logits``).
        tokenizer: its tokenizer (``encode(text, add_special_tokens=False)``, ``bos_token_id``,
            ``eos_token_id``).
        batch_size: texts per forward pass (padding never changes a score).
        max_tokens: longest token sequence scored (the model's context); longer texts are cut.
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int, max_tokens: int | None = None,
                 name: str = "text LM") -> None:
        self.model, self.tokenizer, self.batch_size, self.name = model, tokenizer, int(batch_size), name
        ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_tokens = int(max_tokens or ctx or 2048)
        start = getattr(tokenizer, "bos_token_id", None)
        self.start = start if start is not None else getattr(tokenizer, "eos_token_id", None)

    def nll(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """``(NLL in nats, tokens scored)`` per text; an empty text gives ``(0.0, 0)``."""
        import torch

        seqs = []
        for t in texts:
            ids = list(self.tokenizer.encode(t, add_special_tokens=False)) if t.strip() else []
            # without a start token the first token has no context and is not scored
            seqs.append(([self.start] if self.start is not None else []) + ids)
        seqs = [s[: self.max_tokens] for s in seqs]
        out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
        order = sorted((i for i, s in enumerate(seqs) if len(s) >= 2), key=lambda i: len(seqs[i]))
        weights = next(iter(self.model.parameters()), None) if hasattr(self.model, "parameters") else None
        device = weights.device if weights is not None else "cpu"
        for b in range(0, len(order), self.batch_size):
            idx = order[b : b + self.batch_size]
            width = max(len(seqs[i]) for i in idx)
            ids = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids[r, : len(seqs[i])] = torch.tensor(seqs[i])
                mask[r, : len(seqs[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float().cpu()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None])[..., 0]
            logp = logp * mask[:, 1:]
            for r, i in enumerate(idx):
                out[i] = (float(-logp[r].sum()), len(seqs[i]) - 1)
        return out


def gen_ppl(nlls: Sequence[tuple[float, int]]) -> float:
    """Corpus perplexity: ``exp(sum NLL / sum tokens)`` (NaN with no token)."""
    tokens = sum(n for _, n in nlls)
    return math.exp(math.fsum(s for s, _ in nlls) / tokens) if tokens else math.nan


# ---------------------------------------------------------------------------------------
# loading the text LM (offline SmolLM2 by default)
# ---------------------------------------------------------------------------------------
def _text_tokenizer(model_cfg: TextLMConfig) -> Any:
    """The text LM's tokenizer; a GGUF's is converted once and cached (conversion takes ~20 s)."""
    from twist.lm.sources import load_text_tokenizer

    return load_text_tokenizer(model_cfg)


def load_text_scorer(model_cfg: TextLMConfig | Mapping[str, Any] | None, *, device: Any = "cpu",
                     batch_size: int = GenerationSettings.batch_size) -> TextScorer:
    """A :class:`TextScorer` for a ``model/``-style node (:class:`TextLMConfig`; ``None`` = its defaults)."""
    from twist.lm.sources import load_text_lm

    cfg = to_typed(TextLMConfig, model_cfg, where="benchmarks.generation.text_lm")
    model = load_text_lm(cfg).to(device).eval()
    name = str(cfg.source) + (f"/{cfg.gguf_file}" if cfg.gguf_file else "")
    return TextScorer(model, _text_tokenizer(cfg), batch_size=batch_size, name=name)


# ---------------------------------------------------------------------------------------
# the prompt set
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class PromptSet:
    """A fixed list of prompts: what makes GenPPL numbers comparable between runs and papers."""

    name: str
    version: int
    root: Path
    prompt_seconds: float
    seeds: list[int]
    prompts: list[dict[str, str]]  # id, audio (relative to root), sha256

    @property
    def fingerprint(self) -> str:
        """Changes whenever a prompt, its audio, its length or a seed changes."""
        body = json.dumps({"prompt_seconds": self.prompt_seconds, "seeds": self.seeds,
                           "prompts": [(p["id"], p["sha256"]) for p in self.prompts]}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"format": PROMPT_SET_FORMAT, "version": self.version, "name": self.name, "root": str(self.root),
                "prompt_seconds": self.prompt_seconds, "seeds": self.seeds, "prompts": self.prompts}




STORYCLOZE_PREFIX = "storycloze:"
RUN_SSC = "ssc"  # prompt_set: the true stories of the sSC set the same twist-eval run scores
DERIVED_SEEDS = (0, 1, 2)


def _evenly_spaced(items: Sequence[Any], n_prompts: int | None) -> list[Any]:
    """``n_prompts`` of ``items`` evenly spaced, first one first (all when null)."""
    n = len(items) if n_prompts is None else min(int(n_prompts), len(items))
    return [items[(i * len(items)) // n] for i in range(n)]


def storycloze_prompt_set(
    pairs: Any,
    *,
    name: str,
    n_prompts: int | None = None,
    prompt_seconds: float = GenerationSettings.prompt_seconds,
    seeds: Sequence[int] | None = None,
) -> PromptSet:
    """The true stories of a spoken StoryCloze set (a :class:`twist.eval.storycloze.PairSet`)
    as a prompt set: each pair's positive (correct-ending) audio, in the set's pair order,
    ``n_prompts`` of them evenly spaced; a prompt's id is its pair's (``/`` -> ``__``).

    Slam's GenPPL protocol prompts with the first seconds of these stories; the wrong endings
    are never used. Every file's SHA-256 is recorded, as for a directory.
    """
    prompts = []
    for pair in pairs.pairs:
        if pair.positive in pairs.inline:
            raise InputError(f"{name}: pair {pair.id!r} gives units, not audio, for its true story; "
                             "prompts are audio (the set's correct-ending wavs)")
        f = pairs.paths[pair.positive]
        prompts.append({"id": pair.id.replace("/", "__"), "audio": os.path.relpath(f, pairs.root),
                        "sha256": sha256_file(f)})
    if not prompts:
        raise InputError(f"{name}: the StoryCloze set lists no pairs")
    return PromptSet(name=name, version=1, root=Path(pairs.root), prompt_seconds=float(prompt_seconds),
                     seeds=[int(x) for x in (seeds if seeds is not None else DERIVED_SEEDS)],
                     prompts=_evenly_spaced(prompts, n_prompts))


def load_prompt_set(
    spec: str | Path,
    *,
    root: str | Path | None = None,
    n_prompts: int | None = None,
    min_seconds: float = GenerationSettings.min_seconds,
    prompt_seconds: float = GenerationSettings.prompt_seconds,
    seeds: Sequence[int] | None = None,
) -> PromptSet:
    """A built-in set's name, a prompt-set JSON file, a directory of audio to derive one from,
    or ``storycloze:<path>``: the true stories of a spoken StoryCloze set.

    A directory gives a set by a fixed rule anyone can rerun: its audio files sorted by path,
    those of at least ``min_seconds``, ``n_prompts`` of them evenly spaced (so a corpus sorted
    by speaker yields many speakers). A StoryCloze set (a released sSC/tSC dir, a pairs.jsonl or
    a dir holding one) gives its correct-ending stories by the rule of
    :func:`storycloze_prompt_set`. Every file's SHA-256 is checked (JSON) or recorded
    (directory, StoryCloze set); ``seeds`` overrides the set's seeds, ``root`` its audio root.
    """
    from twist.audio import audio_info, find_audio, output_name

    spec_s = str(spec)
    if spec_s == RUN_SSC:
        raise ConfigError(_ssc_needed())
    if spec_s.startswith(STORYCLOZE_PREFIX):
        from twist.eval.storycloze import load_pairs

        where = Path(spec_s[len(STORYCLOZE_PREFIX):]).expanduser()
        if not where.exists():
            raise MissingInputError(f"benchmarks.generation.prompt_set={spec_s}: no such StoryCloze set (a released "
                                    "sSC/tSC dir, a pairs.jsonl, or a dir holding one)")
        name = f"{STORYCLOZE_PREFIX}{where.name}"
        return storycloze_prompt_set(load_pairs(where, name=name), name=name, n_prompts=n_prompts,
                                     prompt_seconds=prompt_seconds, seeds=seeds)
    path = BUILTIN_PROMPT_SETS.get(spec_s, Path(spec_s).expanduser())
    if path.is_dir():
        files = []
        for f in find_audio(path):
            frames, sr, _ = audio_info(f)
            if frames / sr >= float(min_seconds):
                files.append(f)
        if not files:
            raise InputError(f"benchmarks.generation.prompt_set: no audio of >= {min_seconds:g} s under {path}")
        picked = _evenly_spaced(files, n_prompts)
        ps = PromptSet(name=f"dir:{path.name}", version=1, root=path, prompt_seconds=float(prompt_seconds),
                       seeds=[int(s) for s in (seeds if seeds is not None else DERIVED_SEEDS)],
                       prompts=[{"id": output_name(f.relative_to(path)),
                                 "audio": str(f.relative_to(path)), "sha256": sha256_file(f)} for f in picked])
        return ps
    if not path.is_file():
        raise MissingInputError(f"benchmarks.generation.prompt_set={spec_s!r}: not a built-in set "
                                f"({sorted(BUILTIN_PROMPT_SETS)}), a prompt-set JSON file or a directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable prompt-set JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != PROMPT_SET_FORMAT:
        raise InputError(f"{path}: not a twist prompt set (expected \"format\": \"{PROMPT_SET_FORMAT}\")")
    ps = PromptSet(name=str(data.get("name", path.stem)), version=int(data.get("version", 1)),
                   root=Path(root or data.get("root") or path.parent).expanduser(),
                   prompt_seconds=float(data.get("prompt_seconds", prompt_seconds)),
                   seeds=[int(s) for s in (seeds if seeds is not None else data.get("seeds", [0]))],
                   prompts=list(data.get("prompts") or []))
    if not ps.prompts:
        raise InputError(f"{path}: the prompt set lists no prompts")
    for i, p in enumerate(ps.prompts):
        if not all(k in p for k in ("id", "audio", "sha256")):
            raise InputError(f"{path} prompts[{i}]: needs id, audio and sha256")
        f = ps.root / p["audio"]
        if not f.is_file():
            hint = " (apt-get install pocketsphinx-testdata)" if ps.name == "librivox-v1" else ""
            raise MissingInputError(f"prompt set {ps.name}: {f} not found{hint}; set benchmarks.generation.prompt_root")
        if sha256_file(f) != p["sha256"]:
            raise InputError(f"prompt set {ps.name}: {f} differs from the file the set was made with (SHA-256 "
                             "mismatch); results would not be comparable")
    if not ps.seeds:
        raise ConfigError("benchmarks.generation.seeds is empty")
    return ps


# ---------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class GenerationTask:
    """A validated ``benchmarks.generation`` node, ready to run."""

    prompt_set: PromptSet
    vocoder: str
    sampling: dict[str, Any]
    asr: Any  # a twist.asr backend's settings
    text_lm: TextLMConfig
    text: str
    auto_bleu_n: int
    batch_size: int
    auto_bleu_min_n: int = GenerationSettings.auto_bleu_min_n


def _ssc_needed() -> str:
    return (f"benchmarks.generation.prompt_set={RUN_SSC} takes its prompts from the true stories of the sSC set this "
            "run scores: set benchmarks.ssc.path or bench_root (or prompt_set=storycloze:<sSC dir>)")


def plan_generation(spec: GenerationSettings | Mapping[str, Any], *, ssc: Any = None) -> GenerationTask:
    """Check a ``benchmarks.generation`` node before any model is loaded.

    ``ssc``: the sSC set this run scores (a :class:`twist.eval.storycloze.PairSet`), which
    ``prompt_set=ssc`` takes its prompts from.
    """
    from twist.lm.sources import resolve_source

    s = to_typed(GenerationSettings, spec, where="benchmarks.generation")
    check_generation_asr(s.asr)
    voc = s.vocoder
    if not voc or not Path(str(voc)).expanduser().exists():
        raise MissingInputError(f"benchmarks.generation.vocoder={voc!r} does not exist (a twist-vocoder run or vocoder dir)")
    resolve_source(s.text_lm.source, s.text_lm.gguf_file)  # a missing text LM fails now, not after sampling
    if s.prompt_set == RUN_SSC:
        if ssc is None:
            raise ConfigError(_ssc_needed())
        ps = storycloze_prompt_set(ssc, name=f"{STORYCLOZE_PREFIX}{Path(ssc.root).name}", n_prompts=s.n_prompts,
                                   prompt_seconds=s.prompt_seconds, seeds=s.seeds)
    else:
        ps = load_prompt_set(s.prompt_set, root=s.prompt_root, n_prompts=s.n_prompts, min_seconds=s.min_seconds,
                             prompt_seconds=s.prompt_seconds, seeds=s.seeds)
    return GenerationTask(prompt_set=ps, vocoder=str(voc), sampling=dataclasses.asdict(s.sampling), asr=s.asr,
                          text_lm=s.text_lm, text=s.text, auto_bleu_n=s.auto_bleu_n, batch_size=s.batch_size,
                          auto_bleu_min_n=s.auto_bleu_min_n)


def _spread(values: Sequence[float]) -> dict[str, float]:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else math.nan,
            "min": float(min(v)), "max": float(max(v))}


def score_transcripts(
    by_seed: Mapping[int, Sequence[Mapping[str, Any]]],
    scorer: TextScorer,
    *,
    text: str = GenerationSettings.text,
    auto_bleu_n: int = GenerationSettings.auto_bleu_n,
    auto_bleu_min_n: int = GenerationSettings.auto_bleu_min_n,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Metrics per seed and their spread over seeds, from ``{seed: [{"id", "transcript", ...}]}``.

    auto-BLEU averages the n-gram orders ``auto_bleu_min_n..auto_bleu_n`` (2..2: bigram auto-BLEU).

    Returns:
        ``(summary, rows)``: the summary holds each metric's mean over seeds (as ``GenPPL``,
        ``auto-BLEU``, ``distinct-2``), ``<metric>_std/_min/_max`` and ``by_seed``; one row per
        (seed, prompt) with its transcript and scores.
    """
    field = "transcript_continuation" if text == "continuation" else "transcript"
    rows, per_seed = [], []
    for seed in sorted(by_seed):
        recs = list(by_seed[seed])
        texts = [str(r.get(field) or "").strip() for r in recs]
        words = [words_of(t) for t in texts]
        nlls = scorer.nll(texts)
        bleus = [auto_bleu(w, auto_bleu_n, min_n=auto_bleu_min_n) for w in words]
        per_seed.append({"seed": seed, "GenPPL": gen_ppl(nlls), "auto-BLEU": float(np.mean(bleus)) if bleus else math.nan,
                         "distinct-2": distinct_n(words, 2), "n_prompts": len(recs),
                         "n_empty": sum(not w for w in words), "n_words": sum(len(w) for w in words),
                         "n_tokens": sum(n for _, n in nlls)})
        for r, t, (s, n), b in zip(recs, texts, nlls, bleus):
            rows.append({"seed": seed, "id": r["id"], "text": t, "nll": s, "n_tokens": n,
                         "ppl": math.exp(s / n) if n else None, "auto_bleu": b})
    summary: dict[str, Any] = {"seeds": sorted(by_seed), "text": text, "auto_bleu_n": auto_bleu_n,
                               "auto_bleu_min_n": auto_bleu_min_n,
                               "text_lm": scorer.name, "n_empty_transcripts": sum(s["n_empty"] for s in per_seed)}
    for m in METRICS:
        spread = _spread([s[m] for s in per_seed])
        summary[m] = spread["mean"]
        summary.update({f"{m}_{k}": v for k, v in spread.items() if k != "mean"})
    summary["by_seed"] = per_seed
    return summary, rows


def run_generation(
    task: GenerationTask,
    *,
    lm: Any,
    contract: Any,
    tokenizer: Any,
    out_dir: str | Path,
    model_key: str = "",
    vocoder: Any = None,
    asr: Any = None,
    text_scorer: TextScorer | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Continue every prompt once per seed, transcribe, score; see the module doc.

    The continuations go to ``<out_dir>/generation/seed<k>/`` and are reused by a rerun with the
    same model (``model_key``), prompt set and settings; anything else starts them afresh.
    ``vocoder``, ``asr`` and ``text_scorer`` are built from ``task`` unless given.
    """
    import torch
    from tqdm import tqdm

    from twist.asr import SAMPLE_RATE as ASR_RATE
    from twist.asr import get_asr
    from twist.atomic import atomic_write_json
    from twist.audio import load_audio
    from twist.generate import SamplingConfig, generate_continuations
    from twist.vocoder import load_vocoder

    if tokenizer is None:
        raise ConfigError("benchmarks.generation turns prompt audio into units: set tokenizer_dir")
    device = next(lm.parameters()).device
    ps = task.prompt_set
    gen_root = Path(out_dir) / "generation"
    settings = {"model": model_key, "contract": contract.to_dict(), "prompt_set": ps.fingerprint,
                "sampling": task.sampling, "vocoder": str(Path(task.vocoder).resolve()),
                "asr": dataclasses.asdict(task.asr)}
    stamp = gen_root / "settings.json"
    if stamp.is_file() and json.loads(stamp.read_text()) != json.loads(json.dumps(settings)):
        shutil.rmtree(gen_root)  # other model or settings: these clips are not the ones to score
    gen_root.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stamp, settings)
    atomic_write_json(gen_root / "prompt_set.json", ps.to_dict())  # publish it with the numbers
    if vocoder is None:
        vocoder, _ = load_vocoder(task.vocoder, device=device)
    if asr is None:
        asr = get_asr(task.asr)
    prompts = [(p["id"], load_audio(ps.root / p["audio"], int(tokenizer.sample_rate))) for p in ps.prompts]
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for seed in tqdm(ps.seeds, desc="generation (seeds)", disable=not progress):
        d = gen_root / f"seed{seed}"
        sampling = to_typed(SamplingConfig, {**task.sampling, "seed": int(seed)})
        generate_continuations(lm=lm, lm_contract=contract, tokenizer=tokenizer, vocoder=vocoder, prompts=prompts,
                               sampling=sampling, prompt_seconds=ps.prompt_seconds, out_dir=d, asr=asr)
        recs = []
        for pid, _ in prompts:
            rec = json.loads((d / f"{pid}.json").read_text())
            if "transcript_continuation" not in rec:  # generated earlier by a run without ASR
                rec["transcript"] = asr.transcribe(load_audio(d / f"{pid}.wav", ASR_RATE))
                rec["transcript_continuation"] = asr.transcribe(load_audio(d / f"{pid}.continuation.wav", ASR_RATE))
                atomic_write_json(d / f"{pid}.json", rec)
            recs.append(rec)
        by_seed[int(seed)] = recs
    del asr, vocoder
    if text_scorer is None:
        text_scorer = load_text_scorer(task.text_lm, device=device, batch_size=task.batch_size)
    with torch.inference_mode():
        summary, rows = score_transcripts(by_seed, text_scorer, text=task.text, auto_bleu_n=task.auto_bleu_n,
                                          auto_bleu_min_n=task.auto_bleu_min_n)
    summary.update({"prompt_set": ps.name, "prompt_set_version": ps.version, "prompt_set_fingerprint": ps.fingerprint,
                    "n_prompts": len(ps.prompts), "prompt_seconds": ps.prompt_seconds, "sampling": task.sampling,
                    "asr": task.asr.backend, "generation_dir": str(gen_root)})
    return summary, rows



def plan(settings: Any, ctx: Any) -> list[Any]:
    """The generation benchmark when ``benchmarks.generation.vocoder`` is set (row of twist.eval.registry)."""
    from twist.eval.registry import Task

    if not settings.vocoder:
        return []
    if not ctx.tokenizer_dir:
        raise ConfigError("benchmarks.generation turns prompt audio into units: set tokenizer_dir")
    ssc = next((t.pairs for t in ctx.planned if t.name == "sSC"), None)
    return [Task("generation", "GenPPL", ctx.benchmark, data=plan_generation(settings, ssc=ssc))]


def run(task: Any, ctx: Any) -> Any:
    from twist.eval.registry import TaskResult

    summary, rows = run_generation(task.data, lm=ctx.model, contract=ctx.contract, tokenizer=ctx.tokenizer,
                                   out_dir=ctx.out_dir, model_key=ctx.model_key, progress=ctx.progress)
    return TaskResult(summary, rows, {m: summary[m] for m in METRICS})
