"""The final 1x1 convolution from features to class logits."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Module):
    """Holds its convolution as ``seg_layers``, as nnU-Net's decoders do: ``-pretrained_weights`` leaves out the
    keys containing ``.seg_layers.``, so a network for another label set starts from every other weight."""

    def __init__(self, conv_op: type[nn.Module], in_channels: int, num_classes: int):
        super().__init__()
        self.seg_layers = conv_op(in_channels, num_classes, 1)

    @property
    def out_channels(self) -> int:
        return self.seg_layers.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg_layers(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("weight", "bias"):  # checkpoints written before the rename hold them as head.weight, head.bias
            if prefix + name in state_dict:
                state_dict[f"{prefix}seg_layers.{name}"] = state_dict.pop(prefix + name)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
