"""A tiny fast text tokenizer for text+units tests, built offline (tokenizers' WordLevel).

Its ids: ``<pad>`` 0, ``<s>`` 1 (added at the start of every encoding, as LLaMA's tokenizer
does), ``</s>`` 2, ``<unk>`` 3, then the words ``w0``, ``w1``, ... up to ``size`` ids: the size
of the tiny text LMs' vocabulary (tests/lm/conftest.py), so every text row has a token.

Import as ``from tests.text_tokenizers import ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")


def tiny_text_tokenizer(size: int = 300) -> Any:
    """A ``transformers`` fast tokenizer of ``size`` ids: the specials, then words ``w0`` ..."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    vocab.update({f"w{i}": len(SPECIALS) + i for i in range(size - len(SPECIALS))})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def save_tiny_text_tokenizer(directory: str | Path, size: int = 300) -> Path:
    """Write :func:`tiny_text_tokenizer` as a tokenizer directory (``model.tokenizer``)."""
    directory = Path(directory)
    tiny_text_tokenizer(size).save_pretrained(directory)
    return directory
