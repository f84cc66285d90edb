"""Speech continuation: prompt audio -> units -> speech-LM sampling -> units -> vocoder -> wav.

The generation side of TWIST (Hassid et al. 2023, section 4 and the human evaluation): a
~3 s prompt is tokenised, the speech LM samples a continuation (repetition penalty, temperature,
top-k, top-p; a cap in seconds of audio or, as Slam's protocol, in tokens),
and the unit HiFi-GAN turns prompt + continuation back into audio. The prompt keeps its true
unit durations; the continuation's durations come from the vocoder's duration predictor when
the LM works on deduplicated units.

Safety rails: the LM's, the tokenizer's and the vocoder's unit contracts are checked against
each other before anything runs (``dedup`` is ignored for a vocoder with a duration
predictor, which accepts either form); sampling never emits bos, pad or alignment-padding
ids; a prompt shorter than one unit frame is refused with its name in the error.

The token ids are the LM's layout's (twist.contract.VocabLayout). A units-first LM (TWIST's)
takes audio prompts, ``<bos> units``, and samples units and ``<eos>``. An LM with the
text+units vocabulary (speech-text interleaving, twist.lm.text_units) also takes text prompts,
or both (:class:`Prompt`), and continues in the modality asked for (``continue_in``):

* the prompt is laid out with the markers, ``<text>`` before text and ``<speech>`` before units
  (at their offset), in the order asked for (``prompt_order``), and the continuation starts with
  its modality's marker, unless the prompt already ends in that modality (its span goes on);
* only that modality's ids may be sampled (the units; or the text ids less bos and pad), plus
  ``<eos>`` and the *other* marker: sampling either **ends** the continuation (``ended_by`` in
  the record). A switch is not followed: one continuation is one modality, as the model dir's
  ``speech_generation_config.json`` does for plain ``transformers``. With ``stop_at_eos=false``
  both are masked and the continuation fills its cap;
* unit spans, the prompt's and the continuation's, go to the vocoder, whose contract, like the
  tokenizer's, is units-first (the offset is removed); a text continuation is decoded by the
  model's tokenizer and written out, with no wav.

Outputs per prompt, under ``out_dir``: ``<id>.wav`` (the prompt's speech, if any, then the
continuation), ``<id>.continuation.wav``, and ``<id>.json`` (units, durations, sampling
settings, contract and, with an ASR configured, the transcript; a text+units LM's also the
prompt's text, the sampled ids, ``ended_by`` and, continued in text, ``generated_text``), written
last so a rerun skips finished prompts. A text continuation writes only the JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import MISSING

from twist.asr import ASR
from twist.contract import UnitContract, VocabLayout
from twist.errors import ConfigError, ContractMismatch, InputError, MissingInputError
from twist.schema import check_choice, check_positive, choice_field, type_choices
from twist.units import dedup

CONTINUE_IN = ("speech", "text")
PROMPT_ORDERS = ("text_first", "speech_first")


@dataclasses.dataclass
class SamplingConfig:
    """How continuations are sampled (the ``sampling`` node of configs/generate.yaml)."""

    temperature: float = 1.0
    """Softmax temperature; 0 = greedy."""
    top_k: int = 0
    """Keep the k most likely units; 0 = off."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 = off."""
    repetition_penalty: float = 1.0
    """Divide the positive logits and multiply the negative ones of every id already in the sequence, prompt included (transformers' repetition_penalty; Slam uses 1.1); 1.0 = off."""
    max_seconds: float = 10.0
    """Length cap of the continuation, in seconds of audio (when max_new_tokens is null)."""
    max_new_tokens: int | None = None
    """Length cap in sampled tokens (Slam's protocol: 150), replacing max_seconds; null = max_seconds x the LM's frame rate."""
    seed: int = 0
    """With the prompt id, seeds that prompt's generator: the same seed gives a prompt the same units
    whatever the batch size, the other prompts, or a resumed run."""
    stop_at_eos: bool = True
    """End a continuation at <eos>; false masks <eos> out and always fills max_seconds."""
    batch_size: int = 8
    """Prompts sampled together (left-padded)."""

    def __post_init__(self) -> None:
        check_positive("sampling.temperature", self.temperature, allow_zero=True)
        check_positive("sampling.top_k", self.top_k, allow_zero=True)
        check_positive("sampling.max_seconds", self.max_seconds)
        check_positive("sampling.repetition_penalty", self.repetition_penalty)
        check_positive("sampling.max_new_tokens", self.max_new_tokens)
        check_positive("sampling.batch_size", self.batch_size)
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"sampling.top_p: must be in (0, 1], got {self.top_p}")


