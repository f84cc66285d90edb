"""The unit HiFi-GAN generator with a duration predictor.

After Polyak et al. 2021 ("Speech Resynthesis from Discrete Disentangled Self-Supervised
Representations") and Kong et al. 2020 (HiFi-GAN, generator V1/V2 shapes), as used by TWIST
(Hassid et al. 2023, appendix A.2) to turn speech-LM units back into audio.

Units are looked up in an embedding table (``dict``), optionally concatenated with a speaker
embedding (``spkr``), and upsampled by transposed convolutions (``ups``) interleaved with
multi-receptive-field residual blocks (``resblocks``) to one sample per ``hop`` of a frame.
For deduplicated units a duration predictor (``dur_predictor``) gives each unit's run length:
it is trained with MSE on ``log(d + 1)`` and at inference ``d = round(exp(x) - 1)``, kept >= 1.

Module and parameter names and shapes follow the published speech-resynthesis / textlesslib
unit HiFi-GAN, including the old-style weight-norm parameters ``weight_g`` / ``weight_v``, so
their ``{"generator": state_dict}`` checkpoints load with ``strict=True`` from their JSON
config (:meth:`GeneratorConfig.from_hifigan_json`). The weight norm is implemented here
rather than with ``torch.nn.utils.weight_norm`` (deprecated) or its parametrization (which
renames the parameters), so the names stay stable across torch releases.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from twist.contract import check_unit_range
from twist.errors import ConfigError, InputError
from twist.schema import to_typed
from twist.vocoder.config import DurationPredictorSettings, GeneratorSettings

LRELU_SLOPE = 0.1


# ---------------------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class GeneratorConfig(GeneratorSettings):
    """The generator's whole config: the shape a user sets (:class:`~twist.vocoder.config.GeneratorSettings`,
    whose fields and defaults it inherits, spelled as in the speech-resynthesis JSON configs) plus
    what the unit contract fixes.

    Attributes:
        num_embeddings: unit vocabulary size (K, from the contract); unit ids must be < this.
        model_in_dim: channels into ``conv_pre`` (embedding_dim, + embedding_dim with speakers).
        sampling_rate: output sample rate (from the contract).
    """

    num_embeddings: int = dataclasses.field(kw_only=True)
    model_in_dim: int | None = None
    sampling_rate: int = 16000

    def __post_init__(self) -> None:
        self.resblock = str(self.resblock)
        self.upsample_rates = [int(x) for x in self.upsample_rates]
        self.upsample_kernel_sizes = [int(x) for x in self.upsample_kernel_sizes]
        self.resblock_kernel_sizes = [int(x) for x in self.resblock_kernel_sizes]
        self.resblock_dilation_sizes = [[int(d) for d in ds] for ds in self.resblock_dilation_sizes]
        if self.model_in_dim is None:
            self.model_in_dim = self.embedding_dim * (2 if self.multispkr else 1)
        if self.dur_predictor_params is not None:
            dur = self.dur_predictor_params
            if not isinstance(dur, DurationPredictorSettings):
                dur = to_typed(DurationPredictorSettings, dict(dur), where="vocoder_model.generator.dur_predictor_params")
            if dur.encoder_embed_dim is None:
                dur = dataclasses.replace(dur, encoder_embed_dim=self.embedding_dim)
            self.dur_predictor_params = dur
        if self.resblock not in ("1", "2"):
            raise ConfigError(f"generator resblock must be '1' or '2', got {self.resblock!r}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise ConfigError(
                f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes "
                f"{self.upsample_kernel_sizes} must have the same length"
            )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise ConfigError("resblock_kernel_sizes and resblock_dilation_sizes must have the same length")
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if (k - u) % 2:
                raise ConfigError(f"upsample kernel {k} and rate {u} must differ by an even number (exact output length)")
        expected_in = self.embedding_dim * (2 if self.multispkr else 1)
        if self.model_in_dim != expected_in:
            raise ConfigError(
                f"model_in_dim={self.model_in_dim} but the embeddings give {expected_in} channels "
                f"(embedding_dim={self.embedding_dim}, multispkr={self.multispkr})"
            )
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ConfigError("upsample_initial_channel must be divisible by 2**len(upsample_rates)")

    @property
    def hop(self) -> int:
        """Output samples per input frame."""
        return int(math.prod(self.upsample_rates))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GeneratorConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"unknown generator config field(s) {unknown}; known: {sorted(names)}")
        if "num_embeddings" not in d:
            raise ConfigError("generator config: num_embeddings (K, the unit vocabulary size) is required")
        return cls(**dict(d))

    @classmethod
    def from_hifigan_json(cls, d: Mapping[str, Any]) -> GeneratorConfig:
        """Read a speech-resynthesis / textlesslib JSON config (training fields are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        # the published configs enable the predictor by a positive loss weight
        if not d.get("dur_prediction_weight"):
            kw["dur_predictor_params"] = None
        kw["multispkr"] = bool(d.get("multispkr") or False)
        if d.get("f0"):
            raise ConfigError("F0-conditioned unit HiFi-GAN configs are not supported (f0: true)")
        return cls(**kw)


# ---------------------------------------------------------------------------------------
# weight-normalised convolutions with the old parameter names
# ---------------------------------------------------------------------------------------
class _WeightNorm:
    """Mixin: ``weight = weight_g * weight_v / ||weight_v||`` (norm over all dims but 0)."""

    def _init_weight_norm(self) -> None:
        w = self.weight  # type: ignore[attr-defined]
        del self._parameters["weight"]  # type: ignore[attr-defined]
        dims = list(range(1, w.dim()))
        self.weight_g = nn.Parameter(w.detach().norm(dim=dims, keepdim=True).clone())
        self.weight_v = nn.Parameter(w.detach().clone())

    def _weight(self) -> torch.Tensor:
        v = self.weight_v
        dims = list(range(1, v.dim()))
        return v * (self.weight_g / v.norm(dim=dims, keepdim=True))


class WNConv1d(_WeightNorm, nn.Conv1d):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self._weight(), self.bias)


