"""Shared fixtures: one phantom dataset preprocessed once per session, one tiny model trained once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import (
    BASE_TRAINER,
    BRATS_ID,
    CMSAD_DROPOUT_TRAINER,
    CMSAD_TRAINER,
    DATASET_ID,
    MAML_TRAINER,
    MKD_ASSISTANT_ID,
    MKD_FEEDBACK_TRAINER,
    MKD_PLANS,
    PLAIN_TRAINER,
    SHARED,
    TINY_PLANS,
    NnunetWorkspace,
    make_workspace,
    nnunet_predict,
    run_tool,
    train_fold0,
)

from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> NnunetWorkspace:
    return make_workspace(tmp_path_factory.mktemp("nnunet"))


@pytest.fixture(scope="session")
def phantom_dataset(workspace) -> Path:
    """A 2D 3-modality phantom (10 training, 2 test cases), planned, preprocessed and given tiny plans."""
    spec = PhantomSpec(shape=(64, 64), seed=1)
    raw = write_dataset(workspace.raw, DATASET_ID, "TestPhantom", spec, num_training=10, num_test=2)
    run_tool(["nnUNetv2_plan_and_preprocess", "-d", DATASET_ID, "-c", "2d", "-np", "1", "-npfp", "1"],
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


@pytest.fixture(scope="session")
def trained_base_model(workspace, phantom_dataset) -> Path:
    """nnUNetv2_train with our base trainer (2 epochs) on the phantom, fold 0; returns the fold folder."""
    run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", BASE_TRAINER, "-p", TINY_PLANS, "-device", "cpu"],
             workspace.env)
    return workspace.results / phantom_dataset.name / f"{BASE_TRAINER}__{TINY_PLANS}__2d" / "fold_0"


@pytest.fixture(scope="session")
def trained_cmsad_model(workspace, phantom_dataset) -> Path:
    """nnUNetTrainerCMSAD_2x5it_NoMirroring on the phantom, fold 0, validation probabilities kept (--npz)."""
    return train_fold0(workspace, phantom_dataset, CMSAD_TRAINER, "--npz")


@pytest.fixture(scope="session")
def trained_plain_model(workspace, phantom_dataset) -> Path:
    """Plain nnUNetTrainer (2-epoch schedule) on the same plans and fold, with --npz, for ensembles."""
    return train_fold0(workspace, phantom_dataset, PLAIN_TRAINER, "--npz")


@pytest.fixture(scope="session")
def trained_maml_model(workspace, phantom_dataset) -> Path:
    """nnUNetTrainerMAML_2x5it_NoMirroring (modality dropout on) on the phantom, fold 0, validation probabilities
    kept (--npz) for find_best_configuration."""
    return train_fold0(workspace, phantom_dataset, MAML_TRAINER, "--npz")


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
    run_tool(["nnUNetv2_plan_and_preprocess", "-d", MKD_ASSISTANT_ID, "-c", "2d", "-np", "1", "-npfp", "1", "--no_pp"],
             dict(workspace.env, nnUNet_n_proc_DA="1"))
    run_tool(["nnunet-mm", "mkd-prepare", "-d", DATASET_ID, "-a", MKD_ASSISTANT_ID, "-p", TINY_PLANS],
             workspace.env)
    return workspace.preprocessed / phantom_dataset.name / f"{MKD_PLANS}.json"


@pytest.fixture(scope="session")
def trained_mkd_model(workspace, phantom_dataset, mkd_assistant) -> Path:
    """nnUNetTrainerMKD_iamFeedback_2x5it_NoMirroring on the phantom with its assistant, fold 0. The feedback
    variant, so that one training run also takes the generator's segmentation gradient through nnUNetv2_train; the
    default (detached) path trains through nnUNetv2_train in test_resume.py and in-process in test_mkd.py."""
    run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", MKD_FEEDBACK_TRAINER, "-p", MKD_PLANS, "-device",
              "cpu"], workspace.env)
    return workspace.results / phantom_dataset.name / f"{MKD_FEEDBACK_TRAINER}__{MKD_PLANS}__2d" / "fold_0"


@pytest.fixture(scope="session")
def brats_region_model(workspace) -> tuple[Path, Path]:
    """A 4-modality region phantom in BraTS 2021's nnU-Net convention (channels T1/T1ce/T2/FLAIR, regions
    (1,2,3)/(2,3)/3 in that order), CMSAD with modality dropout trained 2 epochs on fold 0: (raw folder, model
    folder). One training serves the region tests of CMSAD and the BraTS submission tests."""
    spec = PhantomSpec(shape=(48, 48), modalities=("T1", "T1ce", "T2", "FLAIR"), label_style="regions", seed=3)
    raw = write_dataset(workspace.raw, BRATS_ID, "SubmissionBraTS", spec, num_training=6, num_test=2)
    run_tool(["nnUNetv2_plan_and_preprocess", "-d", BRATS_ID, "-c", "2d", "-np", "1", "-npfp", "1"],
             dict(workspace.env, nnUNet_n_proc_DA="1"))
    run_tool(["nnunet-mm", "plans", "-d", BRATS_ID, "-c", "2d", "--tiny", "-o", TINY_PLANS], workspace.env)
    run_tool(["nnUNetv2_train", BRATS_ID, "2d", "0", "-tr", CMSAD_DROPOUT_TRAINER, "-p", TINY_PLANS, "-device",
              "cpu"], workspace.env)
    return raw, workspace.results / raw.name / f"{CMSAD_DROPOUT_TRAINER}__{TINY_PLANS}__2d"


@pytest.fixture(scope="session")
def reference_predictions(workspace, phantom_dataset, trained_cmsad_model, trained_plain_model, tmp_path_factory):
    """nnU-Net's own predictions (with probabilities) of the phantom's test cases by both fixture models."""
    folder = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("nnUNet_extTrainer", workspace.env["nnUNet_extTrainer"])
        for model in (trained_cmsad_model, trained_plain_model):
            nnunet_predict(model.parent, phantom_dataset / "imagesTs", folder / model.parent.name, True)
    return folder