@dataclasses.dataclass
class GenerateRunConfig:
    """Everything ``twist-generate`` reads (configs/generate.yaml with asr/)."""

    out_dir: str = MISSING
    """Where <id>.wav, <id>.continuation.wav, <id>.json and transcripts.jsonl go (required)."""
    lm: str = MISSING
    """Speech LM dir (twist-train's <run>/speech_lm, or any save_speech_lm dir) (required)."""
    tokenizer_dir: str | None = None
    """UnitTokenizer dir (e.g. <units_dir>/tokenizer); must match the LM's contract (required with audio prompts)."""
    vocoder: str | None = None
    """Vocoder dir or twist-vocoder train run dir; must match the LM's contract (required with continue_in=speech)."""
    prompts: list[str] = dataclasses.field(default_factory=list)
    """Audio files and/or directories of prompt audio (at least one prompt, audio or text)."""
    text_prompts: list[str] = dataclasses.field(default_factory=list)
    """Text prompts for a text+units LM, one string each; with audio prompts, one per audio prompt (in the order they are read) or one for all."""
    text_prompts_file: str | None = None
    """A UTF-8 file of text prompts, one per line (blank lines skipped), taken after text_prompts."""
    prompt_order: str = "text_first"
    """text_first | speech_first: where a prompt's text goes when it has audio too."""
    continue_in: str = "speech"
    """speech: sample units, vocoded to wav | text (a text+units LM): sample text, written to the JSON and texts.jsonl, no wav; eos or the other modality's marker ends a text+units LM's continuation."""
    prompt_seconds: float | None = 3.0
    """Prompts are cut to their first N seconds (null = whole file); 3 as in the paper."""
    limit: int | None = None
    """Use at most N prompts (null = all)."""
    device: str = "cpu"
    """cpu | cuda | cuda:N."""
    dtype: str | None = None
    """LM weight dtype: null (as saved) | float32 | bfloat16 | float16."""
    threads: int | None = None
    """Torch CPU threads (null = torch's default)."""
    sampling: SamplingConfig = dataclasses.field(default_factory=SamplingConfig)
    asr: Any = choice_field(ASR, "none")
    """Transcribe the outputs: an asr/ file (none | faster-whisper | hf-whisper) and its settings."""
    allow_changes: list[str] = dataclasses.field(default_factory=list)
    """Settings allowed to differ from those that made out_dir (a rerun refuses any other change; [all] = any); the change is recorded in identity.json, and continuations made otherwise are made again."""

    # May change on a rerun: more or fewer prompts, speed settings that leave each sample as it is.
    RERUN_FREE: ClassVar[tuple[str, ...]] = ("out_dir", "limit", "threads", "sampling.batch_size")

    def identity_inputs(self) -> dict[str, str | None]:
        """The speech LM, tokenizer and vocoder whose content makes every clip."""
        return {"lm": self.lm, "tokenizer_dir": self.tokenizer_dir, "vocoder": self.vocoder}

    def __post_init__(self) -> None:
        if not (self.prompts or self.text_prompts or self.text_prompts_file):
            raise ConfigError("prompts: give at least one audio file or directory, e.g. prompts=[/data/prompts] "
                              "(or, for a text+units LM, text_prompts=[...])")
        type_choices(self)
        check_choice("prompt_order", self.prompt_order, PROMPT_ORDERS)
        check_choice("continue_in", self.continue_in, CONTINUE_IN)
        if self.prompts and not self.tokenizer_dir:
            raise ConfigError("tokenizer_dir: audio prompts are turned into units by a UnitTokenizer: set "
                              "tokenizer_dir=<units dir>/tokenizer")
        if self.continue_in == "speech" and not self.vocoder:
            raise ConfigError("vocoder: continue_in=speech turns the continuation into audio: set vocoder=<vocoder dir>")


@dataclasses.dataclass(eq=False)
class Prompt:
    """One prompt: audio, text (a text+units LM), or both."""

    id: str
    """Names the prompt's outputs."""
    wav: np.ndarray | None = None
    """Mono audio at the unit tokenizer's sample rate."""
    text: str | None = None
    text_first: bool = True
    """With both: the text comes before the speech (false: after it)."""

    def __post_init__(self) -> None:
        if self.wav is None and self.text is None:
            raise InputError(f"prompt {self.id}: neither audio nor text")


