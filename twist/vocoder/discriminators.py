"""HiFi-GAN discriminators (Kong et al. 2020): multi-period (MPD) and multi-scale (MSD).

The MPD folds the waveform into ``(T / p, p)`` images for periods 2, 3, 5, 7, 11 and runs 2-D
convolutions along time, so each sub-discriminator sees one periodic structure. The MSD runs
1-D grouped convolutions on the raw waveform and on 2x and 4x average-pooled copies; its
first scale uses spectral norm, the others weight norm. ``width`` scales every channel count
(1.0 is the published size); small widths keep a CPU training step cheap.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from twist.vocoder.config import DiscriminatorSettings

LRELU_SLOPE = 0.1

Scores = list[torch.Tensor]
FeatureMaps = list[list[torch.Tensor]]


def _ch(c: int, width: float, multiple: int = 1) -> int:
    return max(multiple, int(round(c * width / multiple)) * multiple)


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, width: float, kernel_size: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        chans = [1] + [_ch(c, width) for c in (32, 128, 512, 1024, 1024)]
        pad = (kernel_size - 1) // 2
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (kernel_size, 1), (stride if i < 4 else 1, 1), padding=(pad, 0)))
            for i in range(5)
        )
        self.conv_post = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, c, t = x.shape
        if t % self.period:
            n = self.period - t % self.period
            x = F.pad(x, (0, n), mode="reflect" if n < t else "constant")
            t += n
        x = x.view(b, c, t // self.period, self.period)
        return _conv_stack(self.convs, self.conv_post, x)


def _conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack shared by both discriminator kinds: (flattened scores, feature maps)."""
    fmap = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmap.append(x)
    x = conv_post(x)
    fmap.append(x)
    return x.flatten(1), fmap


def _score_real_and_fake(
    runs: Iterable[tuple[nn.Module, torch.Tensor, torch.Tensor]],
) -> tuple[Scores, Scores, FeatureMaps, FeatureMaps]:
    """Run each discriminator on its (real, generated) inputs: real scores, fake scores, and both feature maps."""
    out: tuple[Scores, Scores, FeatureMaps, FeatureMaps] = ([], [], [], [])
    for d, y, y_hat in runs:
        sr, fr = d(y)
        sg, fg = d(y_hat)
        out[0].append(sr)
        out[1].append(sg)
        out[2].append(fr)
        out[3].append(fg)
    return out


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods: Sequence[int], width: float) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, width) for p in periods)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> tuple[Scores, Scores, FeatureMaps, FeatureMaps]:
        return _score_real_and_fake((d, y, y_hat) for d in self.discriminators)


class ScaleDiscriminator(nn.Module):
    def __init__(self, width: float, use_spectral_norm: bool = False) -> None:
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        # (out channels, kernel, stride, groups) of HiFi-GAN's MSD; channels stay divisible by groups
        spec = [(128, 15, 1, 1), (128, 41, 2, 4), (256, 41, 2, 16), (512, 41, 4, 16), (1024, 41, 4, 16), (1024, 41, 1, 16), (1024, 5, 1, 1)]
        layers = []
        cin = 1
        for c, k, s, g in spec:
            cout = _ch(c, width, 16 if g > 1 else 1)
            g_eff = g if cin % g == 0 and cout % g == 0 else 1
            layers.append(norm(nn.Conv1d(cin, cout, k, s, groups=g_eff, padding=(k - 1) // 2)))
            cin = cout
        self.convs = nn.ModuleList(layers)
        self.conv_post = norm(nn.Conv1d(cin, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return _conv_stack(self.convs, self.conv_post, x)


class MultiScaleDiscriminator(nn.Module):
    def __init__(self, n_scales: int, width: float) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(ScaleDiscriminator(width, use_spectral_norm=(i == 0)) for i in range(n_scales))
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> tuple[Scores, Scores, FeatureMaps, FeatureMaps]:
        def pooled() -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
            a, b = y, y_hat
            for i, d in enumerate(self.discriminators):
                if i:  # each further scale sees the audio pooled once more
                    a, b = self.pool(a), self.pool(b)
                yield d, a, b

        return _score_real_and_fake(pooled())


class Discriminators(nn.Module):
    """MPD + MSD together; ``forward`` returns concatenated scores and feature maps."""

    def __init__(self, settings: DiscriminatorSettings) -> None:
        periods, n_scales, width = tuple(settings.periods), int(settings.n_scales), float(settings.width)
        super().__init__()
        self.mpd = MultiPeriodDiscriminator(periods, width) if periods else None
        self.msd = MultiScaleDiscriminator(n_scales, width) if n_scales else None

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor) -> tuple[Scores, Scores, FeatureMaps, FeatureMaps]:
        out: tuple[Scores, Scores, FeatureMaps, FeatureMaps] = ([], [], [], [])
        for d in (self.mpd, self.msd):
            if d is None:
                continue
            for acc, part in zip(out, d(y, y_hat)):
                acc.extend(part)
        return out
