"""Metrics go to JSONL always, TensorBoard and wandb (offline) when asked; MFU's inputs."""

from __future__ import annotations

import pytest
import torch

from twist.train.loggers import PEAK_FLOPS, MetricsLogger, flops_per_token, peak_flops, read_metrics


def test_jsonl_tensorboard_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    lg = MetricsLogger(tmp_path, tensorboard=True, wandb=True, run_name="t", config={"seed": 0})
    lg.log({"loss": torch.tensor(2.5), "lr": 1e-4, "note": "x"}, step=1)
    lg.log({"valid_ppl": 12.0}, step=2)
    lg.close()
    assert read_metrics(tmp_path) == [{"step": 1, "loss": 2.5, "lr": 1e-4, "note": "x"}, {"step": 2, "valid_ppl": 12.0}]
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert list((tmp_path / "wandb").glob("offline-run-*"))
    silent = MetricsLogger(tmp_path / "rank1", enabled=False)  # ranks other than 0 write nothing
    silent.log({"loss": 1.0}, step=1)
    assert not (tmp_path / "rank1").exists()


def test_mfu_inputs():
    assert peak_flops(torch.device("cpu")) is None
    assert PEAK_FLOPS["H100"] == 989e12 and PEAK_FLOPS["A100"] == 312e12
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(hidden_size=32, word_embed_proj_dim=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=2,
                    vocab_size=64, max_position_embeddings=128)
    m = OPTForCausalLM(cfg)
    emb = m.model.decoder.embed_tokens.weight.numel() + m.model.decoder.embed_positions.weight.numel()
    head = m.lm_head.weight.numel()  # tied to embed_tokens, yet a matmul per token
    assert m.lm_head.weight is m.model.decoder.embed_tokens.weight
    n = sum(p.numel() for p in m.parameters()) - emb + head
    assert flops_per_token(m, 100) == 6 * n + 12 * 2 * 32 * 100
    untied = OPTForCausalLM(OPTConfig(**{**cfg.to_dict(), "tie_word_embeddings": False}))
    assert flops_per_token(untied, 100) == flops_per_token(m, 100)  # the same matmuls either way


def _strict(line: str):
    import json

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(line, parse_constant=refuse)


def test_metrics_jsonl_stays_strict_json_with_nan_and_inf_written_as_null(tmp_path):
    from twist.train.loggers import truncate_metrics
    from twist.train.plot import plot_runs, run_curve

    lg = MetricsLogger(tmp_path)
    lg.log({"loss": torch.tensor(float("nan")), "grad_norm": float("inf"), "lr": 1e-4}, step=1)
    lg.log({"valid_ppl": float("-inf")}, step=2)
    lg.log({"valid_ppl": 12.0}, step=3)
    lg.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [_strict(x) for x in lines] == [{"step": 1, "loss": None, "grad_norm": None, "lr": 1e-4},
                                           {"step": 2, "valid_ppl": None}, {"step": 3, "valid_ppl": 12.0}]
    assert run_curve(tmp_path) == ([3], [12.0])  # the readers skip a null
    assert plot_runs([tmp_path], tmp_path / "ppl.png").is_file()
    # a file written before (NaN as the bare token) comes out strict when a resume cuts it
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": NaN}\n{"step": 2, "loss": Infinity}\n')
    truncate_metrics(tmp_path, 1)
    assert [_strict(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [{"step": 1, "loss": None}]


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_logger_whose_package_is_missing_is_one_line_saying_how_to_install_it_or_use_jsonl(
        make_cfg, unit_data, tmp_path, monkeypatch, package):
    import builtins

    from twist.errors import MissingDependencyError
    from twist.train.trainer import Trainer

    real_import = builtins.__import__

    def without(name, *args, **kwargs):
        if name.split(".")[0] == package or name == f"torch.utils.{package}":
            raise ModuleNotFoundError(f"No module named {package!r}", name=package)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    with pytest.raises(MissingDependencyError) as e:
        MetricsLogger(tmp_path / "direct", **{package: True})
    msg = str(e.value)
    assert "\n" not in msg and f"pip install 'twist[{package}]'" in msg and "logger=jsonl" in msg, msg
    cfg = make_cfg(unit_data, tmp_path / "run")
    cfg.logger[package] = True
    with pytest.raises(MissingDependencyError, match=rf"twist\[{package}\]"):
        Trainer(cfg)  # refused at once, before the data is read or a model built
    assert not (tmp_path / "run").exists()
