"""``twist-mos build``: continuations from several systems -> a static listening-test page.

The human evaluation of TWIST (Hassid et al. 2023, §4) is MMOS, the meaningfulness MOS of
Lakhotia et al. (2021): raters hear continuations of the same ~3 s prompts and score how
natural their content is (grammar, meaning, variety) from 1 to 5 in half points. This module
writes that test as files, with no server and no network::

    <out_dir>/page/index.html     the whole test: instructions, player, scale, state, download
    <out_dir>/page/audio/<id>.wav one file per item, loudness-matched, named by an opaque id
    <out_dir>/key.json            which system and prompt each id is: keep it private, score with it

``page/`` opens from disk (``file://``) or from any static host. Model names never reach it:
items are named by a hash, listed in hash order, and each rater hears them in their own seeded
order (:mod:`twist.mos.plan`). The original recordings, when given, are both a top-line and the
gold items of the attention checks; one item per rater is played twice.

Inputs are directories: a ``twist-generate`` output (``<id>.wav`` = prompt + continuation, next
to ``<id>.json``), a ``twist-vocoder mode=resynth`` run (``wavs/<id>.wav``) or any directory of
``<id>.<audio ext>`` files. Prompts are matched by file stem across systems.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import io
import json
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twist.errors import ConfigError, InputError, MissingInputError, RunExistsError
from twist.mos.config import PageSettings
from twist.schema import to_typed

KEY_FORMAT = "twist-mos-key"
FORMAT_VERSION = 1
ORIGINAL = "original"
RESYNTH = "resynth"
ASSETS = Path(__file__).parent / "assets"
SCALE = {"min": 1.0, "max": 5.0, "step": 0.5}
# Anchors on the whole points, in the spirit of Lakhotia et al.'s MMOS instructions (own wording)
ANCHORS = {"1": "not natural at all", "2": "mostly unnatural", "3": "partly natural", "4": "mostly natural",
           "5": "completely natural"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


# ---------------------------------------------------------------------------------------
# finding the clips
# ---------------------------------------------------------------------------------------
def system_audio(source: str | Path | Sequence[str | Path], *, what: str) -> dict[str, Path]:
    """``{prompt id: audio file}`` for one system: a directory (see the module doc) or files."""
    from twist.audio import DEFAULT_EXTENSIONS

    if isinstance(source, (str, os.PathLike)):
        source = [source]
    files: list[Path] = []
    for s in source:
        p = Path(s).expanduser()
        if p.is_file():
            files.append(p)
            continue
        if not p.is_dir():
            raise MissingInputError(f"{what}: {p} does not exist")
        d = p / "wavs" if (p / "wavs").is_dir() and not _audio_in(p, DEFAULT_EXTENSIONS) else p
        files.extend(_audio_in(d, DEFAULT_EXTENSIONS))
    out: dict[str, Path] = {}
    for f in files:
        if f.name.endswith(".continuation.wav"):
            continue  # twist-generate also writes the continuation alone; raters hear prompt + continuation
        if f.stem in out:
            raise InputError(f"{what}: two files for prompt {f.stem!r}: {out[f.stem]} and {f}")
        out[f.stem] = f
    if not out:
        raise MissingInputError(f"{what}: no audio files in {[str(s) for s in source]}")
    return out


def _audio_in(d: Path, exts: Sequence[str]) -> list[Path]:
    from twist.audio import is_input_entry

    return sorted(f for f in d.iterdir() if f.suffix.lower() in exts and is_input_entry(f))


def collect_items(
    systems: Mapping[str, Any],
    *,
    original: Any = None,
    resynth: Any = None,
) -> tuple[list[str], dict[str, dict[str, Path]]]:
    """The prompts every system has, and each system's (and top-line's) clip for them.

    Returns:
        ``(prompt ids, {system: {prompt id: file}})``; the top-lines ``original`` and
        ``resynth`` appear under those names and must cover every prompt.
    """
    if not systems:
        raise ConfigError("systems is empty: give at least one {name: generate dir}")
    found: dict[str, dict[str, Path]] = {}
    for name, src in systems.items():
        name = str(name)
        if not _NAME_RE.match(name):
            raise ConfigError(f"systems: name {name!r} must be 1-64 letters, digits or . _ + - (starting alphanumeric)")
        if name in (ORIGINAL, RESYNTH):
            raise ConfigError(f"systems: {name!r} is reserved for the top-line set by {name}=")
        found[name] = system_audio(src, what=f"systems.{name}")
    prompts = sorted(set.intersection(*(set(v) for v in found.values())))
    if not prompts:
        raise InputError(f"systems: no prompt id is common to all of {sorted(found)} (prompts match by file stem)")
    for key, src in ((ORIGINAL, original), (RESYNTH, resynth)):
        if src is None or src == "" or src == []:
            continue
        clips = system_audio(src, what=key)
        missing = [p for p in prompts if p not in clips]
        if missing:
            raise MissingInputError(
                f"{key}: no clip for {len(missing)} prompt(s), e.g. {missing[:3]} (expected <prompt id>.wav)"
            )
        found[key] = clips
    return prompts, {name: {p: clips[p] for p in prompts} for name, clips in found.items()}


# ---------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------
def prepare_clip(path: Path, settings: PageSettings) -> np.ndarray:
    """Read, cut and level-match one clip (mono float32 at ``settings.sample_rate``)."""
    from twist.audio import BadAudioError, load_audio

    try:
        wav = load_audio(path, int(settings.sample_rate))
    except BadAudioError as e:
        raise InputError(f"{path}: {e.reason}") from None
    if settings.clip_seconds is not None:
        wav = wav[: int(round(float(settings.clip_seconds) * settings.sample_rate))]
    if settings.loudness_dbfs is not None:
        rms = float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if wav.size else 0.0
        if rms > 1e-6:  # silence stays silence
            gain = 10 ** (float(settings.loudness_dbfs) / 20) / rms
            peak = float(np.max(np.abs(wav))) * gain
            if peak > 0.99:  # never clip: a peaky clip ends up a little quieter than the target
                gain *= 0.99 / peak
            wav = wav * gain
    return np.asarray(wav, dtype=np.float32)


def _wav_bytes(wav: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------
# the page
# ---------------------------------------------------------------------------------------
def item_id(seed: int, system: str, prompt: str) -> str:
    """An opaque, stable item name: nothing in it tells which system made the clip."""
    return hashlib.sha256(f"twist-mos|{int(seed)}|{system}|{prompt}".encode()).hexdigest()[:10]


def render_page(manifest: Mapping[str, Any], title: str) -> str:
    """``index.html`` with the stylesheet, the script and the manifest inlined (file:// forbids fetch)."""
    page = (ASSETS / "page.html").read_text(encoding="utf-8")
    data = json.dumps(manifest, separators=(",", ":"), ensure_ascii=True).replace("</", "<\\/")
    for token, value in (("{{CSS}}", (ASSETS / "page.css").read_text(encoding="utf-8")),
                         ("{{JS}}", (ASSETS / "page.js").read_text(encoding="utf-8")),
                         ("{{MANIFEST}}", data), ("{{TITLE}}", html.escape(title))):
        page = page.replace(token, value)
    return page


def _write_clips(rows: list[tuple[str, str]], clips: Mapping[str, Mapping[str, Path]], ids: Mapping[tuple[str, str], str],
                 prompt_index: Mapping[str, int], settings: PageSettings, audio_dir: Path,
                 progress: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write each clip as ``<audio_dir>/<id>.wav``; return the key's items and the page's, in id order
    (hash order: the listing says nothing about systems)."""
    from tqdm import tqdm

    key_items, page_items = [], []
    for name, p in tqdm(rows, desc="twist-mos build", unit="clip", disable=not progress):
        iid = ids[(name, p)]
        wav = prepare_clip(clips[name][p], settings)
        if wav.size == 0:
            raise InputError(f"{clips[name][p]}: empty after build.clip_seconds={settings.clip_seconds}")
        data = _wav_bytes(wav, int(settings.sample_rate))
        (audio_dir / f"{iid}.wav").write_bytes(data)
        duration = round(len(wav) / settings.sample_rate, 3)
        kind = "gold" if name == ORIGINAL else "topline" if name == RESYNTH else "system"
        key_items.append({"id": iid, "system": name, "prompt": p, "prompt_index": prompt_index[p], "kind": kind,
                          "duration": duration, "source": str(clips[name][p].resolve()),
                          "sha256": hashlib.sha256(data).hexdigest()})
        page_items.append({"id": iid, "prompt": prompt_index[p], "audio": f"audio/{iid}.wav", "duration": duration})
    page_items.sort(key=lambda it: it["id"])
    key_items.sort(key=lambda it: it["id"])
    return key_items, page_items


def _test_id(settings: PageSettings, key_items: list[dict[str, Any]]) -> str:
    """What identifies a test: its design and every clip's bytes."""
    return hashlib.sha256(json.dumps({
        "version": FORMAT_VERSION, "seed": settings.seed, "prompts_per_rater": settings.prompts_per_rater,
        "repeat": settings.repeat, "items": [(k["id"], k["system"], k["prompt"], k["sha256"]) for k in key_items],
    }, sort_keys=True).encode()).hexdigest()[:12]


def _refuse_other_test(key_path: Path, test_id: str) -> None:
    """Refuse to replace the key of another test: ratings collected for it would become unscorable."""
    if not key_path.exists():
        return
    old = _read_json(key_path)
    if old.get("test_id") not in (None, test_id):
        raise RunExistsError(
            f"{key_path} belongs to test {old.get('test_id')}, not to this build ({test_id}); ratings "
            "collected for it would become unscorable. Use another out_dir, or overwrite=true"
        )


def build_page(
    systems: Mapping[str, Any],
    out_dir: str | Path,
    *,
    original: Any = None,
    resynth: Any = None,
    settings: PageSettings | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_start: Any = None,
) -> dict[str, Any]:
    """Write ``<out_dir>/page/`` and ``<out_dir>/key.json``; return the key. ``on_start`` is
    called once every clip is found and checked, before the first write.

    Args:
        systems: ``{name: directory}`` of the systems under test (e.g. warm, cold).
        original: the original recordings (directory or files, ``<prompt id>.*``): a top-line
            and the gold items of the attention checks.
        resynth: the resynthesised originals (a top-line), e.g. a ``twist-vocoder`` resynth run.
        settings: :class:`PageSettings` or a mapping of its fields.
        overwrite: replace a key.json of a different test (its ratings could no longer be scored).
        progress: show a progress bar while the audio is prepared.

    Raises:
        RunExistsError: ``out_dir`` holds the key of another test and ``overwrite`` is off.
    """
    from twist.atomic import atomic_replace_dir, atomic_write_json

    if not isinstance(settings, PageSettings):
        settings = to_typed(PageSettings, settings)
    out = Path(out_dir)
    prompts, clips = collect_items(systems, original=original, resynth=resynth)
    prompt_index = {p: i for i, p in enumerate(prompts)}
    rows = [(name, p) for name in clips for p in prompts]
    ids = {(name, p): item_id(settings.seed, name, p) for name, p in rows}
    if len(set(ids.values())) != len(ids):  # 40 bits: only an absurd test could collide
        raise InputError("two items got the same id; change build.seed")
    if on_start is not None:
        on_start()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".page.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "audio").mkdir(parents=True)
    try:
        key_items, page_items = _write_clips(rows, clips, ids, prompt_index, settings, tmp / "audio", progress)
        test_id = _test_id(settings, key_items)
        key_path = out / "key.json"
        if not overwrite:
            _refuse_other_test(key_path, test_id)
        manifest = {
            "format": "twist-mos-page", "version": FORMAT_VERSION, "test_id": test_id, "seed": int(settings.seed),
            "prompts_per_rater": settings.prompts_per_rater, "repeat": bool(settings.repeat),
            "contact": settings.contact, "scale": {**SCALE, "anchors": ANCHORS}, "items": page_items,
        }
        (tmp / "index.html").write_text(render_page(manifest, settings.title), encoding="utf-8")
        atomic_replace_dir(tmp, out / "page")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    key = {
        "format": KEY_FORMAT, "version": FORMAT_VERSION, "test_id": test_id, "settings": dataclasses.asdict(settings),
        "systems": [n for n in clips if n not in (ORIGINAL, RESYNTH)],
        "toplines": [n for n in (ORIGINAL, RESYNTH) if n in clips], "gold_system": ORIGINAL if ORIGINAL in clips else None,
        "prompts": prompts, "items": key_items,
    }
    atomic_write_json(key_path, key)
    return key


def listening_test_page(
    systems: Mapping[str, Any],
    out_dir: str | Path,
    *,
    original: Any = None,
    title: str | None = None,
) -> Path:
    """Build (or rebuild) a listening test with default settings; return its ``index.html``.

    What ``twist-demo`` calls for its warm and cold continuations: a rebuild replaces an
    earlier test in ``out_dir``, so use :func:`build_page` once real ratings are being collected.
    """
    settings = PageSettings(title=title) if title else PageSettings()
    build_page(systems, out_dir, original=original, settings=settings, overwrite=True, progress=False)
    return (Path(out_dir) / "page" / "index.html").resolve()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def load_key(path: str | Path) -> dict[str, Any]:
    """Read ``key.json`` (or the build's ``out_dir`` holding it) and check its shape."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "key.json"
    if not p.is_file():
        raise MissingInputError(f"no listening-test key at {p} (twist-mos build writes <out_dir>/key.json)")
    key = _read_json(p)
    if key.get("format") != KEY_FORMAT:
        raise InputError(f"{p}: not a twist-mos key (format {key.get('format')!r})")
    if key.get("version") != FORMAT_VERSION:
        raise InputError(f"{p}: key version {key.get('version')} is not supported (this twist reads {FORMAT_VERSION})")
    for field in ("test_id", "items", "settings"):
        if field not in key:
            raise InputError(f"{p}: missing field {field!r}")
    key["_path"] = str(p)
    return key


def minutes_per_rater(key: Mapping[str, Any]) -> float:
    """Audio minutes one rater hears (their sample of prompts, plus the repeat)."""
    items = key["items"]
    n_prompts = len(key["prompts"])
    k = key["settings"].get("prompts_per_rater") or n_prompts
    per_prompt = math.fsum(it["duration"] for it in items) / max(1, n_prompts)
    mean = math.fsum(it["duration"] for it in items) / max(1, len(items))
    return (per_prompt * min(k, n_prompts) + (mean if key["settings"].get("repeat") else 0.0)) / 60.0
