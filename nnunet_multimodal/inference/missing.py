"""Prediction with missing modalities (`nnunet-mm predict --missing`).

A missing modality is zeros in normalised space (filled after nnU-Net's preprocessing) plus an availability mask
for networks that take one (``forward(x, available=...)``). Networks that take no mask get the zeros alone,
with a warning unless they were trained with modality dropout. A cascade stage also takes the previous stage's
segmentation, one-hot after the image channels as nnU-Net's predictor stacks it; those channels are no modality.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nnunet_multimodal.atomic_files import write_text_atomic
from nnunet_multimodal.data.grid import geometry_mismatch, image_geometry
from nnunet_multimodal.data.verify import count_non_finite, group_case_files, read_image
from nnunet_multimodal.inference.output_folder import (
    output_folder_lock,
    record_files_written,
    refuse_files_we_did_not_write,
)
from nnunet_multimodal.training.base import unwrap_network
from nnunet_multimodal.training.checkpointing import read_checkpoint
from nnunet_multimodal.training.modality_dropout import accepts_availability

MODALITIES_USED = "modalities_used.json"


class PredictionInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``predict_folder``: the cases whose outputs are complete (each case's files are renamed
    into place whole, so the others have none)."""

    def __init__(self, output_folder: Path, completed: list[str], total: int):
        super().__init__(f"{len(completed)} of {total} case(s) complete in {output_folder}")
        self.output_folder, self.completed, self.total = output_folder, completed, total


class AvailabilityBoundNetwork(nn.Module):
    """A trained network with a fixed availability mask, called the way nnU-Net's predictor calls networks.
    The predictor loads each fold's weights into the bare network (under torch.compile's wrapper, whose
    state-dict keys carry an ``_orig_mod.`` prefix the checkpoints do not have); the forward goes through
    the compiled one."""

    def __init__(self, network: nn.Module, available: torch.Tensor):
        super().__init__()
        self.network = network
        self.register_buffer("available", available.bool(), persistent=False)
        self.takes_availability = accepts_availability(unwrap_network(network))

    def forward(self, x):
        if self.takes_availability:
            return self.network(x, available=self.available.expand(x.shape[0], -1))
        return self.network(x)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return unwrap_network(self.network).load_state_dict(state_dict, strict=strict, assign=assign)


def trained_with_modality_dropout(model_folder: Path, fold, checkpoint: str) -> bool:
    """From the plugin's checkpoint stamp (memory-mapped: the weights are not read)."""
    from nnunet_multimodal.training.checkpointing import PLUGIN_KEY

    stamp = torch.load(model_folder / f"fold_{fold}" / checkpoint, map_location="cpu", mmap=True,
                       weights_only=False).get(PLUGIN_KEY) or {}
    return stamp.get("knobs", {}).get("modality_dropout_p", 0) > 0


def ensure_writable(folder: Path) -> None:
    """Fail before any prediction work if ``folder`` cannot be created or written to."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise PermissionError(f"cannot write predictions to {folder} ({e.strerror or e}); choose another output "
                              f"folder (-o) or make this one writable") from e


def modality_labels(channel_names: list[str]) -> list[str]:
    """The names --missing and the subset sweep select modalities by: the dataset.json channel names, a name
    that several channels share (nnU-Net picks normalisation by name, e.g. two "CT" phases) suffixed with
    the channel's file number, as in CASE_0001."""
    return [name if channel_names.count(name) == 1 else f"{name}_{channel:04d}"
            for channel, name in enumerate(channel_names)]


