"""Spoken benchmarks built from text with offline TTS (``twist-bench``).

* :mod:`twist.bench.tts` - espeak-ng / piper / festival behind one interface, 16 kHz.
* :mod:`twist.bench.storycloze` - spoken and topic StoryCloze (TWIST, Hassid et al. 2023, §3.3).
* :mod:`twist.bench.blimp` - sBLIMP-style syntax pairs (ZeroSpeech 2021 layout).
* :mod:`twist.bench.wuggy` - sWUGGY-style word / non-word pairs (ZeroSpeech 2021 layout).
* :mod:`twist.bench.build` - the orchestration behind the CLI.
"""

from twist.bench.build import build_benchmarks
from twist.bench.tts import TTSNotInstalledError, get_backend, synthesize_many

__all__ = ["build_benchmarks", "get_backend", "synthesize_many", "TTSNotInstalledError"]
