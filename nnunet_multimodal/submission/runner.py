"""The submission runner (``run_submission.py`` in a folder written by ``nnunet-mm submission build``).

It finds the cases of a challenge's input layout, stages each as nnU-Net's ``CASE_XXXX`` files (channels
resampled onto the layout's reference grid, as ``nnunet-mm convert`` did for training), predicts with every
selected model (a cascade stage after its previous stage, packaged beside it, from the same channels), averages
their probabilities (nnU-Net's ``merge_files``), applies the selected postprocessing, and writes the prediction
in the challenge's naming and label values. Absent channel files go through ``MissingModalityPredictor`` when
every model was trained for missing modalities. A case that does not fit is reported and skipped; the others
still run; the exit code is 1 when any case failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_multimodal.atomic_files import atomic_path
from nnunet_multimodal.data.convert.common import ConversionError
from nnunet_multimodal.data.convert.layouts import LAYOUTS, Layout
from nnunet_multimodal.inference.output_folder import (
    output_folder_lock,
    record_files_written,
    refuse_files_we_did_not_write,
)
from nnunet_multimodal.user_errors import UserError, is_user_error

SUBMISSION_FILE = "submission.json"
GENERIC_LAYOUT = "nnunet"   # nnU-Net's own naming: CASE_XXXX<file_ending> in one folder, the model's labels
LAYOUT_CHOICES = (GENERIC_LAYOUT, *LAYOUTS)


class CaseError(UserError):
    """Why one input case cannot be predicted, naming the file and the fix."""


@dataclass(frozen=True)
class ModelEntry:
    folder: str                 # relative to the submission folder
    folds: tuple
    checkpoint: str


@dataclass(frozen=True)
class Submission:
    folder: Path
    layout: str
    models: tuple[ModelEntry, ...]
    postprocessing: str | None  # relative to the submission folder

    @classmethod
    def load(cls, folder: str | Path) -> Submission:
        folder = Path(folder)
        spec_file = folder / SUBMISSION_FILE
        if not spec_file.is_file():
            raise FileNotFoundError(f"{spec_file} is missing: is {folder} a folder written by nnunet-mm submission "
                                    f"build?")
        try:
            spec = json.loads(spec_file.read_text())
            models = tuple(ModelEntry(m["folder"], tuple(m["folds"]), m["checkpoint"]) for m in spec["models"])
            return cls(folder, spec["layout"], models, spec.get("postprocessing"))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{spec_file} is no submission.json of nnunet-mm submission build ({type(e).__name__}: "
                             f"{e}); rebuild the submission with nnunet-mm submission build") from e

    def to_json(self, **extra) -> str:
        return json.dumps({"layout": self.layout,
                           "models": [{"folder": m.folder, "folds": list(m.folds), "checkpoint": m.checkpoint}
                                      for m in self.models],
                           "postprocessing": self.postprocessing, **extra}, indent=2)


@dataclass(frozen=True)
class InputCase:
    name: str
    output: Path
    channels: dict[int, Path]   # the channel files found, by channel index
    expected: tuple[Path, ...]  # the file each channel would have (names absent ones)
    problems: tuple[str, ...] = ()      # found while scanning (extra files)
    stage: bool = False         # a challenge layout: resample onto the reference grid into nnU-Net files first


def find_cases(layout_name: str, input_root: Path, output_root: Path, num_channels: int,
               file_ending: str) -> tuple[list[InputCase], dict[str, str]]:
    """The input cases, and the inputs that are no case at all (named by folder or file) with the reason."""
    from nnunet_multimodal.data.verify import group_case_files

    if layout_name == GENERIC_LAYOUT:
        groups = group_case_files(input_root, file_ending)
        named = {p for files in groups.values() for p in files.values()}
        failures = {p.name: f"{p} is not named CASE_XXXX{file_ending} (nnU-Net's naming, channels 0000-"
                            f"{num_channels - 1:04d}); rename or remove it"
                    for p in sorted(input_root.iterdir()) if p not in named and not p.name.startswith(".")}
        cases = []
        for name, files in sorted(groups.items()):
            beyond = sorted(c for c in files if c >= num_channels)
            problems = tuple(f"{files[c]} is channel {c}, beyond the model's {num_channels} channels; remove it"
                             for c in beyond)
            expected = tuple(input_root / f"{name}_{c:04d}{file_ending}" for c in range(num_channels))
            cases.append(InputCase(name, output_root / f"{name}{file_ending}",
                                   {c: p for c, p in files.items() if c < num_channels}, expected, problems))
        return cases, failures
    layout = LAYOUTS[layout_name]
    scanned, unrecognised = layout.scan(input_root)
    failures = {u.folder.name: f"no file in {u.folder} is named like {layout.describe()} "
                               f"(found: {', '.join(p.name for p in u.files) or 'nothing'})" for u in unrecognised}
    cases = [InputCase(c.case, layout.prediction_path(output_root, c),
                       {i: p for i, p in enumerate(c.channels) if p.is_file()}, c.channels,
                       tuple(f"{p} is not one of the {layout.name} layout's files (<case>{layout.separator}"
                             f"{{{','.join(layout.channel_keys)}}}{layout.file_ending}); remove it" for p in c.extra),
                       stage=True)
             for c in scanned]
    return cases, failures


def check_channels(case: InputCase, modalities: list[str], trained_for_missing: bool,
                   reference_required: bool) -> None:
    """Raise CaseError when ``case`` cannot be predicted as given."""
    if case.problems:
        raise CaseError("; ".join(case.problems))
    absent = [c for c in range(len(modalities)) if c not in case.channels]
    if not absent:
        return
    names = [case.expected[c].name for c in absent]
    described = ", ".join(f"{n} ({modalities[c]})" for n, c in zip(names, absent))
    if len(absent) == len(modalities):
        raise CaseError(f"no channel file found; expected {described}")
    if not trained_for_missing:
        raise CaseError(f"{described} missing; this model was not trained for missing modalities and needs all of "
                        f"{modalities}")
    if reference_required and 0 in absent:
        raise CaseError(f"{names[0]} ({modalities[0]}) is missing: it is the reference grid the prediction is "
                        f"written on, so it cannot be left out")


def stage_case(case: InputCase, staging: Path, staged_name: str, file_ending: str) -> dict[int, Path]:
    """The case's present channels on one grid (the first present channel's) as nnU-Net files; returns them by
    channel index. Unreadable or cut-short files, NaN/Inf voxels and grids that do not overlap raise CaseError."""
    from nnunet_multimodal.data.convert.formats import channels_on_reference_grid

    present = sorted(case.channels)
    try:
        images = channels_on_reference_grid([case.channels[c] for c in present], [])
    except ConversionError as e:
        raise CaseError(str(e)) from e
    staging.mkdir(parents=True, exist_ok=True)
    files = {}
    for channel, image in zip(present, images):
        files[channel] = staging / f"{staged_name}_{channel:04d}{file_ending}"
        sitk.WriteImage(image, str(files[channel]), useCompression=True)
    return files


def case_inputs(case: InputCase, modalities: list[str], trained_for_missing: bool, reference_required: bool,
                staging: Path, file_ending: str) -> tuple[dict[int, Path], set[int]]:
    """The nnU-Net files to predict ``case`` from and its absent channels, checked once for every model; a case
    that cannot be predicted as given raises CaseError naming the file and the fix."""
    from nnunet_multimodal.inference.missing import check_case_files

    check_channels(case, modalities, trained_for_missing, reference_required)
    files = stage_case(case, staging, "case", file_ending) if case.stage else case.channels
    try:
        return files, check_case_files(files, set(), case.name, modalities)
    except ValueError as e:  # unreadable or cut-short files, NaN/Inf voxels, channels on different grids
        raise CaseError(str(e)) from e


def label_lookup(layout: Layout) -> np.ndarray:
    mapping = layout.output_label_map()
    lut = np.zeros(max(mapping) + 1, np.uint16 if max(mapping.values()) > 255 else np.uint8)
    for nnunet_value, challenge_value in mapping.items():
        lut[nnunet_value] = challenge_value
    return lut


def write_output(segmentation_file: Path, target: Path, postprocessing, lut: np.ndarray | None) -> None:
    """nnU-Net's segmentation, postprocessed and relabelled, on its own grid at ``target`` (complete or absent)."""
    from nnunetv2.postprocessing.remove_connected_components import apply_postprocessing

    image = sitk.ReadImage(str(segmentation_file))
    segmentation = sitk.GetArrayFromImage(image)
    if postprocessing is not None:
        segmentation = apply_postprocessing(segmentation, *postprocessing)
    if lut is not None:
        segmentation = lut[segmentation]
    output = sitk.GetImageFromArray(segmentation.astype(np.uint8 if segmentation.max() <= 255 else np.uint16))
    output.CopyInformation(image)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as temporary:
        sitk.WriteImage(output, str(temporary), useCompression=True)