def check_case_files(files: dict[int, Path], missing: set[int], case: str, modalities: list[str]) -> set[int]:
    """The case's absent modalities (``missing`` plus absent files) for a model with ``modalities`` (in channel
    order). Input that would crash the prediction midway or silently give a wrong one raises ValueError naming
    the file and the fix: channel files beyond the model's modalities, nothing left to predict from, unreadable
    or cut-short images, NaN/Inf voxels (SimpleITK's NIfTI reader would turn them into zeros), channels on
    different grids."""
    m = len(modalities)
    extra = sorted(set(files) - set(range(m)))
    if extra:
        raise ValueError(f"{case}: channel files {[files[c].name for c in extra]} are beyond the model's {m} "
                         f"modalities ({', '.join(modalities)}); remove them from the input folder")
    absent = missing | (set(range(m)) - set(files))
    if len(absent) == m:
        raise ValueError(f"{case}: every modality is missing; at least one of {modalities} is needed")
    reference = None
    for channel in sorted(set(range(m)) - absent):
        path = files[channel]
        image = read_image(path)
        if reference is None:
            reference = (path, image_geometry(image))
        else:
            mismatch = geometry_mismatch(reference[1], image_geometry(image))
            if mismatch:
                raise ValueError(f"{path}: {mismatch} (of {reference[0].name}); resample every channel of {case} "
                                 f"onto one grid (e.g. SimpleITK.Resample onto {reference[0].name}) and rerun")
        bad = count_non_finite(path, image)
        if bad:
            raise ValueError(f"{path}: {bad} NaN/Inf voxels would give a wrong prediction; replace them (e.g. "
                             f"numpy.nan_to_num) or re-export the image, or predict without this modality "
                             f"(--missing {modalities[channel]})")
    return absent


def check_trainer_importable(checkpoint_file: Path) -> None:
    """nnU-Net raises a RuntimeError naming neither the checkpoint nor the plugin when the trainer class a
    checkpoint was trained with cannot be found."""
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    trainer_name = read_checkpoint(checkpoint_file)["trainer_name"]
    try:
        recursive_find_trainer_class_by_name(trainer_name)
    except RuntimeError as e:
        raise ValueError(f"{checkpoint_file} was trained with {trainer_name}, which neither nnU-Net nor "
                         f"nnUNet_extTrainer ({os.environ.get('nnUNet_extTrainer', 'not set')}) defines; install the "
                         f"package that defines it (nnunet-mm env shows the nnUNet_extTrainer value for this "
                         f"plugin's trainers)") from e


def previous_stage_folder(model_folder: Path, previous_stage: str, folds, checkpoint: str) -> Path:
    """The results folder of a cascade stage's previous stage: same trainer and plans, as nnU-Net's trainer
    expects (it trains the cascade on that folder's ``predicted_next_stage``). Its folds must all be there."""
    trainer, plans, _ = model_folder.name.split("__")
    folder = model_folder.with_name(f"{trainer}__{plans}__{previous_stage}")
    for fold in folds:
        if not (folder / f"fold_{fold}" / checkpoint).is_file():
            raise FileNotFoundError(
                f"{folder / f'fold_{fold}' / checkpoint} is missing: {model_folder.name} is a cascade stage, and its "
                f"previous stage {previous_stage} (same trainer, plans and folds) segments each case for it; train "
                f"it (nnUNetv2_train {model_folder.parent.name} {previous_stage} {fold} -tr {trainer} -p {plans})")
    return folder


