"""Prediction with missing modalities and the modality-subset sweep, on tiny trained models."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import DATASET_ID, MAML_TRAINER, TINY_PLANS, run_tool

from nnunet_multimodal.inference.missing import MissingModalityPredictor, modality_subsets


def arrays(folder):
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def predict(workspace, images, output, *extra, trainer=MAML_TRAINER, check=True):
    return run_tool(["nnunet-mm", "predict", "-i", images, "-o", output, "-d", DATASET_ID, "-c", "2d", "-tr", trainer,
                     "-p", TINY_PLANS, *extra], workspace.env, check=check)


def test_absent_channel_file_is_detected_and_equals_explicit_missing(workspace, phantom_dataset, trained_maml_model,
                                                                    tmp_path):
    partial = tmp_path / "images"
    shutil.copytree(phantom_dataset / "imagesTs", partial)
    for f in partial.glob("*_0001.nii.gz"):
        f.unlink()                                     # T2 absent for every case
    predict(workspace, partial, tmp_path / "absent")
    predict(workspace, phantom_dataset / "imagesTs", tmp_path / "explicit", "--missing", "T2")
    predict(workspace, phantom_dataset / "imagesTs", tmp_path / "explicit_again", "--missing", "T2")
    absent, explicit, again = (arrays(tmp_path / n) for n in ("absent", "explicit", "explicit_again"))
    assert sorted(absent) == sorted(p.name for p in (phantom_dataset / "labelsTs").iterdir())
    for name in absent:
        assert np.array_equal(absent[name], explicit[name]) and np.array_equal(explicit[name], again[name])
        reference = sitk.ReadImage(str(phantom_dataset / "labelsTs" / name))
        assert sitk.ReadImage(str(tmp_path / "absent" / name)).GetSize() == reference.GetSize()
    used = json.loads((tmp_path / "absent" / "modalities_used.json").read_text())
    assert all(v == ["T1", "FLAIR"] for v in used.values())
    assert not list((tmp_path / "absent").glob(".partial-*"))


def test_missing_option_errors(workspace, phantom_dataset, trained_maml_model, tmp_path):
    unknown = predict(workspace, phantom_dataset / "imagesTs", tmp_path / "o", "--missing", "PET", check=False)
    assert unknown.returncode == 2 and "['PET']" in unknown.stderr and "T1" in unknown.stderr
    every = predict(workspace, phantom_dataset / "imagesTs", tmp_path / "o", "--missing", "T1,T2,FLAIR", check=False)
    assert every.returncode == 2 and "every modality is missing" in every.stderr
    extra = tmp_path / "extra"
    shutil.copytree(phantom_dataset / "imagesTs", extra)
    first = sorted(extra.glob("*_0000.nii.gz"))[0]
    shutil.copy(first, first.with_name(first.name.replace("_0000", "_0003")))
    wrong = predict(workspace, extra, tmp_path / "o2", check=False)
    assert wrong.returncode == 2 and "beyond the model's 3 modalities" in wrong.stderr


def test_plain_network_gets_zeros_and_a_warning(workspace, phantom_dataset, trained_base_model, tmp_path,
                                                nnunet_paths, monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", workspace.env["nnUNet_extTrainer"])
    predictor = MissingModalityPredictor(trained_base_model.parent, [0])
    assert not predictor.trained_for_missing
    with pytest.warns(UserWarning, match="not trained for missing modalities"):
        used = predictor.predict_folder(phantom_dataset / "imagesTs", tmp_path, ["FLAIR"])
    assert all(v == ["T1", "T2"] for v in used.values())


def test_subsets():
    assert modality_subsets(["A", "B", "C"]) == [("A", "B", "C"), ("A", "B"), ("A", "C"), ("B", "C"), ("A",), ("B",),
                                                 ("C",)]


def test_evaluate_missing_sweep(workspace, phantom_dataset, trained_maml_model, tmp_path):
    run_tool(["nnunet-mm", "evaluate-missing", "-i", phantom_dataset / "imagesTs", "-ref", phantom_dataset / "labelsTs",
              "-o", tmp_path, "-d", DATASET_ID, "-c", "2d", "-tr", MAML_TRAINER, "-p", TINY_PLANS], workspace.env)
    table = json.loads((tmp_path / "table.json").read_text())
    assert len(table) == 2 ** 3 - 1 + 1 and "mean over subsets" in table
    assert set(table["T1+T2+FLAIR"]) == {"1", "2", "3", "mean"}
    assert (tmp_path / "heatmap.png").stat().st_size > 5000
    assert (tmp_path / "table.csv").read_text().count("\n") == 9


def test_evaluate_missing_on_the_fold_validation_cases(workspace, phantom_dataset, trained_maml_model, tmp_path):
    run_tool(["nnunet-mm", "evaluate-missing", "-o", tmp_path, "-d", DATASET_ID, "-c", "2d", "-f", "0", "-tr",
              MAML_TRAINER, "-p", TINY_PLANS], workspace.env)
    splits = json.loads((workspace.preprocessed / phantom_dataset.name / "splits_final.json").read_text())
    predicted = sorted(p.name for p in (tmp_path / "predictions" / "T1_T2_FLAIR").glob("*.nii.gz"))
    assert predicted == sorted(f"{case}.nii.gz" for case in splits[0]["val"])
    table = json.loads((tmp_path / "table.json").read_text())
    assert len(table) == 2 ** 3 - 1 + 1 and 0 <= table["T1+T2+FLAIR"]["mean"] <= 1


def test_evaluate_missing_needs_both_folders_or_one_fold(workspace, phantom_dataset, trained_maml_model, tmp_path):
    common = ["-o", tmp_path, "-d", DATASET_ID, "-c", "2d", "-tr", MAML_TRAINER, "-p", TINY_PLANS]
    only_input = run_tool(["nnunet-mm", "evaluate-missing", "-i", phantom_dataset / "imagesTs", *common],
                          workspace.env, check=False)
    assert only_input.returncode != 0 and "both -i and -ref" in only_input.stderr
    two_folds = run_tool(["nnunet-mm", "evaluate-missing", "-f", "0", "1", *common], workspace.env, check=False)
    assert two_folds.returncode != 0 and "one fold" in two_folds.stderr


def test_unwritable_output_folder_fails_before_predicting(workspace, phantom_dataset, trained_maml_model, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for output in (blocker / "predictions", "/proc/nnunet_mm_predictions"):  # root may write anywhere else
        result = predict(workspace, phantom_dataset / "imagesTs", output, check=False)
        assert result.returncode == 2
        assert f"cannot write predictions to {output}" in result.stderr and "-o" in result.stderr


def test_disk_full_during_writes_leaves_only_complete_cases(nnunet_paths, phantom_dataset, trained_maml_model,
                                                            tmp_path, monkeypatch, capsys):
    import errno

    import nnunetv2.inference.export_prediction as export

    from nnunet_multimodal import cli

    real_export = export.export_prediction_from_logits
    calls = []

    def disk_fills_up_on_the_second_case(*args, **kwargs):
        calls.append(args[5])
        if len(calls) == 2:
            with open(f"{args[5]}.nii.gz", "wb") as half_written:
                half_written.write(b"\x1f\x8b half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_export(*args, **kwargs)

    monkeypatch.setattr(export, "export_prediction_from_logits", disk_fills_up_on_the_second_case)
    output = tmp_path / "predictions"
    code = cli.main(["predict", "-i", str(phantom_dataset / "imagesTs"), "-o", str(output), "-d", str(DATASET_ID),
                     "-c", "2d", "-tr", MAML_TRAINER, "-p", TINY_PLANS])
    assert code == 2
    error = capsys.readouterr().err
    assert "No space left on device" in error and "TestPhantom_011.nii.gz" in error and "-o" in error
    written = sorted(p.name for p in output.iterdir())
    assert written == ["TestPhantom_010.nii.gz"]  # the first case complete, nothing of the second
    assert sitk.ReadImage(str(output / written[0])).GetSize() == (64, 64, 1)
