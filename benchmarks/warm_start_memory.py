"""Warm-start cost: twist's meta-device warm start against the plain transformers way, same run.

Both turn the same text LM (random weights in an OPT shape built from the config class, no
download) into a speech LM with a K-unit vocabulary:

* plain transformers: build the speech-vocabulary model from its config (every weight
  randomly initialised), then ``load_state_dict(text_lm.state_dict(), strict=False)`` for the
  body, skipping the vocabulary tensors;
* twist: ``warm_start(text_lm, contract, share_body=True)``, as ``build_speech_lm`` calls it:
  the model is laid out on the meta device and takes the text LM's body tensors.

Each side runs in its own process, so peak RSS is its own. Prints the seconds and the peak
RSS added on top of the loaded text LM for both, and their ratios.

    python benchmarks/warm_start_memory.py                  # OPT-350M shape
    python benchmarks/warm_start_memory.py --model opt-1.3b
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

SHAPES = {
    "opt-125m": {"hidden_size": 768, "word_embed_proj_dim": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12},
    "opt-350m": {"hidden_size": 1024, "word_embed_proj_dim": 512, "ffn_dim": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "do_layer_norm_before": False},
    "opt-1.3b": {"hidden_size": 2048, "word_embed_proj_dim": 2048, "ffn_dim": 8192, "num_hidden_layers": 24,
                 "num_attention_heads": 32},
}

CHILD = r"""
import json, resource, sys, time, torch
from transformers import OPTConfig, OPTForCausalLM
from twist.contract import UnitContract
from twist.lm.surgery import speech_config, vocab_param_names, warm_start

side, shape, k = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
contract = UnitContract(encoder="bench", encoder_fingerprint="bench", layer=None, frame_rate=25.0, n_units=k,
                        kmeans_fingerprint="bench")
with torch.random.fork_rng():
    text = OPTForCausalLM(OPTConfig(**shape)).eval()
before = rss()
t0 = time.perf_counter()
if side == "twist":
    speech = warm_start(text, contract, share_body=True)
else:
    cfg = speech_config(text.config, contract, init="warm", embed_init="random", text_lm="bench")
    speech = OPTForCausalLM(cfg)
    fresh = vocab_param_names(speech)
    speech.load_state_dict({n: t for n, t in text.state_dict().items() if n not in fresh}, strict=False)
    del text
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "added_gib": rss() - before, "text_gib": before}))
"""


def run(side: str, args) -> dict:
    p = subprocess.run([sys.executable, "-c", CHILD, side, json.dumps(SHAPES[args.model]), str(args.units)],
                       capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"{side} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="opt-350m", choices=sorted(SHAPES))
    ap.add_argument("--units", type=int, default=500, help="K, the number of units")
    args = ap.parse_args(argv)
    plain, ours = run("plain", args), run("twist", args)
    print(f"warm start: {args.model} shape (random weights), K={args.units}, CPU; "
          f"text LM loaded: {ours['text_gib']:.2f} GiB peak RSS")
    for name, r in (("plain transformers (random init + load_state_dict)", plain), ("twist warm_start", ours)):
        print(f"  {name:52s} {r['seconds']:7.2f} s   +{r['added_gib']:.2f} GiB peak RSS")
    print(f"  time ratio plain / twist: {plain['seconds'] / max(ours['seconds'], 1e-6):.0f}x; "
          f"added memory: {plain['added_gib']:.2f} GiB vs {ours['added_gib']:.2f} GiB")
    return {"plain": plain, "twist": ours}


if __name__ == "__main__":
    main()
