"""Training throughput: the twist trainer's step against a plain Hugging Face loop, same run.

Both sides train the same model config (random weights built from the config class, no
download) on the same synthetic utterances, with what a user would pick without twist:

* plain HF: one utterance per row, right-padded batches, ``labels=`` loss, SDPA attention
  (flash through ``is_causal`` when a batch has no padding), bf16 autocast on GPU, fused
  AdamW on CUDA, gradient clipping;
* twist: ``Trainer.train_step`` (packed windows with document masks, the attention the
  trainer picks with ``train.attn_implementation=auto``, the same optimiser, precision and
  clipping), fed from a unit dataset on disk.

Two length distributions, the two kinds of speech data TWIST trains on:

* ``utterance``: log-normal lengths with a median of a third of the window (read speech cut
  at utterance boundaries);
* ``chunked``: long-form audio cut into windows: 92 % of the items fill the window exactly,
  the rest are the shorter tails.

Tokens/s counts real (non-padding) tokens, so padding costs show up as lost throughput.
Prints tokens/s of both, their ratio, peak memory (CUDA: max allocated per phase; CPU:
process peak RSS, which only grows), and the share of a twist step spent building batches.

    python benchmarks/train_throughput.py --device cpu                    # tiny, both distributions
    python benchmarks/train_throughput.py --device cuda --model opt-350m  # full size (16 x 704)
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# OPTConfig shapes (from the published configs), so nothing is downloaded.
SHAPES: dict[str, dict] = {
    "tiny": {"hidden_size": 64, "word_embed_proj_dim": 64, "ffn_dim": 256, "num_hidden_layers": 2,
             "num_attention_heads": 4, "max_position_embeddings": 2048},
    "opt-125m": {"hidden_size": 768, "word_embed_proj_dim": 768, "ffn_dim": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12, "max_position_embeddings": 2048},
    "opt-350m": {"hidden_size": 1024, "word_embed_proj_dim": 512, "ffn_dim": 4096, "num_hidden_layers": 24,
                 "num_attention_heads": 16, "max_position_embeddings": 2048, "do_layer_norm_before": False},
    "opt-1.3b": {"hidden_size": 2048, "word_embed_proj_dim": 2048, "ffn_dim": 8192, "num_hidden_layers": 24,
                 "num_attention_heads": 32, "max_position_embeddings": 2048},
}
DISTRIBUTIONS = ("utterance", "chunked")


def utterance_lengths(distribution: str, n: int, max_units: int, rng: np.random.Generator) -> np.ndarray:
    """Units per utterance for a length distribution (at most ``max_units``: one window with bos/eos)."""
    if distribution == "utterance":
        return np.clip(rng.lognormal(np.log(max_units / 3), 0.6, size=n).astype(int), 8, max_units)
    if distribution == "chunked":
        tails = rng.integers(8, max_units, size=n)
        return np.where(rng.random(n) < 0.92, max_units, tails)
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")


def make_dataset(root: Path, n_units: int, n_utts: int, max_len: int, seed: int, distribution: str = "utterance"):
    """Synthetic utterances with a speech-like spread of lengths (see :func:`utterance_lengths`)."""
    from twist.contract import UnitContract
    from twist.units import UnitShardWriter, merge_shards

    contract = UnitContract(encoder="synthetic", encoder_fingerprint="bench", layer=None, frame_rate=25.0,
                            n_units=n_units, kmeans_fingerprint="bench")
    rng = np.random.default_rng(seed)
    lengths = utterance_lengths(distribution, n_utts, max_len, rng)
    with UnitShardWriter(root, contract, shard_items=100_000, shard_units=1 << 30) as w:
        for i, n in enumerate(lengths):
            w.add(f"u{i:07d}", rng.integers(0, n_units, size=int(n)), raw=False)
    merge_shards(root, split={"seed": 0, "valid": 0.0, "test": 0.0})
    return contract


def model_cfg(name: str) -> dict:
    return {"name": f"{name}-random", "family": "opt", "source": None, "gguf_file": None, "num_layers": None,
            "config": {**SHAPES[name], "dropout": 0.0, "attention_dropout": 0.0}}


def peak_memory(device: torch.device) -> float:
    """GiB: CUDA max allocated since the last reset; CPU process peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_hf(args, contract, data_root: Path, device: torch.device) -> float:
    """The plain loop: padded rows, HF's own loss, same optimiser/precision/clipping."""
    from twist.lm import build_speech_lm
    from twist.units import UnitDataset

    layout = contract.layout
    model = build_speech_lm(model_cfg(args.model), "cold", contract, seed=0, verbose=False).to(device).train()
    model.set_attn_implementation("sdpa")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), weight_decay=0.01,
                            fused=True if device.type == "cuda" else None)
    ds = UnitDataset(data_root)
    order = np.random.default_rng(0).permutation(len(ds))
    use_bf16 = device.type == "cuda"
    pos = 0

    def step() -> int:
        nonlocal pos
        rows = []
        for _ in range(args.batch):
            u = ds[int(order[pos % len(order)])][: args.max_tokens - 2]
            pos += 1
            rows.append(layout.encode(np.asarray(u, dtype=np.int64)))
        t = max(len(r) for r in rows)
        ids = torch.full((len(rows), t), layout.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.from_numpy(r)
            mask[i, : len(r)] = 1
        labels = ids.masked_fill(mask == 0, -100)
        n = int(mask.sum())
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return n

    tps = timed(step, args, device)
    args.flops_per_token = _flops(model, args.max_tokens)
    return tps


def _flops(model: torch.nn.Module, seq_len: int) -> float:
    from twist.train.loggers import flops_per_token

    return flops_per_token(model, seq_len)


def twist_trainer(args, data_root: Path, out: Path, device: torch.device) -> float:
    from twist.train.trainer import Trainer

    cfg = {
        "out_dir": str(out), "seed": 0, "resume": "false",
        "model": model_cfg(args.model),
        "init": {"name": "cold", "lr_max": 1e-4, "lr_final": 1e-5, "embed_init": "random"},
        "data": {"path": str(data_root), "max_tokens": args.max_tokens, "fraction": 1.0, "packing": "auto",
                 "valid_paths": []},
        "optim": {"betas": [0.9, 0.98], "eps": 1e-8, "weight_decay": 0.01, "grad_clip": 1.0, "fused": "auto"},
        "schedule": {"name": "constant", "warmup_steps": 0},
        "logger": {"tensorboard": False, "wandb": False},
        "train": {"device": device.type, "strategy": "none", "global_batch": args.batch, "micro_batch": args.batch,
                  "max_steps": None, "log_every": 10**9, "precision": "auto", "attn_implementation": args.attn,
                  "compile": args.compile, "progress": False},
    }
    trainer = Trainer(cfg)
    args.attention = f"{trainer.attention.implementation} ({trainer.attention.mask} mask)"
    # how much of a step is spent building batches on the main thread (reading the memory-
    # mapped shards, packing): the number that says whether a background prefetch would pay
    build = trainer.stream.next_step
    spent = {"data_s": 0.0, "steps": 0}

    def timed_build():
        t0 = time.perf_counter()
        out = build()
        spent["data_s"] += time.perf_counter() - t0
        spent["steps"] += 1
        return out

    trainer.stream.next_step = timed_build

    def step() -> int:
        return int(trainer.train_step()["step_tokens"])

    tps, step_s = timed(step, args, device, with_time=True)
    trainer.update.settle()
    trainer.close()
    args.data_ms = 1e3 * spent["data_s"] / max(1, spent["steps"])
    args.step_ms = 1e3 * step_s
    return tps


def timed(step, args, device: torch.device, with_time: bool = False):
    """Tokens/s over ``args.steps`` steps after ``args.warmup``; with the mean step time if asked."""
    for _ in range(args.warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    tokens = sum(step() for _ in range(args.steps))
    sync(device)
    dt = time.perf_counter() - t0
    return (tokens / dt, dt / args.steps) if with_time else tokens / dt


def measure(args, distribution: str, device: torch.device) -> dict[str, float | str]:
    """Plain loop then twist trainer, same data, same process; one result row."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "units"
        contract = make_dataset(root, args.units, args.utterances, args.max_tokens - 2, seed=0,
                                distribution=distribution)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        plain = plain_hf(args, contract, root, device)
        mem_plain = peak_memory(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        ours = twist_trainer(args, root, Path(tmp) / "run", device)
        mem_ours = peak_memory(device)
    return {"model": args.model, "distribution": distribution, "plain_tokens_per_s": plain,
            "twist_tokens_per_s": ours, "ratio": ours / plain, "plain_peak_gib": mem_plain,
            "twist_peak_gib": mem_ours, "twist_attention": args.attention, "data_ms": args.data_ms,
            "step_ms": args.step_ms, "flops_per_token": args.flops_per_token}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", default=None, choices=sorted(SHAPES), help="default: tiny on cpu, opt-350m on cuda")
    ap.add_argument("--distribution", default="both", choices=[*DISTRIBUTIONS, "both"])
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default 4 cpu, 16 cuda)")
    ap.add_argument("--max-tokens", type=int, default=None, help="sequence length (default 128 cpu, 704 cuda)")
    ap.add_argument("--units", type=int, default=500, help="K, the number of units")
    ap.add_argument("--utterances", type=int, default=None, help="synthetic utterances (default 200 cpu, 4000 cuda)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 5 cpu, 30 cuda)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--attn", default="auto", help="twist's train.attn_implementation (default auto)")
    ap.add_argument("--compile", action="store_true", help="torch.compile twist's forward + loss")
    args = ap.parse_args(argv)
    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        ap.error("--device cuda but no CUDA device is visible")
    args.model = args.model or ("opt-350m" if cuda else "tiny")
    args.batch = args.batch or (16 if cuda else 4)
    args.max_tokens = args.max_tokens or (704 if cuda else 128)
    args.utterances = args.utterances or (4000 if cuda else 200)
    args.steps = args.steps or (30 if cuda else 5)
    device = torch.device("cuda" if cuda else "cpu")
    torch.manual_seed(0)
    dists = DISTRIBUTIONS if args.distribution == "both" else (args.distribution,)
    results = {d: measure(args, d, device) for d in dists}
    name = torch.cuda.get_device_name(device) if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"train throughput: {args.model} (random weights), K={args.units}, batch {args.batch} x {args.max_tokens} "
          f"tokens, {args.steps} timed steps, {name}, torch {torch.__version__}")
    for d, r in results.items():
        print(f"[{d}] twist attention: {r['twist_attention']}")
        print(f"  plain HF loop (padded rows):      {r['plain_tokens_per_s']:12,.0f} tokens/s   "
              f"peak memory {r['plain_peak_gib']:.2f} GiB")
        print(f"  twist trainer (packed windows):   {r['twist_tokens_per_s']:12,.0f} tokens/s   "
              f"peak memory {r['twist_peak_gib']:.2f} GiB")
        print(f"  ratio twist / plain: {r['ratio']:.2f}x")
        print(f"  twist batch building on the main thread: {r['data_ms']:.1f} ms of a {r['step_ms']:.1f} ms step "
              f"({100 * r['data_ms'] / r['step_ms']:.1f} %)")
    mem = "max allocated per side" if cuda else "process peak RSS, which only grows: the later side includes the earlier"
    print(f"  (peak memory: {mem})")
    print()
    print("| distribution | plain tokens/s | twist tokens/s | ratio |")
    print("|---|---:|---:|---:|")
    for d, r in results.items():
        print(f"| {d} | {r['plain_tokens_per_s']:,.0f} | {r['twist_tokens_per_s']:,.0f} | {r['ratio']:.2f}x |")
    sys.stdout.flush()
    return results


if __name__ == "__main__":
    main()
