"""nnU-Net's cascade (3d_lowres -> 3d_cascade_fullres) through `nnunet-mm predict`, `evaluate-missing` and the
submission runner, with every modality and with modalities missing in both stages."""

from __future__ import annotations

import json
import shutil
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import CMSAD_TRAINER, TINY_PLANS, run_tool
from nnunet_multimodal.plans.derive import derive_plans
from torch import nn

from nnunet_multimodal.cli import main
from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
from nnunet_multimodal.inference.missing import MissingModalityPredictor, previous_stage_folder

CASCADE_ID = 906
LOWRES, CASCADE = "3d_lowres", "3d_cascade_fullres"


@contextmanager
def nnunet_environment(workspace):
    """nnU-Net's folders and our trainers for in-process prediction in module-scoped fixtures."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in workspace.env.items():
            if name.startswith("nnUNet_"):
                patch.setenv(name, value)
        yield


def cascade_plans(nnunet_plans: dict) -> dict:
    """Tiny plans with nnU-Net's cascade. nnU-Net's planner adds 3d_lowres only when the full-resolution patch
    covers less than a quarter of the median image, which a 16³ image never does, so the stages are derived here
    as the planner links them: 3d_lowres at twice the spacing pointing to 3d_cascade_fullres (``next_stage``),
    which is 3d_fullres taking 3d_lowres's segmentation (``previous_stage``)."""
    plans = derive_plans(nnunet_plans, ["3d_fullres"], TINY_PLANS, tiny=True)
    fullres = plans["configurations"]["3d_fullres"]
    lowres = deepcopy(fullres)
    lowres.update(data_identifier=f"{TINY_PLANS}_{LOWRES}", spacing=[2.0, 2.0, 2.0], patch_size=[8, 8, 8],
                  median_image_size_in_voxels=[8.0, 8.0, 8.0], next_stage=CASCADE)
    plans["configurations"] = {"3d_fullres": fullres, LOWRES: lowres,
                               CASCADE: {"inherits_from": "3d_fullres", "previous_stage": LOWRES}}
    return plans


@pytest.fixture(scope="module")
def cascade_dataset(workspace) -> Path:
    """A 16³ two-modality phantom (2 training, 2 test cases) with both cascade stages trained by CMSAD (its network
    takes the availability mask and gives the cascade's channels to every branch), 2 epochs of 5 iterations, fold
    ``all``: the cascade trains on the previous stage's segmentations of its training cases, which only fold all
    (or all five folds) of 3d_lowres writes (``predicted_next_stage``). Returns the raw dataset folder."""
    spec = PhantomSpec(shape=(16, 16, 16), modalities=("T1", "T2"), seed=4)
    raw = write_dataset(workspace.raw, CASCADE_ID, "CascadePhantom", spec, num_training=2, num_test=2)
    run_tool(["nnUNetv2_plan_and_preprocess", "-d", CASCADE_ID, "-c", "3d_fullres", "-np", "1", "-npfp", "1",
              "--no_pp"], dict(workspace.env, nnUNet_n_proc_DA="1"))  # the planner sets torch's threads from it
    preprocessed = workspace.preprocessed / raw.name
    plans = cascade_plans(json.loads((preprocessed / "nnUNetPlans.json").read_text()))
    (preprocessed / f"{TINY_PLANS}.json").write_text(json.dumps(plans, indent=2))
    run_tool(["nnUNetv2_preprocess", "-d", CASCADE_ID, "-plans_name", TINY_PLANS, "-c", "3d_fullres", LOWRES,
              "-np", "1", "1"], workspace.env)
    for configuration in (LOWRES, CASCADE):
        run_tool(["nnUNetv2_train", CASCADE_ID, configuration, "all", "-tr", CMSAD_TRAINER, "-p", TINY_PLANS,
                  "-device", "cpu"], workspace.env)
    return raw


def model_folder(workspace, raw: Path, configuration: str) -> Path:
    return workspace.results / raw.name / f"{CMSAD_TRAINER}__{TINY_PLANS}__{configuration}"