def load_predictors(submission: Submission, device: str) -> list:
    from nnunet_multimodal.environment import ext_trainer_value
    from nnunet_multimodal.inference.missing import MissingModalityPredictor

    # prediction finds each checkpoint's trainer class by name, ours through nnUNet_extTrainer
    os.environ["nnUNet_extTrainer"] = ext_trainer_value(os.environ.get("nnUNet_extTrainer"))
    return [MissingModalityPredictor(submission.folder / m.folder, list(m.folds), m.checkpoint, device,
                                     predict_previous_stage=True) for m in submission.models]


def output_name(case: InputCase, output_root: Path) -> str:
    return case.output.relative_to(output_root).as_posix()


def check_output_outside_input(input_root: Path, output_root: Path) -> None:
    """A prediction written into the input folder would be read as an input case by the next run."""
    if output_root.resolve().is_relative_to(input_root.resolve()):
        raise ValueError(f"-o {output_root} is the input folder or inside it (-i {input_root}): the predictions "
                         f"would mix with the challenge's input; choose an output folder outside -i")


def run_submission(submission: Submission, input_root: Path, output_root: Path, device: str = "cpu",
                   log=print, overwrite: bool = False) -> tuple[list[str], dict[str, str]]:
    """Predict every case; returns the cases written and {case: reason} for the inputs that failed. Files in
    ``output_root`` of the cases' output names that no earlier run wrote are refused unless ``overwrite``; a
    run already writing there is refused."""
    from nnunet_multimodal.inference.missing import ensure_writable

    if not input_root.is_dir():
        raise FileNotFoundError(f"input folder {input_root} does not exist")
    check_output_outside_input(input_root, output_root)
    ensure_writable(output_root)
    with output_folder_lock(output_root):
        return predict_cases(submission, input_root, output_root, device, log, overwrite)


