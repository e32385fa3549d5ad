"""Losses of the image alignment module (CycleGAN-style) and the alignment diagnostic.

Least-squares GAN (Mao et al. 2017), as CycleGAN uses: a discriminator D learns D(real) -> 1, D(fake) -> 0;
a generator learns D(fake) -> 1. Cycle consistency (Zhu et al. 2017): ||F(G(a)) - a||_1 + ||G(F(t)) - t||_1.
All in float32 (outside autocast).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def least_squares_gan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """Mean squared distance of the discriminator's patch scores from 1 (real) or 0 (fake)."""
    scores = scores.float()
    return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))


def cycle_consistency_loss(reconstructed: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(reconstructed.float(), original.float())


def intensity_distance(images: torch.Tensor, reference: torch.Tensor, num_quantiles: int = 256) -> torch.Tensor:
    """1-Wasserstein distance between the voxel intensity distributions of ``images`` and ``reference``
    (B, C, *sp each, any batch sizes), per channel from ``num_quantiles`` quantiles, averaged over channels.
    Mean and standard deviation cannot tell z-scored images apart; the whole distribution can."""
    if images.shape[1] != reference.shape[1]:
        raise ValueError(f"channel counts differ: {images.shape[1]} vs {reference.shape[1]}")
    levels = torch.linspace(0, 1, num_quantiles, device=images.device)

    def quantiles(x: torch.Tensor) -> torch.Tensor:
        values = x.detach().float().transpose(0, 1).flatten(1).sort(dim=1).values
        index = (levels * (values.shape[1] - 1)).round().long()
        return values[:, index]

    return (quantiles(images) - quantiles(reference)).abs().mean()
