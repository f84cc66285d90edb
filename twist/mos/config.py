"""``twist-mos``'s settings: the listening-test page (``build``) and the scoring (``score``).

The test follows the MMOS protocol of Lakhotia et al. (2021) used by TWIST: raters score each
continuation from 1 to 5 in steps of 0.5; unreliable raters are screened out the CrowdMOS way
(Ribeiro et al. 2011). Every threshold is a field below, with its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from omegaconf import MISSING

from twist.errors import ConfigError


@dataclass
class PageSettings:
    """How the page is made (``page:`` in configs/mos_build.yaml)."""

    title: str = "Listening test: how natural is the speech?"
    """The page's heading."""
    seed: int = 0
    """Seeds each rater's running order (and the item ids); part of the test id."""
    prompts_per_rater: int | None = None
    """Each rater hears a seeded sample of N prompts, every system's clip of each (null = all prompts)."""
    repeat: bool = True
    """Play one item twice per rater, as an attention check."""
    clip_seconds: float | None = None
    """Cut every clip to its first N seconds, e.g. originals to prompt + continuation length (null = as is)."""
    loudness_dbfs: float | None = -23.0
    """Scale every clip to this RMS level, peaks kept below full scale (null = as is)."""
    sample_rate: int = 16000
    """The page's audio sample rate in Hz."""
    contact: str = ""
    """A line shown at the end, e.g. "Email the ratings file to ..."."""

    def __post_init__(self) -> None:
        if self.prompts_per_rater is not None and int(self.prompts_per_rater) < 1:
            raise ConfigError(f"page.prompts_per_rater must be >= 1 or null, got {self.prompts_per_rater}")
        if self.clip_seconds is not None and float(self.clip_seconds) <= 0:
            raise ConfigError(f"page.clip_seconds must be > 0 or null, got {self.clip_seconds}")
        if self.loudness_dbfs is not None and not -60 <= float(self.loudness_dbfs) < 0:
            raise ConfigError(f"page.loudness_dbfs must be in [-60, 0) dBFS or null, got {self.loudness_dbfs}")
        if int(self.sample_rate) < 8000:
            raise ConfigError(f"page.sample_rate must be >= 8000, got {self.sample_rate}")


@dataclass
class Screening:
    """CrowdMOS-style rater screening (``screening:`` in configs/mos_score.yaml); null switches a check off."""

    gold_min_score: float | None = 3.5
    """A score below this on an original recording fails that gold item."""
    max_gold_fail_fraction: float = 0.2
    """Screen out a rater who failed more than this fraction of their gold items."""
    repeat_max_diff: float | None = 1.0
    """Screen out a rater whose two scores of the repeated item differ by more than this."""
    min_listen_fraction: float | None = 0.5
    """A rating given after playing less than this fraction of the clip is a short listen."""
    max_short_listen_fraction: float = 0.2
    """Screen out a rater with more than this fraction of short listens."""
    min_correlation: float | None = 0.25
    """Screen out a rater whose Pearson r with the other raters' mean is below this (CrowdMOS: 0.25)."""
    min_overlap: int = 5
    """Fewest items shared with the other raters for the correlation check to apply."""

    def __post_init__(self) -> None:
        for name in ("max_gold_fail_fraction", "max_short_listen_fraction"):
            v = getattr(self, name)
            if not 0 <= float(v) <= 1:
                raise ConfigError(f"screening.{name} must be in [0, 1], got {v}")
        if self.min_listen_fraction is not None and not 0 <= float(self.min_listen_fraction) <= 1:
            raise ConfigError(f"screening.min_listen_fraction must be in [0, 1] or null, got {self.min_listen_fraction}")
        if self.min_correlation is not None and not -1 <= float(self.min_correlation) <= 1:
            raise ConfigError(f"screening.min_correlation must be in [-1, 1] or null, got {self.min_correlation}")
        if self.repeat_max_diff is not None and float(self.repeat_max_diff) < 0:
            raise ConfigError(f"screening.repeat_max_diff must be >= 0 or null, got {self.repeat_max_diff}")
        if int(self.min_overlap) < 2:
            raise ConfigError(f"screening.min_overlap must be >= 2, got {self.min_overlap}")


