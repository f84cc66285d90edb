"""What twist-tokenize shows while it works: a bar for the k-means fit, a bar that counts every input."""

import re

from twist.schema import to_typed
from twist.tokenizer.config import TokenizeRunConfig
from twist.tokenizer.pipeline import list_inputs, run_tokenize


def test_the_fit_shows_progress_and_the_bar_counts_every_input(tmp_path, audio_dir, capsys):
    wavs, _ = audio_dir
    n_inputs = len(list_inputs(audio_dir=str(wavs)))
    s = to_typed(TokenizeRunConfig, {"out_dir": str(tmp_path / "out"), "input": {"audio_dir": str(wavs)},
                                     "tokenizer": {"encoder": {"name": "logmel"}, "n_units": 8, "frame_rate": 50.0},
                                     "num_workers": 0, "progress": True, "fit": {"niter": 5}})
    summary = run_tokenize(s)
    err = capsys.readouterr().err.replace("\r", "\n")
    assert summary["inputs"] == n_inputs and summary["rejected"] > 0
    fit = [line for line in err.splitlines() if line.startswith("k-means fit")]
    assert fit and re.search(r"\b(\d+)/\1\b", fit[-1]), err  # the sample's files, each one counted
    done = [line for line in err.splitlines() if line.startswith("tokenize r0")]
    counts = [re.search(r"(\d+)/(\d+)", line).groups() for line in done if re.search(r"(\d+)/(\d+)", line)]
    assert counts and counts[-1] == (str(n_inputs), str(n_inputs)), done  # rejects count as done, too
