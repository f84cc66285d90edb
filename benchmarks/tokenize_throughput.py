"""Throughput of ``twist-tokenize`` against a plain per-file ``HubertModel`` loop, same files, one run.

The baseline is what a user writes without this project (GSLM/textlesslib style): for each
file, read it, run ``HubertModel(wav[None], output_hidden_states=True)``, take the layer, and
assign units to the nearest centroid. ``twist-tokenize`` adds decoding in DataLoader workers,
length-bucketed batching with attention masks, truncation after the chosen layer, and
on-device k-means assignment. Both use the same model, the same centroids and the same files;
the script checks they give the same units, then prints audio seconds per second for each
and the ratio.

Both sides decode and resample the files (``--sample-rate``, default 16000: no resampling).

CPU (small, a tiny random HuBERT):  python benchmarks/tokenize_throughput.py --device cpu
GPU (a real HuBERT-base HF dir):    python benchmarks/tokenize_throughput.py --device cuda --model /models/hubert-base-ls960 --n-files 400 --seconds 10
GPU (HuBERT-base shape, random):    python benchmarks/tokenize_throughput.py --device cuda --model hubert-base-random --sample-rate 24000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def make_files(root: Path, n: int, seconds: float, seed: int = 0, sample_rate: int = 16000) -> float:
    """Speech-like noise files of varying length (0.5x to 1.5x ``seconds``); returns total seconds."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for i in range(n):
        sec = seconds * rng.uniform(0.5, 1.5)
        x = rng.standard_normal(int(sec * sample_rate)).astype(np.float32) * 0.1
        sf.write(root / f"f{i:05d}.wav", x, sample_rate, subtype="PCM_16")
        total += x.size / sample_rate
    return total


def tiny_model(path: Path) -> None:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    cfg = HubertConfig(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=192,
                       conv_dim=(64,) * 7, num_conv_pos_embeddings=32, num_conv_pos_embedding_groups=4)
    HubertModel(cfg).eval().save_pretrained(str(path))


