"""The final 1x1 convolution from features to class logits."""

from __future__ import annotations

import torch
from torch import nn


class SegmentationHead(nn.Module):
    """Holds its convolution as ``seg_layers``, as nnU-Net's decoders do: ``-pretrained_weights`` leaves out the
    keys containing ``.seg_layers.``, so a network for another label set starts from every other weight."""

    def __init__(self, conv_op: type[nn.Module], in_channels: int, num_classes: int, bias: bool = True):
        super().__init__()
        self.seg_layers = conv_op(in_channels, num_classes, 1, bias=bias)

    @property
    def out_channels(self) -> int:
        return self.seg_layers.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg_layers(x)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("weight", "bias"):  # checkpoints written before the rename hold them as head.weight, head.bias
            if prefix + name in state_dict:
                state_dict[f"{prefix}seg_layers.{name}"] = state_dict.pop(prefix + name)
        self._take_bias_layout_of(f"{prefix}seg_layers.bias" in state_dict)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _take_bias_layout_of(self, weights_have_bias: bool) -> None:
        """Give the convolution a bias exactly when the weights loaded into it have one. nnU-Net's predictor builds
        the network from the model folder's plans, which do not say whether a fold's checkpoint predates a bias
        knob (MAML's ``fused_head_bias``), and loads every fold into that one network; the weights do say. Trainers
        build the checkpoint's layout before loading (training/base.py), so in training this changes nothing."""
        conv = self.seg_layers
        if weights_have_bias == (conv.bias is not None):
            return
        bias = torch.zeros(conv.out_channels, device=conv.weight.device, dtype=conv.weight.dtype)
        conv.bias = nn.Parameter(bias) if weights_have_bias else None
