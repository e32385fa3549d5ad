"""The wheel ships trainers/ and plans/ inside nnunet_multimodal, never as top-level packages."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import BIN

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    return next(out.glob("nnunet_multimodal-*.whl"))


def test_wheel_layout(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnunet_multimodal/trainers/nnunet_mm_base.py" in names
    assert "nnunet_multimodal/plans/README.md" in names
    assert "nnunet_multimodal/plans/derive.py" in names
    assert not any(n.startswith(("trainers/", "plans/", "tests/")) for n in names)
    source_packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "nnunet_multimodal").rglob("__init__.py")}
    assert source_packages, "no packages found under nnunet_multimodal/"
    missing = sorted(p for p in source_packages if f"{p}/__init__.py" not in names)
    assert not missing, f"packages missing from the wheel (add them to pyproject.toml): {missing}"


def test_installed_wheel_is_discoverable(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    folder = target / "nnunet_multimodal" / "trainers"
    code = ("from nnunet_multimodal.environment import trainers_folder; print(trainers_folder()); "
            "from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as find; "
            "print(find('nnUNetTrainerMultiModalBase_2x5it_NoMirroring').__module__)")
    env = {"PYTHONPATH": str(target), "PATH": str(BIN), "nnUNet_extTrainer": str(folder)}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout.strip().splitlines()
    assert Path(out[0]) == folder
    assert out[-1] == "nnunet_multimodal.training.variants"
