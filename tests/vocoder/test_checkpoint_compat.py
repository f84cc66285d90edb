"""Published speech-resynthesis / textlesslib generator checkpoints load strictly and compute the same.

The reference state dict here is built from the published layout: module names ``dict``,
``dur_predictor.{conv1.0,ln1,conv2.0,ln2,proj}``, ``conv_pre``, ``ups.i``,
``resblocks.j.convs1/convs2.n`` (block "1") or ``resblocks.j.convs.n`` (block "2"),
``conv_post``, weight-normed with torch's classic ``weight_norm`` (``weight_g``/``weight_v``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from tests.vocoder.conftest import make_contract
from twist.errors import ContractMismatch, InputError, UnsafeFileError
from twist.vocoder.generator import GeneratorConfig, build_generator
from twist.vocoder.infer import convert_hifigan_checkpoint, load_vocoder

# a published-style config, training fields included (they must be ignored)
HIFIGAN_JSON = {
    "resblock": "1",
    "num_gpus": 0,
    "batch_size": 16,
    "learning_rate": 0.0002,
    "adam_b1": 0.8,
    "adam_b2": 0.99,
    "lr_decay": 0.999,
    "seed": 1234,
    "upsample_rates": [5, 4, 4, 2, 2],
    "upsample_kernel_sizes": [11, 8, 8, 4, 4],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 7],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5]],
    "num_embeddings": 100,
    "embedding_dim": 16,
    "model_in_dim": 16,
    "segment_size": 8960,
    "code_hop_size": 320,
    "f0": False,
    "num_mels": 80,
    "n_fft": 1024,
    "hop_size": 256,
    "win_size": 1024,
    "dur_prediction_weight": 1.0,
    "dur_predictor_params": {
        "encoder_embed_dim": 16,
        "var_pred_hidden_dim": 16,
        "var_pred_kernel_size": 3,
        "var_pred_dropout": 0.5,
    },
    "sampling_rate": 16000,
    "fmin": 0,
    "fmax": 8000,
}


def _wn(m: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.nn.utils.weight_norm(m)  # the classic API the published checkpoints were saved with


def published_reference(h: dict) -> nn.Module:
    """A module tree with the published names and shapes (no forward needed)."""
    torch.manual_seed(123)
    root = nn.Module()
    root.dict = nn.Embedding(h["num_embeddings"], h["embedding_dim"])
    p = h["dur_predictor_params"]
    dp = nn.Module()
    dp.conv1 = nn.Sequential(nn.Conv1d(p["encoder_embed_dim"], p["var_pred_hidden_dim"], 3, padding=1), nn.ReLU())
    dp.ln1 = nn.LayerNorm(p["var_pred_hidden_dim"])
    dp.conv2 = nn.Sequential(nn.Conv1d(p["var_pred_hidden_dim"], p["var_pred_hidden_dim"], 3, padding=1), nn.ReLU())
    dp.ln2 = nn.LayerNorm(p["var_pred_hidden_dim"])
    dp.proj = nn.Linear(p["var_pred_hidden_dim"], 1)
    root.dur_predictor = dp
    ch0 = h["upsample_initial_channel"]
    root.conv_pre = _wn(nn.Conv1d(h["model_in_dim"], ch0, 7, 1, padding=3))
    root.ups = nn.ModuleList()
    root.resblocks = nn.ModuleList()
    for i, (u, k) in enumerate(zip(h["upsample_rates"], h["upsample_kernel_sizes"])):
        ch = ch0 // 2 ** (i + 1)
        root.ups.append(_wn(nn.ConvTranspose1d(ch0 // 2**i, ch, k, u, padding=(k - u) // 2)))
        for rk, rd in zip(h["resblock_kernel_sizes"], h["resblock_dilation_sizes"]):
            blk = nn.Module()
            if h["resblock"] == "1":
                blk.convs1 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, rk, 1, dilation=d, padding=(rk * d - d) // 2)) for d in rd)
                blk.convs2 = nn.ModuleList(_wn(nn.Conv1d(ch, ch, rk, 1, padding=(rk - 1) // 2)) for _ in rd)
            else:
                blk.convs = nn.ModuleList(_wn(nn.Conv1d(ch, ch, rk, 1, dilation=d, padding=(rk * d - d) // 2)) for d in rd)
            root.resblocks.append(blk)
    root.conv_post = _wn(nn.Conv1d(ch, 1, 7, 1, padding=3))
    # make weight_g differ from ||weight_v|| so the norm's arithmetic is exercised
    with torch.no_grad():
        for name, prm in root.named_parameters():
            if name.endswith("weight_g"):
                prm.mul_(torch.rand_like(prm) + 0.5)
    return root


@pytest.mark.parametrize("resblock", ["1", "2"])
def test_published_state_dict_loads_strictly_and_matches(tmp_path, resblock):
    h = dict(HIFIGAN_JSON, resblock=resblock)
    if resblock == "2":
        h["resblock_dilation_sizes"] = [[1, 3], [1, 3]]
    ref = published_reference(h)
    sd = ref.state_dict()
    assert any(k.endswith("weight_g") for k in sd) and "dur_predictor.conv1.0.weight" in sd
    ckpt = tmp_path / "g_00400000"
    torch.save({"generator": sd}, ckpt)
    (tmp_path / "config.json").write_text(json.dumps(h))

    # strict load, directly
    gen = build_generator(GeneratorConfig.from_hifigan_json(h))
    gen.load_state_dict(sd, strict=True)
    assert set(gen.state_dict()) == set(sd)

    # equivalence: our weight-normed convs compute the reference's convs
    x = torch.randn(2, h["model_in_dim"], 9)
    torch.testing.assert_close(gen.conv_pre(x), ref.conv_pre(x))
    y = torch.randn(2, h["upsample_initial_channel"], 9)
    torch.testing.assert_close(gen.ups[0](y), ref.ups[0](y))

    # through the converter and the vocoder directory
    out = convert_hifigan_checkpoint(ckpt, tmp_path / "config.json", make_contract(k=100), tmp_path / "voc")
    voc, contract = load_vocoder(out)
    assert contract.n_units == 100 and voc.hop == 320 and voc.has_duration_predictor
    for k, v in voc.generator.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    wav = voc.synthesize(np.array([3, 50, 99]), np.array([2, 1, 3]))
    assert len(wav) == 6 * 320 and np.isfinite(wav).all()


def test_converter_refuses_mismatches(tmp_path):
    h = dict(HIFIGAN_JSON)
    sd = published_reference(h).state_dict()
    torch.save({"generator": sd}, tmp_path / "g")
    (tmp_path / "config.json").write_text(json.dumps(h))
    with pytest.raises(ContractMismatch, match="num_embeddings=100 but the tokenizer contract has K=50"):
        convert_hifigan_checkpoint(tmp_path / "g", tmp_path / "config.json", make_contract(k=50), tmp_path / "o1")
    with pytest.raises(ContractMismatch, match="frame_rate=25"):
        convert_hifigan_checkpoint(tmp_path / "g", tmp_path / "config.json", make_contract(k=100, frame_rate=25.0), tmp_path / "o2")
    # a config that disagrees with the weights: strict load fails with a message naming both files
    bad = dict(h, resblock_kernel_sizes=[3, 5])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="does not match its config"):
        convert_hifigan_checkpoint(tmp_path / "g", tmp_path / "bad.json", make_contract(k=100), tmp_path / "o3")
    # a pickled object that is not a tensor dict is refused without allow_pickle
    torch.save({"generator": sd, "obj": object.__new__(OddThing)}, tmp_path / "pickled")
    with pytest.raises(UnsafeFileError, match="allow_pickle"):
        convert_hifigan_checkpoint(tmp_path / "pickled", tmp_path / "config.json", make_contract(k=100), tmp_path / "o4")
    assert not (tmp_path / "o4").exists()
    # a checkpoint that is no torch file at all is malformed input, not an unsafe one
    (tmp_path / "notes.txt").write_text("these are release notes, not a checkpoint\n" * 4)
    with pytest.raises(InputError, match="vocoder checkpoint .*notes.txt cannot be read") as err:
        convert_hifigan_checkpoint(tmp_path / "notes.txt", tmp_path / "config.json", make_contract(k=100), tmp_path / "o5")
    assert not isinstance(err.value, UnsafeFileError)


@pytest.mark.parametrize("text, why", [
    ("{resblock: 1", "is not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps(dict(HIFIGAN_JSON, f0=True)), "F0-conditioned"),
    (json.dumps(dict(HIFIGAN_JSON, resblock="3")), "resblock must be '1' or '2'"),
])
def test_a_malformed_hifigan_config_is_refused_naming_the_file(tmp_path, text, why):
    torch.save({"generator": published_reference(dict(HIFIGAN_JSON)).state_dict()}, tmp_path / "g")
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(InputError, match=why) as err:
        convert_hifigan_checkpoint(tmp_path / "g", tmp_path / "config.json", make_contract(k=100), tmp_path / "o")
    assert str(tmp_path / "config.json") in str(err.value)


class OddThing:
    pass
