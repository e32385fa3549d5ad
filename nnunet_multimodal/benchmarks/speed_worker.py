"""One speed measurement of one trainer, in its own process; prints one JSON line."""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path

import torch

from nnunet_multimodal.benchmarks.kernel_profile import profile_passes, write_profile
from nnunet_multimodal.benchmarks.work import WorkCounter

PROFILED_PASSES = 3


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def predraw_extra_loaders(trainer, count: int) -> dict:
    """Data loading stays out of the timed steps for every loader a trainer draws from inside ``train_step``
    (MKD's assistant loader), as it does for nnU-Net's own: each ``dataloader_*`` attribute besides the training
    and validation loaders is replaced by an iterator over ``count`` batches drawn now. Returns the originals,
    to be put back before ``on_train_end`` (which shuts them down)."""
    originals = {name: loader for name, loader in vars(trainer).items()
                 if name.startswith("dataloader_") and name not in ("dataloader_train", "dataloader_val")
                 and loader is not None}
    for name, loader in originals.items():
        setattr(trainer, name, iter([next(loader) for _ in range(count)]))
    return originals


def forward_gflop_per_patch(network: torch.nn.Module, num_input_channels: int, patch_size, device) -> float:
    """GFLOP of one forward pass of ``network``, as the caller has set it up (for prediction: eval mode, no deep
    supervision), on one patch of batch 1, as sliding-window prediction runs it per tile: convolutions, matrix
    products and attention (``benchmarks/work.py``; not normalisations or pointwise operations). The work behind a
    time ratio, free of the machine's noise."""
    network = getattr(network, "_orig_mod", network)  # count the eager module, not a torch.compile wrapper
    counter = WorkCounter()
    with torch.no_grad(), counter:
        network(torch.zeros(1, num_input_channels, *patch_size, device=device))
    return counter.work.flops / 1e9


def profile_tile(network: torch.nn.Module, num_input_channels: int, patch_size, device: torch.device,
                 folder: Path, name: str) -> dict:
    """One sliding-window tile as nnU-Net's predictor runs it (eval, no gradients, autocast on CUDA), profiled;
    mirroring runs this up to 8 times per tile in 3D."""
    tile = torch.randn(1, num_input_channels, *patch_size, device=device)

    def run():
        with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
            network(tile)

    run()
    return write_profile(profile_passes(run, PROFILED_PASSES, device), folder, f"{name}_tile", PROFILED_PASSES, device)


def measure(dataset: str, configuration: str, plans: str, trainer_name: str, device: str, steps: int,
            warmup: int, cases: int, profile_folder: Path | None = None) -> dict:
    """Median step and inference times, peak memory, forward FLOPs; with ``profile_folder``, profiler tables of
    a few more steps and tiles there (after the timed ones, so the profiler's overhead stays out of the times)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.run.run_training import get_trainer_from_args

    torch_device = torch.device(device)
    trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, plans, device=torch_device)
    trainer.on_train_start()
    # measure with every extra loss term at its final weight (warm-ups would otherwise switch them off)
    trainer.current_epoch = trainer.num_epochs - 1
    sync = torch.cuda.synchronize if torch_device.type == "cuda" else (lambda: None)
    trainer.on_train_epoch_start()
    profiled = PROFILED_PASSES if profile_folder else 0
    batches = [next(trainer.dataloader_train) for _ in range(warmup + steps + profiled)]
    originals = predraw_extra_loaders(trainer, warmup + steps + profiled)
    for batch in batches[:warmup]:
        trainer.train_step(batch)
    if torch_device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = _rss_now_mb()
    times = []
    for batch in batches[warmup:warmup + steps]:
        sync()
        start = time.perf_counter()
        trainer.train_step(batch)
        sync()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch_device.type == "cuda" else _peak_rss_mb()
    profiles = {}
    if profile_folder:
        remaining = iter(batches[warmup + steps:])
        profiles["step"] = write_profile(profile_passes(lambda: trainer.train_step(next(remaining)), profiled,
                                                        torch_device),
                                         profile_folder, f"{trainer_name}_step", profiled, torch_device)

    trainer.set_deep_supervision_enabled(False)
    trainer.network.eval()
    gflop = forward_gflop_per_patch(trainer.network, trainer.num_input_channels,
                                    trainer.configuration_manager.patch_size, torch_device)
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=torch_device.type == "cuda", device=torch_device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(trainer.network, trainer.plans_manager, trainer.configuration_manager, None,
                                    trainer.dataset_json, trainer.__class__.__name__,
                                    trainer.inference_allowed_mirroring_axes)
    _, val_keys = trainer.do_split()
    dataset_val = trainer.dataset_class(trainer.preprocessed_dataset_folder, val_keys[:cases])
    images = [torch.from_numpy(dataset_val.load_case(key)[0][:]) for key in dataset_val.identifiers]
    # untimed: the first call pays for cuDNN autotuning, allocator growth and (with nnUNet_compile) compilation
    predictor.predict_sliding_window_return_logits(images[0])
    inference_times = []
    for data in images:
        sync()
        start = time.perf_counter()
        predictor.predict_sliding_window_return_logits(data)
        sync()
        inference_times.append(time.perf_counter() - start)
    if profile_folder:
        profiles["tile"] = profile_tile(trainer.network, trainer.num_input_channels,
                                        trainer.configuration_manager.patch_size, torch_device, profile_folder,
                                        trainer_name)
    for name, loader in originals.items():
        setattr(trainer, name, loader)
    trainer.on_train_end()
    return {"trainer": trainer_name, "step_seconds": statistics.median(times),
            "inference_seconds_per_case": statistics.median(inference_times), "peak_memory_mb": peak,
            "forward_gflop_per_patch": gflop,
            "memory_kind": "cuda_max_allocated" if torch_device.type == "cuda" else "process_peak_rss",
            "rss_before_steps_mb": rss_before, "steps": len(times), "cases": len(inference_times),
            **({"profile": profiles} if profiles else {})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-d", required=True)
    parser.add_argument("-c", required=True)
    parser.add_argument("-p", required=True)
    parser.add_argument("-tr", required=True)
    parser.add_argument("-device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--profile", type=Path, help="write profiler tables of steps and tiles to this folder")
    a = parser.parse_args()
    result = measure(a.d, a.c, a.p, a.tr, a.device, a.steps, a.warmup, a.cases, a.profile)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
