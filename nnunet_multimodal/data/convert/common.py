"""What every converter shares: resampling onto a reference grid in physical space, and a dataset writer
that publishes the dataset only once every case is written."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_multimodal.data import verify
from nnunet_multimodal.data.verify import verify_dataset
from nnunet_multimodal.environment import datasets_with_id
from nnunet_multimodal.user_errors import UserError


class ConversionError(UserError):
    """A case that cannot be converted, with the file and the reason."""


def read_image(path: Path) -> sitk.Image:
    """A source image or label; ConversionError naming the file when it is missing, unreadable, cut short, or
    holds NaN/Inf voxels (SimpleITK's NIfTI reader turns those into zeros the scanner never measured)."""
    if not path.is_file():
        raise ConversionError(f"{path} is missing")
    try:
        image = verify.read_image(path)
    except verify.UnreadableImage as e:
        raise ConversionError(str(e)) from e
    non_finite = verify.count_non_finite(path, image)
    if non_finite:
        raise ConversionError(f"{path} has {non_finite} NaN/Inf voxels; {verify.NON_FINITE_FIX}")
    return image


def physical_bounds(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    size = np.array(image.GetSize())
    corners = [image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
               for corner in np.array(np.meshgrid(*[[-0.5, s - 0.5] for s in size])).T.reshape(-1, len(size))]
    corners = np.array(corners)
    return corners.min(0), corners.max(0)


def resample_onto(image: sitk.Image, reference: sitk.Image, is_label: bool, source: Path) -> sitk.Image:
    """``image`` on ``reference``'s grid, through physical coordinates (origins, spacings and direction cosines
    may all differ): linear for images, nearest neighbour for labels, 0 outside."""
    low_a, high_a = physical_bounds(image)
    low_b, high_b = physical_bounds(reference)
    if np.any(high_a < low_b) or np.any(high_b < low_a):
        raise ConversionError(f"{source} does not overlap the reference grid in physical space (bounds "
                              f"{low_a.round(1)}..{high_a.round(1)} vs {low_b.round(1)}..{high_b.round(1)} mm)")
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    pixel_type = sitk.sitkUInt8 if is_label else sitk.sitkFloat32
    return sitk.Resample(sitk.Cast(image, pixel_type) if is_label else sitk.Cast(image, sitk.sitkFloat32),
                         reference, sitk.Transform(), interpolator, 0.0, pixel_type)


@dataclass
class ConversionReport:
    converted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    resampled: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} case(s)"]
        lines += [f"resampled: {r}" for r in self.resampled]
        lines += [f"skipped {case}: {reason}" for case, reason in self.skipped.items()]
        return "\n".join(lines)


def check_dataset_id_free(raw_folder: str | Path, dataset_id: int) -> None:
    """nnU-Net resolves an id through nnUNet_raw, nnUNet_preprocessed and nnUNet_results: a dataset folder with
    this id in any of them would make the new dataset ambiguous."""
    from nnunetv2.paths import nnUNet_preprocessed, nnUNet_results

    if not 0 < dataset_id < 1000:
        raise ValueError(f"dataset id {dataset_id} is outside 1-999, the ids nnU-Net reads from folder names")
    roots = [Path(raw_folder), *(Path(p.get()) for p in (nnUNet_preprocessed, nnUNet_results) if p.is_set())]
    existing = datasets_with_id(dataset_id, roots)
    if existing:
        raise FileExistsError(f"dataset id {dataset_id} is taken ({existing[0]}); choose another id with -d, "
                              f"or remove that folder")


DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def check_dataset_name(name: str) -> None:
    """Refuse names that would not make one ``DatasetXXX_Name`` folder in nnUNet_raw: path separators or
    ``..`` would write elsewhere, and nnU-Net splits results folders at ``__`` and reads ids from the prefix."""
    if not DATASET_NAME.fullmatch(name) or "__" in name:
        raise ValueError(f"dataset name {name!r} is not usable: it becomes the folder Dataset<ID>_<name>; use "
                         f"letters, digits, '-' and single '_' (e.g. --name BraTS2021)")


class DatasetWriter:
    """Writes into a hidden staging folder next to the target and renames it into place at the end, so an
    interrupted or failed conversion never leaves a half-written ``DatasetXXX_Name``."""

    def __init__(self, raw_folder: str | Path, dataset_id: int, name: str):
        raw_folder = Path(raw_folder)
        check_dataset_name(name)
        check_dataset_id_free(raw_folder, dataset_id)
        self.target = raw_folder / f"Dataset{dataset_id:03d}_{name}"
        self.staging = raw_folder / f".{self.target.name}.partial"
        shutil.rmtree(self.staging, ignore_errors=True)
        for sub in ("imagesTr", "labelsTr"):
            (self.staging / sub).mkdir(parents=True)

    def write_case(self, case: str, images: list[sitk.Image], label: sitk.Image) -> None:
        for channel, image in enumerate(images):
            sitk.WriteImage(image, str(self.staging / "imagesTr" / f"{case}_{channel:04d}.nii.gz"),
                            useCompression=True)
        sitk.WriteImage(label, str(self.staging / "labelsTr" / f"{case}.nii.gz"), useCompression=True)

    def finish(self, dataset_json: dict) -> Path:
        (self.staging / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
        problems = verify_dataset(self.staging)
        if problems:
            shutil.rmtree(self.staging)
            raise ConversionError("the converted dataset fails verify:\n" + "\n".join(map(str, problems)))
        self.staging.rename(self.target)
        return self.target

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