def predict_args(images: Path, output: Path, configuration: str, *extra) -> list[str]:
    return ["predict", "-i", str(images), "-o", str(output), "-d", str(CASCADE_ID), "-c", configuration, "-f", "all",
            "-tr", CMSAD_TRAINER, "-p", TINY_PLANS, *map(str, extra)]


def predict_both_stages(images: Path, output: Path, lowres_images: Path | None = None, *extra) -> Path:
    """`nnunet-mm predict` of 3d_lowres into output/3d_lowres, then of the cascade from it."""
    assert main(predict_args(lowres_images or images, output / LOWRES, LOWRES, *extra)) == 0
    assert main(predict_args(images, output / CASCADE, CASCADE, "-prev_stage_predictions", output / LOWRES,
                             *extra)) == 0
    return output


@pytest.fixture(scope="module")
def nnunet_predictions(workspace, cascade_dataset, tmp_path_factory) -> Path:
    """nnU-Net's own predictor of both stages, run as nnUNetv2_predict -npp 0 -nps 0 runs it (every modality)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    output = tmp_path_factory.mktemp("nnunet_cascade")
    with nnunet_environment(workspace):
        previous = None
        for configuration in (LOWRES, CASCADE):
            predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False,
                                        allow_tqdm=False)
            predictor.initialize_from_trained_model_folder(str(model_folder(workspace, cascade_dataset,
                                                                            configuration)), ["all"])
            (output / configuration).mkdir()
            predictor.predict_from_files_sequential(str(cascade_dataset / "imagesTs"), str(output / configuration),
                                                    folder_with_segs_from_prev_stage=previous)
            previous = str(output / configuration)
    return output


@pytest.fixture(scope="module")
def our_predictions(workspace, cascade_dataset, tmp_path_factory) -> Path:
    with nnunet_environment(workspace):
        return predict_both_stages(cascade_dataset / "imagesTs", tmp_path_factory.mktemp("ours"))


@pytest.fixture(scope="module")
def without_t2(cascade_dataset, tmp_path_factory) -> Path:
    """The test cases with their T2 files (channel 1) absent."""
    images = tmp_path_factory.mktemp("without_t2")
    for image in (cascade_dataset / "imagesTs").glob("*_0000.nii.gz"):
        shutil.copy(image, images)
    return images


@pytest.fixture(scope="module")
def our_predictions_without_t2(workspace, cascade_dataset, without_t2, tmp_path_factory) -> Path:
    """3d_lowres from the input lacking the T2 files, the cascade from the complete input with --missing T2."""
    with nnunet_environment(workspace):
        output = tmp_path_factory.mktemp("ours_without_t2")
        assert main(predict_args(without_t2, output / LOWRES, LOWRES)) == 0
        assert main(predict_args(cascade_dataset / "imagesTs", output / CASCADE, CASCADE, "--missing", "T2",
                                 "-prev_stage_predictions", output / LOWRES)) == 0
        return output


@pytest.fixture(scope="module")
def cascade_predictor(workspace, cascade_dataset) -> MissingModalityPredictor:
    with nnunet_environment(workspace):
        return MissingModalityPredictor(model_folder(workspace, cascade_dataset, CASCADE), ["all"])


def segmentations(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def same_segmentations(a: Path, b: Path) -> bool:
    first, second = segmentations(a), segmentations(b)
    return len(first) == 2 and first.keys() == second.keys() and all(np.array_equal(first[k], second[k])
                                                                     for k in first)


def test_lowres_stage_equals_nnunets_prediction(nnunet_predictions, our_predictions):
    assert same_segmentations(our_predictions / LOWRES, nnunet_predictions / LOWRES)


def test_cascade_stage_equals_nnunets_prediction_with_every_modality(nnunet_predictions, our_predictions):
    assert same_segmentations(our_predictions / CASCADE, nnunet_predictions / CASCADE)


@pytest.mark.parametrize("configuration", [LOWRES, CASCADE])
def test_missing_modality_is_missing_in_both_stages(our_predictions_without_t2, configuration):
    used = json.loads((our_predictions_without_t2 / configuration / "modalities_used.json").read_text())
    assert used == {"CascadePhantom_002": ["T1"], "CascadePhantom_003": ["T1"]}


class RecordingNetwork(nn.Module):
    """The trained network, recording what the predictor gives it."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network
        self.calls = []

    def forward(self, x, available=None):
        self.calls.append((x.clone(), available.clone()))
        return self.network(x, available=available)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.network.load_state_dict(state_dict, strict=strict, assign=assign)


