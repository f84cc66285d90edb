"""Speech -> discrete units: encoders (HuBERT, Whisper, log-mel), k-means, the tokenizer, the pipeline.

Public entry points: :class:`UnitTokenizer` (load a tokenizer directory, encode audio),
:func:`build_encoder`, :class:`KMeansQuantizer`/:func:`fit_kmeans`, and
:func:`twist.tokenizer.pipeline.run_tokenize` (what ``twist-tokenize`` runs).
"""

from twist.tokenizer.encoders import Encoder, build_encoder
from twist.tokenizer.kmeans import KMeansQuantizer, convert_legacy_kmeans, fit_kmeans
from twist.tokenizer.tokenizer import UnitTokenizer

__all__ = [
    "Encoder",
    "KMeansQuantizer",
    "UnitTokenizer",
    "build_encoder",
    "convert_legacy_kmeans",
    "fit_kmeans",
]
