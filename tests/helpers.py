"""What several test modules share that is not a fixture: the session's dataset ids and plans, trainer names,
running nnU-Net's and our console scripts, the nnU-Net folder layout, damaging an image. Fixtures live in
conftest.py."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_multimodal.environment import env_with_plugin

BIN = Path(sys.executable).parent
# Dataset ids share one nnUNet_raw per session: 901 phantom, 903 unplanned (MKD), 904 MKD assistant, 906 3D
# cascade phantom, 912 BraTS-like region phantom (CMSAD with modality dropout; submission), 948 SAM region phantom.
# Pick a free one for a new fixture.
DATASET_ID = 901
BRATS_ID = 912
TINY_PLANS = "nnUNetPlans_mmtiny"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def run_tool(command: list, env: dict, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess:
    command = [str(BIN / command[0])] + [str(c) for c in command[1:]]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-5000:]}")
    return result


def write_nan_voxels(path: Path, count: int, value: float = float("nan")) -> None:
    """Rewrite an image file with its first ``count`` voxels NaN, or another ``value`` such as Inf (as float32),
    geometry kept."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array.flat[:count] = value
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(path))


@dataclass
class NnunetWorkspace:
    root: Path
    env: dict

    @property
    def raw(self) -> Path:
        return Path(self.env["nnUNet_raw"])

    @property
    def preprocessed(self) -> Path:
        return Path(self.env["nnUNet_preprocessed"])

    @property
    def results(self) -> Path:
        return Path(self.env["nnUNet_results"])


def make_workspace(root: Path) -> NnunetWorkspace:
    env = env_with_plugin()
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[name] = str(root / name)
        Path(env[name]).mkdir(parents=True, exist_ok=True)
    env.update(nnUNet_compile="f", nnUNet_def_n_proc="1", nnUNet_n_proc_DA="0")
    return NnunetWorkspace(root, env)


BASE_TRAINER = "nnUNetTrainerMultiModalBase_2x5it_NoMirroring"


CMSAD_TRAINER = "nnUNetTrainerCMSAD_2x5it_NoMirroring"
CMSAD_DROPOUT_TRAINER = "nnUNetTrainerCMSAD_modalityDropout_2x5it_NoMirroring"
PLAIN_TRAINER = "nnUNetTrainerMMPlain_2x5it_NoMirroring"


def train_fold0(workspace, dataset_folder: Path, trainer: str, *extra) -> Path:
    run_tool(["nnUNetv2_train", dataset_folder.name, "2d", "0", "-tr", trainer, "-p", TINY_PLANS, "-device", "cpu",
              *extra], workspace.env)
    return workspace.results / dataset_folder.name / f"{trainer}__{TINY_PLANS}__2d" / "fold_0"


MAML_TRAINER = "nnUNetTrainerMAML_2x5it_NoMirroring"


MKD_ASSISTANT_ID = 904
MKD_PLANS = f"{TINY_PLANS}_mkd_Dataset{MKD_ASSISTANT_ID}_TestPhantomAssistant"
MKD_TRAINER = "nnUNetTrainerMKD_2x5it_NoMirroring"
MKD_FEEDBACK_TRAINER = "nnUNetTrainerMKD_iamFeedback_2x5it_NoMirroring"


def write_case_folders(tmp_path, reference, prediction, spacing=(1.0, 1.0, 2.0)):
    """One case as `nnunet-mm evaluate` reads it: ref/ and pred/ holding case.nii.gz at the sitk spacing given."""
    for folder, array in (("ref", reference), ("pred", prediction)):
        (tmp_path / folder).mkdir()
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(tmp_path / folder / "case.nii.gz"))
    return tmp_path / "ref", tmp_path / "pred"


def cli_lesion_case(tmp_path):
    """Two reference lesions on a 1 x 1 x 2 mm grid; the prediction finds one and adds one elsewhere."""
    reference = np.zeros((6, 12, 12), np.uint8)
    reference[1:3, 1:4, 1:4] = 1
    reference[3:5, 7:10, 7:10] = 1
    prediction = np.zeros_like(reference)
    prediction[1:3, 2:5, 1:4] = 1                                  # finds the first lesion
    prediction[4:6, 0:2, 10:12] = 1                                # and adds one elsewhere
    return reference, prediction, write_case_folders(tmp_path, reference, prediction)


def nnunet_predict(model_folder: Path, images: Path, output: Path, save_probabilities: bool = False) -> Path:
    """nnU-Net's own sequential prediction (no worker processes) of a folder in nnU-Net naming."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model_folder), (0,), "checkpoint_final.pth")
    output.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential(str(images), str(output), save_probabilities=save_probabilities)
    return output