class MissingModalityPredictor:
    """nnU-Net's predictor with modalities left out. Built from a trained model folder, or wrapping an
    ``nnUNetPredictor`` the user already holds (``MissingModalityPredictor.wrapping``)."""

    def __init__(self, model_folder: str | Path, folds, checkpoint: str = "checkpoint_final.pth",
                 device: str = "cpu", tile_step_size: float = 0.5, use_mirroring: bool = True,
                 predict_previous_stage: bool = False):
        """``predict_previous_stage``: for a cascade stage, load its previous stage too (``previous_stage_folder``)
        and let it segment every case for this one, with the same modalities missing."""
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from nnunet_multimodal.evaluation.evaluate import read_dataset_json

        predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_mirroring=use_mirroring,
                                    device=torch.device(device), perform_everything_on_device=device == "cuda",
                                    verbose=False, allow_tqdm=False)
        # nnU-Net's own error for a malformed dataset.json names no file
        read_dataset_json(Path(model_folder) / "dataset.json")
        try:
            predictor.initialize_from_trained_model_folder(str(model_folder), folds, checkpoint)
        except Exception:
            for fold in folds:  # nnU-Net's own error for a corrupt checkpoint does not name the file
                read_checkpoint(Path(model_folder) / f"fold_{fold}" / checkpoint)
            check_trainer_importable(Path(model_folder) / f"fold_{folds[0]}" / checkpoint)
            raise
        self._adopt(predictor, Path(model_folder).name,
                    trained_with_modality_dropout(Path(model_folder), folds[0], checkpoint))
        if predict_previous_stage and self.previous_stage_name is not None:
            self.previous_stage = MissingModalityPredictor(
                previous_stage_folder(Path(model_folder), self.previous_stage_name, folds, checkpoint), folds,
                checkpoint, device, tile_step_size, use_mirroring, predict_previous_stage=True)
            # zeros reach the previous stage too
            self.trained_for_missing = self.trained_for_missing and self.previous_stage.trained_for_missing

    @classmethod
    def wrapping(cls, predictor, trained_with_dropout: bool = False) -> MissingModalityPredictor:
        """Missing-modality prediction with an ``nnUNetPredictor`` already initialised (from a model folder or by
        ``manual_initialization``). ``trained_with_dropout``: the model learnt with modality dropout, so zeros for a
        missing modality are what it saw in training (networks taking an availability mask need not say)."""
        if predictor.network is None:
            raise ValueError("the nnUNetPredictor is not initialised: call initialize_from_trained_model_folder or "
                             "manual_initialization first")
        wrapper = cls.__new__(cls)
        wrapper._adopt(predictor, predictor.trainer_name, trained_with_dropout)
        return wrapper

    def _adopt(self, predictor, model_name: str, trained_with_dropout: bool) -> None:
        self.predictor = predictor
        self.model_name = model_name
        # a cascade stage's network also takes the previous stage's segmentation, one-hot after the image channels
        self.previous_stage_name = predictor.configuration_manager.previous_stage_name
        self.previous_stage: MissingModalityPredictor | None = None
        self.network = predictor.network
        channels = predictor.dataset_json["channel_names"]
        self.modalities = modality_labels([channels[k] for k in sorted(channels, key=int)])
        self.file_ending = predictor.dataset_json["file_ending"]
        self.trained_for_missing = accepts_availability(unwrap_network(self.network)) or trained_with_dropout

    def resolve_missing(self, names) -> set[int]:
        unknown = sorted(set(names) - set(self.modalities))
        if unknown:
            raise ValueError(f"--missing names {unknown} are not modalities of this model; its modalities are "
                             f"{self.modalities} (dataset.json channel_names)")
        return {self.modalities.index(n) for n in names}

    def predict_case(self, files: dict[int, Path], missing: set[int], output_file_truncated: Path,
                     save_probabilities: bool = False, previous_segmentation: Path | None = None) -> list[str]:
        """Check and predict one case; returns the modalities used. The output appears complete or not at all."""
        absent = check_case_files(files, missing, output_file_truncated.name, self.modalities)
        return self.predict_checked_case(files, absent, output_file_truncated, save_probabilities,
                                         previous_segmentation)

    def previous_stage_needed(self) -> str:
        return (f"{self.model_name} is a cascade stage: it needs {self.previous_stage_name}'s segmentations of the "
                f"input cases, and (as nnUNetv2_predict) predict does not make them; predict them first with "
                f"nnunet-mm predict -c {self.previous_stage_name} (same -i, -d, -tr, -p, -f and --missing) into a "
                f"folder and pass it with -prev_stage_predictions")

    def predict_checked_case(self, files: dict[int, Path], absent: set[int], output_file_truncated: Path,
                             save_probabilities: bool = False, previous_segmentation: Path | None = None) -> list[str]:
        """Predict one case whose absent modalities ``check_case_files`` returned. A cascade stage takes the
        previous stage's segmentation of the case (``previous_segmentation``), or, loaded with
        ``predict_previous_stage``, has its previous stage segment the case first with the same modalities."""
        if previous_segmentation is not None and self.previous_stage_name is None:
            raise ValueError(f"{self.model_name} is no cascade stage (its configuration has no previous_stage): it "
                             f"takes no previous stage's segmentation")
        if self.previous_stage_name is None or previous_segmentation is not None:
            return self._predict(files, absent, output_file_truncated, save_probabilities, previous_segmentation)
        if self.previous_stage is None:
            raise ValueError(self.previous_stage_needed())
        with tempfile.TemporaryDirectory(prefix="nnunet_mm_previous_stage_") as tmp:
            self.previous_stage.predict_checked_case(files, absent, Path(tmp) / "case")
            return self._predict(files, absent, output_file_truncated, save_probabilities,
                                 Path(tmp) / f"case{self.file_ending}")

    def _predict(self, files: dict[int, Path], absent: set[int], output_file_truncated: Path,
                 save_probabilities: bool, previous_segmentation: Path | None) -> list[str]:
        from nnunetv2.inference.export_prediction import export_prediction_from_logits
        from nnunetv2.utilities.label_handling.label_handling import convert_labelmap_to_one_hot

        m = len(self.modalities)
        if absent and not self.trained_for_missing:
            warnings.warn(f"{type(unwrap_network(self.network)).__name__} was not trained for missing modalities; "
                          f"{[self.modalities[i] for i in sorted(absent)]} are given as zeros", stacklevel=4)
        stand_in = files[min(set(files) - absent)]
        image_files = [str(files[i]) if i not in absent else str(stand_in) for i in range(m)]
        configuration = self.predictor.configuration_manager
        preprocessor = configuration.preprocessor_class(verbose=False)
        data, previous, properties = preprocessor.run_case(
            image_files, None if previous_segmentation is None else str(previous_segmentation),
            self.predictor.plans_manager, configuration, self.predictor.dataset_json)
        data = np.asarray(data, dtype=np.float32)
        data[sorted(absent)] = 0
        if previous_segmentation is not None:
            # as nnU-Net's predictor: the previous stage's labels, cropped and resampled with the images, one-hot
            # after them; these channels are no modality, so they are neither zeroed nor in the availability mask
            data = np.vstack((data, convert_labelmap_to_one_hot(previous[0], self.predictor.label_manager.
                                                                 foreground_labels, data.dtype)))
        available = torch.tensor([i not in absent for i in range(m)])
        self.predictor.network = AvailabilityBoundNetwork(self.network, available)
        try:
            logits = self.predictor.predict_logits_from_preprocessed_data(torch.from_numpy(data)).cpu()
        finally:
            self.predictor.network = self.network
        output_file_truncated.parent.mkdir(parents=True, exist_ok=True)
        try:
            with tempfile.TemporaryDirectory(dir=output_file_truncated.parent, prefix=".partial-") as tmp:
                export_prediction_from_logits(logits, properties, configuration, self.predictor.plans_manager,
                                              self.predictor.dataset_json, os.path.join(tmp, "case"),
                                              save_probabilities)
                for produced in Path(tmp).iterdir():
                    suffix = produced.name[len("case"):]
                    os.replace(produced, f"{output_file_truncated}{suffix}")
        except OSError as e:
            raise OSError(e.errno, f"writing {output_file_truncated}{self.file_ending} failed ({e.strerror or e}); "
                                   f"nothing of this case was left behind. Free disk space or choose another "
                                   f"output folder (-o), then rerun") from e
        return [self.modalities[i] for i in range(m) if i not in absent]

    def previous_segmentations(self, folder: Path, cases: dict[str, dict[int, Path]],
                               absent: dict[str, set[int]]) -> dict[str, Path]:
        """Each case's segmentation by the previous stage in ``folder`` (-prev_stage_predictions), checked: there,
        on the case's grid, and predicted from the modalities this run uses (``modalities_used.json`` of
        nnunet-mm predict; without one, every modality, as nnUNetv2_predict)."""
        if not folder.is_dir():
            raise FileNotFoundError(f"-prev_stage_predictions {folder} is no folder: pass the output folder of "
                                    f"nnunet-mm predict -c {self.previous_stage_name}")
        used_file = folder / MODALITIES_USED
        try:
            recorded = json.loads(used_file.read_text()) if used_file.is_file() else {}
            if not isinstance(recorded, dict):
                raise ValueError(f"a {type(recorded).__name__}, not a mapping of cases")
        except ValueError as e:
            raise ValueError(f"{used_file} is no modalities_used.json of nnunet-mm predict ({e}); predict "
                             f"{self.previous_stage_name} again into {folder}") from e
        segmentations = {}
        for case, files in sorted(cases.items()):
            used = [self.modalities[i] for i in range(len(self.modalities)) if i not in absent[case]]
            left_out = [self.modalities[i] for i in sorted(absent[case])]
            again = (f"predict it again with nnunet-mm predict -c {self.previous_stage_name} (same -i, -d, -tr, -p, "
                     f"-f{', --missing ' + ','.join(left_out) if left_out else ''}) -o {folder}")
            segmentation = folder / f"{case}{self.file_ending}"
            if not segmentation.is_file():
                raise FileNotFoundError(f"{segmentation} is missing: {self.model_name} is a cascade stage and needs "
                                        f"{self.previous_stage_name}'s segmentation of every input case; {again}")
            reference = files[min(set(files) - absent[case])]
            mismatch = geometry_mismatch(image_geometry(read_image(reference)),
                                         image_geometry(read_image(segmentation)))
            if mismatch:
                raise ValueError(f"{segmentation}: {mismatch} (of {reference.name}), so it is no segmentation of this "
                                 f"{case}; {again}")
            predicted_from = recorded.get(case, self.modalities)
            if predicted_from != used:
                source = used_file.name if case in recorded else "no modalities_used.json: nnUNetv2_predict's"
                raise ValueError(f"{segmentation} was predicted from {predicted_from} ({source}), this run predicts "
                                 f"{case} from {used}: both stages must see the same modalities; {again}")
            segmentations[case] = segmentation
        return segmentations

    def output_names(self, cases, save_probabilities: bool) -> list[str]:
        """The files predicting ``cases`` writes into the output folder."""
        endings = [self.file_ending, *((".npz", ".pkl") if save_probabilities else ())]
        return [f"{case}{ending}" for case in cases for ending in endings] + [MODALITIES_USED]

    def predict_folder(self, input_folder: str | Path, output_folder: str | Path, missing_names=(),
                       save_probabilities: bool = False, overwrite: bool = False,
                       previous_stage_folder: str | Path | None = None) -> dict[str, list[str]]:
        """Every case is checked before the first is predicted, so bad input leaves no partial output. Files in
        ``output_folder`` of this run's names that no earlier run wrote are refused unless ``overwrite``; a
        run already writing there is refused. Ctrl-C raises PredictionInterrupted naming the complete cases.
        A cascade stage reads the previous stage's segmentations from ``previous_stage_folder`` unless it was
        loaded with ``predict_previous_stage``."""
        missing = self.resolve_missing(missing_names)
        input_folder, output_folder = Path(input_folder), Path(output_folder)
        if output_folder.resolve() == input_folder.resolve():
            raise ValueError(f"-o {output_folder} is the input folder: the next run would read the predictions as "
                             f"images; choose another output folder")
        if previous_stage_folder is not None:
            if self.previous_stage_name is None:
                raise ValueError(f"-prev_stage_predictions is for cascade stages; {self.model_name} is none (its "
                                 f"configuration has no previous_stage): leave the option out")
            if Path(previous_stage_folder).resolve() == output_folder.resolve():
                raise ValueError(f"-o {output_folder} is the -prev_stage_predictions folder: the cascade's "
                                 f"segmentations would replace the ones it reads; choose another output folder")
        elif self.previous_stage_name is not None and self.previous_stage is None:
            raise ValueError(self.previous_stage_needed())
        cases = group_case_files(input_folder, self.file_ending)
        if not cases:
            raise FileNotFoundError(f"no CASE_XXXX{self.file_ending} images in {input_folder}")
        absent = {case: check_case_files(files, missing, case, self.modalities)
                  for case, files in sorted(cases.items())}
        previous = ({} if previous_stage_folder is None
                    else self.previous_segmentations(Path(previous_stage_folder), cases, absent))
        ensure_writable(output_folder)
        with output_folder_lock(output_folder):
            names = self.output_names(cases, save_probabilities)
            if not overwrite:
                refuse_files_we_did_not_write(output_folder, names, "pass --overwrite")
            record_files_written(output_folder, names)
            used = {}
            try:
                for case in sorted(cases):
                    used[case] = self.predict_checked_case(cases[case], absent[case], output_folder / case,
                                                           save_probabilities, previous.get(case))
            except KeyboardInterrupt as e:
                raise PredictionInterrupted(output_folder, list(used), len(cases)) from e
            write_text_atomic(output_folder / MODALITIES_USED, json.dumps(used, indent=2))
        return used
