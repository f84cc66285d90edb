"""Unit HiFi-GAN vocoder with a duration predictor (Polyak et al. 2021; Kong et al. 2020).

``load_vocoder(path) -> (Vocoder, UnitContract)``; ``vocoder.synthesize(units, durations=None)``
returns a float32 waveform at 16 kHz. See ``twist.vocoder.train`` for training and
``twist.vocoder.infer`` for loading and converting published checkpoints.
"""

from twist.vocoder.generator import GeneratorConfig, UnitHifiGan, build_generator
from twist.vocoder.infer import Vocoder, convert_hifigan_checkpoint, load_vocoder, measure_rtf, save_vocoder

__all__ = [
    "GeneratorConfig",
    "UnitHifiGan",
    "Vocoder",
    "build_generator",
    "convert_hifigan_checkpoint",
    "load_vocoder",
    "measure_rtf",
    "save_vocoder",
]
