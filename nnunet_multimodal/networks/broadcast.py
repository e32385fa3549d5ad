"""Per-sample or per-modality weights lined up against feature maps."""

from __future__ import annotations

import torch


def trailing_singletons(tensor: torch.Tensor, ndim: int) -> torch.Tensor:
    """``tensor`` viewed with size-1 dimensions appended up to ``ndim``, so that it broadcasts over the spatial
    (and channel) dimensions of a feature map: (B, M) against (B, M, C, *spatial), for example."""
    return tensor.view(*tensor.shape, *([1] * (ndim - tensor.ndim)))
