"""Where a training step's and a prediction tile's time goes: ``torch.profiler`` tables (device kernels and
operators) and a summary per pass: device time, kernel launches, and the time of convolutions split by whether
they are grouped, the hypothesis on record for the multi-branch networks' GPU gap (cuDNN's grouped 3D kernels).

On the CPU the same tables hold CPU times (a dry run of the GPU script, not a GPU result)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity

# position of ``groups`` in the aten signatures
GROUPS_ARGUMENT = {"aten::convolution": 8, "aten::convolution_backward": 9}
TABLE_ROWS = 40


def _time(event, device: torch.device) -> float:
    """Microseconds of an operator event including what it launched: device time on CUDA, CPU time otherwise."""
    return event.device_time_total if device.type == "cuda" else event.cpu_time_total


def convolution_groups(event) -> int | None:
    """``groups`` of an aten convolution event, from its recorded scalar arguments (None where the profiler
    recorded none: the time is then reported as unclassified rather than lost with the measurement)."""
    try:
        return int(event.concrete_inputs[GROUPS_ARGUMENT[event.name]])
    except (IndexError, TypeError, ValueError):
        return None


def convolution_time_by_grouping(events, device: torch.device) -> dict[str, float]:
    """Microseconds in grouped (groups > 1), dense and unclassified convolutions, forward and backward."""
    totals = {"grouped_us": 0.0, "dense_us": 0.0, "unclassified_us": 0.0}
    for event in events:
        if event.name in GROUPS_ARGUMENT:
            groups = convolution_groups(event)
            kind = "unclassified_us" if groups is None else "grouped_us" if groups > 1 else "dense_us"
            totals[kind] += _time(event, device)
    return totals


def profile_passes(run, repeats: int, device: torch.device) -> torch.profiler.profile:
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities, record_shapes=True) as profiler:
        for _ in range(repeats):
            run()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return profiler


def summarize_profile(profiler, repeats: int, device: torch.device) -> dict:
    """Per pass: kernel (CUDA) or operator (CPU) self time, kernel launches, convolution time by grouping."""
    events = profiler.events()
    averages = profiler.key_averages()
    if device.type == "cuda":
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        busy_us = sum(e.self_device_time_total for e in averages)
    else:
        kernels = []
        busy_us = sum(e.self_cpu_time_total for e in averages)
    convolutions = convolution_time_by_grouping(events, device)
    return {"busy_ms_per_pass": busy_us / 1e3 / repeats, "kernel_launches_per_pass": len(kernels) / repeats,
            "grouped_convolution_ms_per_pass": convolutions["grouped_us"] / 1e3 / repeats,
            "dense_convolution_ms_per_pass": convolutions["dense_us"] / 1e3 / repeats,
            "unclassified_convolution_ms_per_pass": convolutions["unclassified_us"] / 1e3 / repeats,
            "timed_on": "cuda kernels" if device.type == "cuda" else "cpu operators"}


def write_profile(profiler, folder: Path, name: str, repeats: int, device: torch.device) -> dict:
    """``name``.txt (the two tables) in ``folder``; returns the summary."""
    self_key, total_key = (("self_device_time_total", "device_time_total") if device.type == "cuda"
                           else ("self_cpu_time_total", "cpu_time_total"))
    averages = profiler.key_averages()
    summary = summarize_profile(profiler, repeats, device)
    text = (f"{name}: {repeats} passes; summary per pass: {json.dumps(summary)}\n\n"
            f"By self time (kernels on CUDA):\n{averages.table(sort_by=self_key, row_limit=TABLE_ROWS)}\n\n"
            f"By total time (operators with what they launched):\n"
            f"{averages.table(sort_by=total_key, row_limit=TABLE_ROWS)}\n")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text(text)
    return summary
