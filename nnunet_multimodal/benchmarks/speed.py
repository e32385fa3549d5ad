"""``nnunet-mm benchmark speed``: training-step time, sliding-window inference time, peak memory and the forward
FLOPs per patch of trainers, as ratios to plain ``nnUNetTrainer`` measured in the same run.

Each measurement runs in its own process (peak memory is per process), builds the trainer as
``nnUNetv2_train`` does and takes real batches from nnU-Net's data loader; trainers alternate order
between rounds so that drifting machine load does not favour one of them. The ratios are of medians over rounds;
beside each time ratio the report gives the lowest and highest ratio of a single round (each trainer against the
baseline measured in the same round), so that a reader sees how far one round can stray on a noisy machine.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.benchmarks.plans_check import check_single_stage_configuration
from nnunet_multimodal.environment import dataset_folder, env_with_plugin
from nnunet_multimodal.text_table import text_table

BASELINE = "nnUNetTrainer"
METRICS = ("step_seconds", "inference_seconds_per_case", "peak_memory_mb", "forward_gflop_per_patch")
TIMES = ("step_seconds", "inference_seconds_per_case")
SCHEMA_VERSION = 1


def round_orders(trainers: list[str], rounds: int) -> list[list[str]]:
    """Baseline first, then the others; every second round reversed."""
    order = [BASELINE] + [t for t in trainers if t != BASELINE]
    return [order if r % 2 == 0 else order[::-1] for r in range(rounds)]


def _ratio(value: float, base: float) -> float:
    return value / base if base > 0 else float("nan")


def round_ratio_range(measurements: list[dict], trainer: str, metric: str) -> list[float]:
    """[lowest, highest] over rounds of ``trainer``'s ``metric`` divided by the baseline's in the same round."""
    baseline = {m["round"]: m[metric] for m in measurements if m["trainer"] == BASELINE}
    ratios = [_ratio(m[metric], baseline[m["round"]]) for m in measurements if m["trainer"] == trainer]
    return [min(ratios), max(ratios)]


def summarize(measurements: list[dict]) -> dict:
    """Median of each metric per trainer over rounds, its ratio to the baseline's median, and the range of the
    per-round ratios of the times."""
    by_trainer: dict[str, dict[str, list[float]]] = {}
    for m in measurements:
        per_metric = by_trainer.setdefault(m["trainer"], {k: [] for k in METRICS})
        for k in METRICS:
            per_metric[k].append(m[k])
    if BASELINE not in by_trainer:
        raise ValueError(f"no {BASELINE} measurement to compare with")
    medians = {t: {k: statistics.median(v) for k, v in metrics.items()} for t, metrics in by_trainer.items()}
    base = medians[BASELINE]
    return {
        t: {**{k: medians[t][k] for k in METRICS},
            **{f"{k}_ratio": _ratio(medians[t][k], base[k]) for k in METRICS},
            **{f"{k}_ratio_range": round_ratio_range(measurements, t, k) for k in TIMES},
            "rounds": len(by_trainer[t]["step_seconds"])}
        for t in medians
    }


def _ratio_cell(summary: dict, metric: str) -> str:
    low, high = summary[f"{metric}_ratio_range"]
    return f"{summary[f'{metric}_ratio']:.2f} ({low:.2f}-{high:.2f})"


def format_summary(summary: dict) -> str:
    header = ["trainer", "step s", "x (rounds)", "inference s/case", "x (rounds)", "peak MB", "x", "GFLOP/patch",
              "x"]
    rows = [header]
    for trainer, s in summary.items():
        rows.append([trainer, f"{s['step_seconds']:.3f}", _ratio_cell(s, "step_seconds"),
                     f"{s['inference_seconds_per_case']:.3f}", _ratio_cell(s, "inference_seconds_per_case"),
                     f"{s['peak_memory_mb']:.0f}", f"{s['peak_memory_mb_ratio']:.2f}",
                     f"{s['forward_gflop_per_patch']:.3g}", f"{s['forward_gflop_per_patch_ratio']:.2f}"])
    return text_table(rows)


def _measure_in_subprocess(trainer: str, args, env: dict, profile: bool) -> dict:
    command = [sys.executable, "-m", "nnunet_multimodal.benchmarks.speed_worker", "-d", str(args.d), "-c", args.c,
               "-p", args.p, "-tr", trainer, "-device", args.device, "--steps", str(args.steps), "--warmup",
               str(args.warmup), "--cases", str(args.cases)]
    if profile:
        command += ["--profile", str(Path(args.profile).resolve())]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"measuring {trainer} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_speed_benchmark(args) -> int:
    # an unknown id, plans or configuration, named before any worker starts
    check_single_stage_configuration(dataset_folder(args.d, "nnUNet_preprocessed"), args.p, args.c, "speed")
    env = env_with_plugin()
    env.setdefault("nnUNet_compile", "f")
    env.setdefault("nnUNet_n_proc_DA", "0")
    report = {"schema_version": SCHEMA_VERSION, "baseline": BASELINE, "dataset": str(args.d),
              "configuration": args.c, "plans": args.p, "device": args.device, "steps": args.steps,
              "warmup": args.warmup, "rounds": args.rounds, "compile": env["nnUNet_compile"],
              "host_cpus": os.cpu_count(), "complete": False, "measurements": []}
    with tempfile.TemporaryDirectory(prefix="nnunet_mm_speed_") as scratch:
        # trainers write logs into nnUNet_results on construction; keep the user's results folder clean
        env["nnUNet_results"] = scratch
        for round_index, order in enumerate(round_orders(args.tr, args.rounds)):
            for trainer in order:
                print(f"round {round_index + 1}/{args.rounds}: {trainer}", file=sys.stderr, flush=True)
                # profiled in the first round only: one table per trainer
                profile = bool(args.profile) and round_index == 0
                report["measurements"].append({**_measure_in_subprocess(trainer, args, env, profile),
                                               "round": round_index})
                if args.json:  # an interrupted run (time limit, a later trainer's crash) keeps what it measured
                    write_text_atomic(args.json, json.dumps(report, indent=2))
    report["summary"] = summarize(report["measurements"])
    report["complete"] = True
    print(format_summary(report["summary"]))
    if args.json:
        write_text_atomic(args.json, json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0
