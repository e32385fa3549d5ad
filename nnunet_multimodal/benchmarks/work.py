"""The work behind a time: floating-point operations, bytes moved through memory and operations launched, counted
per aten operation as PyTorch dispatches it, on any device (on the ``meta`` device nothing is computed, so a
network at nnU-Net's default 3D plans is counted in seconds on a laptop).

Bytes are each operation's tensor inputs read once and its outputs written once (no fusion, no cache): what an
eager run moves at least. Views move nothing and launch nothing. Convolutions are counted here rather than by
``torch.utils.flop_counter``, whose backward formula over-counts grouped convolutions; other operations
(matrix products, attention) use its formulas.

A time floor follows from the two ceilings of a device: each operation takes at least the larger of its
operations over the arithmetic rate and its bytes over the memory bandwidth, and the floor is their sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _convolution_flops(input_shape, weight_shape, output_shape, transposed: bool) -> int:
    """One multiply and one add per weight per output element; a transposed convolution is the backward of a
    convolution, so the input takes the output's place. ``weight_shape`` is (out, in/groups, *k) or, transposed,
    (in, out/groups, *k): the second dimension is what each element meets per kernel position."""
    elements = math.prod(input_shape if transposed else output_shape)
    return 2 * elements * weight_shape[1] * math.prod(weight_shape[2:])


def _convolution(args, out) -> int:
    input, weight = args[0], args[1]
    return _convolution_flops(input.shape, weight.shape, out.shape, bool(args[6]))


def _convolution_backward(args, out) -> int:
    grad_output, input, weight = args[0], args[1], args[2]
    transposed, output_mask = bool(args[7]), args[10]
    forward = _convolution_flops(input.shape, weight.shape, grad_output.shape, transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))  # gradient of the input, of the weight


def _cpu_attention(args, out) -> int:
    return sdpa_flop_count(args[0].shape, args[1].shape, args[2].shape)


def _cpu_attention_backward(args, out) -> int:
    grad_output, query, key, value = args[0], args[1], args[2], args[3]
    return sdpa_backward_flop_count(grad_output.shape, query.shape, key.shape, value.shape)


# torch's registry knows the attention kernels of GPUs but not the ones scaled_dot_product_attention takes on the CPU
OWN_FORMULAS = {
    aten.convolution: _convolution,
    aten.convolution_backward: _convolution_backward,
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}
# allocations without a fill write nothing; these return a tensor sharing its input's memory without being marked
# as views in their schema
NO_WORK = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty, aten.new_empty_strided, aten.detach,
           aten.lift_fresh, aten._unsafe_view}


def operation_flops(func, args, kwargs, out) -> int:
    packet = func._overloadpacket
    if packet in OWN_FORMULAS:
        return OWN_FORMULAS[packet](args, out)
    if packet in flop_registry:
        return flop_registry[packet](*args, **kwargs, out_val=out)
    return 0


def tensors_in(output):
    """Every tensor in a network's output (a tensor, or lists, tuples and dicts of them)."""
    if isinstance(output, torch.Tensor):
        yield output
    elif isinstance(output, dict):
        for value in output.values():
            yield from tensors_in(value)
    elif isinstance(output, (list, tuple)):
        for value in output:
            yield from tensors_in(value)


def _tensor_bytes(values) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(values)[0] if isinstance(t, torch.Tensor))


@dataclass
class Ceilings:
    """A device's arithmetic rate (FLOP/s) and memory bandwidth (bytes/s)."""
    flops_per_second: float
    bytes_per_second: float


@dataclass
class Work:
    flops: int = 0
    bytes: int = 0
    operations: int = 0
    floor_seconds: float = 0.0
    per_operation: dict[str, list[int]] = field(default_factory=dict)  # name -> [count, flops, bytes]

    def as_dict(self) -> dict:
        return {"gflop": self.flops / 1e9, "gbyte": self.bytes / 1e9, "operations": self.operations,
                "floor_ms": self.floor_seconds * 1e3}


class WorkCounter(TorchDispatchMode):
    """Counts the work of everything run inside it. ``ceilings``: the device's, for ``floor_seconds``."""

    def __init__(self, ceilings: Ceilings | None = None):
        super().__init__()
        self.ceilings = ceilings
        self.work = Work()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view or func._overloadpacket in NO_WORK:
            return out
        flops = operation_flops(func, args, kwargs, out)
        moved = _tensor_bytes((args, kwargs)) + _tensor_bytes(out)
        work = self.work
        work.flops += flops
        work.bytes += moved
        work.operations += 1
        if self.ceilings is not None:
            work.floor_seconds += max(flops / self.ceilings.flops_per_second, moved / self.ceilings.bytes_per_second)
        entry = work.per_operation.setdefault(str(func._overloadpacket), [0, 0, 0])
        entry[0] += 1
        entry[1] += flops
        entry[2] += moved
        return out