def predict_cases(submission: Submission, input_root: Path, output_root: Path, device: str, log,
                  overwrite: bool) -> tuple[list[str], dict[str, str]]:
    from batchgenerators.utilities.file_and_folder_operations import load_pickle
    from nnunetv2.ensembling.ensemble import merge_files

    predictors = load_predictors(submission, device)
    first = predictors[0]
    modalities, file_ending = first.modalities, first.file_ending
    trained_for_missing = all(p.trained_for_missing for p in predictors)
    layout = LAYOUTS.get(submission.layout)
    lut = label_lookup(layout) if layout else None
    postprocessing = (load_pickle(str(submission.folder / submission.postprocessing))
                      if submission.postprocessing else None)
    reader_writer = first.predictor.plans_manager.image_reader_writer_class()
    label_manager = first.predictor.label_manager
    cases, failures = find_cases(submission.layout, input_root, output_root, len(modalities), file_ending)
    if not cases and not failures:
        raise FileNotFoundError(f"no input cases in {input_root} (layout {submission.layout})")
    if not overwrite:
        refuse_files_we_did_not_write(output_root, [output_name(case, output_root) for case in cases],
                                      "pass --overwrite")
    written = []
    with tempfile.TemporaryDirectory(prefix="nnunet-mm-submission-") as tmp:
        for index, case in enumerate(cases):
            work = Path(tmp) / f"case{index:05d}"     # staged inputs and per-model outputs, removed after the case
            try:
                files, absent = case_inputs(case, modalities, trained_for_missing,
                                            layout is not None and not layout.co_registered, work / "input",
                                            file_ending)
                for k, predictor in enumerate(predictors):
                    used = predictor.predict_checked_case(files, absent, work / f"model{k}" / "case",
                                                          save_probabilities=len(predictors) > 1)
                segmentation = work / "model0" / f"case{file_ending}"
                if len(predictors) > 1:
                    segmentation = work / f"ensemble{file_ending}"
                    merge_files([str(work / f"model{k}" / "case.npz") for k in range(len(predictors))],
                                str(work / "ensemble"), file_ending, reader_writer, label_manager)
                # claimed case by case: a challenge's output folder should hold no record of cases that failed
                record_files_written(output_root, [output_name(case, output_root)])
                write_output(segmentation, case.output, postprocessing, lut)
            except CaseError as e:
                failures[case.name] = str(e)
                continue
            except Exception as e:  # one broken case must not stop the others
                failures[case.name] = f"{type(e).__name__}: {e}"
                traceback.print_exc(file=sys.stderr)
                continue
            finally:
                shutil.rmtree(work, ignore_errors=True)
            written.append(case.name)
            log(f"{case.name}: wrote {case.output} (modalities: {', '.join(used)})")
    return written, failures


def summary(written: list[str], failures: dict[str, str], output_root: Path) -> str:
    lines = [f"{len(written)} case(s) written to {output_root}, {len(failures)} failed"]
    lines += [f"  {name}: {reason}" for name, reason in sorted(failures.items())]
    return "\n".join(lines)


def main(argv: list[str] | None, submission_folder: str | Path) -> int:
    """The command line of ``run_submission.py``, which passes its own folder."""
    parser = argparse.ArgumentParser(description="Predict a challenge's input folder with this submission.")
    parser.add_argument("-i", default="/input", help="input folder in the challenge's layout (default: /input)")
    parser.add_argument("-o", default="/output", help="output folder (default: /output)")
    parser.add_argument("-device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: cuda when available (default)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace files in -o of the cases' output names that no earlier run wrote (refused "
                             "otherwise)")
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        submission = Submission.load(submission_folder)
        output_root = Path(args.o)
        written, failures = run_submission(submission, Path(args.i), output_root, device,
                                           overwrite=args.overwrite)
    except Exception as e:
        if not is_user_error(e):  # a bug keeps its traceback
            raise
        print(f"submission: error: {e}", file=sys.stderr)
        return 2
    print(summary(written, failures, output_root), file=sys.stderr if failures else sys.stdout)
    return 1 if failures else 0
