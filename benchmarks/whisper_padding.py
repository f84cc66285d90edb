"""How much Whisper-encoder features change when inputs are not padded to 30 s.

Whisper pads every input to 30 s and its encoder attends over that padding; twist's Whisper
encoder (``twist.tokenizer.whisper``) encodes each input at its own length by default. This
script encodes the same real speech both ways and prints, per layer choice available:

* the cosine similarity of the two feature vectors of each frame (mean and 5th percentile);
* how often k-means units agree, with a codebook fitted on the padded features;
* the encoder time of each way.

    python benchmarks/whisper_padding.py                      # Whisper tiny.en, LibriVox clips
    python benchmarks/whisper_padding.py --audio-dir /data/wavs --units 100

Default audio: the five LibriVox utterances of Debian's ``pocketsphinx-testdata`` (24.7 s).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from twist.asr import LIBRIVOX_DIR
from twist.audio import find_audio, load_audio
from twist.tokenizer.kmeans import fit_kmeans
from twist.tokenizer.whisper import WhisperEncoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Whisper dir (HF or CTranslate2); default: packaged tiny.en")
    ap.add_argument("--audio-dir", default=str(LIBRIVOX_DIR))
    ap.add_argument("--units", type=int, default=50, help="k-means K for the unit agreement")
    args = ap.parse_args()
    files = find_audio(Path(args.audio_dir))
    if not files:
        raise SystemExit(f"no audio in {args.audio_dir} (apt-get install pocketsphinx-testdata)")
    wavs = [load_audio(f, 16000) for f in files]
    seconds = sum(w.size for w in wavs) / 16000
    feats = {}
    for pad in (True, False):
        enc = WhisperEncoder(path=args.model, pad_to_window=pad)
        enc.encode(wavs[0][:16000])  # warm-up
        t0 = time.perf_counter()
        feats[pad] = [enc.encode(w) for w in wavs]
        print(f"pad_to_window={pad!s:<5}  {time.perf_counter() - t0:6.2f} s for {seconds:.1f} s of audio")
    a, b = torch.cat(feats[True]), torch.cat(feats[False])
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1).numpy()
    q = fit_kmeans(a.numpy(), args.units, niter=20, seed=0)
    agree = float((q.assign(a) == q.assign(b)).float().mean())
    print(f"{len(files)} files, {a.shape[0]} frames, dim {a.shape[1]} ({enc.path})")
    print(f"cosine(padded, unpadded) per frame: mean {cos.mean():.3f}, 5th percentile {np.percentile(cos, 5):.3f}")
    print(f"k-means units (K={args.units}, fitted on padded) equal on {100 * agree:.1f}% of frames")


if __name__ == "__main__":
    main()
