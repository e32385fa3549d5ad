"""Cross-modal self-attention distillation (CMSAD), after self-attention distillation (SAD, Hou et al. 2019).

Attention map of a feature map F (B, C, *sp):  A = N( (1/C) * sum_c |F_c|^p ), N = softmax over positions
(default) or L2 normalisation, computed in float32 and resized (bilinear/trilinear) to a common grid. The 1/C
only sets the softmax temperature (SAD uses the channel sum); it keeps the softmax from collapsing onto one
position when C is large.

Distance between a student and a (detached) target map: the squared Euclidean distance over positions,
d(a, t) = sum_x w(x) (a(x) - t(x))^2, with w the fraction of non-ignored voxels in each map cell (1 without an
ignore label), averaged over the samples where both modalities are present. Summing over positions keeps the
value independent of the grid size (maps are distributions), so one weight serves every plans.

Terms: cross-modal, at each distilled stage every ordered pair (student m, target n) of the chosen pairs;
self (SAD), stage s of each modality against its own stage s+1 resized to stage s's grid. The loss is the mean
over all terms.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_multimodal.full_precision import full_precision

CROSS_PAIRS = ("both", "to_first", "none")
NORMALIZATIONS = ("softmax", "l2")


def attention_energy(features: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(B, M, C, *sp) -> (B, M, *sp): (1/C) * sum_c |F_c|^p of every modality's features, in float32."""
    with full_precision(features):
        features = features.float()
        powered = features.square() if p == 2 else features.abs().pow(p)   # square: the common case, cheaper
        return powered.mean(dim=2)


def normalized_map(energy: torch.Tensor, normalization: str = "softmax",
                   size: Sequence[int] | None = None) -> torch.Tensor:
    """(B, M, *sp) energy -> (B, M, N) attention map on ``size`` (default: the energy's own grid)."""
    with full_precision(energy):
        if size is not None and tuple(energy.shape[2:]) != tuple(size):
            mode = "bilinear" if energy.ndim == 4 else "trilinear"
            energy = F.interpolate(energy, size=tuple(size), mode=mode, align_corners=False)
        energy = energy.flatten(2)
        return torch.softmax(energy, dim=-1) if normalization == "softmax" else F.normalize(energy, dim=-1)


def attention_map(features: torch.Tensor, p: float = 2.0, normalization: str = "softmax",
                  size: Sequence[int] | None = None) -> torch.Tensor:
    """(B, M, C, *sp) -> (B, M, N): the normalised attention map of every modality's features, in float32, on
    ``size`` (default: the features' own grid)."""
    return normalized_map(attention_energy(features, p), normalization, size)


def valid_fraction(valid: torch.Tensor | None, size: Sequence[int]) -> torch.Tensor | None:
    """(B, 1, *sp_full) mask of voxels that count -> (B, N) fraction of counting voxels per map cell."""
    if valid is None:
        return None
    pool = F.adaptive_avg_pool2d if valid.ndim == 4 else F.adaptive_avg_pool3d
    return pool(valid.float(), tuple(size)).flatten(1)


def map_distances(student: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Squared distances between maps, target detached: (B, M, N) x (B, M, N) -> (B, M, M) for every
    (student m, target n) pair."""
    squared = (student.unsqueeze(2) - target.detach().unsqueeze(1)).pow(2)
    if weight is not None:
        squared = squared * weight[:, None, None]
    return squared.sum(dim=-1)


class CrossModalAttentionDistillation(nn.Module):
    def __init__(self, stages: Sequence[int] = (-3, -2, -1), cross_pairs: str = "both", self_distillation: bool = True,
                 p: float = 2.0, normalization: str = "softmax"):
        super().__init__()
        if cross_pairs not in CROSS_PAIRS:
            raise ValueError(f"cross_pairs must be one of {CROSS_PAIRS}, got {cross_pairs!r}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        if p <= 0:
            raise ValueError(f"p must be > 0, got {p}")
        if not stages:
            raise ValueError("at least one stage to distil")
        if cross_pairs == "none" and not self_distillation:
            raise ValueError("both cross-modal and self distillation are off: no term to compute")
        self.stages = tuple(stages)
        self.cross_pairs = cross_pairs
        self.self_distillation = self_distillation
        self.p = p
        self.normalization = normalization

    def resolve_stages(self, n_stages: int) -> list[int]:
        resolved = sorted({s % n_stages for s in self.stages if -n_stages <= s < n_stages})
        if len(resolved) != len(set(self.stages)):
            raise ValueError(f"distillation stages {self.stages} out of range for {n_stages} encoder stages")
        return resolved

    def pair_matrix(self, num_modalities: int, device) -> torch.Tensor:
        """(M, M) 0/1: which (student, target) pairs the cross-modal term uses."""
        pairs = torch.zeros(num_modalities, num_modalities, device=device)
        if self.cross_pairs == "both":
            pairs += 1 - torch.eye(num_modalities, device=device)
        elif self.cross_pairs == "to_first":
            pairs[1:, 0] = 1
        return pairs

    def forward(self, branch_features: Sequence[torch.Tensor], num_modalities: int,
                available: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
        """branch_features: per encoder stage (B, M*C_s, *sp_s), branch-major; available: (B, M) or None;
        valid: (B, 1, *sp) mask of voxels outside the ignore label, or None. Returns the mean over terms."""
        stages = self.resolve_stages(len(branch_features))
        b = branch_features[0].shape[0]
        device = branch_features[0].device
        present = torch.ones(b, num_modalities, device=device) if available is None else available.float()
        pairs = self.pair_matrix(num_modalities, device)
        pair_weight = present[:, :, None] * present[:, None, :] * pairs                 # (B, M, M)
        total = torch.zeros((), device=device)
        count = 0
        # each stage's energy once: a stage is a student on its own grid and the self term's target above it
        energies = {s: attention_energy(branch_features[s].view(b, num_modalities, -1, *branch_features[s].shape[2:]),
                                        self.p)
                    for s in stages}
        for s in stages:
            grid = branch_features[s].shape[2:]
            maps = normalized_map(energies[s], self.normalization)                       # (B, M, N)
            weight = valid_fraction(valid, grid)
            if pairs.any():
                distances = map_distances(maps, maps, weight)                           # (B, M, M)
                # mean over samples of each pair, then over pairs
                per_pair = (distances * pair_weight).sum(0) / pair_weight.sum(0).clamp_min(1.0)
                total = total + per_pair.sum()
                count += int(pairs.sum())
            if self.self_distillation and s + 1 in stages:
                target = normalized_map(energies[s + 1].detach(), self.normalization, size=grid)
                squared = (maps - target).pow(2)
                if weight is not None:
                    squared = squared * weight[:, None]
                own = (squared.sum(-1) * present).sum(0) / present.sum(0).clamp_min(1.0)   # (M,)
                total = total + own.sum()
                count += num_modalities
        return total / count
