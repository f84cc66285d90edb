"""twist.lm: a pretrained text LM becomes a speech LM (TWIST, Hassid et al., 2023, §2.2), and runs.

* :func:`build_speech_lm` - ``model/`` + ``init/`` config -> speech LM (warm or cold start);
* :func:`warm_start` / :func:`cold_start` - the surgery itself (:mod:`twist.lm.surgery`);
* :func:`load_text_lm` - text LMs from HF dirs, GGUF files, packages or hub ids (:mod:`twist.lm.sources`);
* :func:`save_speech_lm` / :func:`load_speech_lm` / :func:`load_speech_tokenizer` /
  :func:`contract_of` / :func:`mask_invalid_logits` - the speech LM on disk and its vocabulary
  (:mod:`twist.lm.speech_lm`);
* :mod:`twist.lm.text_units` - the text+units vocabulary (interleaving): its layout from a text
  tokenizer, the tokenizer a model ships, the generation configs;
  :func:`speech_contract` / :func:`speech_tokenizer_for` build them from a ``model/`` node;
* :func:`import_textlesslib_lm` - published TWIST LMs into twist's id layout (:mod:`twist.lm.textlesslib`).

The model at run time, used by training and evaluation alike (imported on use):

* :mod:`twist.lm.families` - one row per ``model_type``: packable, flex-tested, own attention, quirks;
* :mod:`twist.lm.packing` - utterances -> packed windows with document masks (or padded rows),
  :class:`~twist.lm.packing.Batch`, the token loss;
* :mod:`twist.lm.attention` - the attention choice (:func:`~twist.lm.attention.plan_attention`),
  flex BlockMasks, the document ALiBi.
"""

from twist.lm.build import ParamReport, build_speech_lm, param_report, speech_contract, speech_tokenizer_for
from twist.lm.sources import load_text_config, load_text_lm, load_text_tokenizer, resolve_source
from twist.lm.speech_lm import (
    contract_of,
    load_speech_lm,
    load_speech_tokenizer,
    logits_width,
    mask_invalid_logits,
    read_contract,
    save_speech_lm,
)
from twist.lm.surgery import EMBED_INITS, cold_start, warm_start
from twist.lm.textlesslib import import_textlesslib_lm

__all__ = [
    "EMBED_INITS",
    "ParamReport",
    "build_speech_lm",
    "cold_start",
    "contract_of",
    "import_textlesslib_lm",
    "load_speech_lm",
    "load_speech_tokenizer",
    "load_text_config",
    "load_text_lm",
    "load_text_tokenizer",
    "logits_width",
    "mask_invalid_logits",
    "param_report",
    "read_contract",
    "resolve_source",
    "save_speech_lm",
    "speech_contract",
    "speech_tokenizer_for",
    "warm_start",
]
