"""A tiny text+units speech LM directory, as twist-train exports one, for CLI tests.

A 2-layer Llama warm-started from a random 300-id text LM whose tokenizer is the tiny ``w0 w1
...`` one (tests/text_tokenizers.py), in the text+units layout of the given units, saved with its
extended tokenizer and generation configs. Import as ``from tests.text_units_lm import ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.model_shapes import tiny_node
from tests.text_tokenizers import save_tiny_text_tokenizer


def save_tiny_text_units_lm(out_dir: str | Path, contract: Any, *, seed: int = 0, max_positions: int = 512) -> Path:
    """Build and save the model for ``contract``'s units (a units-first contract); returns its dir."""
    from twist.lm import build_speech_lm, contract_of, save_speech_lm, speech_tokenizer_for

    out_dir = Path(out_dir)
    tok_dir = save_tiny_text_tokenizer(out_dir.parent / f"{out_dir.name}-text-tokenizer")
    node = {**tiny_node("llama", vocab_size=300, max_position_embeddings=max_positions), "tokenizer": str(tok_dir)}
    model = build_speech_lm(node, {"name": "warm", "vocab": "text+units"}, contract, seed=seed, verbose=False)
    return save_speech_lm(model, out_dir, tokenizer=speech_tokenizer_for(node, contract_of(model)))
