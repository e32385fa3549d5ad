"""``nnunet-mm demo``: the whole pipeline on a synthetic phantom, method against plain nnU-Net.

Writes a phantom dataset, runs nnU-Net's own console scripts (plan_and_preprocess, train, predict) for a
method trainer and a plain nnUNetTrainer on the same tiny plans, schedule and fold, evaluates the held-out
cases with `nnunet-mm evaluate`'s code and prints a comparison. The data is synthetic: the numbers show that the
pipeline works, not how the methods compare on real images.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from nnunet_multimodal.environment import NNUNET_FOLDERS, datasets_with_id, env_with_plugin
from nnunet_multimodal.text_table import text_table

DEMO_NAME = "SyntheticPhantom"
DEMO_CONFIGURATION = "2d"
DEMO_PLANS = "nnUNetPlans_mmtiny"
DEMO_FOLD = "0"
DEMO_TRAINERS = {
    "CMSAD": {"full": "nnUNetTrainerCMSAD_20x25it_NoMirroring", "quick": "nnUNetTrainerCMSAD_2x5it_NoMirroring"},
    "nnU-Net baseline": {"full": "nnUNetTrainerMMPlain_20x25it_NoMirroring",
                         "quick": "nnUNetTrainerMMPlain_2x5it_NoMirroring"},
}
PROGRESS_MARKERS = ("Epoch ", "Pseudo dice", "Mean Validation Dice", "done with", "Training done")


def _say(message: str) -> None:
    print(message, flush=True)


def run_console_script(step: str, command: list[str], env: dict, log_file: Path) -> float:
    """Run a console script, echo its progress lines, keep its full output in ``log_file``."""
    _say(f"  $ {' '.join(command)}")
    start = time.perf_counter()
    with open(log_file, "w") as log:
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if any(marker in line for marker in PROGRESS_MARKERS):
                _say(f"    {line.rstrip()}")
        returncode = process.wait()
    elapsed = time.perf_counter() - start
    if returncode != 0:
        tail = "".join(log_file.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{step} failed (exit {returncode}); full log: {log_file}\n{tail}")
    return elapsed


def demo_environment(root: Path) -> dict:
    env = env_with_plugin()
    for name in NNUNET_FOLDERS:
        if not env.get(name):
            env[name] = str(root / name)
    # CPU settings: no compile, single-process data augmentation and export, predictable runtime
    env.update(nnUNet_compile="f", nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0")
    return env


def save_case_figure(image_files: list[Path], modality_names: list[str], label_file: Path, prediction_file: Path,
                     title: str, output: Path) -> None:
    import numpy as np
    import SimpleITK as sitk

    from nnunet_multimodal.figures import new_figure, save_figure

    def middle_slice(path: Path):
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        return array[array.shape[0] // 2]

    panels = [(middle_slice(f), name, "gray") for f, name in zip(image_files, modality_names)]
    panels += [(middle_slice(label_file), "ground truth", "viridis"),
               (middle_slice(prediction_file), "prediction", "viridis")]
    label_max = max(float(np.max(panels[-2][0])), 1.0)
    fig, axes = new_figure(1, len(panels), figsize=(3 * len(panels), 3.4))
    for ax, (array, name, cmap) in zip(axes, panels):
        kwargs = {"vmin": 0, "vmax": label_max, "interpolation": "nearest"} if cmap == "viridis" else {}
        ax.imshow(array, cmap=cmap, **kwargs)
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(f"{title} (SYNTHETIC phantom)")
    save_figure(fig, output, dpi=80)


def format_table(rows: list[dict], label_names: list[str]) -> str:
    header = ["model", "trainer"] + [f"Dice {n}" for n in label_names] + ["mean Dice"] \
        + [f"HD95 {n}" for n in label_names] + ["train s", "predict s"]
    lines = [header]
    for row in rows:
        lines.append([row["model"], row["trainer"]] + [f"{row['dice'][n]:.3f}" for n in label_names]
                     + [f"{row['mean_dice']:.3f}"] + [f"{row['hd95_mm'][n]:.1f}" for n in label_names]
                     + [f"{row['train_seconds']:.0f}", f"{row['predict_seconds']:.0f}"])
    return text_table(lines)


def run_demo(root: str | os.PathLike = "nnunet_mm_demo", quick: bool = False, dataset_id: int = 990) -> int:
    from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
    from nnunet_multimodal.evaluation.evaluate import evaluate_folders, write_outputs

    started = time.perf_counter()
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = demo_environment(root)
    existing = datasets_with_id(dataset_id, [env[name] for name in NNUNET_FOLDERS])
    if existing:
        _say(f"nnunet-mm demo: {existing[0]} already exists; refusing to overwrite it. Remove it, or pass "
             f"--dataset-id with a free id (or --root with a fresh folder).")
        return 2
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    schedule = "quick" if quick else "full"
    bin_dir = Path(sys.executable).parent
    _say(f"nnunet-mm demo ({schedule}): working in {root}; nnU-Net folders: "
         + ", ".join(f"{n}={env[n]}" for n in NNUNET_FOLDERS))

    _say("[1/5] writing a SYNTHETIC 3-modality phantom dataset (12 training, 4 held-out cases)")
    spec = PhantomSpec(shape=(96, 96), modalities=("T1", "T2", "FLAIR"), label_style="labels", seed=0)
    raw = write_dataset(env["nnUNet_raw"], dataset_id, DEMO_NAME, spec, num_training=12, num_test=4)

    _say("[2/5] nnUNetv2_plan_and_preprocess, then nnunet-mm plans --tiny")
    plan_env = dict(env, nnUNet_n_proc_DA="1")  # nnU-Net's planner calls torch.set_num_threads with it
    # -npfp 1: nnU-Net's default of 8 fingerprint workers, each a new process importing torch, takes longer than
    # fingerprinting these 12 small cases (about 40 s more on 2 cores)
    run_console_script("planning", [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c",
                                    DEMO_CONFIGURATION, "-np", "1", "-npfp", "1", "--verify_dataset_integrity"],
                       plan_env, logs / "plan.log")
    run_console_script("tiny plans", [str(bin_dir / "nnunet-mm"), "plans", "-d", str(dataset_id), "-c",
                                      DEMO_CONFIGURATION, "--tiny", "-o", DEMO_PLANS], env, logs / "plans.log")

    rows = []
    label_names = [n for n in spec.labels if n != "background"]
    for step, (model, trainers) in enumerate(DEMO_TRAINERS.items()):
        trainer = trainers[schedule]
        _say(f"[{3 + step}/5] {model}: nnUNetv2_train with {trainer}, then nnUNetv2_predict on the held-out cases")
        train_seconds = run_console_script(f"training {trainer}", [
            str(bin_dir / "nnUNetv2_train"), str(dataset_id), DEMO_CONFIGURATION, DEMO_FOLD, "-tr", trainer, "-p",
            DEMO_PLANS, "-device", "cpu"], env, logs / f"train_{trainer}.log")
        predictions = root / "predictions" / trainer
        predict_seconds = run_console_script(f"prediction with {trainer}", [
            str(bin_dir / "nnUNetv2_predict"), "-i", str(raw / "imagesTs"), "-o", str(predictions), "-d",
            str(dataset_id), "-c", DEMO_CONFIGURATION, "-f", DEMO_FOLD, "-tr", trainer, "-p", DEMO_PLANS,
            "-device", "cpu", "-npp", "1", "-nps", "1", "--disable_progress_bar"], env, logs / f"predict_{trainer}.log")
        summary = evaluate_folders(raw / "labelsTs", predictions, [1, 2, 3], progress=False)
        write_outputs(summary, predictions)
        dice = {name: summary["mean"][str(i + 1)]["Dice"] for i, name in enumerate(label_names)}
        hd95 = {name: summary["mean"][str(i + 1)]["HD95"] for i, name in enumerate(label_names)}
        case = sorted((raw / "labelsTs").glob("*.nii.gz"))[0]
        case_id = case.name[: -len(".nii.gz")]
        figure = root / "figures" / f"{trainer}.png"
        figure.parent.mkdir(exist_ok=True)
        save_case_figure([raw / "imagesTs" / f"{case_id}_{c:04d}.nii.gz" for c in range(len(spec.modalities))],
                         list(spec.modalities), case, predictions / case.name, f"{model}: {trainer}", figure)
        rows.append({"model": model, "trainer": trainer, "dice": dice, "hd95_mm": hd95,
                     "mean_dice": summary["foreground_mean"]["Dice"], "train_seconds": train_seconds,
                     "predict_seconds": predict_seconds, "figure": str(figure)})

    _say("[5/5] results on the 4 held-out SYNTHETIC cases (nnunet-mm evaluate; HD95 in mm; same plans, fold and "
         "iterations)")
    _say(format_table(rows, label_names))
    for row in rows:
        _say(f"figure ({row['model']}): {row['figure']}")
    results_file = root / "results.json"
    results_file.write_text(json.dumps({"synthetic": True, "schedule": schedule, "rows": rows}, indent=2))
    _say(f"results: {results_file}\ntotal wall time: {time.perf_counter() - started:.0f} s")
    return 0
