import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_multimodal.cli import main
from nnunet_multimodal.data.phantoms import PhantomSpec, write_dataset
from nnunet_multimodal.data.verify import verify_dataset


@pytest.fixture
def dataset(tmp_path):
    return write_dataset(tmp_path, 7, "V", PhantomSpec(shape=(32, 32)), num_training=3, num_test=1)


def rewrite(path, change):
    image = sitk.ReadImage(str(path))
    changed = change(image)
    sitk.WriteImage(changed, str(path))


def test_good_dataset_passes(dataset, capsys):
    assert verify_dataset(dataset) == []
    assert main(["verify", "--folder", str(dataset), "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out


def _with_array(image, array):
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


BREAKAGES = {
    "missing channel": (lambda d: (d / "imagesTr" / "V_001_0002.nii.gz").unlink(),
                        "V_001", "V_001_0002", "channel 2 (FLAIR) is missing"),
    "extra channel": (lambda d: shutil.copy(d / "imagesTr" / "V_000_0000.nii.gz", d / "imagesTr" / "V_000_0003.nii.gz"),
                      "V_000", "V_000_0003.nii.gz", "not declared"),
    "spacing": (lambda d: rewrite(d / "imagesTr" / "V_002_0001.nii.gz",
                                  lambda im: (im.SetSpacing((1.0, 1.5, 1.0)), im)[1]),
                "V_002", "V_002_0001.nii.gz", "spacing"),
    "origin": (lambda d: rewrite(d / "imagesTr" / "V_002_0002.nii.gz",
                                 lambda im: (im.SetOrigin((0.0, 5.0, 0.0)), im)[1]),
               "V_002", "V_002_0002.nii.gz", "origin"),
    "direction": (lambda d: rewrite(d / "imagesTr" / "V_001_0001.nii.gz",
                                    lambda im: (im.SetDirection((1, 0, 0, 0, -1, 0, 0, 0, 1)), im)[1]),
                  "V_001", "V_001_0001.nii.gz", "direction"),
    "shape": (lambda d: sitk.WriteImage(sitk.Image([31, 32, 1], sitk.sitkFloat32),
                                        str(d / "imagesTr" / "V_000_0001.nii.gz")),
              "V_000", "V_000_0001.nii.gz", "shape"),
    "nan": (lambda d: rewrite(d / "imagesTr" / "V_000_0002.nii.gz", lambda im: _with_array(
        im, np.where(np.arange(sitk.GetArrayFromImage(im).size).reshape(sitk.GetArrayFromImage(im).shape) < 5,
                     np.nan, sitk.GetArrayFromImage(im)).astype(np.float32))),
            "V_000", "V_000_0002.nii.gz", "5 NaN/Inf voxels"),
    "undeclared label": (lambda d: rewrite(d / "labelsTr" / "V_001.nii.gz", lambda im: _with_array(
        im, np.where(sitk.GetArrayFromImage(im) == 3, 7, sitk.GetArrayFromImage(im)).astype(np.uint8))),
        "V_001", "V_001.nii.gz", "label values [7] are not declared"),
    "unreadable image": (lambda d: (d / "imagesTr" / "V_001_0000.nii.gz").write_bytes(b"\x1f\x8b truncated"),
                         "V_001", "V_001_0000.nii.gz", "unreadable"),
    "unreadable label": (lambda d: (d / "labelsTr" / "V_002.nii.gz").write_bytes(b"not an image"),
                         "V_002", "V_002.nii.gz", "unreadable"),
    "fractional label": (lambda d: rewrite(d / "labelsTr" / "V_000.nii.gz", lambda im: _with_array(
        im, np.where(sitk.GetArrayFromImage(im) == 1, 1.5, sitk.GetArrayFromImage(im)).astype(np.float32))),
        "V_000", "V_000.nii.gz", "non-integer label values [1.5]"),
    "label without images": (lambda d: shutil.copy(d / "labelsTr" / "V_000.nii.gz", d / "labelsTr" / "V_009.nii.gz"),
                             "V_009", "V_009.nii.gz", "label without images"),
    "missing label": (lambda d: (d / "labelsTr" / "V_002.nii.gz").unlink(),
                      "V_002", "labelsTr/V_002.nii.gz", "training case without label"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_each_breakage_named_by_case_and_file_with_fix(dataset, breakage, capsys):
    damage, case, file, message = BREAKAGES[breakage]
    damage(dataset)
    problems = verify_dataset(dataset)
    matching = [p for p in problems if p.case == case and file in p.file and message in p.message]
    assert matching, problems
    assert all(p.fix for p in problems)
    assert main(["verify", "--folder", str(dataset), "--quiet"]) == 1
    assert f"[{case}]" in capsys.readouterr().out


def test_region_labels_declared_through_regions(tmp_path):
    folder = write_dataset(tmp_path, 8, "R", PhantomSpec(shape=(32, 32), label_style="regions"), num_training=2)
    assert verify_dataset(folder) == []


def test_numtraining_mismatch(dataset):
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    dataset_json["numTraining"] = 5
    (dataset / "dataset.json").write_text(json.dumps(dataset_json))
    assert any("numTraining is 5" in p.message for p in verify_dataset(dataset))
