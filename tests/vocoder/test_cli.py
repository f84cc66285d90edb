"""End to end through the CLIs: twist-tokenize -> twist-vocoder train/resynth/rtf/table -> twist-generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.model_shapes import tiny_config
from tests.vocoder.conftest import tone_audio

SMALL_GEN = [
    "vocoder_model=tiny",
    "vocoder_model.generator.upsample_initial_channel=16",
    "vocoder_model.generator.embedding_dim=8",
    "vocoder_model.generator.resblock_kernel_sizes=[3]",
    "vocoder_model.generator.resblock_dilation_sizes=[[1]]",
    "vocoder_model.generator.dur_predictor_params.var_pred_hidden_dim=8",
    "vocoder_model.mel.n_fft=512",
    "vocoder_model.mel.win_length=512",
    "vocoder_model.mel.hop_length=128",
    "vocoder_model.mel.n_mels=40",
]


def _cli(module: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    # one thread: toy models gain nothing from more, and a busy CPU makes spinning threads crawl
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=300, env=env)
    if ok:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


@pytest.mark.slow
def test_vocoder_and_generate_clis_end_to_end(tmp_path):
    from twist.audio import save_audio

    rng = np.random.default_rng(0)
    wavs = tmp_path / "wavs"
    for i in range(8):
        frames = np.repeat(rng.integers(0, 8, 10), rng.integers(2, 6, 10))
        save_audio(wavs / f"u{i}.wav", tone_audio(frames), 16000)
    units = tmp_path / "units"
    _cli("twist.cli.tokenize", f"input.audio_dir={wavs}", f"out_dir={units}", "tokenizer.n_units=8", "num_workers=0",
         "device=cpu", "progress=false")
    run = tmp_path / "voc"
    _cli("twist.cli.vocoder", "mode=train", f"units_dir={units}", f"audio_dir={wavs}", f"out_dir={run}",
         "train.steps=3", "train.batch_size=2", "train.n_valid=1", "progress=false", *SMALL_GEN)
    assert (run / "vocoder" / "generator.safetensors").exists() and (run / "config.yaml").exists()
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3

    res = tmp_path / "resynth"
    p = _cli("twist.cli.vocoder", "mode=resynth", f"vocoder={run}", f"tokenizer_dir={units}/tokenizer", f"audio={wavs}",
             f"out_dir={res}", "asr=none", "limit=2", "rtf_seconds=0.5")
    report = json.loads((res / "wer.json").read_text())
    assert report["n"] == 2 and report["rtf"]["rtf"] > 0 and "rtf_benchmark" in report and "wer" not in report
    assert len(list((res / "wavs").glob("*.wav"))) == 2 and "rtf(cpu)" in p.stdout
    # the table needs WER rows: a run without ASR is refused with one clear line, exit code 2
    p = _cli("twist.cli.vocoder", "mode=table", f"runs=[{res}]", f"out_dir={tmp_path / 'table'}", ok=False)
    assert p.returncode == 2 and "has no WER" in p.stderr

    # generate: a tiny speech LM saved the way the trainer exports it
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from twist.contract import UnitContract
    from twist.lm import save_speech_lm

    c = UnitContract.load(units / "meta.json")
    torch.manual_seed(0)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=c.layout.vocab_size, **tiny_config("llama")))
    save_speech_lm(lm, tmp_path / "lm", c)
    gen = tmp_path / "gen"
    args = [f"lm={tmp_path / 'lm'}", f"tokenizer_dir={units}/tokenizer", f"vocoder={run}", f"prompts=[{wavs}]",
            f"out_dir={gen}", "limit=2", "sampling.max_seconds=0.3", "sampling.seed=5", "prompt_seconds=0.5",
            "sampling.stop_at_eos=false"]  # a random LM may draw eos first; the wiring is what is tested
    p = _cli("twist.cli.generate", *args)
    assert "2 new continuations" in p.stdout
    first = json.loads((gen / "u0.json").read_text())
    assert first["generated_units"] and (gen / "u0.wav").exists()

    # a vocoder made for other units is refused, naming both sides
    other = json.loads((run / "vocoder" / "contract.json").read_text())
    other["kmeans_fingerprint"] = "something-else"
    (run / "vocoder" / "contract.json").write_text(json.dumps(other))
    p = _cli("twist.cli.generate", *[a.replace(str(gen), str(gen) + "3") for a in args], ok=False)
    assert p.returncode == 2 and "kmeans_fingerprint" in p.stderr and f"vocoder {run}" in p.stderr
