"""``twist-vocoder``: train a unit HiFi-GAN, resynthesise audio, convert published checkpoints.

Modes (``mode=``): ``train`` (audio dir + its unit dataset -> a vocoder run dir), ``resynth``
(audio -> units -> audio, real-time factor and, with ASR, resynthesis WER), ``convert`` (a
speech-resynthesis ``{"generator": ...}`` checkpoint + JSON config -> a vocoder dir),
``rtf`` (real-time factor on the configured device) and ``table`` (the Table-5-style WER
report from several resynth runs). The library does the work; see ``docs/vocoder.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from twist.cli.common import save_resolved_config, user_errors


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def _set_threads(cfg: DictConfig) -> None:
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))


def _need(cfg: DictConfig, *keys: str) -> None:
    missing = [k for k in keys if not cfg.get(k)]
    if missing:
        raise ValueError(f"mode={cfg.mode} needs {', '.join(missing)} (e.g. {missing[0]}=/path)")


def _contract_from(path: str) -> Any:
    """A unit contract from a contract.json, a unit dataset dir, a tokenizer dir or a speech LM dir."""
    from twist.contract import UnitContract

    p = Path(path)
    for cand in (p, p / "contract.json", p / "meta.json", p / "unit_contract.json"):
        if cand.is_file():
            return UnitContract.load(cand)
    if (p / "tokenizer.json").exists():
        from twist.tokenizer import UnitTokenizer

        return UnitTokenizer.load(p).contract
    raise FileNotFoundError(f"no unit contract found at {p} (give a contract.json, unit dataset or tokenizer dir)")


def run_train(cfg: DictConfig) -> None:
    from twist.vocoder.train import train_vocoder

    _need(cfg, "units_dir", "audio_dir")
    vm = cfg.vocoder_model
    summary = train_vocoder(
        units_dir=cfg.units_dir,
        audio_dir=cfg.audio_dir,
        out_dir=cfg.out_dir,
        generator=_plain(vm.generator),
        discriminator=_plain(vm.discriminator),
        mel=_plain(vm.mel),
        train=_plain(cfg.train),
        device=cfg.device,
        resume=bool(cfg.resume),
        progress=bool(cfg.progress),
    )
    print(f"[twist-vocoder] {json.dumps(summary)} -> {Path(cfg.out_dir) / 'vocoder'}")


def _read_transcripts(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"transcripts file not found: {p}")
    out = {}
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            rec = json.loads(line)
            out[str(rec["id"])] = str(rec["text"])
        else:
            key, sep, text = line.partition("\t")
            if not sep:
                raise ValueError(f"{p}:{n}: expected 'id<TAB>text' or a JSON line with id and text")
            out[key.strip()] = text.strip()
    return out


def run_resynth(cfg: DictConfig) -> None:
    import numpy as np

    from twist.asr import get_asr, resynthesis_wer
    from twist.atomic import atomic_write_json
    from twist.audio import BadAudioError, find_audio, load_audio, save_audio
    from twist.rejects import RejectsLog
    from twist.tokenizer import UnitTokenizer
    from twist.units import dedup
    from twist.vocoder import load_vocoder, measure_rtf

    _need(cfg, "vocoder", "tokenizer_dir", "audio")
    vocoder, vcontract = load_vocoder(cfg.vocoder, device=cfg.device)
    tok = UnitTokenizer.load(cfg.tokenizer_dir)
    ignore = ("dedup",) if vocoder.has_duration_predictor else ()
    vcontract.check_compatible(tok.contract, mine=f"vocoder {cfg.vocoder}", theirs=f"tokenizer {cfg.tokenizer_dir}", ignore=ignore)
    src = Path(cfg.audio)
    files = find_audio(src) if src.is_dir() else [src]
    if not src.exists():
        raise FileNotFoundError(f"audio not found: {src}")
    if cfg.limit:
        files = files[: int(cfg.limit)]
    out = Path(cfg.out_dir)
    wav_dir = out / "wavs"
    originals, ids, unit_seqs, dur_seqs = [], [], [], []
    use_pred = bool(cfg.predict_durations) and vocoder.has_duration_predictor
    with RejectsLog(out / "rejects.jsonl", stage="vocoder-resynth") as rej:
        for f in files:
            try:
                wav = load_audio(f, tok.sample_rate)
            except BadAudioError as e:
                rej.add(str(f), e.reason)
                continue
            frames = np.asarray(tok.encode(wav), dtype=np.int64)
            if frames.size == 0:
                rej.add(str(f), "shorter than one unit frame")
                continue
            units, durs = dedup(frames)
            originals.append(wav)
            ids.append(f.stem)
            unit_seqs.append(units)
            dur_seqs.append(None if use_pred else durs)
    t0 = time.perf_counter()
    # batch inference (length-sorted batches of at most batch_frames frames)
    resyn = vocoder.synthesize_batch(unit_seqs, dur_seqs, predict_durations=use_pred, max_batch_frames=int(cfg.batch_frames))
    t_voc = time.perf_counter() - t0
    for i, y in zip(ids, resyn):
        save_audio(wav_dir / f"{i}.wav", y, vocoder.sample_rate)
    if not ids:
        raise ValueError(f"no usable audio under {src}; see {out / 'rejects.jsonl'}")
    audio_s = sum(len(y) for y in resyn) / vocoder.sample_rate
    report: dict[str, Any] = {
        "name": cfg.name or Path(cfg.vocoder).name,
        "vocoder": str(cfg.vocoder),
        "tokenizer": str(cfg.tokenizer_dir),
        "contract": tok.contract.to_dict(),
        "n": len(ids),
        "durations": "predicted" if use_pred else "true",
        "rtf": {"device": str(vocoder.device), "rtf": t_voc / audio_s, "audio_seconds": audio_s, "compute_seconds": t_voc},
    }
    if cfg.rtf_seconds:
        report["rtf_benchmark"] = measure_rtf(vocoder, seconds=float(cfg.rtf_seconds))
    asr = get_asr(_plain(cfg.asr))
    if asr is not None:
        texts = _read_transcripts(cfg.transcripts)
        refs = [texts[i] for i in ids] if texts and all(i in texts for i in ids) else None
        if texts and refs is None:
            missing = [i for i in ids if i not in texts][:5]
            raise KeyError(f"transcripts {cfg.transcripts} lack ids {missing}")
        res = resynthesis_wer(asr, originals, resyn, refs)
        report.update({k: res[k] for k in ("wer", "wer_original", "reference") if k in res})
        report["asr"] = asr.name
        atomic_write_json(out / "transcripts.json", [
            {"id": i, "asr_original": a, "asr_resynth": b, **({"reference": refs[n]} if refs else {})}
            for n, (i, a, b) in enumerate(zip(ids, res["asr_original"], res["asr_resynth"]))
        ])
    atomic_write_json(out / "wer.json", report)
    print(f"[twist-vocoder] resynthesised {len(ids)} files -> {wav_dir}; "
          + " ".join(f"{k}={report[k]:.4f}" for k in ("wer", "wer_original") if k in report)
          + f" rtf({report['rtf']['device']})={report['rtf']['rtf']:.4f}")


def run_convert(cfg: DictConfig) -> None:
    from twist.vocoder.infer import convert_hifigan_checkpoint

    _need(cfg, "checkpoint", "hifigan_config", "contract")
    out = convert_hifigan_checkpoint(
        cfg.checkpoint, cfg.hifigan_config, _contract_from(cfg.contract), Path(cfg.out_dir) / "vocoder",
        allow_pickle=bool(cfg.allow_pickle),
    )
    print(f"[twist-vocoder] converted {cfg.checkpoint} -> {out}")


def run_rtf(cfg: DictConfig) -> None:
    from twist.atomic import atomic_write_json
    from twist.vocoder import Vocoder, load_vocoder, measure_rtf

    if cfg.vocoder:
        vocoder, _ = load_vocoder(cfg.vocoder, device=cfg.device)
        what = str(cfg.vocoder)
    else:
        # speed of an architecture alone: random weights of the selected vocoder_model
        from twist.contract import UnitContract
        from twist.vocoder.generator import build_generator
        from twist.vocoder.train import generator_config_for

        g = _plain(cfg.vocoder_model.generator)
        hop = 1
        for r in g["upsample_rates"]:
            hop *= int(r)
        c = UnitContract(encoder="random", encoder_fingerprint="none", layer=None, frame_rate=16000 / hop,
                         n_units=int(cfg.rtf_units), kmeans_fingerprint="none")
        vocoder = Vocoder(build_generator(generator_config_for(c, g)), c, device=cfg.device)
        what = f"vocoder_model={cfg.vocoder_model.name} (random weights)"
    res = measure_rtf(vocoder, seconds=float(cfg.rtf_seconds or 10.0), batch=int(cfg.rtf_batch))
    res["vocoder"] = what
    res["parameters"] = sum(p.numel() for p in vocoder.generator.parameters())
    atomic_write_json(Path(cfg.out_dir) / "rtf.json", res)
    print(f"[twist-vocoder] {json.dumps(res)}")


def run_table(cfg: DictConfig) -> None:
    from twist.asr import wer_table
    from twist.atomic import atomic_write_text

    if not cfg.runs:
        raise ValueError("mode=table needs runs=[dir1,dir2,...] (twist-vocoder resynth output dirs)")
    rows = []
    for r in cfg.runs:
        p = Path(r) / "wer.json"
        if not p.exists():
            raise FileNotFoundError(f"{p} not found (run twist-vocoder mode=resynth with an ASR first)")
        row = json.loads(p.read_text())
        if "wer" not in row:
            raise ValueError(f"{p} has no WER (that resynth run had asr=none)")
        rows.append(row)
    table = wer_table(rows)
    atomic_write_text(Path(cfg.out_dir) / "table5.md", table)
    print(table, end="")


MODES = {"train": run_train, "resynth": run_resynth, "convert": run_convert, "rtf": run_rtf, "table": run_table}


@hydra.main(config_path="../configs", config_name="vocoder", version_base="1.3")
@user_errors("twist-vocoder")
def main(cfg: DictConfig) -> None:
    if cfg.mode not in MODES:
        raise ValueError(f"unknown mode {cfg.mode!r}; choose one of {sorted(MODES)}")
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    save_resolved_config(cfg, cfg.out_dir)
    _set_threads(cfg)
    MODES[cfg.mode](cfg)


if __name__ == "__main__":
    main()
