"""MKD's network forward at inference against the plans' plain U-Net (CPU, 2 threads, one patch).

    python benchmarks/mkd/inference_forward.py PLANS_JSON     # e.g. the pair's nnUNetPlans_mmtiny_mkd_... .json

This folder is on nnUNet_extTrainer for the pair's trainers, and nnU-Net imports every module in it: nothing runs
at import.
"""
import json
import sys
import time

import torch
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_multimodal.training.base import nnUNetTrainerMultiModalBase
from nnunet_multimodal.training.mkd import nnUNetTrainerMKD


def main(plans_file: str) -> None:
    configuration = PlansManager(json.load(open(plans_file))).get_configuration("2d")
    torch.set_num_threads(2)
    networks = {name: trainer.build_multimodal_network(configuration, 1, 0, 4, False, trainer.default_knobs or {})
                .eval() for name, trainer in (("plain", nnUNetTrainerMultiModalBase), ("mkd", nnUNetTrainerMKD))}
    patch = torch.randn(1, 1, *configuration.patch_size)
    with torch.inference_mode():
        for round_index in range(3):
            for name, network in networks.items():
                for _ in range(5):
                    network(patch)
                start = time.perf_counter()
                for _ in range(100):
                    network(patch)
                print(f"round {round_index}: {name} {(time.perf_counter() - start) * 10:.2f} ms per patch")


if __name__ == "__main__":
    main(sys.argv[1])
