"""MAML network (modality-aware mutual learning, Zhang et al. MICCAI 2021), after the authors' public code.

One U-Net per modality at ``branch_width`` of the plans' features (encoders run as one grouped encoder; each
modality has its own nnU-Net decoder) gives its last decoder feature map F_m and its own deep-supervised logits.
Fusion and modality-aware (MA) attention:
    F_f = conv3x3(concat_m F_m)                                  (no norm, no nonlinearity)
    A_m = sigmoid(conv3x3(nonlin(norm(conv3x3([F_m; F_f])))))    (voxel- and channel-wise weights)
    fused logits = conv1x1( (M/|S|) * sum_{m in S} A_m * F_m )   (S: the available modalities)
Absent modalities are masked out of F_f and of the sum by multiplication (every parameter stays in the graph).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from nnunet_multimodal.networks.branches import (
    branch_features_per_stage,
    branch_inputs,
    build_branch_encoder,
    split_branches,
)
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.networks.scff import availability_weights

DEFAULT_KNOBS = {
    "branch_width": 0.5,              # the authors' code: half the plans' base width per modality U-Net
    "single_modality_head": "fused",  # with one modality available at inference: "fused" head or its "branch" head
}
HEADS = ("fused", "branch")


def decode_with_features(decoder: nn.Module, skips: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """nnU-Net's (residual) U-Net decoder pass that also returns the last decoder feature map. Logits come
    highest resolution first: all of them under deep supervision, else only the full-resolution one."""
    lower = skips[-1]
    outputs = []
    for s, (transpconv, stage) in enumerate(zip(decoder.transpconvs, decoder.stages)):
        x = stage(torch.cat((transpconv(lower), skips[-(s + 2)]), 1))
        if decoder.deep_supervision or s == len(decoder.stages) - 1:
            outputs.append(decoder.seg_layers[s](x))
        lower = x
    return outputs[::-1], lower


class ModalityAwareModule(nn.Module):
    """A_m = sigmoid(conv3x3(nonlin(norm(conv3x3([F_m; F_f])))))."""

    def __init__(self, conv_op: type, norm_op: type | None, norm_op_kwargs: dict | None, nonlin: type | None,
                 nonlin_kwargs: dict | None, channels: int):
        super().__init__()
        self.conv1 = conv_op(2 * channels, channels, 3, padding=1)
        self.norm = norm_op(channels, **(norm_op_kwargs or {})) if norm_op is not None else nn.Identity()
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()
        self.conv2 = conv_op(channels, channels, 3, padding=1)

    def forward(self, own: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv2(self.nonlin(self.norm(self.conv1(torch.cat((own, fused), 1))))))


class MAMLNet(nn.Module):
    def __init__(self, architecture: PlansArchitecture, num_modalities: int, num_extra_channels: int,
                 num_classes: int, deep_supervision: bool = True, knobs: dict | None = None):
        super().__init__()
        knobs = {**DEFAULT_KNOBS, **(knobs or {})}
        if knobs["single_modality_head"] not in HEADS:
            raise ValueError(f"maml.single_modality_head must be one of {HEADS}, got {knobs['single_modality_head']!r}")
        self.single_modality_head = knobs["single_modality_head"]
        self.num_modalities = num_modalities
        self.num_extra_channels = num_extra_channels
        self.deep_supervision = deep_supervision
        features = branch_features_per_stage(architecture.features_per_stage, num_modalities, knobs["branch_width"])
        self.encoder = build_branch_encoder(architecture, num_modalities, num_extra_channels, features)
        branch_architecture = dataclasses.replace(architecture, features_per_stage=features)
        self.decoders = nn.ModuleList(branch_architecture.build_decoder(num_classes, deep_supervision)
                                      for _ in range(num_modalities))
        c = features[0]
        conv = architecture.conv_op
        self.fusion = conv(num_modalities * c, c, 3, padding=1)
        self.modality_aware = nn.ModuleList(
            ModalityAwareModule(conv, architecture.norm_op, architecture.norm_op_kwargs, architecture.nonlin,
                                architecture.nonlin_kwargs, c) for _ in range(num_modalities))
        self.head = conv(c, num_classes, 1)
        self.apply(architecture.initializer())

    def set_deep_supervision(self, enabled: bool) -> None:
        self.deep_supervision = enabled
        for decoder in self.decoders:
            decoder.deep_supervision = enabled

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None):
        m = self.num_modalities
        skips = [split_branches(s, m) for s in self.encoder(branch_inputs(x, m, self.num_extra_channels))]
        branch_logits, branch_features = [], []
        for i, decoder in enumerate(self.decoders):
            logits, features = decode_with_features(decoder, [s[:, i] for s in skips])
            branch_logits.append(logits)
            branch_features.append(features)
        weights = None if available is None else availability_weights(available, m, x)
        stacked = torch.stack(branch_features, 1)                              # (B, M, C, *sp)
        if weights is not None:
            stacked = stacked * weights.view(*weights.shape, *([1] * (stacked.ndim - 2)))
        fused_features = self.fusion(stacked.flatten(1, 2))
        attended = sum(module(stacked[:, i], fused_features) * stacked[:, i]
                       for i, module in enumerate(self.modality_aware))
        fused = self.head(attended)
        if self.training:
            return {"logits": fused, "branch_logits": branch_logits, "available": available}
        if available is not None and self.single_modality_head == "branch":
            fused = self._single_branch_where_alone(fused, branch_logits, available)
        if not self.deep_supervision:
            return fused
        # nnU-Net's validation under deep supervision: the fused logits first, then the available branches'
        # mean at the lower resolutions (only used for the logged validation loss)
        present = torch.ones(x.shape[0], m, device=x.device) if available is None else available.float()
        lower = [sum(present[:, i].view(-1, *([1] * (level[0].ndim - 1))) * b[level_index]
                     for i, b in enumerate(branch_logits)) / present.sum(1).view(-1, *([1] * (level[0].ndim - 1)))
                 for level_index, level in enumerate(zip(*branch_logits)) if level_index > 0]
        return [fused, *lower]

    def _single_branch_where_alone(self, fused, branch_logits, available):
        full = torch.stack([b[0] for b in branch_logits], 1)                    # (B, M, C, *sp)
        alone = available.sum(1) == 1
        index = available.float().argmax(1)
        chosen = full[torch.arange(full.shape[0], device=full.device), index]
        return torch.where(alone.view(-1, *([1] * (fused.ndim - 1))), chosen, fused)
