"""Document-mask forms against each other: dense SDPA mask vs flex BlockMask, same packed batch.

Times one model forward (and, where the device allows, forward + backward) of an OPT-shaped
model (random weights) on a packed batch under each mask form twist can use:

* ``sdpa``: the dense ``[B, 1, T, T]`` boolean document mask (twist.lm.packing.document_mask);
* ``flex``: the block-sparse ``BlockMask`` (twist.lm.attention.document_block_mask) run by
  ``twist_flex``; on CPU flex has forward only, and runs unfused (no compiled CPU kernel);
* ``causal``: the whole-document rows' fast path (SDPA ``is_causal``), for reference.

The numbers decide ``train.attn_implementation=auto`` per device (docs/performance.md).

    python benchmarks/attention_masks.py --device cpu
    python benchmarks/attention_masks.py --device cuda --model opt-350m --batch 16 --max-tokens 704
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def packed_batch(batch: int, max_tokens: int, n_units: int, seed: int = 0):
    """Windows of log-normal utterances (median a third of the window), greedily packed."""
    from twist.contract import VocabLayout
    from twist.lm.packing import pack_sequences

    layout = VocabLayout(n_units)
    rng = np.random.default_rng(seed)
    windows, cur, used = [], [], 0
    while len(windows) < batch:
        n = int(np.clip(rng.lognormal(np.log(max_tokens / 3), 0.6), 8, max_tokens - 2))
        doc = layout.encode(rng.integers(0, n_units, size=n))
        if used + len(doc) > max_tokens:
            windows.append(cur)
            cur, used = [], 0
        cur.append(doc)
        used += len(doc)
    return pack_sequences(windows, layout, max_tokens=max_tokens), layout


def run(model_name: str = "tiny", device: str = "cpu", batch: int = 4, max_tokens: int = 128, repeats: int = 5,
        n_units: int = 500, dtype: torch.dtype | None = None) -> dict[str, dict[str, float]]:
    """Seconds per forward (and forward + backward) for each mask form; best of ``repeats``."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_throughput import SHAPES
    from transformers import OPTConfig, OPTForCausalLM

    from twist.lm.attention import FLEX, AttentionPlan, register_flex
    from twist.lm.packing import token_loss_sum

    dev = torch.device(device)
    b, layout = packed_batch(batch, max_tokens, n_units)
    b = b.to(dev)
    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=layout.vocab_size, dropout=0.0, attention_dropout=0.0, **SHAPES[model_name])
    model = OPTForCausalLM(cfg).to(dev)
    if dtype is not None:
        model = model.to(dtype)
    register_flex()
    forms = {
        "sdpa": ("sdpa", AttentionPlan("sdpa", "packed", "bool", None, "bench")),
        "flex": (FLEX, AttentionPlan(FLEX, "packed", "block", None, "bench")),
    }
    out: dict[str, dict[str, float]] = {}

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    def best(fn) -> float:
        fn()  # warm-up (kernel compile on GPU)
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
        return min(times)

    for name, (impl, plan) in forms.items():
        model.set_attn_implementation(impl)

        def forward(plan=plan):
            with torch.no_grad():
                model.eval()
                model(**plan.model_inputs(b), use_cache=False)

        def train(plan=plan):
            model.train()
            loss = token_loss_sum(model(**plan.model_inputs(b), use_cache=False).logits, b.targets, layout)
            loss.backward()
            model.zero_grad(set_to_none=True)

        out[name] = {"forward_s": best(forward)}
        if not (name == "flex" and dev.type == "cpu"):  # flex has no CPU backward
            out[name]["train_s"] = best(train)
    # whole-document rows: the plain causal path (no mask at all)
    model.set_attn_implementation("sdpa")
    full = {"input_ids": b.input_ids, "position_ids": b.position_ids}

    def causal_forward():
        with torch.no_grad():
            model.eval()
            model(**full, use_cache=False)

    out["causal"] = {"forward_s": best(causal_forward)}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    res = run(args.model, args.device, args.batch, args.max_tokens, args.repeats)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"attention masks: {args.model}, batch {args.batch} x {args.max_tokens}, {where}, torch {torch.__version__}")
    print(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
