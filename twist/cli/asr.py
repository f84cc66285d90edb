"""``twist-asr``: transcribe audio, or check an ASR backend on real human speech (thin entry point).

    twist-asr                                    # WER of Whisper tiny.en on the LibriVox clips
    twist-asr mode=transcribe files=[a.wav,b.wav] asr=hf-whisper asr.model_dir=/models/whisper

The backends are twist.asr's (the ones resynthesis WER and twist-generate use).
"""

from __future__ import annotations

import json
from typing import Any

from twist.asr import AsrRunConfig
from twist.cli.common import hydra_cli

PROG = "twist-asr"


def run(cfg: Any) -> None:
    from twist.asr import SAMPLE_RATE, get_asr, librivox_sanity
    from twist.audio import load_audio
    from twist.schema import to_typed

    c = to_typed(AsrRunConfig, cfg)
    asr = get_asr(c.asr)  # the schema refused asr=none
    if c.mode == "librivox":
        res = librivox_sanity(asr, c.data_dir, limit=c.limit)
        for it in res["items"]:
            print(f"{it['id']}\n  ref: {it['reference']}\n  hyp: {it['hypothesis']}")
        print(json.dumps({k: v for k, v in res.items() if k != "items"}))
    else:
        for f in c.files:
            print(f"{f}\t{asr.transcribe(load_audio(f, SAMPLE_RATE))}")


main = hydra_cli(PROG, "asr_run", AsrRunConfig, run)

if __name__ == "__main__":
    main()
