"""One encoder branch per modality, run as a single grouped encoder (shared by CMSAD and MAML)."""

from __future__ import annotations

import math

import torch
from torch import nn

from nnunet_multimodal.networks.branch_convolutions import grouped_conv
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture

# Branch widths are rounded to multiples of 8: vectorised convolution kernels run about 2x faster at such
# widths than at, e.g., 9 or 37 channels (measured on CPU; see docs/methods/cmsad.md).
CHANNEL_MULTIPLE = 8


def branch_features_per_stage(features: tuple[int, ...], num_modalities: int, width,
                              minimum: int = CHANNEL_MULTIPLE) -> tuple[int, ...]:
    """``width`` times the plans' features per stage ("auto": 1/sqrt(M)), rounded to multiples of 8, and not
    fewer than ``minimum`` (or than the plans' own features, where those are fewer)."""
    if width == "auto":
        width = 1 / math.sqrt(num_modalities)
    if not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"branch_width must be 'auto' or a number in (0, 1], got {width!r}")
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise ValueError(f"min_branch_features must be a positive integer, got {minimum!r}")
    return tuple(max(CHANNEL_MULTIPLE, min(minimum, f), CHANNEL_MULTIPLE * int(round(f * width / CHANNEL_MULTIPLE)))
                 for f in features)


def build_branch_encoder(architecture: PlansArchitecture, num_modalities: int, num_extra_channels: int,
                         branch_features: tuple[int, ...], convolutions: str = "grouped") -> nn.Module:
    """M encoders of the plans' architecture as one grouped encoder (block-diagonal convolutions): exactly M
    independent branches, one operation per layer (or one convolution per branch: ``grouped_conv``'s ``execution``).
    Input: ``branch_inputs``; skips are branch-major."""
    return architecture.build_encoder(num_modalities * (1 + num_extra_channels),
                                      tuple(num_modalities * c for c in branch_features),
                                      conv_op=grouped_conv(architecture.conv_op, num_modalities, convolutions))


def branch_inputs(x: torch.Tensor, num_modalities: int, num_extra_channels: int) -> torch.Tensor:
    """(B, M + E, *sp) -> (B, M * (1 + E), *sp): each branch gets its modality plus the cascade channels."""
    m, e = num_modalities, num_extra_channels
    if x.shape[1] != m + e:
        raise ValueError(f"expected {m} modality channels + {e} cascade channels, got {x.shape[1]}")
    if e == 0:
        return x
    extra = x[:, m:]
    return torch.cat([torch.cat([x[:, i:i + 1], extra], dim=1) for i in range(m)], dim=1)


def split_branches(features: torch.Tensor, num_modalities: int) -> torch.Tensor:
    """(B, M*C, *sp) -> (B, M, C, *sp)."""
    return features.view(features.shape[0], num_modalities, -1, *features.shape[2:])
