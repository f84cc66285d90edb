"""Read a fairseq HuBERT checkpoint (``.pt``) as a transformers ``HubertModel``, without fairseq.

fairseq 0.12 no longer installs, yet the HuBERT checkpoints used by GSLM, TWIST and mHuBERT
are fairseq ``.pt`` files. They are plain dicts (``{"cfg"|"args", "model": state_dict}``), so
this module reads them with ``torch.load(weights_only=True)``, builds a ``HubertConfig`` from
the fairseq model config and renames the parameters to transformers' names. The HuBERT
pretraining heads (``label_embs_concat``, ``final_proj``) are dropped: unit extraction uses
only the encoder. Old checkpoints that pickle an ``argparse.Namespace`` (or training state)
need ``allow_pickle=True``; convert such a file once with ``twist-tokenize mode=convert-fairseq``
and use the resulting HF directory from then on.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from twist.errors import InputError, MissingInputError

# fairseq HubertConfig defaults (HuBERT-base), used when a field is absent from the checkpoint
_FAIRSEQ_DEFAULTS: dict[str, Any] = {
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "activation_fn": "gelu",
    "extractor_mode": "default",
    "layer_norm_first": False,
    "conv_feature_layers": "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2",
    "conv_bias": False,
    "conv_pos": 128,
    "conv_pos_groups": 16,
}

# parameters of the pretraining objective, not of the encoder
_DROPPED = ("label_embs_concat", "final_proj.", "label_embs.")

_LAYER_RENAMES = {
    "self_attn.k_proj": "attention.k_proj",
    "self_attn.v_proj": "attention.v_proj",
    "self_attn.q_proj": "attention.q_proj",
    "self_attn.out_proj": "attention.out_proj",
    "self_attn_layer_norm": "layer_norm",
    "fc1": "feed_forward.intermediate_dense",
    "fc2": "feed_forward.output_dense",
    "final_layer_norm": "final_layer_norm",
}


def parse_conv_feature_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parse fairseq's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``.

    The string is a Python list expression; it is evaluated only after checking it holds
    nothing but digits, brackets, commas, ``+`` and ``*``.
    """
    if not re.fullmatch(r"[\d\s\[\]\(\),+*]+", spec):
        raise InputError(f"unexpected fairseq conv_feature_layers {spec!r}")
    layers = eval(spec, {"__builtins__": {}}, {})  # noqa: S307 -- checked to be a literal arithmetic list
    out = [tuple(int(v) for v in t) for t in layers]
    if not out or any(len(t) != 3 for t in out):
        raise InputError(f"fairseq conv_feature_layers {spec!r} is not a list of (dim, kernel, stride)")
    return out  # type: ignore[return-value]


def hubert_config_from_fairseq(model_cfg: Mapping[str, Any]):
    """A ``transformers.HubertConfig`` equivalent to a fairseq HuBERT model config."""
    from transformers import HubertConfig

    c = {**_FAIRSEQ_DEFAULTS, **{k: v for k, v in model_cfg.items() if v is not None}}
    conv = parse_conv_feature_layers(str(c["conv_feature_layers"]))
    mode = c["extractor_mode"]
    if mode not in ("default", "layer_norm"):
        raise InputError(f"fairseq extractor_mode {mode!r} is not supported (expected 'default' or 'layer_norm')")
    return HubertConfig(
        hidden_size=int(c["encoder_embed_dim"]),
        num_hidden_layers=int(c["encoder_layers"]),
        num_attention_heads=int(c["encoder_attention_heads"]),
        intermediate_size=int(c["encoder_ffn_embed_dim"]),
        hidden_act=str(c["activation_fn"]),
        feat_extract_norm="group" if mode == "default" else "layer",
        do_stable_layer_norm=bool(c["layer_norm_first"]),
        conv_dim=[d for d, _, _ in conv],
        conv_kernel=[k for _, k, _ in conv],
        conv_stride=[s for _, _, s in conv],
        conv_bias=bool(c["conv_bias"]),
        num_conv_pos_embeddings=int(c["conv_pos"]),
        num_conv_pos_embedding_groups=int(c["conv_pos_groups"]),
        feat_proj_layer_norm=True,
    )


