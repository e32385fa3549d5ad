"""Grouped against split branch convolutions (the `branch_convolutions` knob of CMSAD and MAML): forward + backward
of the networks alone, built from one plans file, against the plans' plain U-Net, alternating passes in one process
(the order reversed every second pass), medians. Not the trainers' steps (no loss, no data loading): the difference
between the two ways of running the same weights. ``inference``: forward only in eval mode without gradients,
batch 1, no deep supervision (what prediction runs), instead of training passes.

    python benchmarks/branch_convolutions.py PLANS_JSON CONFIGURATION NUM_MODALITIES [PASSES] [DEVICE] [inference]
"""
import copy
import json
import sys
import time

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_multimodal.benchmarks.work import tensors_in
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
from nnunet_multimodal.training.maml import nnUNetTrainerMAML

plans_file, configuration, num_modalities = sys.argv[1], sys.argv[2], int(sys.argv[3])
passes = int(sys.argv[4]) if len(sys.argv) > 4 else 15
device = torch.device(sys.argv[5] if len(sys.argv) > 5 else "cpu")
inference = "inference" in sys.argv[6:]
source = json.load(open(plans_file))
GROUPED, SPLIT = {"branch_convolutions": "grouped"}, {"branch_convolutions": "split"}
VARIANTS = (("plain U-Net", nnUNetTrainerMultiModalBase, {}),
            ("CMSAD grouped", nnUNetTrainerCMSAD, {"cmsad": GROUPED}),
            ("CMSAD split", nnUNetTrainerCMSAD, {"cmsad": SPLIT}),
            ("MAML grouped", nnUNetTrainerMAML, {"maml": GROUPED}),
            ("MAML split", nnUNetTrainerMAML, {"maml": SPLIT}))


def build(trainer, knobs):
    plans = copy.deepcopy(source)
    plans["configurations"][configuration]["multimodal"] = knobs
    manager = PlansManager(plans)
    torch.manual_seed(0)
    net = trainer.build_network_architecture(manager, manager.get_configuration(configuration), num_modalities, 4,
                                             not inference).to(device)
    return net.eval() if inference else net.train()


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_pass(net, x) -> float:
    sync()
    start = time.perf_counter()
    if inference:
        with torch.no_grad():
            net(x)
    else:
        sum(t.float().mean() for t in tensors_in(net(x)) if t.is_floating_point()).backward()
    sync()
    net.zero_grad(set_to_none=True)
    return time.perf_counter() - start


configuration_manager = PlansManager(source).get_configuration(configuration)
batch = 1 if inference else configuration_manager.batch_size
x = torch.randn(batch, num_modalities, *configuration_manager.patch_size, device=device)
networks = {name: build(trainer, knobs) for name, trainer, knobs in VARIANTS}
times = {name: [] for name in networks}
for _ in range(2):
    for net in networks.values():
        timed_pass(net, x)
order = list(networks.items())
for i in range(passes):
    # reversed every second pass: in one process the network timed last in a sweep measured ~3 % faster on the CPU
    for name, net in order if i % 2 == 0 else order[::-1]:
        times[name].append(timed_pass(net, x))
medians = {name: sorted(t)[len(t) // 2] * 1000 for name, t in times.items()}
print(f"{plans_file} {configuration}: {'inference' if inference else 'training'}, patch "
      f"{configuration_manager.patch_size}, batch {batch}, {num_modalities} modalities, {device}, "
      f"{torch.get_num_threads()} threads")
for name, ms in medians.items():
    print(f"  {name:14s} {ms:8.1f} ms  {ms / medians['plain U-Net']:.2f}x")
