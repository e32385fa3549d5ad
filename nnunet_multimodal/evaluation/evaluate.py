"""Evaluate a folder of predictions against references: JSON (nnU-Net's summary.json layout plus our
metrics), a per-case CSV and box plots, under names of our own (nnU-Net's find_best_configuration reads its
summary.json from the folders users evaluate)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key, region_or_label_to_mask

from nnunet_multimodal.atomic_files import atomic_path, write_text_atomic
from nnunet_multimodal.data.grid import same_spacing
from nnunet_multimodal.data.verify import (
    FRACTIONAL_LABEL_FIX,
    count_non_finite,
    declared_label_values,
    label_values,
    read_image,
)
from nnunet_multimodal.evaluation import isles22_scorer, picai_scorer
from nnunet_multimodal.evaluation.brats_scorer import (
    BRATS_TASKS,
    DEFAULT_BRATS_TASK,
    brats_region_metrics,
)
from nnunet_multimodal.evaluation.metrics import CONVENTIONS, LesionSettings, mask_metrics

OUTPUT_NAMES = ("summary_nnunet_mm.json", "per_case_nnunet_mm.csv", "boxplots_nnunet_mm.png")
WRITTEN_BY = "nnunet-mm evaluate"   # the JSON's mark: files of our names without it are someone else's
# nnunet: nnU-Net's Dice and IoU with our HD95 and lesion-wise metrics; the others: the values of that challenge's
# official evaluation code (BraTS 2023+, ISLES'22, PI-CAI on binary masks)
METRIC_SETS = ("nnunet", "brats", "isles22", "picai")
# what the command prints and the box plots show, when present
HEADLINE_METRICS = ("Dice", "HD95", "lesion_dice", "lesion_hd95", "LesionWise_Score_Dice", "LesionWise_Score_HD95",
                    "Legacy_Dice", "Legacy_HD95", "absolute_volume_difference_ml", "absolute_lesion_count_difference",
                    "lesion_F1")


def labels_or_regions_from_dataset_json(dataset_json: dict) -> list[int | tuple[int, ...]]:
    """Foreground labels, or regions for region datasets such as BraTS, exactly as nnU-Net's LabelManager gives
    them: a region of several labels is a tuple, a region given as one label stays that label, so that each gets
    the key nnU-Net's summary.json gives it ("(2, 3)", "3")."""
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    manager = LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order"))
    if manager.has_regions:
        return [tuple(r) if isinstance(r, (list, tuple)) else r for r in manager.foreground_regions]
    return list(manager.foreground_labels)


@dataclass(frozen=True)
class DeclaredLabels:
    """The label values a dataset.json declares, and that file: values beyond them in a segmentation would
    belong to no label or region and be scored as background."""
    values: frozenset[int]
    source: str


def read_dataset_json(path: str | Path) -> dict:
    """A dataset.json whose labels nnU-Net's LabelManager accepts; ValueError naming the file otherwise (nnU-Net
    would fail later with a traceback that names no file)."""
    path = Path(path)
    try:
        dataset_json = json.loads(path.read_text())
        labels_or_regions_from_dataset_json(dataset_json)
        declared_label_values(dataset_json["labels"])
    except (ValueError, KeyError, TypeError, AttributeError, AssertionError, RuntimeError) as e:
        raise ValueError(f"{path} is no usable dataset.json ({type(e).__name__}: {e}); give it 'labels' as nnU-Net "
                         f"defines them (background 0), or pass the dataset's own dataset.json") from e
    return dataset_json


def declared_labels(dataset_json: dict, source: str | Path) -> DeclaredLabels:
    return DeclaredLabels(frozenset(declared_label_values(dataset_json["labels"])), str(source))


SEGMENTATION_FIX = "a segmentation holds label values only: re-export it as an integer image"


def read_segmentation(path: Path) -> tuple[np.ndarray, tuple[float, ...]]:
    """Labels and spacing (z, y, x) through the one image reader, which refuses files it cannot read whole. A
    float file must hold label values only: NaN/Inf (SimpleITK's NIfTI reader makes them 0, background) and
    fractional values (matching no label) would be scored as background, so they are refused too."""
    image = read_image(path)
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        non_finite = count_non_finite(path, image)
        if non_finite:
            raise ValueError(f"{path} has {non_finite} NaN/Inf voxels; {SEGMENTATION_FIX}")
        _, fractional = label_values(image)
        if fractional:
            raise ValueError(f"{path} has non-integer label values {fractional}; {FRACTIONAL_LABEL_FIX}")
    return array, tuple(reversed(image.GetSpacing()))


