"""Instance normalisation run through PyTorch's group-norm kernel on the CPU.

Instance norm is group norm with one group per channel: same statistics (per sample and channel, biased variance),
same affine parameters. On the CPU PyTorch's group-norm kernel computes it about 3x faster (forward + backward)
than ``nn.InstanceNorm*d``, which reshapes to a batch norm over B*C channels and repeats its weights
(docs/benchmark_results/2026-12-01_instance_norm_cpu/README.md). The multi-branch networks normalise more and
wider feature maps than a plain U-Net, so they use it wherever their plans say ``InstanceNorm*d``. Same class
hierarchy, state dict and values; other devices (unless asked for), running statistics and unbatched inputs take
the stock path.

On CUDA the kernel is a candidate to measure: the stock module returns a view of a batch norm's output, and the
in-place nonlinearity nnU-Net puts after it makes autograd copy the whole feature map several times in the
backward pass (``benchmarks/gpu/floor.py`` counts it); group norm returns a tensor of its own.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

_BATCHED_DIMS = {nn.InstanceNorm1d: 3, nn.InstanceNorm2d: 4, nn.InstanceNorm3d: 5}
# the ``instance_norm`` knob: the group-norm kernel on the CPU only, on every device, or never
INSTANCE_NORM_KERNELS = ("auto", "group_norm", "stock")


def group_norm_kernel(norm_op: type, kernel: str = "auto") -> type:
    """``norm_op`` itself (also ``None``) unless it is ``nn.InstanceNorm1d/2d/3d``; those get a subclass computing the
    same with ``F.group_norm``: on the CPU (``kernel`` "auto") or on every device ("group_norm"). "stock": never.
    One class per norm and kernel."""
    if kernel not in INSTANCE_NORM_KERNELS:
        raise ValueError(f"the instance_norm knob must be one of {INSTANCE_NORM_KERNELS}, got {kernel!r}")
    if norm_op not in _BATCHED_DIMS or kernel == "stock":
        return norm_op
    return _instance_norm_by_group_norm(norm_op, kernel == "group_norm")


@cache
def _instance_norm_by_group_norm(norm_op: type, everywhere: bool) -> type:
    batched_dims = _BATCHED_DIMS[norm_op]

    class InstanceNormByGroupNorm(norm_op):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            if ((input.device.type != "cpu" and not everywhere) or self.track_running_stats
                    or input.dim() != batched_dims or input.shape[1] != self.num_features):
                return super().forward(input)
            return F.group_norm(input, self.num_features, self.weight, self.bias, self.eps)

    suffix = "ByGroupNormEverywhere" if everywhere else "ByGroupNorm"
    InstanceNormByGroupNorm.__name__ = InstanceNormByGroupNorm.__qualname__ = f"{norm_op.__name__}{suffix}"
    return InstanceNormByGroupNorm
