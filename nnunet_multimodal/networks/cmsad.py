"""CMSAD network: one encoder branch per modality, SCFF at each skip level, one shared nnU-Net decoder.

The M branch encoders have the plans' architecture at ``branch_width`` times its features per stage and run as
one grouped encoder (block-diagonal convolutions, exactly M independent branches). The default width 1/sqrt(M)
keeps the encoders' parameters and convolution cost near the single encoder of the same plans (conv cost
scales with width^2, times M branches); widths are rounded to multiples of 8. The decoder is nnU-Net's, over
the fused skips at the plans' widths.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nnunet_multimodal.networks.branch_convolutions import check_branch_convolutions
from nnunet_multimodal.networks.branches import (
    branch_features_per_stage,
    branch_inputs,
    build_branch_encoder,
    split_branches,
)
from nnunet_multimodal.networks.knob_checks import non_negative_int, positive_int
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.networks.scff import SpatialCorrelatedFeatureFusion

DEFAULT_KNOBS = {
    "branch_width": "auto",        # fraction of the plans' features per branch; "auto" = 1/sqrt(M)
    "scff_levels": "auto",         # skip levels (0 = highest resolution) with a correlation step; "auto" = all but 0
    "attention_max_tokens": 64,    # levels with at most this many positions per patch use attention, others gating
    "attention_dim": 32,           # query/key/value channels per modality in the attention form
    # how the branches run: one "grouped" convolution per layer, or "split" into one per branch (same weights);
    # "auto": split while training 3D networks, grouped otherwise (the faster on the CPU; docs/methods/maml.md)
    "branch_convolutions": "auto",
    # instance norms through PyTorch's group-norm kernel: "auto" on the CPU only (measured faster there), "group_norm"
    # on every device, "stock" never (networks/instance_norm.py; read by the trainer building the architecture)
    "instance_norm": "auto",
}


class CMSADNet(nn.Module):
    def __init__(self, architecture: PlansArchitecture, num_modalities: int, num_extra_channels: int,
                 num_classes: int, patch_size: tuple[int, ...], deep_supervision: bool = True,
                 knobs: dict | None = None):
        super().__init__()
        knobs = {**DEFAULT_KNOBS, **(knobs or {})}
        self.num_modalities = num_modalities
        self.num_extra_channels = num_extra_channels
        self.branch_channels = branch_features_per_stage(architecture.features_per_stage, num_modalities,
                                                         knobs["branch_width"])
        m = num_modalities
        convolutions = check_branch_convolutions(knobs["branch_convolutions"], "cmsad", architecture.dim)
        self.encoder = build_branch_encoder(architecture, m, num_extra_channels, self.branch_channels, convolutions)
        levels = range(1, architecture.n_stages) if knobs["scff_levels"] == "auto" else knobs["scff_levels"]
        if not isinstance(levels, (range, list, tuple)) or not all(isinstance(v, int) for v in levels):
            raise ValueError(f"cmsad.scff_levels must be 'auto' or a list of stage indices, e.g. [1, 2, 3]; got "
                             f"{knobs['scff_levels']!r}")
        unknown = sorted(set(levels) - set(range(architecture.n_stages)))
        if unknown:
            raise ValueError(f"cmsad.scff_levels {unknown} out of range: the plans have {architecture.n_stages} "
                             f"stages (levels 0..{architecture.n_stages - 1})")
        non_negative_int(knobs["attention_max_tokens"], "cmsad.attention_max_tokens")
        positive_int(knobs["attention_dim"], "cmsad.attention_dim")
        self.level_modes = []
        grid = np.array(patch_size)
        for level, stride in enumerate(architecture.strides):
            grid = grid // np.array(stride)
            mode = "none" if level not in levels else (
                "attention" if int(np.prod(grid)) <= knobs["attention_max_tokens"] else "gating")
            self.level_modes.append(mode)
        self.fusion = nn.ModuleList(
            SpatialCorrelatedFeatureFusion(architecture.conv_op, architecture.norm_op, architecture.norm_op_kwargs,
                                           architecture.nonlin, architecture.nonlin_kwargs, m, c, f, mode,
                                           knobs["attention_dim"], convolutions)
            for c, f, mode in zip(self.branch_channels, architecture.features_per_stage, self.level_modes))
        self.decoder = architecture.build_decoder(num_classes, deep_supervision)
        self.apply(architecture.initializer())

    def set_deep_supervision(self, enabled: bool) -> None:
        self.decoder.deep_supervision = enabled

    def branch_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per stage, the branch-major features (B, M*C_s, *sp_s) of all modality encoders."""
        return self.encoder(branch_inputs(x, self.num_modalities, self.num_extra_channels))

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None):
        skips = self.branch_skips(x)
        fused = [fusion(s, available) for fusion, s in zip(self.fusion, skips)]
        logits = self.decoder(fused)
        if not self.training:
            return logits
        return {"logits": logits, "branch_features": skips, "available": available}

    def per_modality(self, stage_features: torch.Tensor) -> torch.Tensor:
        return split_branches(stage_features, self.num_modalities)

    def compute_conv_feature_map_size(self, input_size) -> np.int64:
        """Feature-map voxels held for backprop, as the planner counts them (encoders, fusion outputs, decoder)."""
        total = self.encoder.compute_conv_feature_map_size(input_size)
        size = np.array(input_size)
        for stride, fusion in zip(self.encoder.strides, self.fusion):
            size = size // np.array(stride)
            total += np.prod([fusion.fuse.out_channels, *size], dtype=np.int64) * 3
        return total + self.decoder.compute_conv_feature_map_size(input_size)
