"""Spatial correlated feature fusion (SCFF): the modality branches of one skip level become one feature map.

Two correlation forms, chosen per level by how many positions it has:
- ``attention``: cross-modal attention over positions. Every modality's features query the keys and values of
  all available modalities at all positions (PyTorch's fused scaled-dot-product attention, float32); the result
  is added back through a learnable per-modality scale that starts at 0, so training starts from the identity.
- ``gating``: for large grids, the per-position cosine correlation of every modality pair (float32) drives a
  sigmoid gate per modality: F_m <- 2 * sigmoid(conv1x1(C)) * F_m.
- ``none``: no correlation step.
Then non-linear fusion of the available branches: concat(a_m * M/|S| * F_m) -> conv1x1 -> norm -> nonlin.
Absent modalities (a_m = 0) are masked out by multiplication, so every parameter stays in the graph (DDP).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_multimodal.full_precision import full_precision
from nnunet_multimodal.networks.branch_convolutions import grouped_conv
from nnunet_multimodal.networks.broadcast import trailing_singletons

MODES = ("attention", "gating", "none")


def availability_weights(available: torch.Tensor, num_modalities: int, like: torch.Tensor) -> torch.Tensor:
    """(B, M) weights a_m * M/|S|: absent branches 0, present ones rescaled so the fused sum keeps its scale."""
    available = available.to(device=like.device, dtype=like.dtype)
    return available * (num_modalities / available.sum(dim=1, keepdim=True).clamp_min(1.0))


class SpatialCorrelatedFeatureFusion(nn.Module):
    def __init__(self, conv_op: type, norm_op: type | None, norm_op_kwargs: dict | None, nonlin: type | None,
                 nonlin_kwargs: dict | None, num_modalities: int, branch_channels: int, out_channels: int,
                 mode: str = "gating", attention_dim: int = 32, convolutions: str = "grouped"):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"SCFF mode must be one of {MODES}, got {mode!r}")
        if num_modalities < 2:
            raise ValueError("SCFF fuses at least two modalities")
        self.mode = mode
        self.num_modalities = num_modalities
        self.branch_channels = branch_channels
        m, c = num_modalities, branch_channels
        if mode == "attention":
            self.attention_dim = min(attention_dim, c)
            self.qkv = grouped_conv(conv_op, m, convolutions)(m * c, m * 3 * self.attention_dim, 1)
            self.project = grouped_conv(conv_op, m, convolutions)(m * self.attention_dim, m * c, 1)
            self.residual_scale = nn.Parameter(torch.zeros(m))
        elif mode == "gating":
            first, second = zip(*itertools.combinations(range(m), 2))
            # all pairs through index tensors: fewer, larger operations than a select (and its backward) per pair
            self.register_buffer("pair_first", torch.tensor(first), persistent=False)
            self.register_buffer("pair_second", torch.tensor(second), persistent=False)
            self.gate = conv_op(len(first), m, 1)
        self.fuse = conv_op(m * c, out_channels, 1, bias=norm_op is None)
        self.norm = norm_op(out_channels, **(norm_op_kwargs or {})) if norm_op is not None else nn.Identity()
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()

    def split(self, features: torch.Tensor) -> torch.Tensor:
        """(B, M*C, *sp) -> (B, M, C, *sp)."""
        return features.view(features.shape[0], self.num_modalities, self.branch_channels, *features.shape[2:])

    def correlate_attention(self, features: torch.Tensor, available: torch.Tensor | None) -> torch.Tensor:
        b, m, d = features.shape[0], self.num_modalities, self.attention_dim
        spatial = features.shape[2:]
        n = spatial.numel()
        with full_precision(features):
            # every modality's queries attend to the keys of all modalities: one (M*N)-token sequence per sample,
            # which PyTorch's fused kernels take directly (no broadcast over a modality axis)
            q, k, v = self.qkv(features.float()).view(b, m, 3, d, n).permute(2, 0, 1, 4, 3).reshape(3, b, 1, m * n, d)
            mask = None
            if available is not None:
                mask = available.to(torch.bool).repeat_interleave(n, dim=1).view(b, 1, 1, m * n)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # (B, 1, M*N, d)
        attended = attended.view(b, m, n, d).transpose(-1, -2).reshape(b, m * d, *spatial).to(features.dtype)
        update = self.split(self.project(attended)) * trailing_singletons(self.residual_scale[None], len(spatial) + 3)
        return features + update.flatten(1, 2)

    def correlate_gating(self, features: torch.Tensor, available: torch.Tensor | None) -> torch.Tensor:
        per_modality = self.split(features)
        with full_precision(features):
            x = per_modality.float()
            i, j = self.pair_first, self.pair_second
            # unit feature vectors first: fewer per-position operations than scaling each pair's product
            unit = x * torch.rsqrt(x.square().sum(dim=2, keepdim=True) + 1e-12)
            # index_select rather than unit[:, i]: its backward (index_add) took half the time of advanced
            # indexing's (index_put with accumulation) on the CPU
            correlations = (unit.index_select(1, i) * unit.index_select(1, j)).sum(dim=2)    # (B, P, *sp)
            if available is not None:
                present = available.float()
                pair_present = present[:, i] * present[:, j]                     # (B, P)
                correlations = correlations * trailing_singletons(pair_present, correlations.ndim)
            gates = 2 * torch.sigmoid(self.gate(correlations))                  # (B, M, *sp)
        return (per_modality * gates.unsqueeze(2).to(features.dtype)).flatten(1, 2)

    def forward(self, features: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        """features: (B, M*C, *sp), branch-major; available: (B, M) bool or None (all present)."""
        if self.mode == "attention":
            features = self.correlate_attention(features, available)
        elif self.mode == "gating":
            features = self.correlate_gating(features, available)
        if available is not None:
            weights = availability_weights(available, self.num_modalities, features)
            features = (self.split(features) * trailing_singletons(weights, features.ndim + 1)).flatten(1, 2)
        return self.nonlin(self.norm(self.fuse(features)))
