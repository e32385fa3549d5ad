"""Autocast off around the operations that float16 would spoil (softmax, KL, correlations, attention energies)."""

from __future__ import annotations

import contextlib

import torch


def full_precision(like: torch.Tensor):
    """A context with autocast off on ``like``'s device. The meta device, on which benchmarks count a network's
    work without running it, has no autocast to turn off."""
    if like.device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(like.device.type, enabled=False)
