"""Gradient norm of each MKD segmentor over the first training steps on the phantom pair (synthetic), to see whether
MKD's clipping of one norm over both segmentors at 12 (nnU-Net's value for its one network) ever acts.

After a step nnU-Net leaves the clipped gradients in ``.grad``; clipping scales every gradient by the same factor
min(1, 12 / joint norm), so a joint norm below 12 means nothing was clipped and the norms are the raw ones.
Run after sourcing prepare_pair.sh (it sets the nnU-Net folders, TID, PL and CONF); nothing is written but the
trainer's folder under a scratch nnUNet_results. Usage:

    [PAIR_DIM=3d] . benchmarks/mkd/prepare_pair.sh WORKDIR
    nnUNet_results=SCRATCH MKD_PAIR_SEED=0 python benchmarks/mkd/gradient_norms.py $TID $PL $CONF Pair_MKDnoKD STEPS
"""

import argparse
import os
import sys
from pathlib import Path

import torch
from batchgenerators.utilities.file_and_folder_operations import load_json
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

sys.path.insert(0, str(Path(__file__).parent))
import phantom_pair_trainers  # noqa: E402

CLIP_NORM = 12.0


def gradient_norm(module: torch.nn.Module) -> float:
    grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
    return float(torch.cat(grads).norm()) if grads else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset_id", type=int)
    parser.add_argument("plans")
    parser.add_argument("configuration")
    parser.add_argument("trainer", help="a class of benchmarks/mkd/phantom_pair_trainers.py")
    parser.add_argument("steps", type=int)
    args = parser.parse_args()
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / maybe_convert_to_dataset_name(args.dataset_id)
    plans = load_json(preprocessed / f"{args.plans}.json")
    plans["continue_training"] = False  # what nnUNetv2_train adds before building a trainer
    trainer = getattr(phantom_pair_trainers, args.trainer)(plans, args.configuration, 0,
                                                            load_json(preprocessed / "dataset.json"),
                                                            device=torch.device("cpu"))
    trainer.on_train_start()
    trainer.on_epoch_start()
    print("step | target segmentor | assistant segmentor | joint | clipped")
    for step in range(args.steps):
        trainer.train_step(next(trainer.dataloader_train))
        target, assistant = gradient_norm(trainer.network.target), gradient_norm(trainer.network.assistant)
        joint = (target ** 2 + assistant ** 2) ** 0.5
        print(f"{step} | {target:.3f} | {assistant:.3f} | {joint:.3f} | {'yes' if joint >= CLIP_NORM - 1e-3 else 'no'}",
              flush=True)


if __name__ == "__main__":
    main()
