"""nnUNetTrainerCMSAD through nnU-Net's own console scripts."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import (
    BRATS_ID,
    CMSAD_DROPOUT_TRAINER,
    CMSAD_TRAINER,
    DATASET_ID,
    TINY_PLANS,
    run_tool,
    train_fold0,
)

from nnunet_multimodal.cli import main


def test_training_logs_distillation_and_checkpoint_knobs(trained_cmsad_model):
    checkpoint = torch.load(trained_cmsad_model / "checkpoint_final.pth", weights_only=False)
    knobs = checkpoint["nnunet_multimodal"]["knobs"]
    assert knobs["architecture"]["branch_width"] == "auto"
    assert knobs["distill_stages"] == (-3, -2, -1)
    logs = checkpoint["logging"]
    assert len(logs["loss_distill"]) == len(logs["loss_seg"]) == 2
    assert all(v > 0 for v in logs["loss_distill"])
    assert (trained_cmsad_model / "progress_loss_terms.png").is_file()
    assert not any("distill" in k for k in checkpoint["network_weights"])


def test_npz_ensemble_with_plain_nnunet(workspace, phantom_dataset, trained_cmsad_model, trained_plain_model,
                                       reference_predictions, tmp_path):
    cmsad, plain = (reference_predictions / model.parent.name for model in (trained_cmsad_model, trained_plain_model))
    run_tool(["nnUNetv2_ensemble", "-i", cmsad, plain, "-o", tmp_path / "ensemble", "-np", "1"], workspace.env)
    for case in sorted(p.name for p in (phantom_dataset / "labelsTs").iterdir()):
        for folder in (cmsad, plain, tmp_path / "ensemble"):
            prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / case)))
            assert prediction.shape == (1, 64, 64)
            assert set(np.unique(prediction)) <= {0, 1, 2, 3}
        probabilities = np.load(cmsad / case.replace(".nii.gz", ".npz"))["probabilities"]
        assert np.allclose(probabilities.sum(0), 1, atol=1e-3)


def test_pretrained_weights_from_a_cmsad_checkpoint(workspace, phantom_dataset, trained_cmsad_model):
    run_tool(["nnUNetv2_train", DATASET_ID, "2d", "1", "-tr", CMSAD_TRAINER, "-p", TINY_PLANS, "-device", "cpu",
              "-pretrained_weights", trained_cmsad_model / "checkpoint_final.pth"], workspace.env)
    assert (trained_cmsad_model.parent / "fold_1" / "checkpoint_final.pth").is_file()


def test_attention_maps_command(workspace, phantom_dataset, trained_cmsad_model, tmp_path):
    images = sorted((phantom_dataset / "imagesTs").glob("*_000[0-2].nii.gz"))[:3]
    output = tmp_path / "maps.png"
    run_tool(["nnunet-mm", "attention-maps", "-d", DATASET_ID, "-c", "2d", "-tr", CMSAD_TRAINER, "-p", TINY_PLANS,
              "-i", *images, "-o", output], workspace.env)
    assert output.stat().st_size > 10_000


def test_attention_maps_name_the_modalities_the_model_needs(nnunet_paths, phantom_dataset, trained_cmsad_model,
                                                            tmp_path, capsys):
    images = sorted((phantom_dataset / "imagesTs").glob("*_000[0-2].nii.gz"))[:2]
    assert main(["attention-maps", "-d", str(DATASET_ID), "-c", "2d", "-tr", CMSAD_TRAINER, "-p", TINY_PLANS, "-i",
                 *map(str, images), "-o", str(tmp_path / "maps.png")]) == 2
    assert "trained on 3 modalities" in capsys.readouterr().err


def test_region_dataset(brats_region_model):
    _, model = brats_region_model
    summary = json.loads((model / "fold_0" / "validation" / "summary.json").read_text())
    assert set(summary["mean"]) == {"(1, 2, 3)", "(2, 3)", "3"}


@pytest.mark.slow  # 500 iterations (about 2 min on 2 cores); the network's learning: test_cmsad_network.py
def test_mean_foreground_dice_after_the_demo_budget(workspace, phantom_dataset):
    fold = train_fold0(workspace, phantom_dataset, "nnUNetTrainerCMSAD_20x25it_NoMirroring")
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["foreground_mean"]["Dice"] >= 0.5


def test_validation_only_from_the_best_checkpoint(workspace, trained_cmsad_model):
    result = run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", CMSAD_TRAINER, "-p", TINY_PLANS, "-device",
                       "cpu", "--val", "--val_best"], workspace.env)
    assert "Mean Validation Dice" in result.stdout


def test_cmsad_with_modality_dropout_through_console_scripts(workspace, brats_region_model, tmp_path):
    raw, model = brats_region_model  # trained with nnUNetv2_train
    checkpoint = torch.load(model / "fold_0" / "checkpoint_final.pth", weights_only=False)
    assert checkpoint["nnunet_multimodal"]["knobs"]["modality_dropout_p"] == 0.25
    assert all(v > 0 for v in checkpoint["logging"]["loss_distill"])
    result = run_tool(["nnunet-mm", "predict", "-i", raw / "imagesTs", "-o", tmp_path, "-d", BRATS_ID, "-c", "2d",
                       "-tr", CMSAD_DROPOUT_TRAINER, "-p", TINY_PLANS, "--missing", "T2"], workspace.env)
    assert "not trained for missing modalities" not in result.stderr  # its checkpoint says: modality dropout
    assert len(list(tmp_path.glob("*.nii.gz"))) == 2