def test_cascade_channels_reach_the_network_whole_and_outside_the_availability_mask(cascade_dataset,
                                                                                   cascade_predictor, monkeypatch,
                                                                                   tmp_path):
    case = "CascadePhantom_002"
    images = tmp_path / "images"
    images.mkdir()
    for channel in (0, 1):
        shutil.copy(cascade_dataset / "imagesTs" / f"{case}_{channel:04d}.nii.gz", images)
    # the previous stage's segmentation, by hand: label 2 in one cube, predicted from T1 alone
    grid = sitk.ReadImage(str(images / f"{case}_0000.nii.gz"))
    labels = np.zeros((16, 16, 16), np.uint8)
    labels[4:8, 4:8, 4:8] = 2
    segmentation = sitk.GetImageFromArray(labels)
    segmentation.CopyInformation(grid)
    previous = tmp_path / "previous"
    previous.mkdir()
    sitk.WriteImage(segmentation, str(previous / f"{case}.nii.gz"))
    (previous / "modalities_used.json").write_text(json.dumps({case: ["T1"]}))
    recording = RecordingNetwork(cascade_predictor.network)
    monkeypatch.setattr(cascade_predictor, "network", recording)
    cascade_predictor.predict_folder(images, tmp_path / "out", ["T2"], previous_stage_folder=previous)
    x, available = recording.calls[0]
    expected_one_hot = torch.from_numpy(np.stack([labels == k for k in (1, 2, 3)])).float()
    assert len(recording.calls) == 1                                # one tile: the patch is the image
    assert available.tolist() == [[True, False]]                    # T1, T2: the one-hot channels are no modality
    assert torch.count_nonzero(x[0, 1]) == 0                        # T2 zeroed
    assert torch.equal(x[0, 2:], expected_one_hot)                  # labels 1, 2, 3 one-hot, not zeroed


def test_cascade_without_previous_stage_predictions_exits_2_naming_the_option(workspace, cascade_dataset,
                                                                              nnunet_paths, tmp_path, capsys):
    assert main(predict_args(cascade_dataset / "imagesTs", tmp_path / "out", CASCADE)) == 2
    error = capsys.readouterr().err
    assert "needs 3d_lowres's segmentations" in error and "-prev_stage_predictions" in error


def test_previous_stage_predictions_are_refused_for_a_single_stage_model(workspace, cascade_dataset,
                                                                         our_predictions, nnunet_paths, tmp_path,
                                                                         capsys):
    assert main(predict_args(cascade_dataset / "imagesTs", tmp_path / "out", LOWRES, "-prev_stage_predictions",
                             our_predictions / LOWRES)) == 2
    assert "-prev_stage_predictions is for cascade stages" in capsys.readouterr().err


def test_a_case_without_previous_segmentation_is_named_before_any_prediction(cascade_dataset, cascade_predictor,
                                                                             our_predictions, tmp_path):
    previous = shutil.copytree(our_predictions / LOWRES, tmp_path / "previous")
    (previous / "CascadePhantom_003.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=f"{previous / 'CascadePhantom_003.nii.gz'} is missing: .*every "
                                                f"input case; predict it again with nnunet-mm predict -c 3d_lowres"):
        cascade_predictor.predict_folder(cascade_dataset / "imagesTs", tmp_path / "out",
                                         previous_stage_folder=previous)
    assert not (tmp_path / "out" / "CascadePhantom_002.nii.gz").exists()


def nnunet_predictions_like(our_predictions: Path, tmp_path: Path) -> Path:
    """Our 3d_lowres segmentations without modalities_used.json, as nnUNetv2_predict writes them."""
    previous = shutil.copytree(our_predictions / LOWRES, tmp_path / "previous")
    (previous / "modalities_used.json").unlink()
    return previous


