"""Prediction with missing modalities and the modality-subset sweep, on tiny trained models."""

import csv
import gzip
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import DATASET_ID, MAML_TRAINER, TINY_PLANS, run_tool, write_nan_voxels

from nnunet_multimodal.cli import main
from nnunet_multimodal.evaluation.missing_sweep import modality_subsets
from nnunet_multimodal.inference.missing import MissingModalityPredictor
from nnunet_multimodal.inference.output_folder import MANIFEST


def arrays(folder):
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def predict_in_process(capsys, images, output, *extra) -> tuple[int, str]:
    """``nnunet-mm predict`` through the console script's entry function (no process start): its exit code and
    stderr."""
    code = main(["predict", "-i", str(images), "-o", str(output), "-d", str(DATASET_ID), "-c", "2d", "-tr",
                 MAML_TRAINER, "-p", TINY_PLANS, *extra])
    return code, capsys.readouterr().err


def test_absent_channel_file_is_detected_and_equals_explicit_missing(workspace, nnunet_paths, phantom_dataset,
                                                                    trained_maml_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_extTrainer", workspace.env["nnUNet_extTrainer"])
    partial = tmp_path / "images"
    shutil.copytree(phantom_dataset / "imagesTs", partial)
    for f in partial.glob("*_0001.nii.gz"):
        f.unlink()                                     # T2 absent for every case
    # in-process (the console script itself is run by test_e2e and the sweep tests): three process starts saved
    assert predict_in_process(capsys, partial, tmp_path / "absent")[0] == 0
    assert predict_in_process(capsys, phantom_dataset / "imagesTs", tmp_path / "explicit", "--missing", "T2")[0] == 0
    assert predict_in_process(capsys, phantom_dataset / "imagesTs", tmp_path / "explicit_again", "--missing",
                              "T2")[0] == 0
    absent, explicit, again = (arrays(tmp_path / n) for n in ("absent", "explicit", "explicit_again"))
    assert sorted(absent) == sorted(p.name for p in (phantom_dataset / "labelsTs").iterdir())
    for name in absent:
        assert np.array_equal(absent[name], explicit[name])
        assert np.array_equal(explicit[name], again[name])
        reference = sitk.ReadImage(str(phantom_dataset / "labelsTs" / name))
        assert sitk.ReadImage(str(tmp_path / "absent" / name)).GetSize() == reference.GetSize()
    used = json.loads((tmp_path / "absent" / "modalities_used.json").read_text())
    assert all(v == ["T1", "FLAIR"] for v in used.values())
    assert not list((tmp_path / "absent").glob(".partial-*"))


def test_unknown_missing_modality_is_named(nnunet_paths, phantom_dataset, trained_maml_model, tmp_path, capsys):
    code, error = predict_in_process(capsys, phantom_dataset / "imagesTs", tmp_path / "o", "--missing", "PET")
    assert code == 2
    assert "['PET']" in error
    assert "T1" in error


def test_every_modality_missing_is_refused(nnunet_paths, phantom_dataset, trained_maml_model, tmp_path, capsys):
    code, error = predict_in_process(capsys, phantom_dataset / "imagesTs", tmp_path / "o", "--missing", "T1",
                                     "--missing", "T2,FLAIR")
    assert code == 2
    assert "every modality is missing" in error


def test_channel_beyond_the_models_modalities_is_refused(nnunet_paths, phantom_dataset, trained_maml_model, tmp_path,
                                                         capsys):
    extra = tmp_path / "extra"
    shutil.copytree(phantom_dataset / "imagesTs", extra)
    first = sorted(extra.glob("*_0000.nii.gz"))[0]
    shutil.copy(first, first.with_name(first.name.replace("_0000", "_0003")))
    code, error = predict_in_process(capsys, extra, tmp_path / "o2")
    assert code == 2
    assert "beyond the model's 3 modalities" in error


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
    assert len(table) == 2 ** 3 - 1 + 1
    assert "mean over subsets" in table
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
    assert len(table) == 2 ** 3 - 1 + 1
    assert 0 <= table["T1+T2+FLAIR"]["mean"] <= 1


def test_evaluate_missing_needs_both_folders_or_one_fold(nnunet_paths, phantom_dataset, trained_maml_model, tmp_path,
                                                         capsys):
    common = ["-o", str(tmp_path), "-d", str(DATASET_ID), "-c", "2d", "-tr", MAML_TRAINER, "-p", TINY_PLANS]
    assert main(["evaluate-missing", "-i", str(phantom_dataset / "imagesTs"), *common]) == 2
    assert "both -i and -ref" in capsys.readouterr().err
    assert main(["evaluate-missing", "-f", "0", "1", *common]) == 2
    assert "one fold" in capsys.readouterr().err


def test_unwritable_output_folder_fails_before_predicting(nnunet_paths, phantom_dataset, trained_maml_model, tmp_path,
                                                         capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for output in (blocker / "predictions", "/proc/nnunet_mm_predictions"):  # root may write anywhere else
        code, error = predict_in_process(capsys, phantom_dataset / "imagesTs", output)
        assert code == 2
        assert f"cannot write predictions to {output}" in error
        assert "-o" in error


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
    assert "No space left on device" in error
    assert "TestPhantom_011.nii.gz" in error
    assert "-o" in error
    written = sorted(p.name for p in output.iterdir() if p.name != MANIFEST)
    assert written == ["TestPhantom_010.nii.gz"]  # the first case complete, nothing of the second
    assert sitk.ReadImage(str(output / written[0])).GetSize() == (64, 64, 1)


def damaged_copy(source, target, file_name, damage):
    shutil.copytree(source, target)
    damage(target / file_name)
    return target


def with_spacing(path):
    image = sitk.ReadImage(str(path))
    image.SetSpacing((1.0, 1.5, 1.0))
    sitk.WriteImage(image, str(path))


INPUT_BREAKAGES = {  # the last case, so a predictor working case by case would have written the others first
    "nan": ("TestPhantom_011_0001.nii.gz", lambda path: write_nan_voxels(path, 3),
            "3 NaN/Inf voxels would give a wrong prediction", "--missing T2"),
    "spacing": ("TestPhantom_011_0002.nii.gz", with_spacing, "spacing (1.0, 1.5, 1.0) differs", "resample"),
    "unreadable": ("TestPhantom_011_0000.nii.gz", lambda p: p.write_bytes(gzip.compress(b"not an image")),
                   "is unreadable", "re-export"),
    "cut short": ("TestPhantom_011_0001.nii.gz", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                  "is unreadable (gzip: Compressed file ended", "copy or download it again"),
}


def test_bad_input_is_refused_with_file_and_fix_before_anything_is_written(nnunet_paths, phantom_dataset,
                                                                            trained_maml_model, tmp_path, capsys):
    from nnunet_multimodal import cli

    last_case = sorted((phantom_dataset / "imagesTs").glob("*_0000.nii.gz"))[-1]
    assert last_case.name.startswith("TestPhantom_011")
    for name, (file_name, damage, message, fix) in INPUT_BREAKAGES.items():
        images = damaged_copy(phantom_dataset / "imagesTs", tmp_path / name, file_name, damage)
        output = tmp_path / f"{name}_predictions"
        code = cli.main(["predict", "-i", str(images), "-o", str(output), "-d", str(DATASET_ID), "-c", "2d",
                         "-tr", MAML_TRAINER, "-p", TINY_PLANS])
        error = capsys.readouterr().err
        assert code == 2, (name, error)
        assert file_name in error, (name, error)
        assert message in error, (name, error)
        assert fix in error, (name, error)
        assert not output.exists() or not any(output.iterdir()), name
    code = cli.main(["predict", "-i", str(phantom_dataset / "imagesTs"), "-o", str(phantom_dataset / "imagesTs"),
                     "-d", str(DATASET_ID), "-c", "2d", "-tr", MAML_TRAINER, "-p", TINY_PLANS])
    assert code == 2
    assert "is the input folder" in capsys.readouterr().err


def test_truncated_checkpoint_is_named_with_the_fix(nnunet_paths, trained_maml_model, tmp_path, capsys):
    from nnunet_multimodal.training.checkpointing import CheckpointError

    model = tmp_path / "model"
    shutil.copytree(trained_maml_model.parent, model, ignore=shutil.ignore_patterns("validation"))
    checkpoint = model / "fold_0" / "checkpoint_final.pth"
    checkpoint.write_bytes(checkpoint.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match=r"fold_0/checkpoint_final.pth is unreadable.*checkpoint_best.pth"):
        MissingModalityPredictor(model, [0])


def test_compiled_network_takes_the_mask_and_the_checkpoint_weights():
    import torch
    from arch_helpers import architecture

    from nnunet_multimodal.inference.missing import AvailabilityBoundNetwork
    from nnunet_multimodal.networks.maml import MAMLNet

    trained, fresh = (MAMLNet(architecture(dim=2), 3, 0, 3, False, {}).eval() for _ in range(2))
    available = torch.tensor([True, False, True])
    bound = AvailabilityBoundNetwork(torch.compile(fresh, backend="eager"), available)
    assert bound.takes_availability
    bound.load_state_dict(trained.state_dict())          # keys without the compiled wrapper's "_orig_mod."
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(bound(x), trained(x, available=available.expand(2, -1)))


def test_sliding_window_flags_reach_nnunets_predictor(nnunet_paths, trained_maml_model):
    from nnunet_multimodal.cli import _missing_predictor, build_parser

    args = build_parser().parse_args(["predict", "-i", "in", "-o", "out", "-d", str(DATASET_ID), "-c", "2d", "-tr",
                                      MAML_TRAINER, "-p", TINY_PLANS, "-step_size", "0.75", "--disable_tta"])
    predictor = _missing_predictor(args).predictor
    assert predictor.tile_step_size == 0.75
    assert predictor.use_mirroring is False
    default = _missing_predictor(build_parser().parse_args(["evaluate-missing", "-o", "out", "-d", str(DATASET_ID),
                                                           "-c", "2d", "-tr", MAML_TRAINER, "-p", TINY_PLANS]))
    assert default.predictor.tile_step_size == 0.5
    assert default.predictor.use_mirroring is True


def test_names_shared_by_several_channels_get_the_file_number():
    from nnunet_multimodal.inference.missing import modality_labels

    assert modality_labels(["CT", "CT", "MR"]) == ["CT_0000", "CT_0001", "MR"]
    assert modality_labels(["T1", "T2"]) == ["T1", "T2"]


class FixedPredictor:
    """Writes the same segmentation for every subset: the sweep's bookkeeping without a network."""
    modalities = ["A", "B"]
    file_ending = ".nii.gz"

    def __init__(self, prediction):
        self.prediction = prediction

    def predict_folder(self, input_folder, output_folder, missing_names):
        output_folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(sitk.GetImageFromArray(self.prediction), str(output_folder / "case.nii.gz"))


def test_sweep_respects_the_ignore_label_writes_strict_json_and_csv_for_regions(tmp_path):
    from nnunet_multimodal.evaluation.missing_sweep import evaluate_missing
    from nnunet_multimodal.inference.output_folder import record_files_written

    reference = np.zeros((1, 8, 8), np.uint8)
    reference[0, :4, :4] = 1
    reference[0, 6:, 6:] = 3                                   # the ignore label, where the prediction says 1
    prediction = np.where(reference == 3, 1, reference).astype(np.uint8)
    (tmp_path / "ref").mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(reference), str(tmp_path / "ref" / "case.nii.gz"))
    stale = tmp_path / "out" / "predictions" / "A_B" / "gone.nii.gz"    # an earlier run's case, not in -ref
    stale.parent.mkdir(parents=True)
    sitk.WriteImage(sitk.GetImageFromArray(reference), str(stale))
    record_files_written(stale.parent, [stale.name])                   # as that run's prediction recorded it

    table = evaluate_missing(FixedPredictor(prediction), tmp_path, tmp_path / "ref", tmp_path / "out",
                             [(1, 2), (2,)], ignore_label=3)
    assert table["A+B"]["(1, 2)"] == 1.0                       # the false positives lie under the ignore label
    assert not stale.exists()
    text = (tmp_path / "out" / "table.json").read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in table.json"))
    assert strict["A"]["(2,)"] is None                         # empty in both: NaN under nnU-Net's convention
    rows = list(csv.reader((tmp_path / "out" / "table.csv").read_text().splitlines()))
    assert rows[0] == ["modalities", "Dice (1, 2)", "Dice (2,)", "Dice mean"]
    assert all(len(row) == 4 for row in rows)
    assert len(rows) == 1 + 3 + 1
    without_ignore = evaluate_missing(FixedPredictor(prediction), tmp_path, tmp_path / "ref", tmp_path / "out2",
                                      [(1, 2), (2,)])
    assert without_ignore["A+B"]["(1, 2)"] < 1.0


def predict_args(images, output, *extra):
    return ["predict", "-i", str(images), "-o", str(output), "-d", str(DATASET_ID), "-c", "2d", "-tr", MAML_TRAINER,
            "-p", TINY_PLANS, *extra]


def test_files_predict_did_not_write_are_refused_unless_overwrite(nnunet_paths, phantom_dataset, trained_maml_model,
                                                                  tmp_path, capsys):
    from nnunet_multimodal import cli

    output = shutil.copytree(phantom_dataset / "labelsTs", tmp_path / "labels_copy")
    labels = {p.name: p.read_bytes() for p in output.iterdir()}
    assert cli.main(predict_args(phantom_dataset / "imagesTs", output)) == 2
    error = capsys.readouterr().err
    assert f"{len(labels)} file(s) that this run would replace" in error
    assert ", ".join(sorted(labels)) in error
    assert "--overwrite" in error
    assert "(-o)" in error
    assert {p.name: p.read_bytes() for p in output.iterdir()} == labels
    assert cli.main(predict_args(phantom_dataset / "imagesTs", output, "--overwrite")) == 0
    assert cli.main(predict_args(phantom_dataset / "imagesTs", output)) == 0   # its own files: replaced again
    assert not (output / ".nnunet_mm_predict.lock").exists()


def test_lock_of_a_running_process_refuses_a_second_run(tmp_path):
    from nnunet_multimodal.inference.output_folder import LOCK, output_folder_lock

    with output_folder_lock(tmp_path):
        with pytest.raises(FileExistsError, match=f"{tmp_path / LOCK} exists: another prediction run"):
            with output_folder_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK).exists()