@dataclass
class MosBuildConfig:
    """``twist-mos build``: continuations from several systems -> a static listening-test page."""

    out_dir: str = MISSING
    """The test's directory: page/ (what raters open) and key.json (item -> system; keep private) (required)."""
    systems: Any = MISSING
    """{name: dir} of the systems under test: twist-generate out_dirs, or dirs of <prompt id>.wav (required)."""
    original: Any = None
    """The original recordings, <prompt id>.<ext> (a dir or a list of files): a top-line and the gold items; null = none."""
    resynth: Any = None
    """Resynthesised originals (a twist-vocoder mode=resynth run dir, or a dir of <prompt id>.wav): a top-line; null = none."""
    overwrite: bool = False
    """Replace a key.json of a different test (ratings collected for it could no longer be scored)."""
    progress: bool = True
    """tqdm progress bar while the audio is prepared."""
    page: PageSettings = field(default_factory=PageSettings)
    allow_changes: list[str] = field(default_factory=list)
    """Settings allowed to differ from those that built out_dir (a rebuild refuses any other change; [all] = any; overwrite=true allows all); recorded in identity.json."""

    RERUN_FREE: ClassVar[tuple[str, ...]] = ("out_dir", "overwrite", "progress")

    def identity_inputs(self) -> dict[str, str | None]:
        """The clips of every system and top-line: the page is made of their content."""
        systems = self.systems if isinstance(self.systems, Mapping) else {}
        return {**{f"systems.{k}": str(v) for k, v in systems.items()},
                **_paths("original", self.original), **_paths("resynth", self.resynth)}

    def __post_init__(self) -> None:
        # checked with the schema, before the test dir is made: systems=ms/A is a path, not {A: ms/A}
        if self.systems not in (MISSING, None) and not isinstance(self.systems, Mapping):
            raise ConfigError(f"systems must be a mapping of system name to directory, e.g. systems={{A: ms/A}}; "
                              f"got {self.systems!r}")
        if self.overwrite and "all" not in self.allow_changes:
            self.allow_changes = [*self.allow_changes, "all"]  # replacing another test is the point of overwrite


def _paths(name: str, value: Any) -> dict[str, str]:
    """One input path, or a list of them, as ``{name: path}`` / ``{name[i]: path}``."""
    if value is None:
        return {}
    if isinstance(value, (str, Path)):
        return {name: str(value)}
    return {f"{name}[{i}]": str(v) for i, v in enumerate(value)}


@dataclass
class MosScoreConfig:
    """``twist-mos score``: ratings files -> screened raters -> MMOS per system with confidence intervals."""

    out_dir: str = MISSING
    """Where mmos.json, mmos.md, mmos.png, rejects.jsonl and config.yaml go (required)."""
    key: str = MISSING
    """The test's key.json, or the twist-mos build out_dir holding it (required)."""
    ratings: Any = field(default_factory=list)
    """Ratings files (.json / .csv, as the page saves them) and/or directories of them."""
    confidence: float = 0.95
    """Confidence level of every interval."""
    strict: bool = False
    """A bad ratings file stops the run (false: it is rejected, file and row in rejects.jsonl, the rest scored)."""
    plot: bool = True
    """Write mmos.png: MMOS bars with confidence-interval error bars."""
    screening: Screening = field(default_factory=Screening)
    allow_changes: list[str] = field(default_factory=list)
    """Settings allowed to differ from those that made out_dir (a rerun refuses any other change; [all] = any); recorded in identity.json."""

    # ratings keep arriving: a rerun scores whatever files are there now
    RERUN_FREE: ClassVar[tuple[str, ...]] = ("out_dir", "ratings", "strict", "plot")

    def identity_inputs(self) -> dict[str, str | None]:
        """The test's key (which clip is which system)."""
        return {"key": self.key}