# ---------------------------------------------------------------------------------------
# sampling
# ---------------------------------------------------------------------------------------
def filter_logits(logits: torch.Tensor, *, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Top-k then nucleus filtering on ``(B, V)`` logits (removed entries become -inf)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        # drop a token when the mass before it already reaches top_p (the top token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty (Keskar et al. 2019) on ``(B, V)`` logits, as transformers'
    ``RepetitionPenaltyLogitsProcessor`` applies it: for every id in that row of ``seen``
    (``(B, T)``, the sequence so far, prompt included), a positive logit is divided by
    ``penalty`` and a negative one multiplied. ``penalty == 1`` returns ``logits`` itself."""
    if penalty == 1.0:
        return logits
    score = torch.gather(logits, 1, seen)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, seen, score)


def mask_for_sampling(logits: torch.Tensor, layout: VocabLayout, *, allow_eos: bool) -> torch.Tensor:
    """Only units (and eos when allowed) may be sampled: never bos, pad, alignment-padding ids
    or, in the text+units layout, text ids and markers."""
    from twist.lm import mask_invalid_logits

    logits = mask_invalid_logits(logits, layout, allow_specials=False)
    if not allow_eos:
        logits = logits.clone()
        logits[..., layout.eos_id] = float("-inf")
    return logits


@torch.inference_mode()
def sample_units(
    model: torch.nn.Module,
    contract: UnitContract,
    prompts: Sequence[np.ndarray],
    cfg: SamplingConfig,
    *,
    max_new_tokens: int | None = None,
    keys: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Continue each prompt (unit ids, already deduplicated if the contract says so).

    Prompts are left-padded into one batch per ``cfg.batch_size``, with explicit position
    ids so padding does not shift positions, and decoded with the KV cache.

    Every prompt draws from its own ``torch.Generator``, seeded from ``cfg.seed`` and the
    prompt's key (``keys``, e.g. the prompt ids; by default its index). A prompt's sample
    therefore does not depend on the batch size, on the other prompts, or on a resumed run
    having skipped the prompts it already finished.

    Returns:
        the generated units per prompt (without the prompt, without eos).
    """
    layout = contract.layout
    if max_new_tokens is None:
        max_new_tokens = max_tokens(cfg, contract)
    keys = [str(i) for i in range(len(prompts))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(prompts):
        raise ValueError(f"sample_units: {len(keys)} keys for {len(prompts)} prompts")
    device = next(model.parameters()).device
    results: list[np.ndarray] = []
    for start in range(0, len(prompts), cfg.batch_size):
        chunk = [layout.encode(np.asarray(p), bos=True, eos=False) for p in prompts[start : start + cfg.batch_size]]
        gens = [prompt_generator(cfg.seed, k) for k in keys[start : start + cfg.batch_size]]
        results.extend(layout.decode(row) for row in _sample_batch(model, layout, chunk, cfg, max_new_tokens, gens,
                                                                    device))
    return results


def modality_mask(layout: VocabLayout, modality: str, *, allow_stop: bool = True) -> tuple[torch.Tensor, tuple[int, ...]]:
    """What a text+units LM may sample continuing in ``modality`` (speech | text), and what ends it.

    Speech: the units; text: the text ids less the text tokenizer's bos and pad. With
    ``allow_stop`` also eos and the other modality's marker, both of which end the continuation
    (returned as the stops); without, neither may be sampled.
    """
    check_choice("continue_in", modality, CONTINUE_IN)
    other = layout.text_id if modality == "speech" else layout.speech_id
    markers = (other,) if allow_stop else ()
    if modality == "speech":
        allowed = layout.unit_mask(eos=allow_stop, markers=markers)
    else:
        allowed = layout.text_mask(bos_pad=False, markers=markers)
        allowed[layout.eos_id] = allow_stop
    return allowed, (layout.eos_id, other)


@torch.inference_mode()
def sample_modality(
    model: torch.nn.Module,
    layout: VocabLayout,
    prompts: Sequence[np.ndarray],
    cfg: SamplingConfig,
    *,
    continue_in: str,
    max_new_tokens: int,
    keys: Sequence[str],
) -> tuple[list[np.ndarray], list[str]]:
    """Continue token-id prompts of a text+units LM in one modality (:func:`modality_mask`), each
    prompt with its own generator as in :func:`sample_units`.

    Returns:
        per prompt, the sampled ids before what ended them, and what did: ``eos``, ``<text>``,
        ``<speech>`` (a switch of modality), or ``length`` (the cap).
    """
    from twist.lm.text_units import SPEECH_TOKEN, TEXT_TOKEN

    allowed, stops = modality_mask(layout, continue_in, allow_stop=cfg.stop_at_eos)
    names = {layout.eos_id: "eos", layout.text_id: TEXT_TOKEN, layout.speech_id: SPEECH_TOKEN}
    device = next(model.parameters()).device
    ids: list[np.ndarray] = []
    ended: list[str] = []
    for start in range(0, len(prompts), cfg.batch_size):
        chunk = [np.asarray(p, dtype=np.int64) for p in prompts[start : start + cfg.batch_size]]
        gens = [prompt_generator(cfg.seed, str(k)) for k in keys[start : start + cfg.batch_size]]
        for row in _sample_batch(model, layout, chunk, cfg, max_new_tokens, gens, device, allowed=allowed, stops=stops):
            at = np.flatnonzero(np.isin(row, stops))
            ids.append(row[: at[0]] if at.size else row)
            ended.append(names[int(row[at[0]])] if at.size else "length")
    return ids, ended


def prompt_ids(layout: VocabLayout, prompt: Prompt, units: np.ndarray, text_tokenizer: Any, continue_in: str) -> np.ndarray:
    """A text+units LM's prompt: ``<bos>``, the prompt's text and speech spans in its order, each
    opened by its marker, then the marker of ``continue_in`` unless the last span is already in
    that modality (twist.lm.text_units.interleave)."""
    from twist.lm.text_units import interleave, text_span_ids

    text = speech = None
    if prompt.text is not None:
        text = ("text", text_span_ids(text_tokenizer, prompt.text, layout, where=f"prompt {prompt.id}"))
    if prompt.wav is not None:
        speech = ("speech", units)
    spans = [s for s in ((text, speech) if prompt.text_first else (speech, text)) if s is not None]
    return interleave(layout, [*spans, (continue_in, [])])[0]


def max_tokens(cfg: SamplingConfig, contract: UnitContract) -> int:
    """The continuation's cap in tokens: ``max_new_tokens``, else ``max_seconds`` of frames."""
    if cfg.max_new_tokens is not None:
        return int(cfg.max_new_tokens)
    return max(1, math.ceil(cfg.max_seconds * contract.frame_rate))


def prompt_generator(seed: int, key: str) -> torch.Generator:
    """The sampling generator of one prompt: a fixed function of the run's seed and the key."""
    digest = hashlib.sha256(f"twist-generate|{int(seed)}|{key}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def cache_keyword() -> str:
    """The name transformers gives the KV cache, in a forward's arguments and in its outputs:
    ``cache`` since the rename (5.24 has it, and warns on every call that uses the old name),
    ``past_key_values`` before it (5.17 knows only that one)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def _sample_batch(
    model: torch.nn.Module,
    layout: VocabLayout,
    chunk: list[np.ndarray],
    cfg: SamplingConfig,
    max_new_tokens: int,
    gens: Sequence[torch.Generator],
    device: torch.device,
    allowed: torch.Tensor | None = None,
    stops: Sequence[int] = (),
) -> list[np.ndarray]:
    """The sampled ids of one left-padded batch, a row per prompt, eos after a row's stop.

    ``allowed``: the ids that may be sampled (default: units, and eos unless ``stop_at_eos`` is
    off); ``stops``: the ids that end a row besides eos."""
    b = len(chunk)
    n = max(len(c) for c in chunk)
    ids = torch.full((b, n), layout.pad_id, dtype=torch.long)
    mask = torch.zeros((b, n), dtype=torch.long)
    for i, c in enumerate(chunk):
        ids[i, n - len(c) :] = torch.from_numpy(c)
        mask[i, n - len(c) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = cache_keyword()
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    past = getattr(out, cache)
    logits = out.logits[:, -1, :]
    next_pos = pos[:, -1:] + 1
    done = torch.zeros(b, dtype=torch.bool, device=device)
    generated: list[torch.Tensor] = []
    penalise = cfg.repetition_penalty != 1.0
    seen = ids  # the sequence so far (left padding included: pad is never sampled, penalised or not)
    if allowed is not None:
        allowed = allowed.to(device)
    stop_ids = torch.tensor(list(stops), dtype=torch.long, device=device) if stops else None
    for _ in range(max_new_tokens):
        lg = logits.float()
        if penalise:  # first, as in transformers' generate: before masking, temperature, top-k, top-p
            lg = apply_repetition_penalty(lg, seen, cfg.repetition_penalty)
        if allowed is None:
            lg = mask_for_sampling(lg, layout, allow_eos=cfg.stop_at_eos)
        else:
            lg = lg.masked_fill(~allowed, float("-inf"))
        if cfg.temperature == 0:
            tok = lg.argmax(-1)
        else:
            lg = filter_logits(lg / cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
            probs = torch.softmax(lg, dim=-1)
            probs = probs.cpu()  # one draw per row from the row's own generator (see sample_units)
            tok = torch.cat([torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(gens)]).to(device)
        tok = torch.where(done, torch.full_like(tok, layout.eos_id), tok)
        generated.append(tok)
        if penalise:
            seen = torch.cat([seen, tok[:, None]], dim=1)
        done |= tok == layout.eos_id
        if stop_ids is not None:
            done |= torch.isin(tok, stop_ids)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=device)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos, use_cache=True, **{cache: past})
        past = getattr(out, cache)
        logits = out.logits[:, -1, :]
        next_pos = next_pos + 1
    toks = torch.stack(generated, dim=1).cpu().numpy() if generated else np.zeros((b, 0), dtype=np.int64)
    return list(toks)


# ---------------------------------------------------------------------------------------
# the pipeline
# ---------------------------------------------------------------------------------------
def check_pipeline_contracts(
    lm_contract: UnitContract,
    vocoder_contract: UnitContract | None,
    *,
    vocoder_has_duration_predictor: bool,
    tokenizer_contract: UnitContract | None = None,
    lm_name: str = "speech LM",
    vocoder_name: str = "vocoder",
    tokenizer_name: str = "tokenizer",
) -> None:
    """Refuse artefacts made with different unit vocabularies, naming both sides (``None``: a run
    without a vocoder, continuing in text)."""
    if tokenizer_contract is not None:
        # the tokenizer emits frame-level units; dedup is applied here as the LM's contract says
        if vocoder_contract is None:
            tokenizer_contract.check_same_units(lm_contract, mine=tokenizer_name, theirs=lm_name, ignore=("dedup",))
    if vocoder_contract is None:
        return
    ignore = ("dedup",) if vocoder_has_duration_predictor else ()
    vocoder_contract.check_same_units(lm_contract, mine=vocoder_name, theirs=lm_name, ignore=ignore)
    if tokenizer_contract is not None:
        tokenizer_contract.check_same_units(lm_contract, mine=tokenizer_name, theirs=lm_name, ignore=("dedup",))
    if lm_contract.dedup and not vocoder_has_duration_predictor:
        raise ContractMismatch(
            f"{lm_name} works on deduplicated units but {vocoder_name} has no duration predictor; "
            "train the vocoder with dur_predictor_params set"
        )


def prompt_units(tokenizer: Any, wav: np.ndarray, *, contract: UnitContract, name: str, prompt_seconds: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Prompt audio -> ``(units, durations)`` in the LM's form (deduplicated if it says so)."""
    sr = int(tokenizer.sample_rate)
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    if prompt_seconds is not None:
        wav = wav[: int(round(prompt_seconds * sr))]
    frame = int(math.ceil(sr / float(tokenizer.frame_rate)))
    if len(wav) < frame:
        raise InputError(
            f"prompt {name} is {len(wav) / sr * 1000:.1f} ms long, shorter than one unit frame "
            f"({frame} samples = {1000 / float(tokenizer.frame_rate):.0f} ms at {tokenizer.frame_rate} Hz)"
        )
    frames = np.asarray(tokenizer.encode(wav), dtype=np.int64).reshape(-1)
    if frames.size == 0:
        raise InputError(f"prompt {name}: the tokenizer returned no units")
    if contract.dedup:
        return dedup(frames)
    return frames, np.ones_like(frames)


def generate_continuations(
    *,
    lm: torch.nn.Module,
    lm_contract: UnitContract,
    tokenizer: Any,
    vocoder: Any,
    prompts: Sequence[tuple[str, np.ndarray] | Prompt],
    sampling: SamplingConfig,
    prompt_seconds: float | None = GenerateRunConfig.prompt_seconds,
    out_dir: str | Path | None = None,
    asr: Any = None,
    names: Mapping[str, str] | None = None,
    rejects: Any = None,
    made_by: Mapping[str, Any] | None = None,
    text_tokenizer: Any = None,
    continue_in: str = GenerateRunConfig.continue_in,
) -> list[dict[str, Any]]:
    """Run the whole pipeline on prompts; optionally write outputs to ``out_dir``.

    Args:
        prompts: ``(id, wav)`` audio prompts, or :class:`Prompt` (audio, text or both; text needs a
            text+units LM).
        tokenizer: the unit tokenizer (audio prompts); ``None`` when every prompt is text.
        vocoder: the unit vocoder; ``None`` when continuing in text.
        text_tokenizer: a text+units LM's own tokenizer (twist.lm.load_speech_tokenizer): encodes
            text prompts and decodes text continuations.
        continue_in: ``speech`` | ``text`` (a text+units LM): the continuation's modality.

    ``made_by`` (see :func:`made_by`) is stored in each prompt's JSON; a prompt already finished
    in ``out_dir`` is skipped only when its record was made by the same model, vocoder,
    tokenizer, sampling and prompt (audio, text), and made again otherwise.

    Returns:
        one record per prompt: id, prompt/generated units and durations, the waveform
        (``wav``, not saved in the JSON; none for a text continuation) and the transcript when
        ``asr`` is given; a text+units LM's records also hold the prompt text, the sampled ids,
        ``ended_by`` and, continued in text, ``generated_text``. A bad prompt (e.g. shorter than
        one frame) raises, or with ``rejects`` (a :class:`twist.rejects.RejectsLog`) is logged
        there and skipped.
    """
    names = dict(names or {})
    check_choice("continue_in", continue_in, CONTINUE_IN)
    prompts = [p if isinstance(p, Prompt) else Prompt(p[0], wav=p[1]) for p in prompts]
    layout = lm_contract.layout
    has_text = any(p.text is not None for p in prompts)
    lm_name = names.get("lm", "speech LM")
    if not layout.has_text and (has_text or continue_in == "text"):
        raise ConfigError(units_first_refusal(lm_name, layout, "text_prompts" if has_text else "continue_in=text"))
    if layout.has_text and text_tokenizer is None and (has_text or continue_in == "text"):
        raise ConfigError("text prompts and text continuations need the LM's own tokenizer (text_tokenizer=: "
                          "twist.lm.load_speech_tokenizer(<lm dir>))")
    if continue_in == "speech" and vocoder is None:
        raise ConfigError("continue_in=speech turns the continuation into audio: give a vocoder")
    if tokenizer is None and any(p.wav is not None for p in prompts):
        raise ConfigError("audio prompts are turned into units by a unit tokenizer: give one")
    check_pipeline_contracts(
        lm_contract,
        vocoder.contract if vocoder is not None else None,
        vocoder_has_duration_predictor=vocoder is not None and vocoder.has_duration_predictor,
        tokenizer_contract=tokenizer.contract if tokenizer is not None else None,
        lm_name=lm_name,
        vocoder_name=names.get("vocoder", "vocoder"),
        tokenizer_name=names.get("tokenizer", "tokenizer"),
    )
    out = Path(out_dir) if out_dir is not None else None
    made = {p.id: _made(made_by, p) for p in prompts}
    todo = [p for p in prompts if out is None or not _finished(out / f"{p.id}.json", made[p.id])]
    parsed, kept = [], []
    for p in todo:
        if p.wav is None:  # a text prompt: no speech of its own
            parsed.append((np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
            kept.append(p)
            continue
        try:
            parsed.append(prompt_units(tokenizer, p.wav, contract=lm_contract, name=p.id, prompt_seconds=prompt_seconds))
            kept.append(p)
        except ValueError as e:
            if rejects is None:
                raise
            rejects.add(p.id, str(e))
    todo = kept
    keys = [p.id for p in todo]
    if not layout.has_text:  # TWIST's continuation, exactly as it always was
        cont = sample_units(lm, lm_contract, [u for u, _ in parsed], sampling, keys=keys)
        sampled: list[np.ndarray | None] = [None] * len(todo)
        ended: list[str | None] = [None] * len(todo)
    else:
        seqs = [prompt_ids(layout, p, pu, text_tokenizer, continue_in) for p, (pu, _) in zip(todo, parsed)]
        sampled, ended = sample_modality(lm, layout, seqs, sampling, continue_in=continue_in,
                                         max_new_tokens=max_tokens(sampling, lm_contract), keys=keys)
        cont = [layout.decode(ids) if continue_in == "speech" else np.zeros(0, dtype=np.int64) for ids in sampled]
    max_frames = int(round(sampling.max_seconds * lm_contract.frame_rate))
    records = []
    for i, (p, (pu, pd), gu) in enumerate(zip(todo, parsed, cont)):
        rec: dict[str, Any] = {"id": p.id, "prompt_units": pu.tolist(), "prompt_durations": pd.tolist()}
        wav = None
        if continue_in == "speech":
            if gu.size:
                _, gd = vocoder.frame_units(gu, None, predict_durations=lm_contract.dedup)
                if sampling.max_new_tokens is None:
                    # cap the continuation at max_seconds of audio (dedup tokens are >= 1 frame each)
                    keep = int(np.searchsorted(np.cumsum(gd), max_frames, side="right"))
                    gu, gd = gu[:keep], gd[:keep]
            else:
                gd = np.zeros(0, dtype=np.int64)
            units = np.concatenate([pu, gu])
            durs = np.concatenate([pd, gd]).astype(np.int64)
            wav = vocoder.synthesize(units, durs) if units.size else np.zeros(1, dtype=np.float32)
            split = int(pd.sum()) * vocoder.hop
            rec.update(generated_units=gu.tolist(), generated_durations=gd.tolist(),
                       prompt_seconds=split / vocoder.sample_rate,
                       continuation_seconds=(len(wav) - split) / vocoder.sample_rate if units.size else 0.0)
        else:
            rec.update(generated_units=[], generated_durations=[],
                       prompt_seconds=float(pd.sum()) / lm_contract.frame_rate, continuation_seconds=None)
        rec.update(sampling=dataclasses.asdict(sampling), contract=lm_contract.to_dict(), made_by=made[p.id])
        if layout.has_text:
            ids = sampled[i]
            if continue_in == "speech":
                ids = ids[: len(gu)]  # as the cap at max_seconds cut the units
            rec.update(prompt_text=p.text, prompt_order="text_first" if p.text_first else "speech_first",
                       continue_in=continue_in, prompt_ids=prompt_ids(layout, p, pu, text_tokenizer, continue_in).tolist(),
                       generated_ids=ids.tolist(), ended_by=ended[i] if len(ids) == len(sampled[i]) else "length")
            if continue_in == "text":
                rec["generated_text"] = text_tokenizer.decode(ids.tolist())
        if wav is not None:
            rec["wav"] = wav
            if asr is not None:
                rec["transcript"] = asr.transcribe(wav)
                rec["transcript_continuation"] = asr.transcribe(wav[split:]) if len(wav) > split else ""
        if out is not None:
            _write_record(out, rec, wav, split if wav is not None else 0, vocoder.sample_rate if wav is not None else 0)
        records.append(rec)
    return records


def units_first_refusal(lm_name: str, layout: VocabLayout, what: str) -> str:
    """The one line that refuses text for a units-first LM."""
    return (f"{what}: {lm_name} is in the {layout.name} layout: its ids are units, so it takes audio prompts and "
            "continues in speech only (text needs a text+units LM: +init=warm_interleaved)")


def _made(made_by: Mapping[str, Any] | None, prompt: Prompt) -> dict[str, Any]:
    """What makes one prompt's continuation: the run's ``made_by`` and the prompt itself."""
    made = dict(made_by or {})
    if prompt.wav is not None:
        made["prompt_sha256"] = _wav_sha256(prompt.wav)
    if prompt.text is not None:
        made["prompt_text"] = prompt.text
        if prompt.wav is not None:
            made["prompt_order"] = "text_first" if prompt.text_first else "speech_first"
    return made


def _wav_sha256(wav: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(wav, dtype=np.float32).tobytes()).hexdigest()[:16]


def _finished(path: Path, made: Mapping[str, Any]) -> bool:
    """A prompt's record exists and was made exactly as this run would make it."""
    if not path.is_file():
        return False
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False  # torn or foreign: made again
    return isinstance(rec, dict) and rec.get("made_by") == dict(made)


def made_by(c: GenerateRunConfig) -> dict[str, Any]:
    """What makes a continuation: the run's identity without its prompt list, with the
    model, tokenizer and vocoder dirs and their content fingerprints, sampling and seed."""
    from twist.run_identity import RunIdentity, identity_of

    ident = identity_of("generate", c)
    # the prompt lists are not: each record names its own prompt (its audio's hash, its text)
    settings = {k: v for k, v in ident.settings.items() if k not in ("prompts", "text_prompts", "text_prompts_file")}
    return {"fingerprint": RunIdentity("generate", settings, ident.inputs).fingerprint,
            "lm": str(c.lm), "lm_fingerprint": ident.inputs.get("lm"),
            "tokenizer_dir": str(c.tokenizer_dir), "tokenizer_fingerprint": ident.inputs.get("tokenizer_dir"),
            "vocoder": str(c.vocoder), "vocoder_fingerprint": ident.inputs.get("vocoder"),
            "sampling": {k: v for k, v in dataclasses.asdict(c.sampling).items() if k != "batch_size"},
            "prompt_seconds": c.prompt_seconds, "device": c.device, "dtype": c.dtype,
            "continue_in": c.continue_in, "prompt_order": c.prompt_order}


def read_text_prompts(c: GenerateRunConfig) -> list[str]:
    """``text_prompts``, then the lines of ``text_prompts_file`` (blank lines skipped)."""
    texts = list(c.text_prompts)
    if c.text_prompts_file:
        f = Path(c.text_prompts_file)
        if not f.is_file():
            raise MissingInputError(f"text_prompts_file {f} does not exist")
        lines = [line.strip() for line in f.read_text(encoding="utf-8").splitlines()]
        if not any(lines):
            raise InputError(f"text_prompts_file {f} holds no prompt (one per line)")
        texts += [line for line in lines if line]
    return texts


def combine_prompts(audio: Sequence[tuple[str, np.ndarray]], texts: Sequence[str], order: str) -> list[Prompt]:
    """The run's prompts: audio alone (ids from the files), text alone (``text0000``, ...), or both:
    the i-th text with the i-th audio prompt, or one text with every audio prompt, in ``order``."""
    check_choice("prompt_order", order, PROMPT_ORDERS)
    if not texts:
        return [Prompt(pid, wav=wav) for pid, wav in audio]
    if not audio:
        return [Prompt(f"text{i:04d}", text=t) for i, t in enumerate(texts)]
    if len(texts) not in (1, len(audio)):
        raise ConfigError(f"text_prompts: {len(texts)} text prompts for {len(audio)} audio prompts: give one per audio "
                          "prompt (in the order they are read: sorted paths) or a single one for all")
    return [Prompt(pid, wav=wav, text=texts[i] if len(texts) > 1 else texts[0], text_first=order == "text_first")
            for i, (pid, wav) in enumerate(audio)]


def _write_record(out: Path, rec: dict[str, Any], wav: np.ndarray | None, split: int, sr: int) -> None:
    from twist.atomic import atomic_write_json
    from twist.audio import save_audio

    out.mkdir(parents=True, exist_ok=True)
    if wav is not None:  # a text continuation has none
        save_audio(out / f"{rec['id']}.wav", wav, sr)
        save_audio(out / f"{rec['id']}.continuation.wav", wav[split:] if len(wav) > split else np.zeros(1, np.float32),
                   sr)
    atomic_write_json(out / f"{rec['id']}.json", {k: v for k, v in rec.items() if k != "wav"})  # commit marker


def read_prompts(paths: Sequence[str | Path], sample_rate: int, *, rejects: Any = None) -> list[tuple[str, np.ndarray]]:
    """Audio files or directories of them -> ``(id, wav)`` list; unreadable files go to ``rejects``.

    A prompt's id, which names its outputs, keeps its path under the directory it was found in
    (``spk1/u.wav`` -> ``spk1__u``, :func:`twist.audio.output_name`), so prompts that share a
    file name in different folders keep one output each.
    """
    from twist.audio import BadAudioError, load_audio, named_audio_files

    out = []
    for pid, f in named_audio_files(paths, what="prompt"):
        try:
            out.append((pid, load_audio(f, sample_rate)))
        except BadAudioError as e:
            if rejects is None:
                raise InputError(str(e)) from None
            rejects.add(str(f), e.reason)
    if not out:
        raise InputError(f"no usable prompt audio in {list(map(str, paths))}")
    return out


def summary_json(records: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps([{k: v for k, v in r.items() if k in ("id", "prompt_seconds", "continuation_seconds", "transcript")} for r in records])


def generate_run(c: GenerateRunConfig, *, on_start: Any = None) -> tuple[list[dict[str, Any]], int]:
    """What ``twist-generate`` does: load the LM, tokenizer, vocoder (and ASR), continue every
    prompt not finished yet (or finished by another model or sampling), and gather
    ``transcripts.jsonl`` (and, with text, ``texts.jsonl``). Returns the new records and the
    number of rejected prompts.

    ``on_start`` is called once everything is loaded and checked, before the first write."""
    from twist.asr import get_asr
    from twist.lm import load_speech_lm, load_speech_tokenizer, read_contract
    from twist.rejects import RejectsLog
    from twist.tokenizer import UnitTokenizer
    from twist.vocoder import load_vocoder

    out = Path(c.out_dir)
    names = {"lm": f"speech LM {c.lm}", "vocoder": f"vocoder {c.vocoder}", "tokenizer": f"tokenizer {c.tokenizer_dir}"}
    # cheap checks first: the vocoder, the LM's layout, the prompts, before the speech LM is loaded
    vocoder = load_vocoder(c.vocoder, device=c.device)[0] if c.continue_in == "speech" else None
    layout = read_contract(c.lm).layout
    texts = read_text_prompts(c)
    if not layout.has_text and (texts or c.continue_in == "text"):
        raise ConfigError(units_first_refusal(names["lm"], layout, "text_prompts" if texts else "continue_in=text"))
    tok = UnitTokenizer.load(c.tokenizer_dir) if c.prompts else None
    unreadable = RejectsLog(None, stage="generate")  # held until the run dir is started
    audio = read_prompts(c.prompts, tok.sample_rate, rejects=unreadable) if tok is not None else []
    prompts = combine_prompts(audio, texts, c.prompt_order)[: c.limit or None]
    text_tokenizer = load_speech_tokenizer(c.lm) if layout.has_text else None
    lm, lm_contract = load_speech_lm(c.lm, device=c.device, dtype=c.dtype)
    check_pipeline_contracts(lm_contract, vocoder.contract if vocoder is not None else None,
                             vocoder_has_duration_predictor=vocoder is not None and vocoder.has_duration_predictor,
                             tokenizer_contract=tok.contract if tok is not None else None, lm_name=names["lm"],
                             vocoder_name=names["vocoder"], tokenizer_name=names["tokenizer"])
    asr = get_asr(c.asr) if c.continue_in == "speech" else None
    if on_start is not None:
        on_start()
    with RejectsLog(out / "rejects.jsonl", stage="generate") as rej:
        rej.replay(unreadable)
        records = generate_continuations(
            lm=lm, lm_contract=lm_contract, tokenizer=tok, vocoder=vocoder, prompts=prompts, sampling=c.sampling,
            prompt_seconds=c.prompt_seconds, out_dir=out, asr=asr, rejects=rej, names=names, made_by=made_by(c),
            text_tokenizer=text_tokenizer, continue_in=c.continue_in)
    write_transcripts(out)
    write_texts(out)
    return records, rej.count


def write_texts(out: Path) -> None:
    """``texts.jsonl``: every finished prompt's text, the prompt's and a text continuation's (also
    those of earlier, resumed runs); none for a run without text."""
    from twist.atomic import atomic_write_text

    rows = []
    for p in sorted(out.glob("*.json")):
        rec = json.loads(p.read_text())
        if isinstance(rec, dict) and "continue_in" in rec and (rec.get("prompt_text") is not None
                                                               or "generated_text" in rec):
            rows.append(json.dumps({"id": rec["id"], "prompt_text": rec.get("prompt_text"),
                                    "continuation_text": rec.get("generated_text")}))
    if rows:
        atomic_write_text(out / "texts.jsonl", "\n".join(rows) + "\n")


def write_transcripts(out: Path) -> None:
    """``transcripts.jsonl``: every finished prompt's transcript (also those of earlier, resumed runs)."""
    from twist.atomic import atomic_write_text

    rows = []
    for p in sorted(out.glob("*.json")):
        rec = json.loads(p.read_text())
        if isinstance(rec, dict) and "transcript" in rec:
            rows.append(json.dumps({"id": rec["id"], "transcript": rec["transcript"],
                                    "transcript_continuation": rec.get("transcript_continuation", "")}))
    if rows:
        atomic_write_text(out / "transcripts.jsonl", "\n".join(rows) + "\n")