def check_declared(path: Path, segmentation: np.ndarray, declared: DeclaredLabels) -> None:
    undeclared = sorted({int(v) for v in np.unique(segmentation)} - declared.values)
    if undeclared:
        raise ValueError(f"{path} holds label values {undeclared} that {declared.source} does not declare (its "
                         f"labels: {sorted(declared.values)}); they would be scored as background. Pass the "
                         f"dataset.json of these segmentations, or declare the values in its 'labels'")


def challenge_metrics(metrics: str, brats_task: str, reference: np.ndarray, prediction: np.ndarray, spacing) -> dict:
    """One label or region of one case, scored as the official evaluation code of ``metrics``' challenge does."""
    if metrics == "brats":
        return brats_region_metrics(reference, prediction, spacing, brats_task)
    if metrics == "isles22":
        return isles22_scorer.case_metrics(reference, prediction, spacing)
    values = picai_scorer.case_metrics(reference, prediction, spacing)
    del values["lesion_results"]  # one entry per lesion; the dataset's detection summary is made from the counts
    return values


def evaluate_case(reference_file: Path, prediction_file: Path, labels_or_regions: list, convention: str,
                  lesions: LesionSettings | None, ignore_label: int | None = None,
                  declared: DeclaredLabels | None = None, metrics: str = "nnunet",
                  brats_task: str = DEFAULT_BRATS_TASK) -> dict:
    """Metrics per label or region of one case: ours (``mask_metrics``), or a challenge's (``challenge_metrics``;
    ``brats_task`` gives the BraTS scorer's lesion parameters)."""
    reference, spacing = read_segmentation(reference_file)
    prediction, prediction_spacing = read_segmentation(prediction_file)
    if declared is not None:
        check_declared(reference_file, reference, declared)
        check_declared(prediction_file, prediction, declared)
    if reference.shape != prediction.shape or not same_spacing(spacing, prediction_spacing):
        raise ValueError(f"{prediction_file} (shape {prediction.shape}, spacing {prediction_spacing}) does not "
                         f"match its reference {reference_file} (shape {reference.shape}, spacing {spacing}); "
                         f"predict on the reference's images or resample the prediction onto them")
    if metrics == "brats" and reference.ndim != 3:
        raise ValueError(f"{reference_file} is a {reference.ndim}D image; the BraTS scorer scores 3D volumes: "
                         f"evaluate it with --metrics nnunet")
    if ignore_label is not None:
        keep = reference != ignore_label
        reference, prediction = reference * keep, prediction * keep

    def score(reference_mask, prediction_mask):
        if metrics != "nnunet":
            return challenge_metrics(metrics, brats_task, reference_mask, prediction_mask, spacing)
        return mask_metrics(reference_mask, prediction_mask, spacing, convention, lesions)

    metrics = {label_or_region_to_key(lr): score(region_or_label_to_mask(reference, lr),
                                                 region_or_label_to_mask(prediction, lr))
               for lr in labels_or_regions}
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


def case_files(folder: Path, file_ending: str) -> list[Path]:
    # our own outputs (boxplots_nnunet_mm.png in a PNG dataset's folders, hidden partial files) are no cases
    return sorted(p for p in folder.glob(f"*{file_ending}")
                  if not p.name.startswith(".") and p.name not in OUTPUT_NAMES)


