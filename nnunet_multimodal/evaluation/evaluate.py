"""Evaluate a folder of predictions against references: JSON (nnU-Net's summary.json layout plus our
metrics), a per-case CSV and box plots."""

from __future__ import annotations

import csv
import json
import math
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key, region_or_label_to_mask

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.evaluation.metrics import CONVENTIONS, LesionSettings, mask_metrics

OUTPUT_NAMES = ("summary.json", "per_case.csv", "boxplots.png")
SUMMARY_METRICS = ("Dice", "IoU", "HD95", "lesion_dice", "lesion_hd95")


def labels_or_regions_from_dataset_json(dataset_json: dict) -> list[int | tuple[int, ...]]:
    """Foreground labels, or regions (tuples) for region datasets such as BraTS, as nnU-Net defines them."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    if manager.has_regions:
        return [tuple(r) if isinstance(r, (list, tuple)) else (r,) for r in manager.foreground_regions]
    return list(manager.foreground_labels)


def read_segmentation(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), tuple(reversed(image.GetSpacing()))


def evaluate_case(reference_file: Path, prediction_file: Path, labels_or_regions: list, convention: str,
                  lesions: LesionSettings | None, ignore_label: int | None = None) -> dict:
    reference, spacing = read_segmentation(reference_file)
    prediction, prediction_spacing = read_segmentation(prediction_file)
    if reference.shape != prediction.shape or not np.allclose(spacing, prediction_spacing, rtol=1e-3):
        raise ValueError(f"{prediction_file} (shape {prediction.shape}, spacing {prediction_spacing}) does not "
                         f"match its reference {reference_file} (shape {reference.shape}, spacing {spacing}); "
                         f"predict on the reference's images or resample the prediction onto them")
    if ignore_label is not None:
        keep = reference != ignore_label
        reference, prediction = reference * keep, prediction * keep
    metrics = {label_or_region_to_key(lr): mask_metrics(region_or_label_to_mask(reference, lr),
                                                        region_or_label_to_mask(prediction, lr), spacing, convention,
                                                        lesions) for lr in labels_or_regions}
    return {"reference_file": str(reference_file), "prediction_file": str(prediction_file), "metrics": metrics}


def nan_ignoring_mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(values)) if values else float("nan")


def summarize(per_case: list[dict], convention: str) -> dict:
    keys = list(per_case[0]["metrics"]) if per_case else []
    metric_names = list(per_case[0]["metrics"][keys[0]]) if keys else []
    mean = {k: {m: nan_ignoring_mean([c["metrics"][k][m] for c in per_case]) for m in metric_names} for k in keys}
    foreground_mean = {m: nan_ignoring_mean([mean[k][m] for k in keys]) for m in metric_names}
    return {"metric_per_case": per_case, "mean": mean, "foreground_mean": foreground_mean,
            "convention": convention}


def _evaluate_star(arguments):
    return evaluate_case(*arguments)


def evaluate_folders(reference_folder: str | Path, prediction_folder: str | Path, labels_or_regions: list,
                     file_ending: str = ".nii.gz", convention: str = "nnunet", lesions: LesionSettings | None = None,
                     ignore_label: int | None = None, num_processes: int = 1, progress: bool = True) -> dict:
    """Every prediction in ``prediction_folder`` against the reference of the same name."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    # our own outputs (boxplots.png in a PNG dataset's prediction folder, hidden partial files) are no cases
    predictions = sorted(p for p in prediction_folder.glob(f"*{file_ending}")
                         if not p.name.startswith(".") and p.name not in OUTPUT_NAMES)
    if not predictions:
        raise FileNotFoundError(f"no *{file_ending} predictions in {prediction_folder}")
    missing = [p.name for p in predictions if not (reference_folder / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} prediction(s) have no reference in {reference_folder}: "
                                f"{missing[:5]}; pass the folder with the matching labels")
    jobs = [(reference_folder / p.name, p, labels_or_regions, convention, lesions, ignore_label)
            for p in predictions]
    from tqdm import tqdm

    if num_processes > 1:
        with get_context("spawn").Pool(num_processes) as pool:
            per_case = list(tqdm(pool.imap(_evaluate_star, jobs), total=len(jobs), disable=not progress))
    else:
        per_case = [evaluate_case(*job) for job in tqdm(jobs, disable=not progress)]
    return summarize(per_case, convention)


def json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def write_outputs(summary: dict, output_folder: str | Path) -> dict[str, Path]:
    """summary.json (NaN written as null), per_case.csv and boxplots.png; each written via a temporary file."""
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_folder / name for kind, name in zip(("json", "csv", "png"), OUTPUT_NAMES)}
    write_text_atomic(paths["json"], json.dumps(json_safe(summary), indent=2, sort_keys=True))

    rows = [(Path(c["prediction_file"]).name, k, m)
            for c in summary["metric_per_case"] for k, m in c["metrics"].items()]
    metric_names = list(rows[0][2]) if rows else []
    tmp = paths["csv"].with_name(".per_case.csv.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "label_or_region", *metric_names])
        for case, k, metrics in rows:
            writer.writerow([case, k, *[metrics[m] for m in metric_names]])
    tmp.replace(paths["csv"])
    _box_plots(summary, paths["png"])
    return paths


def _box_plots(summary: dict, filename: Path) -> None:
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    keys = list(summary["mean"])
    shown = [m for m in ("Dice", "HD95", "lesion_dice", "lesion_hd95") if keys and m in summary["mean"][keys[0]]]
    fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 4), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        data = [[c["metrics"][k][metric] for c in summary["metric_per_case"]
                 if not (isinstance(c["metrics"][k][metric], float) and math.isnan(c["metrics"][k][metric]))]
                for k in keys]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(keys) + 1), keys, rotation=30)
        ax.set_title(metric + (" (mm)" if "hd95" in metric.lower() else ""))
    fig.tight_layout()
    fig.savefig(filename.with_name(f".{filename.name}.tmp.png"), dpi=80)
    plt.close(fig)
    filename.with_name(f".{filename.name}.tmp.png").replace(filename)
