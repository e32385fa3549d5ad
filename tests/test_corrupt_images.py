"""Damaged image files, across every reader of user images: each reader refuses the file, naming it, or gives
what the intact file gives (a check, whose result is a verdict, must refuse). One small intact image and label
map, damaged the ways that SimpleITK reads without an error (a gzip stream cut short, NaN/Inf voxels in NIfTI)
or fails on without naming the file."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import write_nan_voxels

from nnunet_multimodal.cli import main
from nnunet_multimodal.data.convert import common as convert_common
from nnunet_multimodal.data.convert.common import ConversionError
from nnunet_multimodal.data.convert.formats import convert
from nnunet_multimodal.data.verify import UnreadableImage, read_image, verify_dataset
from nnunet_multimodal.evaluation.evaluate import DeclaredLabels, evaluate_folders, read_segmentation
from nnunet_multimodal.inference.missing import check_case_files
from nnunet_multimodal.submission.runner import CaseError, InputCase, case_inputs

SHAPE = (3, 12, 12)
LABELS = {"background": 0, "a": 1, "b": 2}


def write_intact(folder: Path) -> tuple[Path, Path]:
    """A float image and its label map (values 0, 1, 2; label 1 from the first voxel on, where
    write_nan_voxels damages) as .nii.gz."""
    folder.mkdir(parents=True)
    image = sitk.GetImageFromArray(np.random.default_rng(0).random(SHAPE).astype(np.float32) * 100)
    image.SetSpacing((0.8, 0.8, 2.0))
    labels = np.zeros(SHAPE, np.uint8)
    labels[:, :8, :8] = 1
    labels[:, 4:6, 4:6] = 2
    label = sitk.GetImageFromArray(labels)
    label.CopyInformation(image)
    sitk.WriteImage(image, str(folder / "image.nii.gz"), useCompression=True)
    sitk.WriteImage(label, str(folder / "label.nii.gz"), useCompression=True)
    return folder / "image.nii.gz", folder / "label.nii.gz"


def truncate(fraction: float) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(path.read_bytes()[: int(path.stat().st_size * fraction)])


def write_random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(1).bytes(path.stat().st_size))


def write_gzipped_random_bytes(path: Path) -> None:
    """A whole gzip stream that holds no image: gzip is fine, SimpleITK refuses."""
    path.write_bytes(gzip.compress(np.random.default_rng(2).bytes(path.stat().st_size)))


def write_fractional_value(path: Path) -> None:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array.flat[np.flatnonzero(array == 1)[0]] = 1.5
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(path))


BYTE_DAMAGES = {
    "cut at 10%": truncate(0.1),
    "cut at 50%": truncate(0.5),
    "cut at 90%": truncate(0.9),
    "cut at 99%": truncate(0.99),
    "empty": lambda path: path.write_bytes(b""),
    "random bytes": write_random_bytes,
    "gzipped random bytes": write_gzipped_random_bytes,
}
VALUE_DAMAGES = {
    "NaN voxels": lambda path: write_nan_voxels(path, 3),
    "Inf voxels": lambda path: write_nan_voxels(path, 3, float("inf")),
}
LABEL_DAMAGES = {"fractional value": write_fractional_value}
DAMAGES = {**BYTE_DAMAGES, **VALUE_DAMAGES, **LABEL_DAMAGES}


class Refused(Exception):
    """What a reader that reports problems instead of raising (verify) found."""


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target


def voxels_and_grid(image: sitk.Image) -> tuple:
    return sitk.GetArrayFromImage(image).tolist(), image.GetSize(), image.GetSpacing(), image.GetOrigin()


# --- layouts: (work folder, intact image, intact label) -> the reader's input in ``work``, the file to damage

def image_alone(work: Path, image: Path, label: Path) -> Path:
    return copy(image, work / "case_0000.nii.gz")


def label_alone(work: Path, image: Path, label: Path) -> Path:
    return copy(label, work / "case_0000.nii.gz")


def dataset_folder(work: Path, image: Path, label: Path) -> dict[str, Path]:
    (work / "dataset.json").parent.mkdir(parents=True)
    (work / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MR"}, "labels": LABELS,
                                                   "numTraining": 1, "file_ending": ".nii.gz"}))
    return {"image": copy(image, work / "imagesTr" / "case_0000.nii.gz"),
            "label": copy(label, work / "labelsTr" / "case.nii.gz")}


def brats_folder(work: Path, image: Path, label: Path) -> dict[str, Path]:
    """One BraTS 2023 case; every channel a copy of the image, the first (t1n) the reference grid."""
    case = work / "src" / "BraTS-00000"
    channels = [copy(image, case / f"BraTS-00000-{key}.nii.gz") for key in ("t1n", "t1c", "t2w", "t2f")]
    return {"image": channels[0], "label": copy(label, case / "BraTS-00000-seg.nii.gz")}


def evaluation_folders(work: Path, image: Path, label: Path) -> dict[str, Path]:
    return {"reference": copy(label, work / "ref" / "case.nii.gz"),
            "prediction": copy(label, work / "pred" / "case.nii.gz")}


def damaging(layout: Callable[[Path, Path, Path], dict[str, Path]], role: str) -> Callable[[Path, Path, Path], Path]:
    return lambda work, image, label: layout(work, image, label)[role]


# --- the readers: work folder -> what they give


def decoded(work: Path) -> tuple:
    return voxels_and_grid(read_image(work / "case_0000.nii.gz"))


def read_by_converters(work: Path) -> tuple:
    return voxels_and_grid(convert_common.read_image(work / "case_0000.nii.gz"))


def read_as_segmentation(work: Path) -> tuple:
    array, spacing = read_segmentation(work / "case_0000.nii.gz")
    return array.tolist(), spacing


def verified(work: Path) -> list:
    problems = verify_dataset(work)
    if problems:
        raise Refused("\n".join(map(str, problems)))
    return problems


def converted(work: Path) -> list:
    folder, _ = convert("brats2023", work / "src", work / "raw", 226)
    return [voxels_and_grid(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*/*.nii.gz"))]


def evaluated(work: Path) -> dict:
    summary = evaluate_folders(work / "ref", work / "pred", [1, 2], progress=False,
                               declared=DeclaredLabels(frozenset(LABELS.values()), "dataset.json"))
    return summary["mean"]


def checked_for_prediction(work: Path) -> set[int]:
    return check_case_files({0: work / "case_0000.nii.gz"}, set(), "case", ["MR"])


def submission_inputs(work: Path, stage: bool) -> tuple:
    path = work / "case_0000.nii.gz"
    case = InputCase("case", work / "out" / "case.nii.gz", {0: path}, (path,), stage=stage)
    files, absent = case_inputs(case, ["MR"], trained_for_missing=False, reference_required=stage,
                                staging=work / "staging", file_ending=".nii.gz")
    return [voxels_and_grid(sitk.ReadImage(str(p))) for p in files.values()], absent


@dataclass(frozen=True)
class Reader:
    name: str
    lay_out: Callable[[Path, Path, Path], Path]
    read: Callable[[Path], object]
    refusal: type[Exception]
    reads_labels: bool = False
    decodes_only: bool = False                  # a decoder: voxel values are its callers' to check
    gives_verdict: bool = False                 # a check: passing a damaged file is wrong whatever it returns
    names: Callable[[Path], str] = str          # how its refusal names the file


READERS = [
    Reader("verify.read_image", image_alone, decoded, UnreadableImage, decodes_only=True),
    Reader("verify_dataset image", damaging(dataset_folder, "image"), verified, Refused, gives_verdict=True,
           names=lambda p: p.name),
    Reader("verify_dataset label", damaging(dataset_folder, "label"), verified, Refused, reads_labels=True,
           gives_verdict=True, names=lambda p: p.name),
    Reader("converters' read_image", image_alone, read_by_converters, ConversionError),
    Reader("convert image", damaging(brats_folder, "image"), converted, ConversionError),
    Reader("convert label", damaging(brats_folder, "label"), converted, ConversionError, reads_labels=True),
    Reader("evaluate's read_segmentation", label_alone, read_as_segmentation, ValueError, reads_labels=True),
    Reader("evaluate_folders reference", damaging(evaluation_folders, "reference"), evaluated, ValueError,
           reads_labels=True),
    Reader("evaluate_folders prediction", damaging(evaluation_folders, "prediction"), evaluated, ValueError,
           reads_labels=True),
    Reader("predict's case check", image_alone, checked_for_prediction, ValueError, gives_verdict=True),
    Reader("submission case, nnU-Net naming", image_alone, lambda work: submission_inputs(work, False), CaseError),
    Reader("submission case, staged", image_alone, lambda work: submission_inputs(work, True), CaseError),
]


def damages_for(reader: Reader) -> list[str]:
    if reader.decodes_only:
        return list(BYTE_DAMAGES)
    return [*BYTE_DAMAGES, *VALUE_DAMAGES, *(LABEL_DAMAGES if reader.reads_labels else {})]


@pytest.fixture(scope="module")
def intact(tmp_path_factory) -> tuple[Path, Path]:
    return write_intact(tmp_path_factory.mktemp("intact") / "files")


@pytest.mark.parametrize("reader, damage", [(r, d) for r in READERS for d in damages_for(r)],
                         ids=lambda value: value.name if isinstance(value, Reader) else value)
def test_damaged_file_is_refused_by_name_or_read_as_intact(tmp_path, intact, reader, damage):
    reader.lay_out(tmp_path / "intact", *intact)
    expected = reader.read(tmp_path / "intact")
    damaged = reader.lay_out(tmp_path / "damaged", *intact)
    DAMAGES[damage](damaged)
    try:
        result = reader.read(tmp_path / "damaged")
    except reader.refusal as e:
        assert reader.names(damaged) in str(e)
    else:
        assert not reader.gives_verdict, f"{reader.name} passed the damaged file"
        assert result == expected


def test_uncompressed_nifti_shorter_than_its_header_declares_is_refused(tmp_path, intact):
    uncompressed = tmp_path / "case_0000.nii"
    sitk.WriteImage(sitk.ReadImage(str(intact[0])), str(uncompressed))
    truncate(0.9)(uncompressed)     # SimpleITK would read the missing voxels as zeros
    with pytest.raises(UnreadableImage, match=re.escape(f"{uncompressed} is unreadable (") + r"\d+ bytes of the \d+"):
        read_image(uncompressed)


def test_refusal_survives_the_trip_from_a_worker_process():
    error = UnreadableImage(Path("case.nii.gz"), "gzip: cut short", "copy it again")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


# --- the commands: the file named, the command's exit code, no traceback

def test_verify_names_a_cut_file_with_the_fix(tmp_path, intact, capsys):
    files = dataset_folder(tmp_path / "dataset", *intact)
    truncate(0.5)(files["image"])
    assert main(["verify", "--folder", str(tmp_path / "dataset"), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "case_0000.nii.gz: unreadable (gzip: Compressed file ended" in out
    assert "fix: the file is cut short or corrupt; copy or download it again" in out


def test_convert_names_a_cut_file(tmp_path, intact, capsys, monkeypatch):
    files = brats_folder(tmp_path, *intact)
    truncate(0.5)(files["label"])
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "brats2023", str(tmp_path / "src"), "-d", "227"]) == 2
    assert f"{files['label']} is unreadable" in capsys.readouterr().err


def test_evaluate_refuses_a_cut_prediction(tmp_path, intact, capsys):
    files = evaluation_folders(tmp_path, *intact)
    truncate(0.9)(files["prediction"])
    assert main(["evaluate", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-l", "1", "2"]) == 2
    assert f"{files['prediction']} is unreadable" in capsys.readouterr().err


def test_attention_maps_refuse_a_cut_image_before_loading_the_model(tmp_path, intact):
    from nnunet_multimodal.inference.attention_maps import export_attention_maps

    cut = image_alone(tmp_path, *intact)
    truncate(0.5)(cut)
    with pytest.raises(UnreadableImage, match=re.escape(f"{cut} is unreadable (gzip:")):
        export_attention_maps(tmp_path / "no model", "0", "checkpoint_final.pth", [str(cut)], tmp_path / "maps.png")
