"""What twist knows about each text-LM family: one row per Hugging Face ``model_type``.

TWIST (Hassid et al., 2023) warm-starts speech LMs from several text-LM families (OPT, BLOOM,
Pythia, LLaMA; ImageGPT as the image-pretrained ablation of Table 8). Each family's decoder
takes document masks, per-document positions and attention kernels differently. Every place
that depends on such a difference reads this table; nothing else names a family.

Adding a family is one ``twist/configs/model/<name>.yaml`` file and one :class:`Family` row
below (docs/lm.md, "How to add a model family"). A ``model_type`` without a row still trains
and scores, on padded rows with its own default attention.

This module imports no torch: the config schemas read :data:`ATTN_IMPLEMENTATIONS` from it.
"""

from __future__ import annotations

from dataclasses import dataclass

# ``train.attn_implementation`` / eval's ``attn_implementation`` (twist.lm.attention resolves them)
ATTN_IMPLEMENTATIONS = ("auto", "flex", "sdpa", "eager", "flash_attention_2")

OWN_ATTENTION = (None, "alibi", "builtin")


@dataclass(frozen=True)
class Family:
    """One row of the family table (see the module docstring).

    Attributes:
        model_type: the ``config.model_type`` transformers gives the family.
        packable: its decoder takes a 4D document mask and per-document ``position_ids``, so
            several utterances can share a row (``data.packing=auto`` packs, eval's
            ``pack_tokens`` is allowed). ``False``: padded rows only.
        flex_tested: the flex-attention equivalence tests cover it, so
            ``attn_implementation=auto`` picks flex block masks for it on CUDA.
        own_attention: ``None`` when its attention layers dispatch through transformers'
            ``AttentionInterface`` (``set_attn_implementation`` and ``twist_flex`` reach them).
            ``"alibi"``: attention is computed inside its own modules with ALiBi biases
            (BLOOM); it packs through a document ALiBi (twist.lm.attention) and a dense
            additive mask, so ``auto`` picks eager. ``"builtin"``: computed inside its own
            modules and the kernel cannot be swapped (ImageGPT).
        extra_vocab_rows: ``config.vocab_size`` minus the logits' width. ImageGPT's head has
            no logit for its start token, so its config counts one row more (twist.lm.surgery).
        causal_lm_class: the transformers class to build when its auto causal-LM mapping has
            none (ImageGPT: ``ImageGPTForCausalImageModeling``; twist.lm.sources).
    """

    model_type: str
    packable: bool = True
    flex_tested: bool = False
    own_attention: str | None = None
    extra_vocab_rows: int = 0
    causal_lm_class: str | None = None

    def __post_init__(self) -> None:
        if self.own_attention not in OWN_ATTENTION:
            raise ValueError(f"family {self.model_type}: own_attention must be one of {OWN_ATTENTION}")
        if self.flex_tested and (self.own_attention or not self.packable):
            raise ValueError(f"family {self.model_type}: flex needs a packable family whose attention goes "
                             "through transformers' AttentionInterface")


FAMILIES: dict[str, Family] = {
    f.model_type: f
    for f in (
        Family("opt", flex_tested=True),
        Family("llama", flex_tested=True),
        Family("gpt_neox", flex_tested=True),
        Family("bloom", own_attention="alibi"),
        Family("imagegpt", packable=False, own_attention="builtin", extra_vocab_rows=1,
               causal_lm_class="ImageGPTForCausalImageModeling"),
        Family("mistral"),
        Family("mixtral"),
        Family("qwen2"),
        Family("qwen3"),
        Family("gemma"),
        Family("gemma2"),
        Family("phi"),
        Family("phi3"),
        Family("olmo"),
        Family("olmo2"),
        Family("stablelm"),
        Family("starcoder2"),
        Family("smollm3"),
        Family("granite"),
    )
}


def family(model_type: str | None) -> Family:
    """The row for ``model_type``; a type without a row trains and scores on padded rows."""
    key = str(model_type or "")
    return FAMILIES.get(key) or Family(key, packable=False)


def packable_types() -> list[str]:
    """The model types that pack (for error messages)."""
    return sorted(k for k, f in FAMILIES.items() if f.packable)
