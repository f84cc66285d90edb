"""A fairseq-format HuBERT checkpoint gives the same features as the HF model it was made from."""

import argparse

import numpy as np
import pytest
import torch

from twist.tokenizer.fairseq_convert import convert_fairseq_hubert, parse_conv_feature_layers
from twist.tokenizer.hubert import HubertEncoder

HF_TO_FAIRSEQ_LAYER = {
    "attention.k_proj": "self_attn.k_proj",
    "attention.v_proj": "self_attn.v_proj",
    "attention.q_proj": "self_attn.q_proj",
    "attention.out_proj": "self_attn.out_proj",
    "layer_norm": "self_attn_layer_norm",
    "feed_forward.intermediate_dense": "fc1",
    "feed_forward.output_dense": "fc2",
    "final_layer_norm": "final_layer_norm",
}


def to_fairseq(model) -> dict:
    """Write an HF HubertModel's weights under fairseq's parameter names (test-side inverse)."""
    group = model.config.feat_extract_norm == "group"
    out = {}
    for k, v in model.state_dict().items():
        p = k.split(".")
        if k == "masked_spec_embed":
            nk = "mask_emb"
        elif k.startswith("feature_extractor.conv_layers"):
            i, kind, wb = p[2], p[3], p[-1]
            nk = f"feature_extractor.conv_layers.{i}.0.{wb}" if kind == "conv" else (
                f"feature_extractor.conv_layers.{i}.2.{wb}" if group else f"feature_extractor.conv_layers.{i}.2.1.{wb}")
        elif k.startswith("feature_projection.projection"):
            nk = f"post_extract_proj.{p[-1]}"
        elif k.startswith("feature_projection.layer_norm"):
            nk = f"layer_norm.{p[-1]}"
        elif k.endswith("original0"):
            nk = "encoder.pos_conv.0.weight_g"
        elif k.endswith("original1"):
            nk = "encoder.pos_conv.0.weight_v"
        elif k == "encoder.pos_conv_embed.conv.bias":
            nk = "encoder.pos_conv.0.bias"
        elif k.startswith("encoder.layer_norm"):
            nk = k
        else:
            i, sub, wb = p[2], ".".join(p[3:-1]), p[-1]
            nk = f"encoder.layers.{i}.{HF_TO_FAIRSEQ_LAYER[sub]}.{wb}"
        out[nk] = v.clone()
    # pretraining heads that the converter must drop
    out["label_embs_concat"] = torch.randn(504, 8)
    out["final_proj.weight"] = torch.randn(8, model.config.hidden_size)
    out["final_proj.bias"] = torch.randn(8)
    return out


def fairseq_model_cfg(model) -> dict:
    c = model.config
    conv = " + ".join(f"[({d},{k},{s})]" for d, k, s in zip(c.conv_dim, c.conv_kernel, c.conv_stride))
    return {
        "_name": "hubert", "encoder_layers": c.num_hidden_layers, "encoder_embed_dim": c.hidden_size,
        "encoder_ffn_embed_dim": c.intermediate_size, "encoder_attention_heads": c.num_attention_heads,
        "activation_fn": "gelu", "extractor_mode": "default" if c.feat_extract_norm == "group" else "layer_norm",
        "layer_norm_first": c.do_stable_layer_norm, "conv_feature_layers": conv, "conv_bias": c.conv_bias,
        "conv_pos": c.num_conv_pos_embeddings, "conv_pos_groups": c.num_conv_pos_embedding_groups,
    }


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_fairseq_checkpoint_gives_same_features(tmp_path, make_hubert, norm):
    model = make_hubert(tmp_path / "hf", norm=norm, do_normalize=False)
    sd = to_fairseq(model)
    assert "encoder.layers.0.self_attn.k_proj.weight" in sd and "feature_extractor.conv_layers.0.0.weight" in sd
    pt = tmp_path / "hubert_fairseq.pt"
    torch.save({"cfg": {"model": fairseq_model_cfg(model), "task": {"normalize": False, "sample_rate": 16000}},
                "model": sd}, pt)
    wavs = [np.random.default_rng(i).standard_normal(n).astype(np.float32) for i, n in enumerate([11000, 16000])]
    ref_enc = HubertEncoder(path=str(tmp_path / "hf"), layer=2)
    pt_enc = HubertEncoder(path=str(pt), layer=2)  # converted in memory, weights_only=True
    for a, b in zip(ref_enc.encode_batch(wavs), pt_enc.encode_batch(wavs)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert pt_enc.fingerprint() == ref_enc.fingerprint()
    # and as a converted HF directory, with the normalisation flag carried over
    out = convert_fairseq_hubert(pt, tmp_path / "converted")
    dir_enc = HubertEncoder(path=str(out), layer=2)
    assert dir_enc.normalize is False
    torch.testing.assert_close(dir_enc.encode(wavs[0]), ref_enc.encode(wavs[0]), atol=1e-6, rtol=1e-6)


def test_pickled_namespace_checkpoint_needs_allow_pickle(tmp_path, make_hubert):
    model = make_hubert(tmp_path / "hf")
    args = argparse.Namespace(**fairseq_model_cfg(model), normalize=False)
    pt = tmp_path / "old.pt"
    torch.save({"args": args, "model": to_fairseq(model)}, pt)
    with pytest.raises(ValueError, match="allow_pickle"):
        HubertEncoder(path=str(pt), layer=1)
    out = convert_fairseq_hubert(pt, tmp_path / "conv", allow_pickle=True)
    wav = np.random.default_rng(0).standard_normal(9000).astype(np.float32)
    torch.testing.assert_close(HubertEncoder(path=str(out), layer=1).encode(wav),
                               HubertEncoder(path=str(tmp_path / "hf"), layer=1, normalize=False).encode(wav))


def test_unknown_parameter_is_named(tmp_path, make_hubert):
    model = make_hubert(tmp_path / "hf")
    sd = to_fairseq(model)
    sd["encoder.mystery.weight"] = torch.zeros(1)
    pt = tmp_path / "x.pt"
    torch.save({"cfg": {"model": fairseq_model_cfg(model), "task": {}}, "model": sd}, pt)
    with pytest.raises(ValueError, match="encoder.mystery.weight"):
        HubertEncoder(path=str(pt), layer=1)


def test_conv_layer_spec_parsing():
    assert parse_conv_feature_layers("[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2") == (
        [(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512, 2, 2)] * 2)
    with pytest.raises(ValueError):
        parse_conv_feature_layers("__import__('os').system('true')")
