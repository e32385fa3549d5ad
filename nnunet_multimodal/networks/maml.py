"""MAML network (modality-aware mutual learning, Zhang et al. MICCAI 2021), after the authors' public code.

One U-Net per modality at ``branch_width`` of the plans' features (encoders run as one grouped encoder; each
modality has its own nnU-Net decoder) gives its last decoder feature map F_m and its own deep-supervised logits.
Fusion and modality-aware (MA) attention, on the branch features rescaled by availability first,
G_m = w_m * F_m with w_m = M/|S| for m in S (the available modalities) and 0 otherwise:
    F_f = conv3x3(concat_m G_m)                                  (no norm, no nonlinearity)
    A_m = sigmoid(conv3x3(nonlin(norm(conv3x3([G_m; F_f])))))    (voxel- and channel-wise weights)
    fused logits = conv1x1(sum_m A_m * G_m)                      (no bias unless fused_head_bias)
Absent modalities are masked out by multiplication (every parameter stays in the graph); with all of them present
w_m = 1 and this is the authors' network.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from nnunet_multimodal.networks.branch_convolutions import (
    check_branch_convolutions,
    grouped_conv,
    grouped_transposed_conv,
)
from nnunet_multimodal.networks.branches import (
    branch_features_per_stage,
    branch_inputs,
    build_branch_encoder,
    split_branches,
)
from nnunet_multimodal.networks.broadcast import trailing_singletons
from nnunet_multimodal.networks.knob_checks import boolean
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.networks.scff import availability_weights
from nnunet_multimodal.networks.segmentation_head import SegmentationHead

DEFAULT_KNOBS = {
    "branch_width": 0.5,              # the authors' code: half the plans' base width per modality U-Net
    # ...but no stage narrower than 16 features (or the plans' own, if fewer): half of nnU-Net's default 32, and
    # about the narrowest the authors ran (15); only plans with fewer than 32 base features are affected
    "min_branch_features": 16,
    # with one modality available at inference: its own "branch" head (as the authors did; better on average on
    # each single-modality subset of the demo phantom, docs/benchmark_results/2026-12-01_maml_demo_runs/README.md)
    # or the "fused" head
    "single_modality_head": "branch",
    # how the M U-Nets run: one "grouped" convolution per layer, or "split" into one per branch (same weights);
    # "auto": split while training 3D networks, grouped otherwise (the faster on the CPU; docs/methods/maml.md)
    "branch_convolutions": "auto",
    # instance norms through PyTorch's group-norm kernel: "auto" on the CPU only (measured faster there), "group_norm"
    # on every device, "stock" never (networks/instance_norm.py; read by the trainer building the architecture)
    "instance_norm": "auto",
    # the fused 1x1 output convolution without a bias, as in the authors' code (seg_output_use_bias=False)
    "fused_head_bias": False,
}
# what the networks of checkpoints written before a knob existed were built with; their checkpoints record no value
# for it (the trainer builds these values for them, training/base.py)
KNOBS_BEFORE_RECORDED = {"fused_head_bias": True}
HEADS = ("fused", "branch")


def build_grouped_decoder(architecture: PlansArchitecture, branch_features: tuple[int, ...], num_modalities: int,
                          num_classes: int, deep_supervision: bool, convolutions: str = "grouped") -> nn.Module:
    """M nnU-Net decoders as one: nnU-Net's decoder class over branch-major channels with grouped convolutions
    (stages and segmentation layers) and grouped transposed convolutions, so each modality keeps its own
    decoder (block-diagonal weights) at one operation per layer."""
    m = num_modalities
    grouped = dataclasses.replace(architecture, conv_op=grouped_conv(architecture.conv_op, m, convolutions),
                                  features_per_stage=tuple(m * c for c in branch_features))
    decoder = grouped.build_decoder(m * num_classes, deep_supervision)
    transpose = grouped_transposed_conv(architecture.conv_op, m, convolutions)
    decoder.transpconvs = nn.ModuleList(
        transpose(m * branch_features[-s], m * branch_features[-(s + 1)], architecture.strides[-s],
                  architecture.strides[-s], bias=architecture.conv_bias)
        for s in range(1, len(branch_features)))
    return decoder


def decode_grouped(decoder: nn.Module, skips: list[torch.Tensor], num_modalities: int
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The pass of nnU-Net's decoder over branch-major skips, each branch's upsampled features concatenated with
    its own skip. Returns logits (B, M, K, *sp) highest resolution first (all under deep supervision, else the
    full-resolution one) and the last decoder features (B, M, C, *sp)."""
    lower = skips[-1]
    outputs = []
    for s, (transpconv, stage) in enumerate(zip(decoder.transpconvs, decoder.stages)):
        pairs = torch.stack((split_branches(transpconv(lower), num_modalities),
                             split_branches(skips[-(s + 2)], num_modalities)), 2)       # (B, M, 2, C, *sp)
        x = stage(pairs.flatten(1, 3))
        if decoder.deep_supervision or s == len(decoder.stages) - 1:
            outputs.append(split_branches(decoder.seg_layers[s](x), num_modalities))
        lower = x
    return outputs[::-1], split_branches(lower, num_modalities)


