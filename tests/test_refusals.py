"""Refusals reach the user as one line and exit code 2, never as a traceback.

Each CLI is run in-process through its Hydra config (the same ``run`` the console script
calls), with artefacts that a user could really hand it: an HF directory whose weights are a
pickle, a vocoder whose ``generator.safetensors`` is not safetensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import twist
from twist.contract import UnitContract

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONTRACT = UnitContract(encoder="logmel", encoder_fingerprint="e", layer=None, frame_rate=50.0, n_units=6,
                        kmeans_fingerprint="k", dedup=True, sample_rate=16000)


class Payload:
    """What a malicious (or merely old) checkpoint carries: an object, not just tensors."""

    def __reduce__(self):
        return (os.getcwd, ())


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def _one_line_rc2(fn, cfg, capsys) -> str:
    capsys.readouterr()  # what setting up the artefacts printed
    with pytest.raises(SystemExit) as e:
        fn(cfg)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _pickled_bin(model_dir: Path) -> Path:
    """Replace a saved model's safetensors by a pytorch_model.bin that needs pickle."""
    from safetensors.torch import load_file

    sd = load_file(str(model_dir / "model.safetensors"))
    (model_dir / "model.safetensors").unlink()
    torch.save({**sd, "extra": Payload()}, model_dir / "pytorch_model.bin")
    return model_dir / "pytorch_model.bin"


def _speech_lm(path: Path) -> Path:
    from transformers import LlamaConfig

    from twist.lm import save_speech_lm
    from twist.lm.surgery import cold_start

    text = LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64)
    return save_speech_lm(cold_start(text, CONTRACT, seed=0), path, CONTRACT)


def test_a_pickled_speech_lm_is_refused_by_twist_eval_in_one_line(tmp_path, capsys):
    from twist.cli.eval import main

    lm = _speech_lm(tmp_path / "lm")
    bad = _pickled_bin(lm)
    from twist.errors import UnsafeFileError
    from twist.lm import load_speech_lm
    from twist.units import UnitShardWriter, merge_shards

    with pytest.raises(UnsafeFileError):
        load_speech_lm(lm)  # twist-generate and twist-eval load through here
    # twist-eval reads the model after checking its benchmarks: give it a PPL set that exists

    with UnitShardWriter(tmp_path / "units", CONTRACT) as w:
        for i in range(60):
            w.add(f"u{i}", np.arange(i % 5 + 3) % 6)
    merge_shards(tmp_path / "units", split={"seed": 0, "valid": 0.2, "test": 0.2})
    cfg = _compose("eval", [f"model_path={lm}", f"benchmarks.ppl.dataset={tmp_path / 'units'}",
                            f"out_dir={tmp_path / 'ev'}", "device=cpu", "progress=false"])
    err = _one_line_rc2(main.run, cfg, capsys)
    assert str(bad) in err and "getcwd" in err and "weights_only" not in err


def test_a_pickled_hubert_is_refused_by_twist_tokenize_in_one_line(tmp_path, capsys):
    from transformers import HubertConfig, HubertModel

    from twist.cli.tokenize import main

    tiny = HubertModel(HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                    conv_dim=(8, 8), conv_kernel=(10, 8), conv_stride=(5, 64),
                                    num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2))
    tiny.save_pretrained(tmp_path / "hubert")
    bad = _pickled_bin(tmp_path / "hubert")
    (tmp_path / "wavs").mkdir()
    import soundfile as sf

    sf.write(tmp_path / "wavs" / "a.wav", np.zeros(16000, np.float32), 16000)
    cfg = _compose("tokenize", ["tokenizer=hubert-50hz-100", f"tokenizer.encoder.path={tmp_path / 'hubert'}",
                                f"input.audio_dir={tmp_path / 'wavs'}", f"out_dir={tmp_path / 'out'}",
                                "progress=false", "num_workers=0"])
    err = _one_line_rc2(main.run, cfg, capsys)
    assert str(bad) in err and "getcwd" in err


def test_a_vocoder_whose_weights_are_not_safetensors_is_refused_in_one_line(tmp_path, capsys):
    from twist.cli.generate import main
    from twist.vocoder import build_generator, save_vocoder
    from twist.vocoder.generator import GeneratorConfig

    gen = build_generator(GeneratorConfig.from_dict({"num_embeddings": 6, "embedding_dim": 8, "model_in_dim": 8,
                                                     "upsample_rates": [4, 4, 5, 4], "upsample_kernel_sizes": [8, 8, 11, 8],
                                                     "upsample_initial_channel": 16, "resblock_kernel_sizes": [3],
                                                     "resblock_dilation_sizes": [[1]]}))
    voc = save_vocoder(gen, CONTRACT, tmp_path / "voc")
    (voc / "generator.safetensors").write_bytes(b"PK\x03\x04 this is a zip file, not safetensors" * 10)
    cfg = _compose("generate", [f"lm={tmp_path / 'lm'}", f"tokenizer_dir={tmp_path / 'tok'}", f"vocoder={voc}",
                                f"prompts=[{tmp_path}]", f"out_dir={tmp_path / 'gen'}"])
    err = _one_line_rc2(main.run, cfg, capsys)
    assert str(voc / "generator.safetensors") in err and "safetensors" in err
