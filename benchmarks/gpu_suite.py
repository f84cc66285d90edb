"""Every speed claim of twist measured in one command on one GPU: gpu_suite.json + gpu_suite.md.

Sections (each runs in its own try/except: a failure is recorded and the suite goes on):

* ``env``: GPU, versions, and the measured peak bf16 matmul rate (the MFU denominator);
* ``correctness``: on the GPU, flex document masks against the dense mask and padded rows,
  loss and gradients (fp32), for OPT, LLaMA and GPT-NeoX tiny models;
* ``train``: tokens/s of the twist trainer against a plain HF loop, same process, same data,
  for OPT-350M / 1.3B / 125M shapes (random weights) on two length distributions
  (``utterance``: log-normal, median a third of the window; ``chunked``: 92 % full 704-token
  windows), with the ratio, MFU against the measured peak, and peak memory of each side;
* ``tokenize``: ``twist-tokenize`` against a plain per-file ``HubertModel`` loop, HuBERT-base
  shape (random weights), 24 kHz files decoded and resampled on both sides;
* ``score``: pairs/s scoring 2,000 sBLIMP-size pairs with an OPT-350M-shape model: twist's
  scorer (length-sorted buckets; packed rows under flex) against a plain one-at-a-time loop;
* ``vocoder``: real-time factor of the unit HiFi-GAN generator;
* ``compile``: a compiled training step (``train.compile=true``, flex on CUDA) that must not
  recompile after warm-up (last: its compile time is the least informative part).

One process measures many shapes, more than dynamo's default limit of compiled variants
per function; the suite resets dynamo before each measurement and raises that limit.

The suite stops starting new work when its time budget (``--budget-s``) runs low and says
what it skipped; results are written after every section, so a killed run keeps what it had.
It exits with status 1 when a section (or one of its runs) failed, after running the rest.
It needs torch, transformers, numpy, tqdm and safetensors (the GPU image has them) plus the
wheels ``scripts/gpu_wheels.sh`` downloads (omegaconf, antlr4, soundfile, soxr, cffi, ...).

    python benchmarks/gpu_suite.py --out results/            # the GPU run (< 8 min on an H100/H200)
    python benchmarks/gpu_suite.py --cpu-smoke --out /tmp/s  # the same code at toy size, on CPU
    python benchmarks/gpu_suite.py --sections env,train      # some sections only
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SECTIONS = ("env", "correctness", "train", "tokenize", "score", "vocoder", "compile")

# What each mode runs. The GPU sizes are the issue's; the smoke sizes only exercise the code.
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "device": "cuda", "matmul_n": 8192, "matmul_iters": 30,
        "train_runs": [("opt-350m", "utterance"), ("opt-350m", "chunked"), ("opt-1.3b", "utterance"),
                       ("opt-125m", "utterance"), ("opt-125m", "chunked"), ("opt-1.3b", "chunked")],
        "train": {"batch": 16, "max_tokens": 704, "utterances": 3000, "steps": 15, "warmup": 5, "units": 500},
        "train_min_left_s": {"opt-125m": 40, "opt-350m": 60, "opt-1.3b": 100},
        "tokenize": {"model": "hubert-base-random", "n_files": 600, "seconds": 10.0, "sample_rate": 24000,
                     "workers": 8, "batch_seconds": 320.0},
        "score": {"shape": "opt-350m", "pairs": 2000, "plain_pairs": 200, "batch_size": 512,
                  "max_batch_tokens": 65536, "pack_tokens": 1024},
        "vocoder": {"channels": 512, "seconds": 10.0, "batches": (1, 16)},
        "compile_backend": "inductor", "compile_steps": (3, 6),
    },
    "smoke": {
        "device": "cpu", "matmul_n": 256, "matmul_iters": 3,
        "train_runs": [("tiny", "utterance"), ("tiny", "chunked")],
        "train": {"batch": 2, "max_tokens": 64, "utterances": 30, "steps": 1, "warmup": 0, "units": 50},
        "train_min_left_s": {"tiny": 5},
        "tokenize": {"model": None, "n_files": 4, "seconds": 1.0, "sample_rate": 24000, "workers": 0,
                     "batch_seconds": 10.0},
        "score": {"shape": "tiny", "pairs": 20, "plain_pairs": 5, "batch_size": 8, "max_batch_tokens": 2048,
                  "pack_tokens": 256},
        "vocoder": {"channels": 32, "seconds": 0.5, "batches": (1,)},
        "compile_backend": "aot_eager", "compile_steps": (1, 2),
    },
}

GOALS = {  # the targets twist is held to on an H100/H200 (docs/performance.md)
    ("opt-350m", "utterance"): {"ratio": 1.6, "mfu": 0.50},
    ("opt-350m", "chunked"): {"ratio": 1.1},
    ("opt-125m", "chunked"): {"ratio": 1.0},
    ("opt-1.3b", "chunked"): {"ratio": 1.0},
    ("opt-1.3b", "utterance"): {"ratio": 1.2},
}


class Suite:
    """Runs sections under a time budget, records results and errors, writes JSON + markdown."""

    def __init__(self, out: Path, budget_s: float, mode: str) -> None:
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.budget_s = budget_s
        self.mode = mode
        self.size = SIZES[mode]
        self.device = torch.device(self.size["device"])
        self.start = time.monotonic()
        self.results: dict[str, Any] = {"mode": mode, "budget_s": budget_s, "sections": {}}

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def say(self, msg: str) -> None:
        print(f"[gpu_suite {time.monotonic() - self.start:6.1f}s] {msg}", flush=True)

    def run(self, name: str, fn: Callable[[Suite], dict[str, Any]], min_left_s: float) -> None:
        if self.left() < min_left_s:
            self.results["sections"][name] = {"skipped": f"time budget: {self.left():.0f} s left, needs {min_left_s} s"}
            self.say(f"{name}: skipped (time budget)")
            self.write()
            return
        self.say(f"{name}: start")
        t0 = time.monotonic()
        try:
            res = fn(self)
        except Exception as e:  # record and go on: one failure must not lose the other sections
            res = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
            self.say(f"{name}: FAILED {type(e).__name__}: {str(e)[:300]}")
        res["seconds"] = round(time.monotonic() - t0, 1)
        self.results["sections"][name] = res
        self.say(f"{name}: done in {res['seconds']} s")
        self.free()
        self.write()

    def free(self) -> None:
        torch._dynamo.reset()  # each measurement compiles its own kernels (see the module doc)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def write(self) -> None:
        self.results["elapsed_s"] = round(time.monotonic() - self.start, 1)
        (self.out / "gpu_suite.json").write_text(json.dumps(self.results, indent=2, default=str) + "\n")
        (self.out / "gpu_suite.md").write_text(markdown(self.results))


# ---------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------
def section_env(s: Suite) -> dict[str, Any]:
    import transformers

    res: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "transformers": transformers.__version__, "device": str(s.device)}
    try:
        import triton

        res["triton"] = triton.__version__
    except ImportError:
        res["triton"] = None
    dtype = torch.float32
    if s.device.type == "cuda":
        res["gpu"] = torch.cuda.get_device_name(s.device)
        res["cuda"] = torch.version.cuda
        res["gpu_memory_gib"] = round(torch.cuda.get_device_properties(s.device).total_memory / 2**30, 1)
        dtype = torch.bfloat16
    else:
        res["cpu_threads"] = torch.get_num_threads()
    n, iters = s.size["matmul_n"], s.size["matmul_iters"]
    a = torch.randn(n, n, device=s.device, dtype=dtype)
    b = torch.randn(n, n, device=s.device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(s.device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(s.device)
    peak = 2 * n**3 * iters / (time.perf_counter() - t0)
    res["peak_matmul_tflops"] = round(peak / 1e12, 1)
    res["peak_matmul_dtype"] = str(dtype).replace("torch.", "")
    s.results["peak_flops"] = peak
    return res


def section_correctness(s: Suite) -> dict[str, Any]:
    """Flex == dense == padded on the device, loss and gradients; then compile without recompiles."""
    from tests.model_shapes import TINY_SHAPES, tiny_speech_lm
    from twist.contract import UnitContract
    from twist.lm import families
    from twist.lm.attention import FLEX, AttentionPlan, plan_attention, register_flex
    from twist.lm.packing import pack_sequences, pad_documents, token_loss_sum

    contract = UnitContract(encoder="synthetic", encoder_fingerprint="suite", layer=None, frame_rate=25.0,
                            n_units=50, kmeans_fingerprint="suite")
    layout = contract.layout
    rng = np.random.default_rng(0)
    max_tokens = 300  # three flex tiles, the last one partial
    docs = [layout.encode(rng.integers(0, contract.n_units, size=int(n))) for n in rng.integers(4, 150, size=24)]
    windows, cur = [], []
    for d in docs:
        if sum(map(len, cur)) + len(d) > max_tokens:
            windows.append(cur)
            cur = []
        cur.append(d)
    windows.append(cur)
    packed = pack_sequences(windows, layout, max_tokens=max_tokens).to(s.device)
    padded = pad_documents(docs, layout).to(s.device)
    register_flex()
    flex_grads = s.device.type == "cuda"  # flex has no CPU backward
    out: dict[str, Any] = {"flex_gradients_checked": flex_grads}
    ok = True
    for family in [f for f in TINY_SHAPES if families.family(f).flex_tested]:  # the families auto gives flex
        model = tiny_speech_lm(family, contract, max_position_embeddings=max_tokens).to(s.device).train()
        dense = plan_attention(model, "sdpa", "packed", device=s.device, announce=False)
        pad_plan = plan_attention(model, "sdpa", "padded", device=s.device, announce=False)
        flex = AttentionPlan(FLEX, "packed", "block", None, "suite")

        def loss_and_grads(model, plan, impl, batch, grads=True):
            model.set_attn_implementation(impl)
            model.zero_grad(set_to_none=True)
            with torch.set_grad_enabled(grads):
                loss = token_loss_sum(model(**plan.model_inputs(batch), use_cache=False).logits, batch.targets,
                                      layout) / batch.n_targets
            if not grads:
                return loss.detach(), {}
            loss.backward()
            return loss.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()
                                   if p.grad is not None}

        ld, gd = loss_and_grads(model, dense, "sdpa", packed)
        lu, gu = loss_and_grads(model, pad_plan, "sdpa", padded)
        lf, gf = loss_and_grads(model, flex, FLEX, packed, grads=flex_grads)

        def gdiff(a, b):
            return max(float((a[k] - b[k]).abs().max()) for k in a) if a and b else None

        row = {"loss_flex_minus_dense": float(lf - ld), "loss_dense_minus_padded": float(ld - lu),
               "grad_max_abs_dense_vs_padded": gdiff(gd, gu), "grad_max_abs_flex_vs_dense": gdiff(gf, gd)}
        if s.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                lbf, _ = loss_and_grads(model, flex, FLEX, packed, grads=False)
                lbd, _ = loss_and_grads(model, dense, "sdpa", packed, grads=False)
            row["bf16_loss_flex_minus_dense"] = float(lbf - lbd)
        row["pass"] = (abs(row["loss_flex_minus_dense"]) < 1e-5 and abs(row["loss_dense_minus_padded"]) < 1e-5
                       and (row["grad_max_abs_flex_vs_dense"] is None or row["grad_max_abs_flex_vs_dense"] < 1e-5))
        ok = ok and row["pass"]
        out[family] = row
        del model
        s.free()
    out["equivalence_pass"] = ok
    return out


def section_compile(s: Suite) -> dict[str, Any]:
    """A compiled training step (flex on CUDA): recompiles and graph breaks after warm-up."""
    from torch._dynamo.utils import counters
    from train_throughput import make_dataset, model_cfg

    from twist.train.trainer import Trainer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "units"
        make_dataset(root, 50, 200, 126, seed=0, distribution="chunked")
        cfg = {
            "out_dir": str(Path(tmp) / "run"), "seed": 0, "resume": "false", "model": model_cfg("tiny"),
            "init": {"name": "cold", "lr_max": 1e-4, "lr_final": 1e-5, "embed_init": "random"},
            "data": {"path": str(root), "max_tokens": 128, "fraction": 1.0, "packing": "auto", "valid_paths": []},
            "optim": {"betas": [0.9, 0.98], "eps": 1e-8, "weight_decay": 0.01, "grad_clip": 1.0, "fused": "auto"},
            "schedule": {"name": "constant", "warmup_steps": 0}, "logger": {"tensorboard": False, "wandb": False},
            "train": {"device": s.device.type, "strategy": "none", "global_batch": 4, "micro_batch": 4,
                      "max_steps": None, "log_every": 10**9, "precision": "auto", "attn_implementation": "auto",
                      "compile": True, "compile_backend": s.size["compile_backend"], "progress": False},
        }
        torch._dynamo.reset()
        counters.clear()
        trainer = Trainer(cfg)
        t0 = time.perf_counter()
        warm, after = s.size["compile_steps"]
        for i in range(warm + after):
            if i == warm:
                graphs_after_warmup = counters["stats"]["unique_graphs"]
                warm_s = time.perf_counter() - t0
            with torch._dynamo.config.patch(error_on_recompile=i >= warm):
                try:
                    trainer.train_step()
                except Exception as e:  # a recompile after warm-up raises here
                    return {"error": f"{type(e).__name__}: {str(e)[:500]}", "step": i + 1}
        trainer.update.settle()
        kinds = [("train" if training else "eval") + "/" + kind for training, kind in trainer.objective.forward_loss._fns]
        res = {"attention": trainer.attention.implementation, "backend": s.size["compile_backend"],
               "warmup_steps": warm, "warmup_s": round(warm_s, 1),
               "graphs_after_warmup": graphs_after_warmup,
               "new_graphs_after_warmup": counters["stats"]["unique_graphs"] - graphs_after_warmup,
               "recompiles_after_warmup": 0,  # error_on_recompile would have raised
               "graph_breaks": dict(counters["graph_break"]),
               "kinds_compiled": sorted(kinds)}
        trainer.close()
        return res


def section_train(s: Suite) -> dict[str, Any]:
    import train_throughput as tt

    peak = s.results.get("peak_flops")
    out: dict[str, Any] = {"runs": []}
    base = s.size["train"]
    for shape, dist in s.size["train_runs"]:
        need = s.size["train_min_left_s"][shape]
        if s.left() < need:
            out["runs"].append({"model": shape, "distribution": dist, "skipped": "time budget"})
            s.say(f"train {shape} {dist}: skipped (time budget)")
            continue
        s.say(f"train {shape} {dist}")
        torch._dynamo.reset()
        args = SimpleNamespace(model=shape, attn="auto", compile=False, **base)
        try:
            r = tt.measure(args, dist, s.device)
        except Exception as e:
            r = {"model": shape, "distribution": dist, "error": f"{type(e).__name__}: {e}",
                 "traceback": traceback.format_exc()[-3000:]}
            s.say(f"train {shape} {dist}: FAILED {type(e).__name__}: {str(e)[:300]}")
        else:
            if peak:
                r["plain_mfu"] = r["plain_tokens_per_s"] * r["flops_per_token"] / peak
                r["twist_mfu"] = r["twist_tokens_per_s"] * r["flops_per_token"] / peak
            goal = GOALS.get((shape, dist))
            if goal and s.mode == "gpu":
                r["goal"] = goal
                r["meets_goal"] = r["ratio"] >= goal["ratio"] and r.get("twist_mfu", 1.0) >= goal.get("mfu", 0.0)
            s.say(f"train {shape} {dist}: plain {r['plain_tokens_per_s']:,.0f} tok/s, twist "
                  f"{r['twist_tokens_per_s']:,.0f} tok/s, ratio {r['ratio']:.2f}x")
        out["runs"].append(r)
        s.free()
        s.write()
    return out


def section_tokenize(s: Suite) -> dict[str, Any]:
    import tokenize_throughput as tk

    t = s.size["tokenize"]
    res = tk.run(device=s.device.type, model=t["model"], n_files=t["n_files"], seconds=t["seconds"],
                 sample_rate=t["sample_rate"], workers=t["workers"], batch_seconds=t["batch_seconds"])
    if s.mode == "gpu":
        res["goal"] = {"speedup": 2.0, "audio_s_per_s": 10000}
        res["meets_goal"] = res["speedup"] >= 2.0 and res["twist_tokenize_audio_s_per_s"] >= 10000
    return res


def section_score(s: Suite) -> dict[str, Any]:
    """sBLIMP-size pairs (2-4 s utterances: about 40-120 units at 25 Hz after dedup)."""
    from train_throughput import model_cfg

    from twist.contract import UnitContract
    from twist.eval.likelihood import LikelihoodScorer
    from twist.lm import build_speech_lm

    c = s.size["score"]
    contract = UnitContract(encoder="synthetic", encoder_fingerprint="suite", layer=None, frame_rate=25.0,
                            n_units=500, kmeans_fingerprint="suite")
    model = build_speech_lm(model_cfg(c["shape"]), "cold", contract, seed=0, verbose=False)
    if s.device.type == "cuda":
        model = model.to(s.device, dtype=torch.bfloat16)  # twist-eval's dtype=auto on GPU
    model.eval()
    rng = np.random.default_rng(0)
    n_seq = 2 * c["pairs"]
    lengths = np.clip(rng.lognormal(np.log(70), 0.35, size=n_seq).astype(int), 10, 250)
    seqs = [rng.integers(0, contract.n_units, size=int(n)) for n in lengths]
    res: dict[str, Any] = {"model": c["shape"], "dtype": str(next(model.parameters()).dtype), "pairs": c["pairs"],
                           "mean_units": float(lengths.mean())}

    def timed(scorer: LikelihoodScorer, items: list) -> tuple[np.ndarray, float]:
        scorer.score_units(items[:64])  # warm-up: kernels, allocator
        sc = scorer.score_units(items)
        return sc.sum, sc.seconds

    bucketed = LikelihoodScorer(model, contract, batch_size=c["batch_size"], max_batch_tokens=c["max_batch_tokens"],
                                attn_implementation="sdpa", announce=False)
    ref, sec = timed(bucketed, seqs)
    res["bucketed_pairs_per_s"] = c["pairs"] / sec
    # packed rows: twist-eval's attn_implementation=auto (flex block masks on GPU for this family)
    packed = LikelihoodScorer(model, contract, batch_size=c["batch_size"], max_batch_tokens=c["max_batch_tokens"],
                              pack_tokens=c["pack_tokens"], announce=False)
    got, sec = timed(packed, seqs)
    res["packed_pairs_per_s"] = c["pairs"] / sec
    res["packed_attention"] = model.config._attn_implementation
    res["packed_max_abs_diff_vs_bucketed"] = float(np.abs(got - ref).max())
    # the plain loop: one utterance at a time, HF forward, log-softmax over the real vocabulary
    model.set_attn_implementation("sdpa")
    sub = seqs[: 2 * c["plain_pairs"]]
    layout = contract.layout
    plain = []
    with torch.inference_mode():
        for u in sub[:4]:
            model(input_ids=torch.from_numpy(layout.encode(u))[None].to(s.device))
        _sync(s.device)
        t0 = time.perf_counter()
        for u in sub:
            ids = torch.from_numpy(layout.encode(u))[None].to(s.device)
            logits = model(input_ids=ids).logits[0, :-1, : layout.n_real].float()
            lp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).sum()
            plain.append(float(lp))
        sec = time.perf_counter() - t0
    res["plain_pairs_per_s"] = c["plain_pairs"] / sec
    res["plain_max_abs_diff_vs_bucketed"] = float(np.abs(np.asarray(plain) - ref[: len(sub)]).max())
    res["ratio_bucketed"] = res["bucketed_pairs_per_s"] / res["plain_pairs_per_s"]
    res["ratio_packed"] = res["packed_pairs_per_s"] / res["plain_pairs_per_s"]
    return res


def section_vocoder(s: Suite) -> dict[str, Any]:
    from twist.contract import UnitContract
    from twist.vocoder.generator import GeneratorConfig, UnitHifiGan
    from twist.vocoder.infer import Vocoder, measure_rtf

    v = s.size["vocoder"]
    contract = UnitContract(encoder="synthetic", encoder_fingerprint="suite", layer=None, frame_rate=50.0,
                            n_units=100, kmeans_fingerprint="suite", sample_rate=16000)
    torch.manual_seed(0)
    gen = UnitHifiGan(GeneratorConfig(num_embeddings=100, upsample_initial_channel=v["channels"]))
    voc = Vocoder(gen, contract, device=s.device)
    res: dict[str, Any] = {"upsample_initial_channel": v["channels"], "params_m": sum(
        p.numel() for p in gen.parameters()) / 1e6}
    with torch.inference_mode():
        for b in v["batches"]:
            r = measure_rtf(voc, seconds=v["seconds"], batch=b, repeats=3)
            res[f"batch_{b}"] = {"rtf": r["rtf"], "x_real_time": 1.0 / r["rtf"], "audio_seconds": r["audio_seconds"]}
    return res


SECTION_FNS: dict[str, tuple[Callable[[Suite], dict[str, Any]], float]] = {
    # name: (function, seconds that must be left to start it)
    "env": (section_env, 0),
    "correctness": (section_correctness, 60),
    "train": (section_train, 60),
    "tokenize": (section_tokenize, 45),
    "score": (section_score, 40),
    "vocoder": (section_vocoder, 15),
    "compile": (section_compile, 45),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------
def _f(v: Any, fmt: str = ",.0f") -> str:
    return "—" if v is None else format(v, fmt)


def markdown(results: dict[str, Any]) -> str:
    sec = results["sections"]
    lines = [f"# twist GPU suite ({results['mode']})", ""]
    env = sec.get("env", {})
    if "torch" in env:
        lines += [f"{env.get('gpu', env.get('device'))}; torch {env['torch']}, transformers {env['transformers']}, "
                  f"triton {env.get('triton')}, CUDA {env.get('cuda')}; measured peak "
                  f"{env.get('peak_matmul_tflops')} TFLOP/s ({env.get('peak_matmul_dtype')} matmul); "
                  f"suite {results.get('elapsed_s')} s.", ""]
    tr = sec.get("train", {})
    if tr.get("runs"):
        lines += ["## Training throughput (twist vs plain HF loop, same process, same data)", "",
                  "| model | lengths | plain tok/s | twist tok/s | ratio | plain MFU | twist MFU | plain peak GiB "
                  "| twist peak GiB | twist attention | goal |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in tr["runs"]:
            if "plain_tokens_per_s" not in r:
                lines.append(f"| {r['model']} | {r['distribution']} | {r.get('skipped') or r.get('error', '')[:80]} "
                             "| | | | | | | | |")
                continue
            goal = r.get("goal")
            g = "" if not goal else (f"≥{goal['ratio']}×" + (f", ≥{goal['mfu']:.0%} MFU" if "mfu" in goal else "")
                                     + (" ✓" if r.get("meets_goal") else " ✗"))
            lines.append(
                f"| {r['model']} | {r['distribution']} | {_f(r['plain_tokens_per_s'])} | {_f(r['twist_tokens_per_s'])} "
                f"| {r['ratio']:.2f}× | {_f(r.get('plain_mfu'), '.1%')} | {_f(r.get('twist_mfu'), '.1%')} "
                f"| {r['plain_peak_gib']:.1f} | {r['twist_peak_gib']:.1f} | {r['twist_attention']} | {g} |")
        lines.append("")
    tk = sec.get("tokenize", {})
    if "speedup" in tk:
        lines += ["## Tokenization (HuBERT shape, decode + resample included)", "",
                  "| plain audio-s/s | twist audio-s/s | ratio | identical files | goal |", "|---:|---:|---:|---|---|",
                  f"| {_f(tk['plain_loop_audio_s_per_s'])} | {_f(tk['twist_tokenize_audio_s_per_s'])} | "
                  f"{tk['speedup']:.2f}× | {tk['files_with_identical_units']} | "
                  + ("≥2× and ≥10,000× real time" + (" ✓" if tk.get("meets_goal") else " ✗") if "goal" in tk else "")
                  + " |", ""]
    sc = sec.get("score", {})
    if "bucketed_pairs_per_s" in sc:
        lines += [f"## Scoring ({sc['pairs']} sBLIMP-size pairs, {sc['model']} shape, {sc['dtype']})", "",
                  "| plain pairs/s | bucketed pairs/s | packed pairs/s | packed kernel | max |Δ| packed vs bucketed |",
                  "|---:|---:|---:|---|---:|",
                  f"| {_f(sc['plain_pairs_per_s'])} | {_f(sc['bucketed_pairs_per_s'])} | {_f(sc['packed_pairs_per_s'])} "
                  f"| {sc['packed_attention']} | {sc['packed_max_abs_diff_vs_bucketed']:.2g} |", ""]
    vc = sec.get("vocoder", {})
    rows = [(k, v) for k, v in vc.items() if k.startswith("batch_")]
    if rows:
        lines += ["## Vocoder (unit HiFi-GAN, random weights)", "", "| batch | RTF | × real time |", "|---:|---:|---:|"]
        lines += [f"| {k[6:]} | {v['rtf']:.2g} | {_f(v['x_real_time'], ',.1f')} |" for k, v in rows]
        lines.append("")
    co = sec.get("correctness", {})
    if "equivalence_pass" in co:
        lines += ["## Correctness on the device", "",
                  f"flex == dense == padded (fp32, loss 1e-5, gradients 1e-5; flex gradients checked: "
                  f"{co['flex_gradients_checked']}): {'pass' if co['equivalence_pass'] else 'FAIL'}", ""]
    cc = sec.get("compile", {})
    if "recompiles_after_warmup" in cc:
        lines += ["## Compiled step", "", f"{cc['attention']} attention, {cc['backend']} backend: recompiles after "
                  f"warm-up {cc['recompiles_after_warmup']}, new graphs {cc['new_graphs_after_warmup']}, graph breaks "
                  f"{sum(cc['graph_breaks'].values()) if cc['graph_breaks'] else 0}, warm-up {cc['warmup_s']} s", ""]
    failed = {k: v.get("error") or v.get("skipped") for k, v in sec.items() if "error" in v or "skipped" in v}
    if failed:
        lines += ["## Failed or skipped", ""] + [f"- {k}: {v}" for k, v in failed.items()] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_suite_out", help="folder for gpu_suite.json/.md")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--budget-s", type=float, default=None, help="start no new work after this (default 450 GPU)")
    ap.add_argument("--cpu-smoke", action="store_true", help="the same code at toy size on CPU (CI)")
    args = ap.parse_args(argv)
    mode = "smoke" if args.cpu_smoke else "gpu"
    names = [n.strip() for n in args.sections.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    if mode == "gpu" and not torch.cuda.is_available():
        ap.error("no CUDA device is visible (use --cpu-smoke for the toy run)")
    if "train" in names and "env" not in names:
        names.insert(0, "env")  # MFU needs the measured peak
    suite = Suite(Path(args.out), args.budget_s or (450.0 if mode == "gpu" else 600.0), mode)
    torch._dynamo.config.recompile_limit = 64  # many shapes in one process (see the module doc)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    for name in SECTIONS:
        if name in names:
            fn, min_left = SECTION_FNS[name]
            suite.run(name, fn, min_left)
    suite.write()
    suite.say(f"wrote {suite.out / 'gpu_suite.json'} and {suite.out / 'gpu_suite.md'}")
    print(markdown(suite.results), flush=True)
    return suite.results


def failed_sections(results: dict[str, Any]) -> list[str]:
    """Sections that raised, or whose runs did (a section skipped for time is not a failure)."""
    return [name for name, sec in results["sections"].items()
            if "error" in sec or any("error" in r for r in sec.get("runs", []))]


if __name__ == "__main__":
    failed = failed_sections(main())
    if failed:  # every section still ran and was written; the exit status tells CI
        print(f"gpu_suite: failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)