def test_previous_stage_with_other_modalities_is_refused(cascade_dataset, cascade_predictor, our_predictions,
                                                        tmp_path):
    with pytest.raises(ValueError, match=r"was predicted from \['T1', 'T2'\] \(no modalities_used.json: "
                                         r"nnUNetv2_predict's\), this run predicts CascadePhantom_002 from \['T1'\]: "
                                         r"both stages must see the same modalities; .*--missing T2\)"):
        cascade_predictor.predict_folder(cascade_dataset / "imagesTs", tmp_path / "out", ["T2"],
                                         previous_stage_folder=nnunet_predictions_like(our_predictions, tmp_path))


def test_previous_segmentation_on_another_grid_is_refused(cascade_dataset, cascade_predictor, our_predictions,
                                                          tmp_path):
    previous = shutil.copytree(our_predictions / LOWRES, tmp_path / "previous")
    sitk.WriteImage(sitk.Image(8, 16, 16, sitk.sitkUInt8), str(previous / "CascadePhantom_002.nii.gz"))
    with pytest.raises(ValueError, match=r"CascadePhantom_002.nii.gz: shape \(8, 16, 16\) differs from "
                                         r"\(16, 16, 16\) \(of CascadePhantom_002_0000.nii.gz\)"):
        cascade_predictor.predict_folder(cascade_dataset / "imagesTs", tmp_path / "out",
                                         previous_stage_folder=previous)


def test_output_into_the_previous_stage_folder_is_refused(cascade_dataset, cascade_predictor, tmp_path):
    with pytest.raises(ValueError, match="is the -prev_stage_predictions folder"):
        cascade_predictor.predict_folder(cascade_dataset / "imagesTs", tmp_path, previous_stage_folder=tmp_path)


def test_an_untrained_previous_stage_is_named_with_the_training_to_run(tmp_path):
    cascade = tmp_path / "Dataset906_X" / f"T__P__{CASCADE}"
    with pytest.raises(FileNotFoundError, match=f"fold_all/checkpoint_final.pth is missing: T__P__{CASCADE} is a "
                                                f"cascade stage.*nnUNetv2_train Dataset906_X 3d_lowres all -tr T -p P"):
        previous_stage_folder(cascade, LOWRES, ["all"], "checkpoint_final.pth")


def test_evaluate_missing_predicts_the_previous_stage_with_each_subset(workspace, cascade_dataset, our_predictions,
                                                                       our_predictions_without_t2, nnunet_paths,
                                                                       tmp_path):
    assert main(["evaluate-missing", "-i", str(cascade_dataset / "imagesTs"), "-ref",
                 str(cascade_dataset / "labelsTs"), "-o", str(tmp_path), "-d", str(CASCADE_ID), "-c", CASCADE,
                 "-f", "all", "-tr", CMSAD_TRAINER, "-p", TINY_PLANS]) == 0
    assert same_segmentations(tmp_path / "predictions" / "T1_T2", our_predictions / CASCADE)
    assert same_segmentations(tmp_path / "predictions" / "T1", our_predictions_without_t2 / CASCADE)


def test_submission_packages_and_runs_the_previous_stage(workspace, cascade_dataset, our_predictions, nnunet_paths,
                                                         tmp_path):
    from nnunet_multimodal.submission.build import ModelSource, build_submission
    from nnunet_multimodal.submission.runner import Submission, run_submission

    cascade = model_folder(workspace, cascade_dataset, CASCADE)
    submission = build_submission(tmp_path / "submission", "nnunet", [ModelSource(cascade, ("all",))])
    written, failures = run_submission(Submission.load(submission), cascade_dataset / "imagesTs", tmp_path / "out",
                                       log=lambda line: None)
    assert (submission / "model" / cascade_dataset.name / f"{CMSAD_TRAINER}__{TINY_PLANS}__{LOWRES}" / "fold_all"
            / "checkpoint_final.pth").is_file()
    assert failures == {}
    assert same_segmentations(tmp_path / "out", our_predictions / CASCADE)
