"""HiFi-GAN losses (Kong et al. 2020): mel L1, feature matching, least-squares GAN.

The generator minimises ``lambda_mel * L1(mel(y), mel(y_hat)) + lambda_fm * FM + adv`` and the
discriminators minimise the LSGAN objective ``(1 - D(y))^2 + D(y_hat)^2``. The weights
(45 for mel, 2 for feature matching) are HiFi-GAN's; they live in the training config.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from twist.vocoder.mel import MelSpectrogram


def mel_l1_loss(mel: MelSpectrogram | Sequence[MelSpectrogram], y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between log-mels; averaged over several resolutions if a list is given."""
    mels = [mel] if isinstance(mel, MelSpectrogram) else list(mel)
    return sum(F.l1_loss(m(y_hat), m(y)) for m in mels) / len(mels)


def feature_matching_loss(fmaps_real: Sequence[Sequence[torch.Tensor]], fmaps_fake: Sequence[Sequence[torch.Tensor]]) -> torch.Tensor:
    """Sum over discriminators and layers of the mean L1 between real and fake activations."""
    loss = 0.0
    for dr, dg in zip(fmaps_real, fmaps_fake):
        for r, g in zip(dr, dg):
            loss = loss + torch.mean(torch.abs(r.detach() - g))
    return loss


def discriminator_adv_loss(real_scores: Sequence[torch.Tensor], fake_scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN discriminator loss: push real scores to 1, generated ones to 0."""
    loss = 0.0
    for dr, dg in zip(real_scores, fake_scores):
        loss = loss + torch.mean((1 - dr) ** 2) + torch.mean(dg**2)
    return loss


def generator_adv_loss(fake_scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss: push the discriminators' scores of generated audio to 1."""
    loss = 0.0
    for dg in fake_scores:
        loss = loss + torch.mean((1 - dg) ** 2)
    return loss