def hubert_base_random(path: Path) -> None:
    """HuBERT-base's shape (HubertConfig defaults: 12 x 768, 95M parameters), random weights."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    HubertModel(HubertConfig()).eval().save_pretrained(str(path))


def plain_loop(model_dir: str, files: list[Path], layer: int, centroids: torch.Tensor, device: str) -> dict:
    """The baseline: one file at a time through a full HubertModel."""
    from transformers import HubertModel

    model = HubertModel.from_pretrained(model_dir).eval().to(device)
    c = centroids.to(device)
    out = {}
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for f in files:
            wav, sr = sf.read(str(f), dtype="float32")
            if sr != 16000:
                import soxr

                wav = soxr.resample(wav, sr, 16000, quality="HQ").astype(np.float32)
            h = model(torch.from_numpy(wav)[None].to(device), output_hidden_states=True).hidden_states[layer][0]
            out[f.stem] = torch.cdist(h, c).argmin(1).cpu().numpy()
    if device == "cuda":
        torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t0, "units": out}


def run(*, device: str = "cpu", model: str | None = None, layer: int | None = None, n_files: int | None = None,
        seconds: float | None = None, k: int = 100, batch_seconds: float | None = None, workers: int | None = None,
        sample_rate: int = 16000, keep: bool = False) -> dict:
    """Both sides on the same files; returns the result record (see the module doc).

    ``model``: a local HF HubertModel dir, ``hubert-base-random`` (HuBERT-base shape, random
    weights), or ``None`` for a tiny random one.
    """
    gpu = device == "cuda"
    n_files = n_files or (400 if gpu else 24)
    seconds = seconds or (10.0 if gpu else 3.0)
    work = Path(tempfile.mkdtemp(prefix="twist-tok-bench-"))
    try:
        model_dir = model
        if model is None:
            model_dir = str(work / "tiny-hubert")
            tiny_model(Path(model_dir))
        elif model == "hubert-base-random":
            model_dir = str(work / "hubert-base-random")
            hubert_base_random(Path(model_dir))
        layer = layer if layer is not None else (2 if model is None else 6)
        total = make_files(work / "wavs", n_files, seconds, sample_rate=sample_rate)

        from twist.schema import to_typed
        from twist.tokenizer import UnitTokenizer, build_encoder
        from twist.tokenizer.config import TokenizeRunConfig
        from twist.tokenizer.kmeans import KMeansQuantizer
        from twist.tokenizer.pipeline import run_tokenize

        # one fixed codebook for both sides (fitting is not what is timed)
        enc = build_encoder({"name": "hubert", "path": model_dir, "layer": layer, "normalize": False})
        rng = np.random.default_rng(0)
        q = KMeansQuantizer(rng.standard_normal((k, enc.dim)).astype(np.float32))
        UnitTokenizer(enc, q, dedup=False).save(work / "tok")
        del enc

        files = sorted((work / "wavs").glob("*.wav"))
        base = plain_loop(model_dir, files, layer, q.centroids, device)

        s = to_typed(TokenizeRunConfig, {
            "out_dir": str(work / "out"), "input": {"audio_dir": str(work / "wavs")},
            "tokenizer": {"encoder": {"name": "hubert", "path": model_dir, "layer": layer, "normalize": False},
                          "n_units": k},
            "tokenizer_dir": str(work / "tok"), "dedup": False, "device": device, "progress": False,
            "batch": {"max_seconds": batch_seconds or (320.0 if gpu else 40.0), "max_items": 64 if gpu else 16},
            "num_workers": workers if workers is not None else min(4, os.cpu_count() or 1),
            "shard_items": 100000,
        })
        if gpu:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run_tokenize(s, mode="apply")
        if gpu:
            torch.cuda.synchronize()
        ours_s = time.perf_counter() - t0

        from twist.units import UnitDataset

        ds = UnitDataset(work / "out")
        same = sum(np.array_equal(ds[i].astype(np.int64), base["units"][uid]) for i, uid in enumerate(ds.ids))
        frames = sum(len(v) for v in base["units"].values())
        agree = sum(int((ds[i].astype(np.int64) == base["units"][uid]).sum()) for i, uid in enumerate(ds.ids)) / frames
        return {
            "device": device if not gpu else torch.cuda.get_device_name(),
            "model": model or "tiny random HubertModel (96-d, 4 layers)",
            "layer": layer, "files": n_files, "audio_seconds": round(total, 1), "file_sample_rate": sample_rate,
            "plain_loop_audio_s_per_s": round(total / base["seconds"], 1),
            "twist_tokenize_audio_s_per_s": round(total / ours_s, 1),
            "speedup": round(base["seconds"] / ours_s, 2),
            "files_with_identical_units": f"{same}/{len(files)}",
            "frame_agreement": round(agree, 5),
            "note": "both sides decode and resample; twist-tokenize time includes listing, header reads, "
                    "decoding, writing shards and merging",
        }
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None,
                    help="local HF HubertModel dir, or hubert-base-random (default: a tiny random one)")
    ap.add_argument("--layer", type=int, default=None, help="HuBERT layer (default 6, or 2 for the tiny model)")
    ap.add_argument("--n-files", type=int, default=None, help="files (default 24 on cpu, 400 on cuda)")
    ap.add_argument("--seconds", type=float, default=None, help="mean file length (default 3 s cpu, 10 s cuda)")
    ap.add_argument("--sample-rate", type=int, default=16000, help="sample rate of the files (resampled to 16 kHz)")
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--batch-seconds", type=float, default=None, help="padded audio seconds per batch")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the temporary files")
    args = ap.parse_args()
    res = run(device=args.device, model=args.model, layer=args.layer, n_files=args.n_files, seconds=args.seconds,
              k=args.k, batch_seconds=args.batch_seconds, workers=args.workers, sample_rate=args.sample_rate,
              keep=args.keep)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
