"""The paper-table sweeps run end to end: `twist-train -m +experiment=...` over tiny local stand-ins
for each text LM, found through $TWIST_MODELS_DIR under the stock configs' hub ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.model_shapes import tiny_node
from twist.lm import load_text_lm
from twist.train.loggers import read_metrics

# hub id (as in configs/model/*.yaml) -> a tiny model of the same family
STAND_INS = {
    "bigscience/bloom-560m": tiny_node("bloom"),
    "EleutherAI/pythia-410m": tiny_node("gpt_neox"),
    "openai/imagegpt-medium": tiny_node("imagegpt"),
    "facebook/opt-125m": tiny_node("opt"),
    # OPT-350M's own quirks: project_in/out (embeddings narrower than the body), post-norm
    "facebook/opt-350m": tiny_node("opt", word_embed_proj_dim=16, do_layer_norm_before=False),
    "Qwen/Qwen2.5-0.5B": tiny_node("qwen2", tie_word_embeddings=True, vocab_size=512),  # Slam's text LM: tied, as the real one
}


@pytest.fixture
def models_dir(tmp_path):
    root = tmp_path / "models"
    for hub_id, node in STAND_INS.items():
        load_text_lm(node).save_pretrained(
            root / hub_id)
    return root


def test_models_dir_serves_hub_ids(models_dir, monkeypatch):
    from twist.lm import resolve_source

    monkeypatch.setenv("TWIST_MODELS_DIR", str(models_dir))
    assert resolve_source("facebook/opt-350m") == (str(models_dir / "facebook/opt-350m"), None)
    monkeypatch.delenv("TWIST_MODELS_DIR")
    assert resolve_source("facebook/opt-350m") == ("facebook/opt-350m", None)  # a hub id again


@pytest.mark.slow
@pytest.mark.parametrize(
    "experiment,extra,cells",
    [
        # Table 2: one unit dataset per tokenizer (two vocabulary sizes here) x warm/cold, OPT-350M
        ("table2_tokenizers", ["data.path={units_a},{units_b}"],
         {"units_a": ("opt", 20), "units_b": ("opt", 30)}),
        # Table 6, narrowed on the command line: two sizes x two data fractions x warm/cold
        ("table6_scaling", ["+model=opt-125m,opt-350m", "data.fraction=0.5,1.0", "data.path={units_a}"],
         {f"{m}-{{init}}-frac{f}": ("opt", 20) for m in ("opt-125m", "opt-350m") for f in ("0.5", "1.0")}),
        ("table7_families", ["data.path={units_a}"], {"bloom-560m": ("bloom", 20), "pythia-410m": ("gpt_neox", 20)}),
        ("table8_imagegpt", ["data.path={units_a}"], {"imagegpt-medium": ("imagegpt", 20), "opt-350m": ("opt", 20)}),
    ],
)
def test_paper_table_sweep_runs_every_cell(experiment, extra, cells, models_dir, make_units, contract, tmp_path):
    import dataclasses

    units_a = make_units(tmp_path / "units_a", contract)
    units_b = make_units(tmp_path / "units_b", dataclasses.replace(contract, n_units=30))
    root = tmp_path / experiment
    cmd = [sys.executable, "-m", "twist.cli.train", "-m", f"+experiment={experiment}", f"run_root={root}",
           *[e.format(units_a=units_a, units_b=units_b) for e in extra],
           "data.max_tokens=64", "train.device=cpu", "train.global_batch=4",
           "train.micro_batch=2", "train.max_steps=2", "train.valid_every=2", "train.save_every=0",
           "train.num_threads=1", "train.progress=false", "logger=jsonl", "schedule.warmup_steps=1"]
    env = {**os.environ, "TWIST_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    expected = set()
    for cell, (family, n_units) in cells.items():
        for init in ("warm", "cold"):
            name = cell.format(init=init) if "{init}" in cell else f"{cell}-{init}"
            expected.add(name)
            run = root / name
            config = json.loads((run / "speech_lm" / "config.json").read_text())
            assert config["model_type"] == family
            assert config["twist"]["init"] == init and config["twist"]["layout"]["n_units"] == n_units
            width = config.get("hidden_size") or config.get("n_embd")
            assert width == 32  # the stand-in from TWIST_MODELS_DIR, not the 768-1024-wide original
            assert [r["step"] for r in read_metrics(run) if "valid_ppl" in r] == [2]
    assert {d.name for d in root.iterdir() if (d / "speech_lm").is_dir()} == expected


def test_llama7b_recipe_composes_with_the_papers_settings():
    """The 7B recipe cannot run here; its config must at least say what the paper did."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import twist
    from twist.cli.common import register_schemas

    register_schemas()  # train.yaml extends the train_schema it registers
    with initialize_config_dir(str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        c = compose("train", overrides=["+experiment=llama7b", "data.path=/data/units", "out_dir=runs/x"])
    assert (c.model.family, c.init.name, c.schedule.name, c.schedule.warmup_steps) == ("llama", "warm", "cosine", 500)
    assert (c.optim.lr_max, c.optim.lr_final, c.train.global_batch, c.train.max_steps) == (1e-4, 1e-5, 1024, 75000)
    assert (c.train.strategy, c.train.checkpoint_format, c.train.precision) == ("fsdp", "sharded", "bf16")


def _compose(*overrides: str):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import twist
    from twist.cli.common import register_schemas

    register_schemas()  # train.yaml extends the train_schema it registers
    with initialize_config_dir(str(Path(twist.__file__).parent / "configs"), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def test_slam_recipe_composes_with_slamkits_settings():
    """+experiment=slam says what slamkit's configs say (config/model/slam.yaml, training_args/default.yaml,
    the README's pretraining command); its DPO stage is +objective=dpo with Slam's DPO values."""
    import math

    from twist.schema import to_typed
    from twist.train.config import TrainRunConfig

    c = _compose("+experiment=slam", "data.path=/data/units", "out_dir=runs/slam")
    to_typed(TrainRunConfig, c)  # every value passes the schema's checks
    assert (c.model.family, c.model.source, c.init.name, c.init.embed_init) == (
        "qwen2", "Qwen/Qwen2.5-0.5B", "warm", "text_rows")
    assert c.model.config.rope_parameters.rope_theta == 10000.0 and c.model.dtype == "float32"
    assert (c.optim.lr_max, c.optim.lr_final, list(c.optim.betas), c.optim.weight_decay, c.optim.grad_clip) == (
        1e-3, 5e-5, [0.9, 0.999], 0.0, 0.5)
    assert c.schedule.name == "cosine" and c.schedule.total_steps is None  # cosine to lr_final at max_steps
    assert c.schedule.warmup_steps == max(100, math.ceil(0.01 * c.train.max_steps)) == 177
    assert (c.data.max_tokens, c.data.packing) == (1024, "auto")
    assert (c.train.global_batch, c.train.micro_batch, c.train.max_steps, c.train.valid_every, c.train.precision) == (
        128, 8, 17625, 1000, "bf16")
    assert c.objective == "lm"

    d = _compose("+objective=dpo", "dpo.policy=runs/slam/speech_lm", "data.path=bench/swag/prefs", "out_dir=runs/dpo")
    to_typed(TrainRunConfig, d)
    assert (d.objective, d.dpo.beta, d.dpo.loss, d.optim.lr_max, d.optim.grad_clip) == ("dpo", 0.1, "sigmoid", 5e-5, 0.5)
    assert (d.schedule.name, d.schedule.warmup_steps, d.train.global_batch) == ("constant", 100, 8)


@pytest.mark.slow
def test_slam_recipe_trains_qwen2_packed_with_text_rows(models_dir, make_units, contract, tmp_path):
    """The recipe end to end on a tiny Qwen2 stand-in (found under its hub id): it packs, the unit rows
    start as the text rows, and Slam's RoPE base reaches the exported model."""
    import torch
    from safetensors.torch import load_file

    units = make_units(tmp_path / "units", contract)
    out = tmp_path / "slam"
    cmd = [sys.executable, "-m", "twist.cli.train", "+experiment=slam", f"data.path={units}", f"out_dir={out}",
           "data.max_tokens=64", "train.device=cpu", "train.precision=fp32", "train.global_batch=4",
           "train.micro_batch=2", "train.max_steps=2", "train.valid_every=2", "train.num_threads=1",
           "train.progress=false", "logger=jsonl", "schedule.warmup_steps=1", "optim.lr_max=1e-9", "optim.lr_final=1e-9"]
    env = {**os.environ, "TWIST_MODELS_DIR": str(models_dir), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    config = json.loads((out / "speech_lm" / "config.json").read_text())
    assert config["model_type"] == "qwen2" and config["rope_parameters"]["rope_theta"] == 10000.0
    assert config["twist"]["init"] == "warm" and config["twist"]["embed_init"] == "text_rows"
    assert "packed batches" in p.stdout + p.stderr
    # at a learning rate of 1e-9 the exported unit rows are still the text LM's rows 0..K-1
    text = load_text_lm(STAND_INS["Qwen/Qwen2.5-0.5B"]).get_input_embeddings().weight.detach()
    weights = load_file(str(out / "speech_lm" / "model.safetensors"))
    emb = next(v for k, v in weights.items() if k.endswith("embed_tokens.weight"))
    k = contract.n_units
    assert torch.allclose(emb[:k], text[:k], atol=1e-6)