def evaluate_folders(reference_folder: str | Path, prediction_folder: str | Path, labels_or_regions: list,
                     file_ending: str = ".nii.gz", convention: str = "nnunet", lesions: LesionSettings | None = None,
                     ignore_label: int | None = None, num_processes: int = 1, progress: bool = True,
                     declared: DeclaredLabels | None = None, metrics: str = "nnunet",
                     brats_task: str = DEFAULT_BRATS_TASK) -> dict:
    """Every prediction in ``prediction_folder`` against the reference of the same name. References without a
    prediction are not scored (as in nnU-Net, which evaluates the predictions it finds): the summary lists them
    under ``references_without_prediction``. With ``declared``, segmentations holding other values are refused.
    ``metrics="brats"``: the BraTS 2023+ scorer's values, with ``brats_task``'s lesion parameters and the
    challenge's empty-mask values; ``"isles22"``, ``"picai"``: those challenges' values (``convention`` and
    ``lesions`` belong to ``metrics="nnunet"``). PI-CAI's summary adds its dataset-level lesion detection."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if metrics not in METRIC_SETS:
        raise ValueError(f"metrics must be one of {METRIC_SETS}, got {metrics!r}")
    if brats_task not in BRATS_TASKS:
        raise ValueError(f"BraTS task must be one of {sorted(BRATS_TASKS)}, got {brats_task!r}")
    if metrics != "nnunet" and lesions is not None:
        raise ValueError(f"lesion settings belong to metrics='nnunet'; metrics={metrics!r} follows its challenge's "
                         f"lesion definition")
    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    predictions = case_files(prediction_folder, file_ending)
    if not predictions:
        raise FileNotFoundError(f"no *{file_ending} predictions in {prediction_folder}")
    missing = [p.name for p in predictions if not (reference_folder / p.name).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} prediction(s) have no reference in {reference_folder}: "
                                f"{missing[:5]}; pass the folder with the matching labels")
    predicted = {p.name for p in predictions}
    unpredicted = [p.name for p in case_files(reference_folder, file_ending) if p.name not in predicted]
    jobs = [(reference_folder / p.name, p, labels_or_regions, convention, lesions, ignore_label, declared, metrics,
             brats_task) for p in predictions]
    from tqdm import tqdm

    if num_processes > 1:
        with get_context("spawn").Pool(num_processes) as pool:
            per_case = list(tqdm(pool.imap(_evaluate_star, jobs), total=len(jobs), disable=not progress))
    else:
        per_case = [evaluate_case(*job) for job in tqdm(jobs, disable=not progress)]
    summary = {**summarize(per_case, convention if metrics == "nnunet" else metrics), "metrics": metrics,
               "references_without_prediction": unpredicted}
    if metrics == "brats":
        settings = BRATS_TASKS[brats_task]
        summary["brats"] = {"task": brats_task, "lesion_dilation": settings.dilation,
                            "lesion_min_volume_mm3": settings.min_volume}
    if metrics == "picai":
        summary["picai_detection"] = {key: picai_scorer.detection_summary(c["metrics"][key] for c in per_case)
                                      for key in summary["mean"]}
    return summary


def json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def written_by_us(summary_file: Path) -> bool:
    try:
        return json.loads(summary_file.read_text()).get("written_by") == WRITTEN_BY
    except (OSError, ValueError, AttributeError):  # absent, no JSON, or JSON that is no object
        return False


def check_no_foreign_outputs(paths: dict[str, Path]) -> None:
    """Refuse to replace files we did not write. Ours: a JSON with our mark, and the CSV and PNG beside it (they
    are written after it, in the same call)."""
    if written_by_us(paths["json"]):
        return
    for path in paths.values():
        if path.exists():
            raise FileExistsError(f"{path} exists and was not written by {WRITTEN_BY}; write the outputs elsewhere "
                                  f"(-o FOLDER) or delete the file")


def write_outputs(summary: dict, output_folder: str | Path) -> dict[str, Path]:
    """summary_nnunet_mm.json (NaN written as null), per_case_nnunet_mm.csv and boxplots_nnunet_mm.png; each
    written via a temporary file, replacing only our own earlier outputs."""
    output_folder = Path(output_folder)
    output_folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: output_folder / name for kind, name in zip(("json", "csv", "png"), OUTPUT_NAMES)}
    check_no_foreign_outputs(paths)
    write_text_atomic(paths["json"], json.dumps(json_safe({**summary, "written_by": WRITTEN_BY}), indent=2,
                                                sort_keys=True))

    rows = [(Path(c["prediction_file"]).name, k, m)
            for c in summary["metric_per_case"] for k, m in c["metrics"].items()]
    metric_names = list(rows[0][2]) if rows else []
    with atomic_path(paths["csv"]) as temporary, open(temporary, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["case", "label_or_region", *metric_names])
        for case, k, metrics in rows:
            writer.writerow([case, k, *[metrics[m] for m in metric_names]])
    _box_plots(summary, paths["png"])
    return paths


def _box_plots(summary: dict, filename: Path) -> None:
    from nnunet_multimodal.figures import new_figure, save_figure

    keys = list(summary["mean"])
    shown = [m for m in HEADLINE_METRICS if keys and m in summary["mean"][keys[0]]]
    fig, axes = new_figure(1, len(shown), figsize=(4 * len(shown), 4), squeeze=False)
    for ax, metric in zip(axes[0], shown):
        data = [[c["metrics"][k][metric] for c in summary["metric_per_case"]
                 if not (isinstance(c["metrics"][k][metric], float) and math.isnan(c["metrics"][k][metric]))]
                for k in keys]
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(keys) + 1), keys, rotation=30)
        ax.set_title(metric + (" (mm)" if "hd95" in metric.lower() else ""))
    save_figure(fig, filename, dpi=80)
