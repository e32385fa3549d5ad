"""The command line's convention for failure: a user error is one line and exit code 2, a bug keeps its
traceback; and the user errors every command shares (dataset ids, dataset.json files)."""

import errno
import json
import subprocess
import sys

import pytest

from nnunet_multimodal import cli
from nnunet_multimodal.user_errors import is_user_error


def test_a_bug_keeps_its_traceback_and_exits_1():
    script = ("import sys\nfrom nnunet_multimodal import cli\n"
              "def broken(args):\n    return {}['missing key']\n"
              "cli._cmd_env = broken\nsys.exit(cli.main(['env']))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "KeyError: 'missing key'" in result.stderr


def test_a_user_error_is_one_line_with_exit_code_2(monkeypatch, capsys):
    def refuses(args):
        raise FileNotFoundError("settings.json is missing; write it first")

    monkeypatch.setattr(cli, "_cmd_env", refuses)
    assert cli.main(["env"]) == 2
    assert capsys.readouterr().err == "nnunet-mm env: error: settings.json is missing; write it first\n"


def plugin_errors():
    from nnunet_multimodal.data.convert.common import ConversionError
    from nnunet_multimodal.data.mkd_assistant import AssistantError
    from nnunet_multimodal.data.verify import UnreadableImage
    from nnunet_multimodal.networks.sam_checkpoint import SAMCheckpointError
    from nnunet_multimodal.submission.runner import CaseError
    from nnunet_multimodal.training.checkpointing import CheckpointError

    return [ConversionError("x"), AssistantError("x"), UnreadableImage("f.nii.gz", "empty"), SAMCheckpointError("x"),
            CaseError("x"), CheckpointError("x")]


@pytest.mark.parametrize("error", plugin_errors(), ids=lambda e: type(e).__name__)
def test_the_plugins_own_errors_are_user_errors(error):
    assert is_user_error(error)


def test_a_full_disk_is_a_user_error():
    assert is_user_error(OSError(errno.ENOSPC, "No space left on device"))


def test_a_key_error_is_a_bug():
    assert not is_user_error(KeyError("labels"))


@pytest.fixture
def empty_nnunet_folders(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        (tmp_path / name).mkdir()
        monkeypatch.setenv(name, str(tmp_path / name))
    return tmp_path


@pytest.mark.parametrize("command, folder", [
    (["verify", "-d", "977"], "nnUNet_raw"),
    (["plans", "-d", "977"], "nnUNet_preprocessed"),
    (["predict", "-d", "977", "-i", "in", "-o", "out", "-c", "2d"], "nnUNet_results"),
    (["evaluate-missing", "-d", "977", "-i", "in", "-ref", "ref", "-o", "out", "-c", "2d"], "nnUNet_results"),
    (["submission", "build", "-d", "977", "--layout", "nnunet", "-o", "out"], "nnUNet_results"),
    (["attention-maps", "-d", "977", "-c", "2d", "-i", "case_0000.nii.gz", "-o", "maps.png"], "nnUNet_results"),
    (["benchmark", "speed", "-d", "977", "-tr", "nnUNetTrainerCMSAD"], "nnUNet_preprocessed"),
    (["benchmark", "accuracy", "-d", "977", "-tr", "nnUNetTrainerCMSAD", "-o", "out"], "nnUNet_raw"),
])
def test_an_unknown_dataset_id_names_where_it_was_looked_for(empty_nnunet_folders, capsys, command, folder):
    assert cli.main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"dataset 977 is not in {folder} ({empty_nnunet_folders / folder}: no folder Dataset977_*)" in error


@pytest.mark.parametrize("benchmark", [["accuracy", "-o", "out"], ["speed"]])
def test_benchmarks_refuse_a_cascade_stage_before_running(empty_nnunet_folders, capsys, monkeypatch, benchmark):
    monkeypatch.chdir(empty_nnunet_folders)
    raw = empty_nnunet_folders / "nnUNet_raw" / "Dataset977_Cascade"
    for folder in ("imagesTs", "labelsTs"):
        (raw / folder).mkdir(parents=True)
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1},
                                                  "numTraining": 0, "file_ending": ".nii.gz"}))
    preprocessed = empty_nnunet_folders / "nnUNet_preprocessed" / "Dataset977_Cascade"
    preprocessed.mkdir()
    (preprocessed / "nnUNetPlans.json").write_text(json.dumps({"configurations": {
        "3d_fullres": {"architecture": {}},
        "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}}}))
    assert cli.main(["benchmark", benchmark[0], "-d", "977", "-c", "3d_cascade_fullres", "-tr", "nnUNetTrainerCMSAD",
                     *benchmark[1:]]) == 2
    error = capsys.readouterr().err
    assert f"3d_cascade_fullres in {preprocessed / 'nnUNetPlans.json'} is a cascade stage (it takes 3d_lowres's " \
           f"segmentations): benchmark {benchmark[0]} runs single-stage configurations" in error
    assert not (empty_nnunet_folders / "nnUNet_results" / "Dataset977_Cascade").exists()


def test_benchmark_speed_names_missing_plans_before_measuring(empty_nnunet_folders, capsys):
    (empty_nnunet_folders / "nnUNet_preprocessed" / "Dataset977_NoPlans").mkdir()
    assert cli.main(["benchmark", "speed", "-d", "977", "-p", "nnUNetPlans_mmtiny", "-tr", "nnUNetTrainerCMSAD"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "nnUNetPlans_mmtiny.json does not exist: plan and preprocess the dataset first" in error


def test_a_malformed_dataset_json_is_named_by_verify(tmp_path, capsys):
    (tmp_path / "dataset.json").write_text('{"channel_names": {"0": "T1"}, ')
    assert cli.main(["verify", "--folder", str(tmp_path), "--quiet"]) == 1
    assert f"{tmp_path / 'dataset.json'}: is no usable dataset.json (JSONDecodeError" in capsys.readouterr().out


def test_a_malformed_dataset_json_is_named_by_plans(tmp_path):
    from nnunet_multimodal.plans.derive import write_derived_plans
    from test_plans import PLANS

    (tmp_path / "nnUNetPlans.json").write_text(json.dumps(PLANS))
    (tmp_path / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}}))
    with pytest.raises(ValueError, match=f"{tmp_path / 'dataset.json'} is no usable dataset.json"):
        write_derived_plans(tmp_path, "nnUNetPlans", ["3d_fullres"], "p_mm", tiny=True, knobs=["cmsad.levels=[2,3]"])


def test_a_malformed_dataset_json_in_the_model_folder_is_named_by_predict(tmp_path):
    from nnunet_multimodal.inference.missing import MissingModalityPredictor

    (tmp_path / "dataset.json").write_text("not json")
    with pytest.raises(ValueError, match=f"{tmp_path / 'dataset.json'} is no usable dataset.json"):
        MissingModalityPredictor(tmp_path, [0])


@pytest.mark.parametrize("splits", ['[{"train": ["a"]}]', '{"val": ["a"]}', "[{"])
def test_a_malformed_splits_file_is_named_with_the_fix(empty_nnunet_folders, splits):
    from nnunet_multimodal.evaluation.missing_sweep import fold_validation_cases

    preprocessed = empty_nnunet_folders / "nnUNet_preprocessed" / "Dataset977_X"
    preprocessed.mkdir()
    (preprocessed / "splits_final.json").write_text(splits)
    with pytest.raises(ValueError, match="splits_final.json is no splits_final.json of nnU-Net .* pass -i and -ref"):
        fold_validation_cases("Dataset977_X", 0, ".nii.gz", empty_nnunet_folders / "staging")
