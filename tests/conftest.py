"""Shared fixtures: one phantom dataset preprocessed once per session, one tiny model trained once."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
from nnunet_multimodal.environment import env_with_plugin

BIN = Path(sys.executable).parent
# Dataset ids share one nnUNet_raw per session: 901 phantom, 902 region phantom (CMSAD), 903 unplanned (MKD),
# 904 MKD assistant, 912 submission BraTS, 948 SAM region phantom. Pick a free one for a new fixture.
DATASET_ID = 901
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


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> NnunetWorkspace:
    return make_workspace(tmp_path_factory.mktemp("nnunet"))


@pytest.fixture(scope="session")
def phantom_dataset(workspace) -> Path:
    """A 2D 3-modality phantom (10 training, 2 test cases), planned, preprocessed and given tiny plans."""
    spec = PhantomSpec(shape=(64, 64), seed=1)
    raw = write_dataset(workspace.raw, DATASET_ID, "TestPhantom", spec, num_training=10, num_test=2)
    run_tool(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "2d", "-np", "1"],
             dict(workspace.env, nnUNet_n_proc_DA="1"))
    run_tool(["nnunet-mm", "plans", "-d", DATASET_ID, "-c", "2d", "--tiny", "-o", TINY_PLANS], workspace.env)
    return raw


@pytest.fixture(scope="session")
def preprocessed_folder(workspace, phantom_dataset) -> Path:
    return workspace.preprocessed / phantom_dataset.name


@pytest.fixture
def nnunet_paths(workspace, monkeypatch):
    """nnU-Net's folders for in-process trainers (nnunetv2.paths reads the variables lazily)."""
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, workspace.env[name])
    monkeypatch.setenv("nnUNet_compile", "f")
    monkeypatch.setenv("nnUNet_extTrainer", workspace.env["nnUNet_extTrainer"])
    monkeypatch.setenv("nnUNet_n_proc_DA", "0")
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    return workspace


def pytest_report_header(config):
    return f"nnunet-multimodal tests; shared data: {SHARED if SHARED.is_dir() else 'absent'}; cpus: {os.cpu_count()}"


BASE_TRAINER = "nnUNetTrainerMultiModalBase_2x5it_NoMirroring"


@pytest.fixture(scope="session")
def trained_base_model(workspace, phantom_dataset) -> Path:
    """nnUNetv2_train with our base trainer (2 epochs) on the phantom, fold 0; returns the fold folder."""
    run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", BASE_TRAINER, "-p", TINY_PLANS, "-device", "cpu"],
             workspace.env)
    return workspace.results / phantom_dataset.name / f"{BASE_TRAINER}__{TINY_PLANS}__2d" / "fold_0"


CMSAD_TRAINER = "nnUNetTrainerCMSAD_2x5it_NoMirroring"
PLAIN_TRAINER = "nnUNetTrainerMMPlain_2x5it_NoMirroring"


def train_fold0(workspace, dataset_folder: Path, trainer: str, *extra) -> Path:
    run_tool(["nnUNetv2_train", dataset_folder.name, "2d", "0", "-tr", trainer, "-p", TINY_PLANS, "-device", "cpu",
              *extra], workspace.env)
    return workspace.results / dataset_folder.name / f"{trainer}__{TINY_PLANS}__2d" / "fold_0"


@pytest.fixture(scope="session")
def trained_cmsad_model(workspace, phantom_dataset) -> Path:
    """nnUNetTrainerCMSAD_2x5it_NoMirroring on the phantom, fold 0, validation probabilities kept (--npz)."""
    return train_fold0(workspace, phantom_dataset, CMSAD_TRAINER, "--npz")


@pytest.fixture(scope="session")
def trained_plain_model(workspace, phantom_dataset) -> Path:
    """Plain nnUNetTrainer (2-epoch schedule) on the same plans and fold, with --npz, for ensembles."""
    return train_fold0(workspace, phantom_dataset, PLAIN_TRAINER, "--npz")


MAML_TRAINER = "nnUNetTrainerMAML_2x5it_NoMirroring"


@pytest.fixture(scope="session")
def trained_maml_model(workspace, phantom_dataset) -> Path:
    """nnUNetTrainerMAML_2x5it_NoMirroring (modality dropout on) on the phantom, fold 0."""
    return train_fold0(workspace, phantom_dataset, MAML_TRAINER)


MKD_ASSISTANT_ID = 904
MKD_PLANS = f"{TINY_PLANS}_mkd_Dataset{MKD_ASSISTANT_ID}_TestPhantomAssistant"
MKD_TRAINER = "nnUNetTrainerMKD_2x5it_NoMirroring"


@pytest.fixture(scope="session")
def mkd_assistant(workspace, phantom_dataset) -> Path:
    """MKD's assistant for the phantom: the same anatomy (same seed) in other contrasts, one channel named CT so
    that its own normalisation (CT) differs from the target's (z-score); prepared with `nnunet-mm mkd-prepare`.
    Returns the target's MKD plans file."""
    import json

    spec = PhantomSpec(shape=(64, 64), modalities=("CTlike", "MRlike", "T1ce"), seed=1)
    raw = write_dataset(workspace.raw, MKD_ASSISTANT_ID, "TestPhantomAssistant", spec, num_training=8, num_test=0)
    dataset_json = json.loads((raw / "dataset.json").read_text())
    dataset_json["channel_names"]["0"] = "CT"
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    run_tool(["nnUNetv2_plan_and_preprocess", "-d", MKD_ASSISTANT_ID, "-c", "2d", "-np", "1", "--no_pp"],
             dict(workspace.env, nnUNet_n_proc_DA="1"))
    run_tool(["nnunet-mm", "mkd-prepare", "-d", DATASET_ID, "-a", MKD_ASSISTANT_ID, "-p", TINY_PLANS],
             workspace.env)
    return workspace.preprocessed / phantom_dataset.name / f"{MKD_PLANS}.json"


@pytest.fixture(scope="session")
def trained_mkd_model(workspace, phantom_dataset, mkd_assistant) -> Path:
    """nnUNetTrainerMKD_2x5it_NoMirroring on the phantom with its assistant, fold 0."""
    run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", MKD_TRAINER, "-p", MKD_PLANS, "-device", "cpu"],
             workspace.env)
    return workspace.results / phantom_dataset.name / f"{MKD_TRAINER}__{MKD_PLANS}__2d" / "fold_0"
