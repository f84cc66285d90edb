"""``twist-vocoder``: train a unit HiFi-GAN, resynthesise audio, convert published checkpoints.

Modes (``mode=``): ``train`` (audio dir + its unit dataset -> a vocoder run dir), ``resynth``
(audio -> units -> audio, real-time factor and, with ASR, resynthesis WER), ``convert`` (a
speech-resynthesis ``{"generator": ...}`` checkpoint + JSON config -> a vocoder dir),
``rtf`` (real-time factor on the configured device) and ``table`` (the Table-5-style WER
report from several resynth runs). Thin entry point: settings in twist/vocoder/config.py,
the work in twist.vocoder; see ``docs/vocoder.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from twist.cli.common import RunDir, hydra_cli
from twist.vocoder.config import VocoderRunConfig

PROG = "twist-vocoder"


def run(cfg: Any) -> None:
    from twist.schema import to_typed

    c = to_typed(VocoderRunConfig, cfg)  # each mode's required settings are checked here
    run_dir = RunDir("vocoder", c, cfg)  # a rerun with other settings stops here, writing nothing
    if c.threads:
        import torch

        torch.set_num_threads(c.threads)
    vm = c.vocoder_model
    if c.mode == "train":
        from twist.vocoder.train import train_vocoder

        summary = train_vocoder(units_dir=c.units_dir, audio_dir=c.audio_dir, out_dir=c.out_dir,
                                generator=vm.generator, discriminator=vm.discriminator, mel=vm.mel,
                                train=c.train, device=c.device, resume=c.resume, progress=c.progress,
                                on_start=run_dir.start)
        print(f"[{PROG}] {json.dumps(summary)} -> {Path(c.out_dir) / 'vocoder'}")
    elif c.mode == "resynth":
        from twist.vocoder.resynth import resynthesise

        r = resynthesise(c.vocoder, c.tokenizer_dir, c.audio, c.out_dir, device=c.device, asr=c.asr,
                         transcripts=c.transcripts, limit=c.limit, predict_durations=c.predict_durations,
                         batch_frames=c.batch_frames, rtf_seconds=c.rtf_seconds, name=c.name,
                         on_start=run_dir.start)
        scores = " ".join(f"{k}={r[k]:.4f}" for k in ("wer", "wer_original") if k in r)
        print(f"[{PROG}] resynthesised {r['n']} files -> {Path(c.out_dir) / 'wavs'}; {scores} "
              f"rtf({r['rtf']['device']})={r['rtf']['rtf']:.4f}")
    elif c.mode == "convert":
        from twist.vocoder.infer import convert_hifigan_checkpoint
        from twist.vocoder.resynth import contract_from

        contract = contract_from(c.contract)
        run_dir.start()
        out = convert_hifigan_checkpoint(c.checkpoint, c.hifigan_config, contract,
                                         Path(c.out_dir) / "vocoder", allow_pickle=c.allow_pickle)
        print(f"[{PROG}] converted {c.checkpoint} -> {out}")
    elif c.mode == "rtf":
        from twist.vocoder.resynth import rtf_of

        run_dir.start()
        res = rtf_of(c.vocoder, vm, c.out_dir, device=c.device, seconds=c.rtf_seconds, batch=c.rtf_batch,
                     n_units=c.rtf_units)
        print(f"[{PROG}] {json.dumps(res)}")
    else:
        from twist.vocoder.resynth import wer_table_of_runs

        run_dir.start()
        print(wer_table_of_runs(c.runs, c.out_dir), end="")


main = hydra_cli(PROG, "vocoder", VocoderRunConfig, run)

if __name__ == "__main__":
    main()
