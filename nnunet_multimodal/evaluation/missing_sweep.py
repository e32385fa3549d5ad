"""The modality-subset sweep (`nnunet-mm evaluate-missing`): every non-empty subset of a model's modalities
predicted and scored, as a table (JSON, CSV) and a heatmap."""

from __future__ import annotations

import csv
import io
import itertools
import json
import warnings
from pathlib import Path

import numpy as np

from nnunet_multimodal.atomic_files import is_temporary_of_any, write_text_atomic
from nnunet_multimodal.data.verify import group_case_files
from nnunet_multimodal.evaluation.evaluate import (
    OUTPUT_NAMES,
    evaluate_folders,
    json_safe,
    nan_ignoring_mean,
    write_outputs,
    written_by_us,
)
from nnunet_multimodal.inference.missing import MissingModalityPredictor, check_case_files
from nnunet_multimodal.inference.output_folder import LOCK, MANIFEST, files_written_earlier


def modality_subsets(modalities: list[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset, largest first."""
    return [s for k in range(len(modalities), 0, -1) for s in itertools.combinations(modalities, k)]


def fold_validation_cases(dataset_name: str, fold: int, file_ending: str, staging: Path) -> tuple[Path, Path]:
    """The validation cases of one fold, as nnU-Net split them: links to their raw images in ``staging`` (the
    input folder) and nnU-Net's own copy of their reference segmentations (``gt_segmentations``)."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_raw

    preprocessed = Path(nnUNet_preprocessed or "") / dataset_name
    splits_file = preprocessed / "splits_final.json"
    if not splits_file.is_file():
        raise FileNotFoundError(f"{splits_file} not found: nnU-Net writes it when a fold is trained; pass -i and "
                                f"-ref to evaluate on folders instead")
    try:
        splits = json.loads(splits_file.read_text())
        validation = [str(case) for case in splits[fold]["val"]] if 0 <= fold < len(splits) else None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{splits_file} is no splits_final.json of nnU-Net ({type(e).__name__}: {e}); restore the "
                         f"file the models were trained with (a new split would put training cases in validation), or "
                         f"pass -i and -ref") from e
    if validation is None:
        raise ValueError(f"fold {fold} is not in {splits_file} ({len(splits)} folds)")
    images = Path(nnUNet_raw or "") / dataset_name / "imagesTr"
    references = preprocessed / "gt_segmentations"
    staging.mkdir(parents=True, exist_ok=True)
    for case in validation:
        files = sorted(images.glob(f"{case}_[0-9][0-9][0-9][0-9]{file_ending}"))
        if not files:
            raise FileNotFoundError(f"no raw images of validation case {case} in {images}: the sweep predicts from "
                                    f"the raw images; set nnUNet_raw, or pass -i and -ref")
        if not (references / f"{case}{file_ending}").is_file():
            raise FileNotFoundError(f"no reference {case}{file_ending} in {references} (nnU-Net's copy of the "
                                    f"training labels); rerun nnUNetv2_plan_and_preprocess or pass -i and -ref")
        for file in files:
            (staging / file.name).symlink_to(file.resolve())
    return staging, references


def remove_earlier_sweep(folder: Path) -> None:
    """Remove the files an earlier sweep wrote into one subset's folder: its predictions (listed in the
    prediction manifest) and their evaluation outputs. A file of anyone else there is refused, not deleted."""
    if not folder.is_dir():
        return
    ours = {MANIFEST, *files_written_earlier(folder)}
    if written_by_us(folder / OUTPUT_NAMES[0]):
        ours.update(OUTPUT_NAMES)
    # the prediction lock is left to the prediction run (taken over if its process is gone, refused while it runs)
    files = {path.relative_to(folder).as_posix() for path in folder.rglob("*") if not path.is_dir()} - {LOCK}
    leftovers = {name for name in files if is_temporary_of_any(name, ours)}  # of a sweep killed mid-write
    foreign = sorted(files - ours - leftovers)
    if foreign:
        raise FileExistsError(f"{folder} holds files no earlier sweep wrote ({', '.join(foreign[:5])}); choose "
                              f"another output folder (-o) or remove them")
    for name in files:
        (folder / name).unlink()


def check_every_channel_present(predictor: MissingModalityPredictor, input_folder: Path) -> None:
    """The sweep leaves out each modality itself, so a case lacking a channel file would fail midway (at the
    first subset needing only that channel): every case is checked, files and contents, before any prediction."""
    for case, files in sorted(group_case_files(input_folder, predictor.file_ending).items()):
        absent = [c for c in range(len(predictor.modalities)) if c not in files]
        if absent:
            expected = input_folder / f"{case}_{absent[0]:04d}{predictor.file_ending}"
            raise FileNotFoundError(f"{case}: {expected} ({predictor.modalities[absent[0]]}) is missing; the sweep "
                                    f"leaves out each modality itself, so every case needs all of its channel files "
                                    f"({', '.join(predictor.modalities)}): add the file or remove the case from -i")
        check_case_files(files, set(), case, predictor.modalities)


def evaluate_missing(predictor: MissingModalityPredictor, input_folder: str | Path, reference_folder: str | Path,
                     output_folder: str | Path, labels_or_regions: list, convention: str = "nnunet",
                     ignore_label: int | None = None, declared=None) -> dict:
    """Predict and evaluate with every non-empty subset of modalities; writes table.json (NaN as null),
    table.csv and heatmap.png; returns {subset: {label_or_region: Dice}} plus the mean over subsets.
    ``declared``: ``evaluate.DeclaredLabels``, refusing segmentations with other values."""
    output_folder = Path(output_folder)
    check_every_channel_present(predictor, Path(input_folder))
    table = {}
    for subset in modality_subsets(predictor.modalities):
        name = "+".join(subset)
        folder = output_folder / "predictions" / name.replace("+", "_")
        remove_earlier_sweep(folder)  # its cases would be evaluated too
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor.predict_folder(input_folder, folder, [m for m in predictor.modalities if m not in subset])
        summary = evaluate_folders(reference_folder, folder, labels_or_regions, predictor.file_ending, convention,
                                   ignore_label=ignore_label, progress=False, declared=declared)
        table[name] = {k: v["Dice"] for k, v in summary["mean"].items()}
        table[name]["mean"] = summary["foreground_mean"]["Dice"]
        write_outputs(summary, folder)
    keys = list(next(iter(table.values())))
    table["mean over subsets"] = {k: nan_ignoring_mean([row[k] for row in table.values()]) for k in keys}
    write_text_atomic(output_folder / "table.json", json.dumps(json_safe(table), indent=2))
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["modalities", *[f"Dice {k}" for k in keys]])
    writer.writerows([name, *[f"{row[k]:.4f}" for k in keys]] for name, row in table.items())
    write_text_atomic(output_folder / "table.csv", rows.getvalue())
    _heatmap(table, keys, output_folder / "heatmap.png")
    return table


def _heatmap(table: dict, keys: list[str], filename: Path) -> None:
    from nnunet_multimodal.figures import new_figure, save_figure

    rows = list(table)
    values = np.array([[table[r][k] for k in keys] for r in rows], dtype=float)
    fig, ax = new_figure(figsize=(1.2 * len(keys) + 3, 0.4 * len(rows) + 1.5))
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(keys)), [f"Dice {k}" for k in keys], rotation=30)
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), v in np.ndenumerate(values):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black", fontsize=8)
    fig.colorbar(image, ax=ax)
    save_figure(fig, filename, dpi=80)
