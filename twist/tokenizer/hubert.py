"""HuBERT features from a local checkpoint: the encoder of GSLM and TWIST.

TWIST (Hassid et al. 2023) tokenizes speech with k-means over HuBERT features: a 50 Hz
HuBERT-base (layer 6, as in GSLM, Lakhotia et al. 2021) or a multilingual 25 Hz mHuBERT
(layer 11), whose feature extractor has one more stride-2 convolution. This module runs
``transformers.HubertModel`` from a local HF directory, or from a fairseq ``.pt`` converted
in memory (:mod:`twist.tokenizer.fairseq_convert`). The frame rate is read from the model's
conv strides, never assumed; the input normalisation flag (``do_normalize`` in
``preprocessor_config.json``, or fairseq's ``task.normalize``) is honoured.

Batch invariance: the encoder layers use an attention mask, so padding does not leak into
valid frames. HuBERT-base's first conv is followed by a GroupNorm over *time*, which a
padding mask cannot protect; for those models the conv feature extractor runs on each
waveform alone (unpadded) and only the transformer runs batched and masked. Layer-norm
feature extractors (HuBERT-large style) normalise per frame and run fully batched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from twist.contract import fingerprint_state_dict
from twist.device import resolve_dtype
from twist.errors import ConfigError, MissingInputError
from twist.schema import settings_of
from twist.tokenizer.config import HubertSettings
from twist.tokenizer.encoders import Encoder


class HubertEncoder(Encoder):
    """Hidden states of one HuBERT layer.

    Args:
        settings: :class:`~twist.tokenizer.config.HubertSettings` (the checkpoint ``path``, the
            ``layer``, 1-based as in GSLM's "layer 6", ``None`` = the last layer with its final
            norm, later layers are dropped, which also saves their compute; ``normalize``,
            ``dtype``, ``expected_frame_rate``); or give its fields as keyword arguments.
    """

    name = "hubert"

    def __init__(self, settings: HubertSettings | None = None, **overrides: Any) -> None:
        st = settings_of(HubertSettings, settings, overrides, "tokenizer.encoder")
        path, layer, normalize, dtype, expected_frame_rate = (st.path, st.layer, st.normalize, st.dtype,
                                                              st.expected_frame_rate)
        from transformers import HubertModel

        p = Path(path).expanduser()
        if not p.exists():
            raise MissingInputError(f"HuBERT checkpoint not found: {p} (give a local HF directory or a fairseq .pt)")
        self._torch_dtype = resolve_dtype(dtype, key="tokenizer.encoder.dtype")  # refuses an unknown name
        if self._torch_dtype is None:
            raise ConfigError(f"tokenizer.encoder.dtype: HuBERT weights need a dtype name, not {dtype!r}")
        sample_rate = 16000
        if p.is_file():
            from twist.tokenizer.fairseq_convert import load_fairseq_hubert

            model, ckpt_norm, sample_rate = load_fairseq_hubert(p)
        else:
            if not (p / "config.json").exists():
                raise MissingInputError(f"{p} is not a HF model directory (no config.json)")
            from twist.checkpoint import refuse_pickled_weights

            with refuse_pickled_weights(p):
                model = HubertModel.from_pretrained(str(p))
            pre = p / "preprocessor_config.json"
            pcfg = json.loads(pre.read_text()) if pre.exists() else {}
            ckpt_norm = bool(pcfg.get("do_normalize", model.config.feat_extract_norm == "layer"))
            sample_rate = int(pcfg.get("sampling_rate", 16000))
        model.eval()
        cfg = model.config
        self._fingerprint = fingerprint_state_dict(model.state_dict())
        n_layers = int(cfg.num_hidden_layers)
        if layer is not None and not 0 <= int(layer) <= n_layers:
            raise ConfigError(f"hubert layer {layer} is out of range for {p} (it has {n_layers} layers)")
        if layer is not None:
            # stop at the chosen layer, like fairseq's extract_features(output_layer=...):
            # no later layers and no final encoder norm
            model.encoder.layers = model.encoder.layers[: int(layer)]
            if cfg.do_stable_layer_norm:
                model.encoder.layer_norm = torch.nn.Identity()
        self.model = model.to(self._torch_dtype)
        self.path = str(p.resolve())
        self.layer = None if layer is None else int(layer)
        self.normalize = ckpt_norm if normalize is None else bool(normalize)
        self.dtype = dtype
        self.sample_rate = sample_rate
        self._kernels = [int(k) for k in cfg.conv_kernel]
        self._strides = [int(s) for s in cfg.conv_stride]
        self.frame_rate = sample_rate / math.prod(self._strides)
        self.dim = int(cfg.hidden_size)
        self.group_norm = cfg.feat_extract_norm == "group"
        self.device = torch.device("cpu")
        if expected_frame_rate is not None and not math.isclose(self.frame_rate, float(expected_frame_rate)):
            raise ConfigError(
                f"{p}: conv strides {self._strides} give {self.frame_rate:g} Hz at {sample_rate} Hz, "
                f"but the config expects {float(expected_frame_rate):g} Hz"
            )

    def fingerprint(self) -> str:
        return self._fingerprint

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "layer": self.layer, "normalize": self.normalize,
                "dtype": self.dtype, "expected_frame_rate": self.frame_rate}

    def n_frames(self, n_samples: int) -> int:
        n = int(n_samples)
        for k, s in zip(self._kernels, self._strides):
            if n < k:
                return 0
            n = (n - k) // s + 1
        return n

    def to(self, device: str | torch.device) -> HubertEncoder:
        super().to(device)
        self.model.to(self.device)
        return self

    @torch.inference_mode()
    def encode_batch(self, wavs: Sequence[np.ndarray | torch.Tensor]) -> list[torch.Tensor]:
        ts = self._as_tensors(wavs)
        lengths = [self.n_frames(int(t.numel())) for t in ts]
        out: list[torch.Tensor | None] = [None] * len(ts)
        keep = [i for i, n in enumerate(lengths) if n > 0]
        for i, n in enumerate(lengths):
            if n == 0:
                out[i] = torch.zeros(0, self.dim, device=self.device)
        if not keep:
            return out  # type: ignore[return-value]
        wdt = self._torch_dtype
        ts = [ts[i] for i in keep]
        lengths = [lengths[i] for i in keep]
        if self.normalize:
            ts = [(t - t.mean()) / torch.sqrt(t.var(unbiased=False) + 1e-7) for t in ts]
        fe = self.model.feature_extractor
        if self.group_norm or len(ts) == 1:
            # GroupNorm normalises over time: padding would change it, so run each waveform alone
            conv = [fe(t[None].to(wdt))[0].transpose(0, 1) for t in ts]
        else:
            padded = torch.nn.utils.rnn.pad_sequence(ts, batch_first=True).to(wdt)
            full = fe(padded).transpose(1, 2)
            conv = [full[i, :n] for i, n in enumerate(lengths)]
        feats = torch.nn.utils.rnn.pad_sequence(conv, batch_first=True)  # (B, T, C)
        mask = None
        if len(set(lengths)) > 1:
            mask = torch.zeros(feats.shape[:2], dtype=torch.bool, device=self.device)
            for i, n in enumerate(lengths):
                mask[i, :n] = True
        hidden = self.model.feature_projection(feats)
        h = self.model.encoder(hidden, attention_mask=mask).last_hidden_state
        for j, (i, n) in enumerate(zip(keep, lengths)):
            out[i] = h[j, :n].float()
        return out  # type: ignore[return-value]