def fairseq_to_hf_state_dict(sd: Mapping[str, torch.Tensor], *, group_norm: bool) -> dict[str, torch.Tensor]:
    """Rename a fairseq HuBERT state dict to ``transformers.HubertModel`` names.

    Args:
        group_norm: the feature extractor is fairseq's ``default`` mode (group norm on the
            first conv only); otherwise ``layer_norm`` mode (a layer norm after every conv).

    Raises:
        ValueError: naming any parameter this mapping does not know.
    """
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for k, v in sd.items():
        if k.startswith(_DROPPED):
            continue
        new = None
        if m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", k):
            new = f"feature_extractor.conv_layers.{m[1]}.conv.{m[2]}"
        elif group_norm and (m := re.fullmatch(r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", k)):
            new = f"feature_extractor.conv_layers.0.layer_norm.{m[1]}"
        elif not group_norm and (m := re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", k)):
            new = f"feature_extractor.conv_layers.{m[1]}.layer_norm.{m[2]}"
        elif m := re.fullmatch(r"post_extract_proj\.(weight|bias)", k):
            new = f"feature_projection.projection.{m[1]}"
        elif m := re.fullmatch(r"layer_norm\.(weight|bias)", k):
            new = f"feature_projection.layer_norm.{m[1]}"
        elif k == "mask_emb":
            new = "masked_spec_embed"
        elif k in ("encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.parametrizations.weight.original0"):
            new = "encoder.pos_conv_embed.conv.parametrizations.weight.original0"
        elif k in ("encoder.pos_conv.0.weight_v", "encoder.pos_conv.0.parametrizations.weight.original1"):
            new = "encoder.pos_conv_embed.conv.parametrizations.weight.original1"
        elif k == "encoder.pos_conv.0.bias":
            new = "encoder.pos_conv_embed.conv.bias"
        elif m := re.fullmatch(r"encoder\.layer_norm\.(weight|bias)", k):
            new = f"encoder.layer_norm.{m[1]}"
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.([a-z_0-9.]+)\.(weight|bias)", k):
            sub = _LAYER_RENAMES.get(m[2])
            if sub is not None:
                new = f"encoder.layers.{m[1]}.{sub}.{m[3]}"
        if new is None:
            unknown.append(k)
        else:
            out[new] = v
    if unknown:
        raise InputError(f"fairseq HuBERT checkpoint has parameters this converter does not know: {unknown[:8]}")
    return out


def read_fairseq_checkpoint(path: str | Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """``torch.load`` a fairseq checkpoint, safely unless ``allow_pickle``."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"fairseq checkpoint not found: {path}")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for Namespace/meters objects
        if not allow_pickle:
            raise InputError(
                f"{path} cannot be read with weights_only=True ({type(e).__name__}: {str(e).splitlines()[0][:160]}). "
                "If you trust it, convert it once: twist-tokenize mode=convert-fairseq "
                f"convert.src={path} convert.dst=<hf_dir> convert.allow_pickle=true"
            ) from None
        ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise InputError(f"{path} is not a fairseq checkpoint (expected a dict with a 'model' state dict)")
    return ckpt


def _configs(ckpt: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    cfg = ckpt.get("cfg")
    if isinstance(cfg, Mapping) and cfg.get("model") is not None:
        return dict(cfg["model"]), dict(cfg.get("task") or {})
    args = ckpt.get("args")
    if args is not None:  # pre-Hydra fairseq: one flat namespace
        flat = dict(vars(args)) if not isinstance(args, Mapping) else dict(args)
        return flat, flat
    return {}, {}


def load_fairseq_hubert(path: str | Path, *, allow_pickle: bool = False):
    """Returns ``(HubertModel, normalize, sample_rate)`` from a fairseq HuBERT ``.pt``."""
    from transformers import HubertModel

    ckpt = read_fairseq_checkpoint(path, allow_pickle=allow_pickle)
    model_cfg, task_cfg = _configs(ckpt)
    config = hubert_config_from_fairseq(model_cfg)
    sd = fairseq_to_hf_state_dict(ckpt["model"], group_norm=config.feat_extract_norm == "group")
    model = HubertModel(config)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise InputError(f"{path}: converted weights do not fit HubertModel (missing {missing[:6]}, unexpected {unexpected[:6]})")
    model.eval()
    normalize = bool(task_cfg.get("normalize", config.feat_extract_norm == "layer"))
    sample_rate = int(task_cfg.get("sample_rate", 16000) or 16000)
    return model, normalize, sample_rate


def convert_fairseq_hubert(src: str | Path, dst: str | Path, *, allow_pickle: bool = False) -> Path:
    """Convert a fairseq HuBERT ``.pt`` into an HF directory (``save_pretrained`` +
    ``preprocessor_config.json`` carrying the normalisation flag)."""
    import json

    from twist.atomic import atomic_replace_dir, atomic_write_text

    model, normalize, sample_rate = load_fairseq_hubert(src, allow_pickle=allow_pickle)
    dst = Path(dst)
    tmp = dst.with_name(f".{dst.name}.partial")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp))
    atomic_write_text(
        tmp / "preprocessor_config.json",
        json.dumps({"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": normalize,
                    "sampling_rate": sample_rate, "feature_size": 1, "padding_value": 0.0,
                    "return_attention_mask": model.config.feat_extract_norm == "layer",
                    "converted_from": str(src)}, indent=2) + "\n",
    )
    atomic_replace_dir(tmp, dst)
    return dst
