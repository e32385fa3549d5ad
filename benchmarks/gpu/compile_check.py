"""torch.compile + AMP (float16 autocast, as nnU-Net trains on CUDA) on the networks our trainers build from the
3D phantom's default plans: compile time (first step), eager vs compiled step time, finite outputs. The loss is
the mean of every output (not the trainers' losses): this checks the networks, not the training objective.

CMSAD and MAML are measured twice: their branches as grouped convolutions and split into one dense convolution per
branch (`branch_convolutions` "grouped" and "split", the same weights; the default "auto" splits 3D networks).

    python benchmarks/gpu/compile_check.py cuda PLANS_JSON [small] [eager]
PLANS_JSON: nnUNetPlans.json of Dataset501 from run_speed.sh (3d_fullres); small: a tiny patch for a CPU try;
eager: no torch.compile (the grouped/split comparison alone, in about a minute on a GPU)."""
import copy
import json
import sys
import time

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
from nnunet_multimodal.training.maml import nnUNetTrainerMAML

device = torch.device(sys.argv[1])
small = "small" in sys.argv[3:]
eager_only = "eager" in sys.argv[3:]
source_plans = json.load(open(sys.argv[2]))
cm = PlansManager(source_plans).get_configuration("3d_fullres")
patch = [32, 64, 64] if small else cm.patch_size
steps = 2 if small else 15


def tensors(out):
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, dict):
        for v in out.values():
            yield from tensors(v)
    elif isinstance(out, (list, tuple)):
        for v in out:
            yield from tensors(v)


def step(net, opt, x):
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        out = net(x)
    loss = sum(t.float().mean() for t in tensors(out) if t.is_floating_point())
    loss.backward()
    opt.step()
    return out


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def plans_with(knobs: dict) -> PlansManager:
    plans = copy.deepcopy(source_plans)
    plans["configurations"]["3d_fullres"]["multimodal"] = knobs
    return PlansManager(plans)


GROUPED, SPLIT = {"branch_convolutions": "grouped"}, {"branch_convolutions": "split"}
for trainer, knobs in ((nnUNetTrainerCMSAD, {"cmsad": GROUPED}), (nnUNetTrainerCMSAD, {"cmsad": SPLIT}),
                       (nnUNetTrainerMAML, {"maml": GROUPED}), (nnUNetTrainerMAML, {"maml": SPLIT}),
                       (nnUNetTrainerMultiModalBase, {})):
    plans = plans_with(knobs)
    for compiled in (False,) if eager_only else (False, True):
        torch.manual_seed(0)
        net = trainer.build_network_architecture(plans, plans.get_configuration("3d_fullres"), 4, 4, True).to(device)
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.99, nesterov=True)
        model = torch.compile(net) if compiled else net
        x = torch.randn(cm.batch_size, 4, *patch, device=device)
        sync()
        t = time.perf_counter()
        out = step(model, opt, x)
        sync()
        first = time.perf_counter() - t
        finite = all(torch.isfinite(o).all().item() for o in tensors(out) if o.is_floating_point())
        for _ in range(3):
            step(model, opt, x)
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            step(model, opt, x)
        sync()
        per_step = (time.perf_counter() - t) / steps
        print(json.dumps({"trainer": trainer.__name__, "knobs": knobs, "compiled": compiled,
                          "first_step_s": round(first, 2), "step_s": round(per_step, 4), "finite": finite,
                          "patch": list(patch), "batch": cm.batch_size}), flush=True)