class WNConvTranspose1d(_WeightNorm, nn.ConvTranspose1d):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._init_weight_norm()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return F.conv_transpose1d(
            x, self._weight(), self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation
        )


def _padding(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


def _init_normal(m: nn.Module) -> None:
    # HiFi-GAN initialises convolutions with N(0, 0.01)
    if isinstance(m, WNConv1d | WNConvTranspose1d):
        with torch.no_grad():
            v = torch.randn_like(m.weight_v) * 0.01
            m.weight_v.copy_(v)
            m.weight_g.copy_(v.norm(dim=list(range(1, v.dim())), keepdim=True))


class ResBlock1(nn.Module):
    """Per dilation: lrelu -> dilated conv -> lrelu -> conv, plus the residual."""

    def __init__(self, channels: int, kernel_size: int, dilation: Sequence[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, 1, dilation=d, padding=_padding(kernel_size, d)) for d in dilation
        )
        self.convs2 = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, 1, dilation=1, padding=_padding(kernel_size)) for _ in dilation
        )
        self.apply(_init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


class ResBlock2(nn.Module):
    """Per dilation: lrelu -> dilated conv, plus the residual (HiFi-GAN V2's lighter block)."""

    def __init__(self, channels: int, kernel_size: int, dilation: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            WNConv1d(channels, channels, kernel_size, 1, dilation=d, padding=_padding(kernel_size, d)) for d in dilation
        )
        self.apply(_init_normal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


# ---------------------------------------------------------------------------------------
# duration predictor
# ---------------------------------------------------------------------------------------
class DurationPredictor(nn.Module):
    """Two conv + LayerNorm + dropout layers and a linear head: ``(B, T, C) -> (B, T)`` log(d+1).

    Parameter names match speech-resynthesis' ``VariancePredictor``.
    """

    def __init__(
        self,
        encoder_embed_dim: int,
        var_pred_hidden_dim: int,
        var_pred_kernel_size: int,
        var_pred_dropout: float,
    ) -> None:
        super().__init__()
        pad = (var_pred_kernel_size - 1) // 2
        self.conv1 = nn.Sequential(
            nn.Conv1d(encoder_embed_dim, var_pred_hidden_dim, var_pred_kernel_size, padding=pad), nn.ReLU()
        )
        self.ln1 = nn.LayerNorm(var_pred_hidden_dim)
        self.conv2 = nn.Sequential(
            nn.Conv1d(var_pred_hidden_dim, var_pred_hidden_dim, var_pred_kernel_size, padding=pad), nn.ReLU()
        )
        self.ln2 = nn.LayerNorm(var_pred_hidden_dim)
        self.proj = nn.Linear(var_pred_hidden_dim, 1)
        self.dropout = float(var_pred_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln1(x), self.dropout, self.training)
        x = self.conv2(x.transpose(1, 2)).transpose(1, 2)
        x = F.dropout(self.ln2(x), self.dropout, self.training)
        return self.proj(x).squeeze(-1)


def durations_from_log(log_d: torch.Tensor) -> torch.Tensor:
    """Predicted ``log(d + 1)`` -> integer durations ``round(exp(x) - 1)``, at least 1."""
    return torch.clamp(torch.round(torch.exp(log_d) - 1), min=1).long()


def duration_loss(
    predictor: DurationPredictor, emb: torch.Tensor, durations: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """MSE between the predicted and true ``log(d + 1)`` over valid (masked-in) units.

    Args:
        emb: ``(B, T, C)`` unit embeddings of deduplicated units.
        durations: ``(B, T)`` run lengths in frames.
        mask: ``(B, T)`` bool, True for real (non-padding) units.
    """
    pred = predictor(emb)
    target = torch.log(durations.float() + 1)
    return F.mse_loss(pred[mask], target[mask])


# ---------------------------------------------------------------------------------------
# generator
# ---------------------------------------------------------------------------------------
class UnitHifiGan(nn.Module):
    """Unit HiFi-GAN generator: frame-level units ``(B, T)`` -> waveform ``(B, 1, T * hop)``."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_kernels = len(cfg.resblock_kernel_sizes)
        self.num_upsamples = len(cfg.upsample_rates)
        self.dict = nn.Embedding(cfg.num_embeddings, cfg.embedding_dim)
        if cfg.multispkr:
            self.spkr = nn.Embedding(cfg.num_speakers, cfg.embedding_dim)
        self.dur_predictor = (
            DurationPredictor(**dataclasses.asdict(cfg.dur_predictor_params)) if cfg.dur_predictor_params is not None else None
        )
        ch0 = cfg.upsample_initial_channel
        self.conv_pre = WNConv1d(cfg.model_in_dim, ch0, 7, 1, padding=3)
        block = ResBlock1 if cfg.resblock == "1" else ResBlock2
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = ch0
        for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
            ch = ch0 // 2 ** (i + 1)
            self.ups.append(WNConvTranspose1d(ch0 // 2**i, ch, k, u, padding=(k - u) // 2))
            for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
                self.resblocks.append(block(ch, rk, rd))
        self.conv_post = WNConv1d(ch, 1, 7, 1, padding=3)
        self.ups.apply(_init_normal)
        self.conv_post.apply(_init_normal)

    @property
    def hop(self) -> int:
        return self.cfg.hop

    def check_units(self, units: torch.Tensor) -> None:
        """Clear error for ids outside the embedding table (instead of an index error deep inside)."""
        if units.numel() == 0:
            raise InputError("no units to synthesise (empty unit sequence)")
        n = self.cfg.num_embeddings
        check_unit_range(units, n, hint=f" of the vocoder's unit table (num_embeddings={n}); "
                                        "the units come from a different tokenizer")

    def embed(self, units: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` unit ids -> ``(B, T, embedding_dim)``."""
        return self.dict(units)

    def predict_durations(self, units: torch.Tensor) -> torch.Tensor:
        """Deduplicated units ``(B, T)`` -> integer durations ``(B, T)`` (>= 1)."""
        if self.dur_predictor is None:
            raise InputError("this vocoder has no duration predictor; pass durations or frame-level units")
        self.check_units(units)
        return durations_from_log(self.dur_predictor(self.embed(units)))

    def forward(self, units: torch.Tensor, speaker: torch.Tensor | None = None) -> torch.Tensor:
        """Frame-level units ``(B, T)`` (and speaker ids ``(B,)``) -> ``(B, 1, T * hop)`` in [-1, 1]."""
        x = self.embed(units).transpose(1, 2)
        if self.cfg.multispkr:
            if speaker is None:
                speaker = torch.zeros(units.shape[0], dtype=torch.long, device=units.device)
            s = self.spkr(speaker.view(-1)).unsqueeze(-1).expand(-1, -1, x.shape[-1])
            x = torch.cat([x, s], dim=1)
        x = self.conv_pre(x)
        for i in range(self.num_upsamples):
            x = self.ups[i](F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for b in blocks[1:]:
                xs = xs + b(x)
            x = xs / self.num_kernels
        # the published generator uses the default slope (0.01) here; kept for weight compatibility
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)


def build_generator(cfg: GeneratorConfig | Mapping[str, Any]) -> UnitHifiGan:
    """The one build function for generators (from a config object or dict)."""
    if not isinstance(cfg, GeneratorConfig):
        cfg = GeneratorConfig.from_dict(cfg)
    return UnitHifiGan(cfg)
