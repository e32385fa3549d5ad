"""Convolutions of several independent branches (one per modality) with block-diagonal weights, run either as one
grouped convolution or as one dense convolution per branch; the ``branch_convolutions`` knob chooses."""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from dynamic_network_architectures.building_blocks.helper import convert_conv_op_to_dim, get_matching_convtransp
from torch import nn

BRANCH_CONVOLUTIONS = ("auto", "grouped", "split")
# how a grouped_conv runs: "grouped", "split", or split only in training mode
EXECUTIONS = ("grouped", "split", "split_in_training")
_NAMES = {"grouped": "Groups", "split": "Split", "split_in_training": "SplitInTraining"}


def check_branch_convolutions(value, section: str, dim: int) -> str:
    """The ``branch_convolutions`` knob as a ``grouped_conv`` execution. "auto" splits 3D networks while they train
    and groups otherwise: on the CPU, split 3D convolutions trained faster at nnU-Net's default widths (forward +
    backward) but predicted slower (forward only), and grouped 2D ones were faster in both
    (docs/benchmark_results/2026-12-01_cpu_branch_convolutions/README.md)."""
    if value not in BRANCH_CONVOLUTIONS:
        raise ValueError(f"{section}.branch_convolutions must be one of {BRANCH_CONVOLUTIONS}, got {value!r}")
    if value == "auto":
        return "split_in_training" if dim == 3 else "grouped"
    return value


def _check_execution(execution: str) -> None:
    if execution not in EXECUTIONS:
        raise ValueError(f"execution must be one of {EXECUTIONS}, got {execution!r}")


def _runs_split(module: nn.Module, execution: str) -> bool:
    return execution == "split" or (execution == "split_in_training" and module.training)


def _convolve_per_branch(convolve, groups: int, input: torch.Tensor, weight: torch.Tensor,
                         bias: torch.Tensor | None) -> torch.Tensor:
    """``convolve`` (a dense functional convolution taking input, weight, bias) on each branch's channels with its
    slice of the weights, concatenated."""
    biases = bias.chunk(groups) if bias is not None else (None,) * groups
    return torch.cat([convolve(x, w, b) for x, w, b in zip(input.chunk(groups, 1), weight.chunk(groups, 0), biases)],
                     1)


@cache
def grouped_conv(conv_op: type, groups: int, execution: str = "grouped") -> type:
    """``conv_op`` with ``groups`` fixed: ``groups`` independent branches with block-diagonal weights, run as one
    grouped convolution (one kernel launch) or, split, as one dense convolution per branch over its slice of the
    same weights (grouped kernels are slow on some backends: 3D training on the CPU here; cuDNN in PyTorch issues
    #70954, #73764). Parameters and state dict are identical either way, so a model trained one way predicts the
    other way. ``execution``: one of ``EXECUTIONS``."""
    _check_execution(execution)
    dense = (F.conv1d, F.conv2d, F.conv3d)[convert_conv_op_to_dim(conv_op) - 1]

    class GroupedConv(conv_op):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, bias=True,
                     **kwargs):
            super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups=groups,
                             bias=bias, **kwargs)

        def _conv_forward(self, input, weight, bias):
            if not _runs_split(self, execution):
                return super()._conv_forward(input, weight, bias)
            return _convolve_per_branch(lambda x, w, b: dense(x, w, b, self.stride, self.padding, self.dilation),
                                        groups, input, weight, bias)

    GroupedConv.__name__ = GroupedConv.__qualname__ = f"{conv_op.__name__}{_NAMES[execution]}{groups}"
    return GroupedConv


@cache
def grouped_transposed_conv(conv_op: type, groups: int, execution: str = "grouped") -> type:
    """``grouped_conv`` for the transposed convolution matching ``conv_op`` (decoder upsampling of multi-branch
    networks)."""
    _check_execution(execution)
    transposed_op = get_matching_convtransp(conv_op=conv_op)
    dense = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[convert_conv_op_to_dim(conv_op) - 1]

    class GroupedTransposedConv(transposed_op):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, bias=True):
            super().__init__(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)

        def forward(self, input, output_size=None):
            if not _runs_split(self, execution):
                return super().forward(input, output_size)
            if output_size is not None:
                raise ValueError("split grouped transposed convolutions take no output_size")
            return _convolve_per_branch(
                lambda x, w, b: dense(x, w, b, self.stride, self.padding, self.output_padding, 1, self.dilation),
                groups, input, self.weight, self.bias)

    GroupedTransposedConv.__name__ = GroupedTransposedConv.__qualname__ = \
        f"{transposed_op.__name__}{_NAMES[execution]}{groups}"
    return GroupedTransposedConv

