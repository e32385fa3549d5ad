"""nnU-Net's own console scripts drive our trainers: plan_and_preprocess -> train -> predict, resume, --val."""

import SimpleITK as sitk
import torch
from helpers import BASE_TRAINER, DATASET_ID, TINY_PLANS, run_tool

from nnunet_multimodal.training.checkpointing import PLUGIN_KEY


def test_training_writes_stamped_checkpoints_and_validation(trained_base_model):
    for name in ("checkpoint_final.pth", "checkpoint_best.pth", "progress.png", "validation/summary.json"):
        assert (trained_base_model / name).is_file(), name
    assert not (trained_base_model / "checkpoint_latest.pth").exists()
    checkpoint = torch.load(trained_base_model / "checkpoint_final.pth", weights_only=False)
    assert checkpoint["trainer_name"] == BASE_TRAINER
    assert checkpoint[PLUGIN_KEY]["knobs"]["modalities"] == ["T1", "T2", "FLAIR"]


def test_predict_with_stock_console_script(workspace, phantom_dataset, trained_base_model, tmp_path):
    output = tmp_path / "predictions"
    run_tool(["nnUNetv2_predict", "-i", phantom_dataset / "imagesTs", "-o", output, "-d", DATASET_ID, "-c", "2d",
              "-f", "0", "-tr", BASE_TRAINER, "-p", TINY_PLANS, "-device", "cpu", "-npp", "1", "-nps", "1",
              "--disable_progress_bar"], workspace.env)
    predicted = sorted(output.glob("*.nii.gz"))
    assert [p.name for p in predicted] == sorted(p.name for p in (phantom_dataset / "labelsTs").iterdir())
    for path in predicted:
        reference = sitk.ReadImage(str(phantom_dataset / "labelsTs" / path.name))
        prediction = sitk.ReadImage(str(path))
        assert prediction.GetSize() == reference.GetSize()
        assert set(sitk.GetArrayFromImage(prediction).ravel().tolist()) <= {0, 1, 2, 3}


def test_resume_and_validation_only_go_through_our_checkpoint_loading(workspace, trained_base_model):
    before = (trained_base_model / "checkpoint_final.pth").stat().st_mtime_ns
    result = run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", BASE_TRAINER, "-p", TINY_PLANS,
                       "-device", "cpu", "--val", "--val_best"], workspace.env)
    assert "Mean Validation Dice" in result.stdout
    assert (trained_base_model / "checkpoint_final.pth").stat().st_mtime_ns == before


def test_unknown_trainer_name_is_a_clear_error(workspace, phantom_dataset):
    result = run_tool(["nnUNetv2_train", DATASET_ID, "2d", "0", "-tr", "nnUNetTrainerNotShipped", "-p",
                       TINY_PLANS, "-device", "cpu"], workspace.env, check=False)
    assert result.returncode != 0
    assert "Could not find requested nnunet trainer nnUNetTrainerNotShipped" in result.stderr
