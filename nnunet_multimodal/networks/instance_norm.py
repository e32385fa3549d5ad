"""Instance normalisation run through PyTorch's group-norm kernel on the CPU.

Instance norm is group norm with one group per channel: same statistics (per sample and channel, biased variance),
same affine parameters. On the CPU PyTorch's group-norm kernel computes it about 3x faster (forward + backward)
than ``nn.InstanceNorm*d``, which reshapes to a batch norm over B*C channels and repeats its weights
(docs/methods/cmsad.md#speed-cpu-tiny-plans). The multi-branch networks normalise more and wider feature maps than
a plain U-Net, so they use it wherever their plans say ``InstanceNorm*d``. Same class hierarchy, state dict and
values; other devices, running statistics and unbatched inputs take the stock path.
"""

from __future__ import annotations

from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

_BATCHED_DIMS = {nn.InstanceNorm1d: 3, nn.InstanceNorm2d: 4, nn.InstanceNorm3d: 5}


@cache
def group_norm_kernel(norm_op: type) -> type:
    """``norm_op`` itself (also ``None``) unless it is ``nn.InstanceNorm1d/2d/3d``; those get a subclass computing the
    same on the CPU with ``F.group_norm``."""
    if norm_op not in _BATCHED_DIMS:
        return norm_op
    batched_dims = _BATCHED_DIMS[norm_op]

    class InstanceNormByGroupNorm(norm_op):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            if (input.device.type != "cpu" or self.track_running_stats or input.dim() != batched_dims
                    or input.shape[1] != self.num_features):
                return super().forward(input)
            return F.group_norm(input, self.num_features, self.weight, self.bias, self.eps)

    InstanceNormByGroupNorm.__name__ = InstanceNormByGroupNorm.__qualname__ = f"{norm_op.__name__}ByGroupNorm"
    return InstanceNormByGroupNorm
