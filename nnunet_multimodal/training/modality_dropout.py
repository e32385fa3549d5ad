"""Modality dropout: which modalities a training sample keeps, and zeroing the others."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from nnunet_multimodal.networks.broadcast import trailing_singletons


def sample_availability(batch_size: int, num_modalities: int, p_drop: float,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool mask (batch_size, num_modalities): each modality is dropped independently with probability
    ``p_drop``; a sample that would lose every modality keeps one, chosen uniformly."""
    if not 0.0 <= p_drop < 1.0:
        raise ValueError(f"modality dropout probability must be in [0, 1), got {p_drop}")
    available = torch.rand(batch_size, num_modalities, generator=generator) >= p_drop
    empty = ~available.any(dim=1)
    if empty.any():
        keep = torch.randint(num_modalities, (int(empty.sum()),), generator=generator)
        available[empty.nonzero(as_tuple=True)[0], keep] = True
    return available


def zero_unavailable(data: torch.Tensor, available: torch.Tensor) -> torch.Tensor:
    """Zero (in normalised space) the channels of absent modalities. Channels past the modalities (the
    cascade's one-hot segmentation of the previous stage) are left as they are."""
    num_modalities = available.shape[1]
    keep = torch.ones(data.shape[:2], dtype=data.dtype, device=data.device)
    keep[:, :num_modalities] = available.to(device=data.device, dtype=data.dtype)
    return data * trailing_singletons(keep, data.ndim)


def accepts_availability(network: nn.Module) -> bool:
    """Whether the network's forward takes the availability mask (``forward(x, available=...)``)."""
    return "available" in inspect.signature(network.forward).parameters
