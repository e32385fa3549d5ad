import os

from nnunet_multimodal.cli import main
from nnunet_multimodal.environment import env_report, ext_trainer_value, trainers_folder


def test_trainers_folder_is_inside_the_package_and_holds_shims():
    folder = trainers_folder()
    assert (folder / "nnunet_mm_base.py").is_file()
    assert not any("__" in p.stem.strip("_") for p in folder.glob("*.py"))


def test_ext_trainer_appends_and_never_duplicates():
    ours = str(trainers_folder())
    assert ext_trainer_value(None) == ours
    assert ext_trainer_value(f"/a{os.pathsep}/b") == f"/a{os.pathsep}/b{os.pathsep}{ours}"
    assert ext_trainer_value(f"{ours}{os.pathsep}/a") == f"{ours}{os.pathsep}/a"


def test_report_lists_unset_folders():
    report = env_report({"nnUNet_raw": "/data/raw"})
    assert "export nnUNet_extTrainer=" in report
    assert "nnUNet_preprocessed" in report
    assert "nnUNet_results" in report
    assert "export nnUNet_raw" not in report
    full = env_report({"nnUNet_raw": "r", "nnUNet_preprocessed": "p", "nnUNet_results": "s"})
    assert "are set" in full


def test_env_command(capsys):
    assert main(["env"]) == 0
    assert str(trainers_folder()) in capsys.readouterr().out