class ModalityAwareModules(nn.Module):
    """A_m = sigmoid(conv3x3(nonlin(norm(conv3x3([F_m; F_f]))))) for every modality m, as grouped convolutions."""

    def __init__(self, conv_op: type, norm_op: type | None, norm_op_kwargs: dict | None, nonlin: type | None,
                 nonlin_kwargs: dict | None, num_modalities: int, channels: int, convolutions: str = "grouped"):
        super().__init__()
        grouped = grouped_conv(conv_op, num_modalities, convolutions)
        self.conv1 = grouped(num_modalities * 2 * channels, num_modalities * channels, 3, padding=1)
        self.norm = norm_op(num_modalities * channels, **(norm_op_kwargs or {})) if norm_op is not None \
            else nn.Identity()
        self.nonlin = nonlin(**(nonlin_kwargs or {})) if nonlin is not None else nn.Identity()
        self.conv2 = grouped(num_modalities * channels, num_modalities * channels, 3, padding=1)
        self.num_modalities = num_modalities

    def forward(self, own: torch.Tensor, fused: torch.Tensor) -> torch.Tensor:
        """own (B, M, C, *sp), fused (B, C, *sp) -> attention weights (B, M, C, *sp)."""
        pairs = torch.stack((own, fused.unsqueeze(1).expand_as(own)), 2).flatten(1, 3)
        weights = torch.sigmoid(self.conv2(self.nonlin(self.norm(self.conv1(pairs)))))
        return split_branches(weights, self.num_modalities)


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
        features = branch_features_per_stage(architecture.features_per_stage, num_modalities, knobs["branch_width"],
                                             knobs["min_branch_features"])
        convolutions = check_branch_convolutions(knobs["branch_convolutions"], "maml", architecture.dim)
        self.encoder = build_branch_encoder(architecture, num_modalities, num_extra_channels, features, convolutions)
        self.decoder = build_grouped_decoder(architecture, features, num_modalities, num_classes, deep_supervision,
                                             convolutions)
        c = features[0]
        conv = architecture.conv_op
        self.fusion = conv(num_modalities * c, c, 3, padding=1)
        self.modality_aware = ModalityAwareModules(conv, architecture.norm_op, architecture.norm_op_kwargs,
                                                   architecture.nonlin, architecture.nonlin_kwargs, num_modalities, c,
                                                   convolutions)
        self.head = SegmentationHead(conv, c, num_classes,
                                     bias=boolean(knobs["fused_head_bias"], "maml.fused_head_bias"))
        self.apply(architecture.initializer())

    def set_deep_supervision(self, enabled: bool) -> None:
        self.deep_supervision = enabled
        self.decoder.deep_supervision = enabled

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        """Feature-map voxels held for backprop, as the planner counts them: the M encoders and decoders, then at
        full resolution the fusion, the MA modules (conv, norm, nonlin, conv, sigmoid), the weighted sum, the head."""
        m, c = self.num_modalities, self.fusion.out_channels
        full_resolution = c + m * c * 5 + c + self.head.out_channels
        return (self.encoder.compute_conv_feature_map_size(input_size)
                + self.decoder.compute_conv_feature_map_size(input_size)
                + np.prod([full_resolution, *input_size], dtype=np.int64))

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None):
        m = self.num_modalities
        skips = self.encoder(branch_inputs(x, m, self.num_extra_channels))
        logits, stacked = decode_grouped(self.decoder, skips, m)                # (B, M, K/C, *sp) per level
        branch_logits = [[level[:, i] for level in logits] for i in range(m)]
        if available is not None:
            weights = availability_weights(available, m, x)
            stacked = stacked * trailing_singletons(weights, stacked.ndim)
        fused_features = self.fusion(stacked.flatten(1, 2))
        attended = (self.modality_aware(stacked, fused_features) * stacked).sum(1)
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
        lower = [sum(trailing_singletons(present[:, i], level[0].ndim) * b[level_index]
                     for i, b in enumerate(branch_logits)) / trailing_singletons(present.sum(1), level[0].ndim)
                 for level_index, level in enumerate(zip(*branch_logits)) if level_index > 0]
        return [fused, *lower]

    def _single_branch_where_alone(self, fused, branch_logits, available):
        full = torch.stack([b[0] for b in branch_logits], 1)                    # (B, M, C, *sp)
        alone = available.sum(1) == 1
        index = available.float().argmax(1)
        chosen = full[torch.arange(full.shape[0], device=full.device), index]
        return torch.where(trailing_singletons(alone, fused.ndim), chosen, fused)
