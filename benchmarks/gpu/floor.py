"""The floor under each trainer's GPU step and prediction tile, counted on the meta device (no GPU, seconds):
floating-point operations, bytes through device memory and aten operations of the networks our trainers build
from one plans file, and the time they need at least on a device with the given ceilings
(``nnunet_multimodal/benchmarks/work.py``). Ratios are against the plans' plain U-Net (``nnUNetTrainer``).

    python benchmarks/gpu/floor.py PLANS_JSON CONFIGURATION [--classes K] [--json OUT.json]
              [--tflops 790] [--tbytes 4.3]

Step: forward + backward of the network in training mode (deep supervision on) on the plans' batch, float16 as
under nnU-Net's autocast, the loss a plain sum (the trainers' losses and the optimiser are left out: small next to
the networks). MKD's step is its three updates' networks: the image alignment module in float32 (four generator
passes, forward + backward), the discriminators twice (generator and discriminator update), then both segmentors
on target + aligned images. Tile: one forward in eval mode, deep supervision off, batch 1, float16.
Default ceilings: the H200's measured copy bandwidth (4.3 TB/s) and float16/bfloat16 matrix rate (790 TFLOP/s).
"""
import argparse
import copy
import json

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_multimodal.benchmarks.work import Ceilings, WorkCounter, tensors_in
from nnunet_multimodal.networks.mkd import DEFAULT_KNOBS as MKD_KNOBS
from nnunet_multimodal.networks.mkd import DiscriminatorPair, ImageAlignmentModule
from nnunet_multimodal.networks.plans_architecture import PlansArchitecture
from nnunet_multimodal.text_table import text_table
from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.cmsad import nnUNetTrainerCMSAD
from nnunet_multimodal.training.maml import nnUNetTrainerMAML
from nnunet_multimodal.training.mkd import nnUNetTrainerMKD

META = torch.device("meta")


def plans_with(source: dict, configuration: str, knobs: dict) -> PlansManager:
    plans = copy.deepcopy(source)
    plans["configurations"][configuration]["multimodal"] = knobs
    return PlansManager(plans)


def build(trainer, plans: PlansManager, configuration: str, classes: int, deep_supervision: bool):
    cm = plans.get_configuration(configuration)
    channels = len(cm.normalization_schemes)
    with META:
        return trainer.build_network_architecture(plans, cm, channels, classes, deep_supervision), cm


def backward_of_sum(output) -> None:
    sum(t.float().sum() for t in tensors_in(output) if t.requires_grad).backward()


def count(run, ceilings: Ceilings) -> dict:
    counter = WorkCounter(ceilings)
    with counter:
        run()
    return counter.work.as_dict()


def network_step(net, cm, batch: int):
    net.train()
    x = torch.randn(batch, len(cm.normalization_schemes), *cm.patch_size, device=META)
    return lambda: backward_of_sum(net(x))


def network_tile(net, cm):
    net.eval()
    x = torch.randn(1, len(cm.normalization_schemes), *cm.patch_size, device=META)

    def run():
        with torch.no_grad():
            net(x)
    return run


def mkd_step(plans: PlansManager, configuration: str, classes: int):
    segmentors, cm = build(nnUNetTrainerMKD, plans, configuration, classes, True)
    architecture = PlansArchitecture.from_configuration(cm)
    channels = len(cm.normalization_schemes)
    with META:
        iam = ImageAlignmentModule(architecture, channels, MKD_KNOBS)
        discriminators = DiscriminatorPair(architecture, channels, MKD_KNOBS)
    n_target = max(1, cm.batch_size // 2)
    n_assistant = cm.batch_size - n_target if cm.batch_size > 1 else 1
    target = torch.randn(n_target, channels, *cm.patch_size, device=META)
    assistant = torch.randn(n_assistant, channels, *cm.patch_size, device=META)
    segment = network_step(segmentors, cm, n_target + n_assistant)

    def run():
        images = iam(assistant, target)                                       # generator update
        backward_of_sum([*images.values(), *discriminators(images["aligned"], images["target_as_assistant"])])
        aligned = images["aligned"].detach()                                  # discriminator update
        backward_of_sum(discriminators(torch.cat([target, aligned]),
                                       torch.cat([assistant, images["target_as_assistant"].detach()])))
        segment()
    return run


def networks():
    """(name, trainer, plans knobs): the plain U-Net, MKD, and CMSAD and MAML in each candidate execution (the same
    weights and values: branch convolutions grouped or split, instance norms stock or through group norm)."""
    variants = [("nnUNetTrainer", nnUNetTrainerMultiModalBase, {})]
    for trainer, section in ((nnUNetTrainerCMSAD, "cmsad"), (nnUNetTrainerMAML, "maml")):
        for convolutions in ("grouped", "split"):
            for norm in ("stock", "group_norm"):
                variants.append((f"{trainer.__name__} ({convolutions}, {norm})", trainer,
                                 {section: {"branch_convolutions": convolutions, "instance_norm": norm}}))
    return variants + [("nnUNetTrainerMKD", nnUNetTrainerMKD, {})]


def measure(source: dict, configuration: str, classes: int, ceilings: Ceilings) -> dict:
    results = {}
    for name, trainer, knobs in networks():
        plans = plans_with(source, configuration, knobs)
        net, cm = build(trainer, plans, configuration, classes, True)
        step = mkd_step(plans, configuration, classes) if trainer is nnUNetTrainerMKD else \
            network_step(net, cm, cm.batch_size)
        results[name] = {"step": count(step, ceilings)}
        tile_net, _ = build(trainer, plans, configuration, classes, False)
        results[name]["tile"] = count(network_tile(tile_net, cm), ceilings)
    return results


def table(results: dict) -> str:
    base = results["nnUNetTrainer"]
    rows = [["network", "pass", "GFLOP", "x", "GB moved", "x", "aten ops", "x", "floor ms", "x"]]
    for name, passes in results.items():
        for kind, w in passes.items():
            b = base[kind]
            rows.append([name, kind, f"{w['gflop']:.1f}", f"{w['gflop'] / b['gflop']:.2f}", f"{w['gbyte']:.2f}",
                         f"{w['gbyte'] / b['gbyte']:.2f}", str(w["operations"]),
                         f"{w['operations'] / b['operations']:.2f}", f"{w['floor_ms']:.2f}",
                         f"{w['floor_ms'] / b['floor_ms']:.2f}"])
    return text_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("plans")
    parser.add_argument("configuration")
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--tflops", type=float, default=790.0, help="arithmetic ceiling, TFLOP/s")
    parser.add_argument("--tbytes", type=float, default=4.3, help="memory bandwidth, TB/s")
    parser.add_argument("--json")
    a = parser.parse_args()
    with open(a.plans) as f:
        source = json.load(f)
    ceilings = Ceilings(a.tflops * 1e12, a.tbytes * 1e12)
    results = measure(source, a.configuration, a.classes, ceilings)
    cm = PlansManager(source).get_configuration(a.configuration)
    print(f"{a.configuration}: patch {cm.patch_size}, batch {cm.batch_size}, features "
          f"{cm.network_arch_init_kwargs['features_per_stage']}; ceilings {a.tflops} TFLOP/s, {a.tbytes} TB/s")
    print(table(results))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"plans": a.plans, "configuration": a.configuration, "patch_size": list(cm.patch_size),
                       "batch_size": cm.batch_size, "tflops": a.tflops, "tbytes": a.tbytes, "networks": results},
                      f, indent=2)


if __name__ == "__main__":
    main()