def test_lock_of_a_process_that_is_gone_is_taken_over_with_a_note(tmp_path, capsys):
    import subprocess
    import sys

    from nnunet_multimodal.inference.output_folder import LOCK, output_folder_lock

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK).write_text(gone.stdout.strip())
    with output_folder_lock(tmp_path):
        assert (tmp_path / LOCK).read_text() == str(os.getpid())
    assert f"was left by process {gone.stdout.strip()}, which is gone" in capsys.readouterr().err


def test_ctrl_c_during_predict_names_the_complete_cases_and_exits_130(nnunet_paths, phantom_dataset,
                                                                     trained_maml_model, tmp_path, monkeypatch,
                                                                     capsys):
    from nnunet_multimodal import cli

    real_predict = MissingModalityPredictor.predict_checked_case
    calls = []

    def ctrl_c_on_the_second_case(self, *args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_predict(self, *args, **kwargs)

    monkeypatch.setattr(MissingModalityPredictor, "predict_checked_case", ctrl_c_on_the_second_case)
    output = tmp_path / "predictions"
    assert cli.main(predict_args(phantom_dataset / "imagesTs", output)) == 130
    error = capsys.readouterr().err
    assert error == (f"nnunet-mm predict: interrupted; 1 of 2 case(s) are complete in {output} (TestPhantom_010), "
                     f"no partial file is left; rerun to predict the others\n")
    assert sorted(p.name for p in output.iterdir() if p.name != MANIFEST) == ["TestPhantom_010.nii.gz"]


def test_evaluate_missing_refuses_a_case_lacking_a_channel_file_before_predicting(nnunet_paths, phantom_dataset,
                                                                                   trained_maml_model, tmp_path,
                                                                                   capsys):
    from nnunet_multimodal import cli

    images = shutil.copytree(phantom_dataset / "imagesTs", tmp_path / "images")
    (images / "TestPhantom_011_0002.nii.gz").unlink()
    code = cli.main(["evaluate-missing", "-i", str(images), "-ref", str(phantom_dataset / "labelsTs"), "-o",
                     str(tmp_path / "out"), "-d", str(DATASET_ID), "-c", "2d", "-tr", MAML_TRAINER, "-p", TINY_PLANS])
    assert code == 2
    error = capsys.readouterr().err
    assert f"TestPhantom_011: {images / 'TestPhantom_011_0002.nii.gz'} (FLAIR) is missing" in error
    assert not (tmp_path / "out").exists()


def test_an_earlier_sweeps_files_are_removed(tmp_path):
    from nnunet_multimodal.evaluation.missing_sweep import remove_earlier_sweep
    from nnunet_multimodal.inference.output_folder import record_files_written

    record_files_written(tmp_path, ["case_001.nii.gz", "modalities_used.json"])
    (tmp_path / "case_001.nii.gz").write_bytes(b"prediction")
    remove_earlier_sweep(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_sweeps_lock_and_temporary_files_do_not_block_the_next(tmp_path):
    from nnunet_multimodal.evaluation.missing_sweep import remove_earlier_sweep
    from nnunet_multimodal.inference.output_folder import LOCK, record_files_written

    record_files_written(tmp_path, ["case_001.nii.gz"])
    (tmp_path / ".case_001.nii.gz.1a2b3c4d.partial.nii.gz").write_bytes(b"half a prediction")
    (tmp_path / LOCK).write_text("999999999")  # the killed run's pid; the prediction run takes the lock over
    remove_earlier_sweep(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [LOCK]


def test_a_file_no_sweep_wrote_is_refused_not_deleted(tmp_path):
    from nnunet_multimodal.evaluation.missing_sweep import remove_earlier_sweep

    (tmp_path / "notes.txt").write_text("the user's")
    with pytest.raises(FileExistsError, match=r"holds files no earlier sweep wrote \(notes.txt\)"):
        remove_earlier_sweep(tmp_path)


def test_wrapping_an_nnunet_predictor_predicts_as_the_model_folder_does(phantom_dataset, trained_maml_model,
                                                                       nnunet_paths, tmp_path):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(device=torch.device("cpu"), perform_everything_on_device=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(trained_maml_model.parent), (0,), "checkpoint_final.pth")
    MissingModalityPredictor.wrapping(predictor).predict_folder(phantom_dataset / "imagesTs", tmp_path / "wrapped",
                                                               ["T2"])
    MissingModalityPredictor(trained_maml_model.parent, (0,)).predict_folder(phantom_dataset / "imagesTs",
                                                                            tmp_path / "folder", ["T2"])
    wrapped, folder = arrays(tmp_path / "wrapped"), arrays(tmp_path / "folder")
    assert {name: a.tolist() for name, a in wrapped.items()} == {name: a.tolist() for name, a in folder.items()}


def test_wrapping_needs_an_initialised_predictor():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    with pytest.raises(ValueError, match="nnUNetPredictor is not initialised"):
        MissingModalityPredictor.wrapping(nnUNetPredictor(device=torch.device("cpu")))
