"""The candidate executions of the multi-branch networks, timed network by network on one device: the same weights
and the same values, run as grouped or split branch convolutions (``branch_convolutions``), with stock instance
norms or through the group-norm kernel (``instance_norm``), contiguous or ``channels_last_3d``; eager (the trainers
under ``nnUNet_compile=t`` are measured by ``run_speed.sh``).

Each variant: training step (forward + backward of the mean of every output + SGD, float16 autocast on CUDA as
nnU-Net trains, the plans' batch) and prediction tile (eval, no gradients, autocast, batch 1) as median times, peak
memory of the steps, and the relative difference of its outputs from the first variant of its network with
the same weights (the equivalence the CPU tests assert, checked on the device). The loss is not the trainers':
this times the networks, not the objectives. One JSON line per variant on stderr, then a table on stdout.

    python benchmarks/gpu/network_variants.py DEVICE PLANS_JSON CONFIGURATION [--small] [--json OUT]
--small: a tiny patch and two steps, a CPU dry run of the GPU script (its times are not GPU results).
"""
import argparse
import copy
import itertools
import json
import statistics
import sys
import time

import numpy as np
import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_multimodal.benchmarks.work import tensors_in
from nnunet_multimodal.text_table import text_table
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
from nnunet_multimodal.training.maml import nnUNetTrainerMAML

CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}


def variants():
    """(network, variant name, trainer, plans knobs, channels_last): the plans' plain U-Net first."""
    rows = [("plain", f"contiguous{'+channels_last' * last}", nnUNetTrainerMultiModalBase, {}, last)
            for last in (False, True)]
    for trainer, section in ((nnUNetTrainerCMSAD, "cmsad"), (nnUNetTrainerMAML, "maml")):
        for convolutions, norm, last in itertools.product(("grouped", "split"), ("stock", "group_norm"),
                                                          (False, True)):
            rows.append((section, f"{convolutions}+{norm}{'+channels_last' * last}", trainer,
                         {section: {"branch_convolutions": convolutions, "instance_norm": norm}}, last))
    return rows


class Bench:
    def __init__(self, device: torch.device, plans: dict, configuration: str, small: bool):
        self.device, self.plans, self.configuration = device, plans, configuration
        self.cm = PlansManager(plans).get_configuration(configuration)
        self.patch = self.smallest_patch() if small else list(self.cm.patch_size)
        self.steps, self.warmup = (2, 1) if small else (10, 3)
        self.channels = len(self.cm.normalization_schemes)

    def smallest_patch(self) -> list[int]:
        """One voxel per axis at the bottleneck, two along the last axis (instance norm needs more than one)."""
        strides = np.prod(self.cm.network_arch_init_kwargs["strides"], axis=0).tolist()
        return strides[:-1] + [2 * strides[-1]]

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def build(self, trainer, knobs: dict, channels_last: bool) -> torch.nn.Module:
        plans = copy.deepcopy(self.plans)
        plans["configurations"][self.configuration]["multimodal"] = knobs
        manager = PlansManager(plans)
        torch.manual_seed(0)   # the same weights for every variant of a network
        net = trainer.build_network_architecture(manager, manager.get_configuration(self.configuration),
                                                 self.channels, 4, True).to(self.device)
        return net.to(memory_format=CHANNELS_LAST[len(self.patch) + 2]) if channels_last else net

    def inputs(self, batch: int, channels_last: bool) -> torch.Tensor:
        torch.manual_seed(1)
        x = torch.randn(batch, self.channels, *self.patch, device=self.device)
        return x.contiguous(memory_format=CHANNELS_LAST[x.ndim]) if channels_last else x

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda")

    def timed(self, run, repeats: int) -> list[float]:
        times = []
        for _ in range(repeats):
            self.sync()
            start = time.perf_counter()
            run()
            self.sync()
            times.append(time.perf_counter() - start)
        return times

    def measure(self, net: torch.nn.Module, channels_last: bool) -> dict:
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.99, nesterov=True)
        x = self.inputs(self.cm.batch_size, channels_last)

        def step():
            optimizer.zero_grad(set_to_none=True)
            with self.autocast():
                out = net(x)
            sum(t.float().mean() for t in tensors_in(out) if t.is_floating_point()).backward()
            optimizer.step()

        tile = self.inputs(1, channels_last)

        def predict():
            with torch.no_grad(), self.autocast():
                return net(tile)

        net.eval()
        # before any update, so every variant of a network is compared at the same weights; full resolution first
        reference_output = next(tensors_in(predict())).float()
        net.train()
        first = self.timed(step, 1)[0]
        self.timed(step, self.warmup)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        step_times = self.timed(step, self.steps)
        peak_mb = torch.cuda.max_memory_allocated() / 2**20 if self.device.type == "cuda" else float("nan")
        net.eval()
        predict()
        tile_times = self.timed(predict, self.steps)
        net.train()
        return {"first_step_s": first, "step_ms": 1e3 * statistics.median(step_times),
                "tile_ms": 1e3 * statistics.median(tile_times), "peak_mb": peak_mb,
                "tile_output": reference_output}


def relative_difference(output: torch.Tensor, reference: torch.Tensor) -> float:
    return ((output - reference).norm() / reference.norm().clamp_min(1e-12)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("device")
    parser.add_argument("plans")
    parser.add_argument("configuration")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--json")
    a = parser.parse_args()
    with open(a.plans) as f:
        bench = Bench(torch.device(a.device), json.load(f), a.configuration, a.small)
    torch.backends.cudnn.benchmark = True   # as nnU-Net trains and predicts
    results, references = [], {}
    for network, name, trainer, knobs, channels_last in variants():
        net = bench.build(trainer, knobs, channels_last)
        row = bench.measure(net, channels_last)
        output = row.pop("tile_output")
        reference = references.setdefault(network, output)
        row = {"network": network, "variant": name, **row,
               "relative_difference": relative_difference(output, reference),
               "finite": bool(torch.isfinite(output).all())}
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        del net
    b = results[0]    # the plain U-Net
    rows = [["network", "variant", "step ms", "x", "tile ms", "x", "peak MB", "x", "rel. diff"]]
    for r in results:
        rows.append([r["network"], r["variant"], f"{r['step_ms']:.1f}",
                     f"{r['step_ms'] / b['step_ms']:.2f}", f"{r['tile_ms']:.1f}", f"{r['tile_ms'] / b['tile_ms']:.2f}",
                     f"{r['peak_mb']:.0f}", f"{r['peak_mb'] / b['peak_mb']:.2f}", f"{r['relative_difference']:.1e}"])
    print(text_table(rows))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": a.device, "plans": a.plans, "configuration": a.configuration, "patch": bench.patch,
                       "batch": bench.cm.batch_size, "steps": bench.steps, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
