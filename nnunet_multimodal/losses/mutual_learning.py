"""Mutual learning terms: MAML's DML-style KL between modality-specific and fused predictions, and MKD's
mutual distillation between two segmentors.

Per voxel, KL(teacher || student) of the temperature-softened predictions times T^2 (Hinton et al.), in float32:
softmax over classes for label datasets, independent Bernoulli per region channel for region datasets; the
teacher is detached.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_multimodal.full_precision import full_precision


def prediction_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                  regions: bool = False) -> torch.Tensor:
    """(B, C, *sp) logits -> (B, *sp) KL(teacher || student) per voxel, teacher detached."""
    with full_precision(student_logits):
        s = student_logits.float() / temperature
        t = teacher_logits.detach().float() / temperature
        if regions:
            p = torch.sigmoid(t)
            kl = p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))
        else:
            kl = F.softmax(t, 1) * (F.log_softmax(t, 1) - F.log_softmax(s, 1))
        return kl.sum(1) * temperature ** 2


class SoftenedPredictionKL(nn.Module):
    """Base of the KL terms between predictions softened by ``temperature`` (sigmoids per region with
    ``regions``, else a softmax over classes)."""

    def __init__(self, temperature: float = 1.0, regions: bool = False):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature
        self.regions = regions


class MutualLearningKL(SoftenedPredictionKL):
    """MAML: each modality-specific prediction learns from the fused one (the teacher). Averaged over
    non-ignored voxels and over the samples in which the student's modality is present, then over modalities."""

    def forward(self, branch_logits: Sequence[torch.Tensor], fused_logits: torch.Tensor,
                available: torch.Tensor | None = None, valid: torch.Tensor | None = None) -> torch.Tensor:
        """branch_logits: full-resolution logits per modality (B, C, *sp); available (B, M) or None; valid
        (B, 1, *sp) voxels outside the ignore label, or None."""
        terms = []
        for m, student in enumerate(branch_logits):
            kl = prediction_kl(student, fused_logits, self.temperature, self.regions)
            if valid is not None:
                kl = kl * valid[:, 0]
                per_sample = kl.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)
            else:
                per_sample = kl.flatten(1).mean(1)
            present = torch.ones_like(per_sample) if available is None else available[:, m].float()
            terms.append((per_sample * present).sum() / present.sum().clamp_min(1.0))
        return torch.stack(terms).mean()


class MutualDistillation(SoftenedPredictionKL):
    """Online mutual knowledge distillation between two predictions of the same images (MKD):
    KL(p_b || p_a) + KL(p_a || p_b) of the temperature-softened predictions times T^2, each direction with
    the teacher detached, so each network learns from the other and neither is pulled by its own student
    term. Averaged over the voxels outside the ignore label."""

    def forward(self, logits_a: torch.Tensor, logits_b: torch.Tensor, valid: torch.Tensor | None = None
                ) -> torch.Tensor:
        kl = (prediction_kl(logits_a, logits_b, self.temperature, self.regions)
              + prediction_kl(logits_b, logits_a, self.temperature, self.regions))
        if valid is None:
            return kl.mean()
        return (kl * valid[:, 0]).sum() / valid.sum().clamp_min(1.0)
