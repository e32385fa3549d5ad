"""nnUNetTrainerSAMAdapter through nnU-Net's console scripts: a 4-modality region (BraTS-style) phantom, the tiny
encoder loaded from a SAM-format file on disk, then prediction and export with that file gone."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import run_tool
from test_sam_adapter import write_sam_checkpoint
from timm.layers import resample_abs_pos_embed_nhwc

from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
from nnunet_multimodal.networks.sam_checkpoint import SAM_CHECKPOINT_ENV, SAMCheckpointError

DATASET = 948
SAM_PLANS = "nnUNetPlans_mmsam"
TRAINER = "nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring"


@pytest.fixture(scope="module")
def sam_region_dataset(workspace):
    spec = PhantomSpec(shape=(48, 48), modalities=("T1", "T1ce", "T2", "FLAIR"), label_style="regions", seed=3)
    raw = write_dataset(workspace.raw, DATASET, "SAMRegionPhantom", spec, num_training=6, num_test=1)
    run_tool(["nnUNetv2_plan_and_preprocess", "-d", DATASET, "-c", "2d", "-np", "1", "-npfp", "1"],
             dict(workspace.env, nnUNet_n_proc_DA="1"))
    # the tiny trainer defaults to random weights; these plans make it load a SAM-format file
    run_tool(["nnunet-mm", "plans", "-d", DATASET, "-c", "2d", "--tiny", "-o", SAM_PLANS, "--set",
              "sam_adapter.pretrained=true"], workspace.env)
    return raw


@pytest.fixture(scope="module")
def trained_sam_model(workspace, sam_region_dataset, tmp_path_factory):
    sam_file = tmp_path_factory.mktemp("sam") / "sam_tiny.pth"
    sam_state = write_sam_checkpoint(sam_file, img_size=256)
    run_tool(["nnUNetv2_train", DATASET, "2d", "0", "-tr", TRAINER, "-p", SAM_PLANS, "-device", "cpu"],
             dict(workspace.env, **{SAM_CHECKPOINT_ENV: str(sam_file)}))
    sam_file.unlink()  # what follows must not need it
    return workspace.results / sam_region_dataset.name / f"{TRAINER}__{SAM_PLANS}__2d" / "fold_0", sam_state


def test_sam_weights_are_in_the_checkpoint_and_stayed_frozen(trained_sam_model):
    fold, sam_state = trained_sam_model
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    assert torch.equal(weights["encoder.blocks.0.attn.qkv.weight"], sam_state["image_encoder.blocks.0.attn.qkv.weight"])
    assert torch.equal(weights["encoder.blocks.3.mlp.fc2.weight"], sam_state["image_encoder.blocks.3.mlp.lin2.weight"])
    # the tiny trainer's encoder input is 128: the file's 16 x 16 position embedding was resampled to 8 x 8
    assert torch.equal(weights["encoder.pos_embed"],
                       resample_abs_pos_embed_nhwc(sam_state["image_encoder.pos_embed"], [8, 8]))
    assert weights["encoder.blocks.0.modality_adapter.modality_embedding"].shape[0] == 4
    knobs = checkpoint["nnunet_multimodal"]["knobs"]
    assert knobs["architecture"]["pretrained"] is True
    assert knobs["adamw_lr"] == 1e-4
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "tiny image encoder loaded from" in log
    assert "sam_tiny.pth" in log
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"(1, 2, 3)", "(2, 3)", "3"}  # BraTS-style regions, sigmoid outputs


def test_predict_and_export_without_the_sam_file(workspace, sam_region_dataset, trained_sam_model, tmp_path):
    env = {k: v for k, v in workspace.env.items() if k != SAM_CHECKPOINT_ENV}
    run_tool(["nnUNetv2_predict", "-i", sam_region_dataset / "imagesTs", "-o", tmp_path / "pred", "-d", DATASET, "-c",
              "2d", "-f", "0", "-tr", TRAINER, "-p", SAM_PLANS, "-device", "cpu", "-npp", "1", "-nps", "1",
              "--disable_progress_bar"], env)
    (case,) = [p.name for p in (sam_region_dataset / "labelsTs").iterdir()]
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "pred" / case)))
    assert prediction.shape == (1, 48, 48)
    assert set(np.unique(prediction)) <= {0, 1, 2, 3}
    run_tool(["nnUNetv2_export_model_to_zip", "-d", DATASET, "-c", "2d", "-f", "0", "-tr", TRAINER, "-p", SAM_PLANS,
              "-o", tmp_path / "model.zip"], env)
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        assert any(name.endswith("fold_0/checkpoint_final.pth") for name in archive.namelist())


def make_trainer(cls, preprocessed_folder, configuration="2d"):
    plans = json.loads((preprocessed_folder / f"{SAM_PLANS}.json").read_text())
    plans["continue_training"] = False
    plans["configurations"]["3d_fullres"] = dict(plans["configurations"]["2d"], patch_size=[16, 48, 48])
    dataset_json = json.loads((preprocessed_folder / "dataset.json").read_text())
    return cls(plans, configuration, 1, dataset_json, device=torch.device("cpu"))


def test_training_without_a_sam_file_stops_with_the_fix(workspace, sam_region_dataset, nnunet_paths, monkeypatch):
    from nnunet_multimodal.training.sam_adapter import nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring

    monkeypatch.delenv(SAM_CHECKPOINT_ENV, raising=False)
    folder = workspace.preprocessed / sam_region_dataset.name
    with pytest.raises(ValueError, match="segments 2D patches.*'2d' configuration"):
        make_trainer(nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring, folder, "3d_fullres")
    trainer = make_trainer(nnUNetTrainerSAMAdapter_tiny_2x5it_NoMirroring, folder)
    with pytest.raises(SAMCheckpointError, match=f"No SAM checkpoint given for the tiny.*{SAM_CHECKPOINT_ENV}"):
        trainer.on_train_start()
    assert trainer.dataloader_train is None  # stopped before nnU-Net started its data loaders

