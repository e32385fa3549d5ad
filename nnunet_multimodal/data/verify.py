"""Dataset checks nnU-Net only warns about or skips, each failure named by case and file with its fix."""

from __future__ import annotations

import gzip
import re
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_multimodal.data.grid import geometry_mismatch, image_geometry


@dataclass(frozen=True)
class Problem:
    case: str
    file: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"[{self.case}] {self.file}: {self.message}\n    fix: {self.fix}"


def declared_label_values(labels: dict) -> set[int]:
    values = set()
    for value in labels.values():
        values.update(value if isinstance(value, list) else [value])
    return {int(v) for v in values}


READ_FIX = "re-export or replace the file"
CUT_SHORT_FIX = "the file is cut short or corrupt; copy or download it again"
GZIP_CHUNK_BYTES = 1 << 20


class UnreadableImage(ValueError):
    """An image file SimpleITK cannot open, or would read only in part, named with the fix."""

    def __init__(self, path: Path, reason: str, fix: str = READ_FIX):
        self.path, self.reason, self.fix = path, reason, fix
        super().__init__(f"{path} is unreadable ({reason}); {fix}")

    def __reduce__(self):  # rebuilt from its fields when it crosses a process boundary (evaluate -np N)
        return type(self), (self.path, self.reason, self.fix)


def gzip_stream_length(path: Path) -> int:
    """The decompressed length of a gzip file, read to its end in chunks (memory stays bounded). Python's gzip
    raises where SimpleITK does not: at a stream that ends early and at a CRC or length that does not match."""
    length = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(GZIP_CHUNK_BYTES):
                length += len(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UnreadableImage(path, f"gzip: {e}", CUT_SHORT_FIX) from e
    return length


def nifti_data_end(path: Path) -> int | None:
    """Where a NIfTI file's voxel data ends by its header; None where nibabel reads no header (SimpleITK then
    gives the reason)."""
    import nibabel

    try:
        voxels = nibabel.load(str(path)).dataobj
    except nibabel.filebasedimages.ImageFileError:
        return None
    return int(voxels.offset) + int(np.prod(voxels.shape)) * voxels.dtype.itemsize


def check_complete(path: Path) -> None:
    """Raise UnreadableImage for a file cut short or corrupt in a way SimpleITK reads without an error, the
    missing voxels as zeros: an empty file, a gzip stream that ends early or fails its CRC, a NIfTI file with
    fewer bytes than its header declares."""
    length = path.stat().st_size
    if length == 0:
        raise UnreadableImage(path, "the file is empty", CUT_SHORT_FIX)
    if path.name.endswith(".gz"):
        length = gzip_stream_length(path)
    if path.name.endswith((".nii", ".nii.gz")):
        declared = nifti_data_end(path)
        if declared is not None and length < declared:
            raise UnreadableImage(path, f"{length} bytes of the {declared} its NIfTI header declares", CUT_SHORT_FIX)


def read_image(path: Path) -> sitk.Image:
    """The one reader of user images: files SimpleITK cannot read, or would read only in part, raise
    UnreadableImage naming the file and the fix. NaN/Inf voxels are the caller's to count (``count_non_finite``)."""
    path = Path(path)
    if path.is_file():  # a missing file is SimpleITK's error
        check_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as e:  # SimpleITK's message leads with its C++ source location; the reason comes last
        raise UnreadableImage(path, str(e).strip().splitlines()[-1].split("sitk::ERROR:")[-1].strip()) from e


FRACTIONAL_LABEL_FIX = "re-export it as an integer image (nearest-neighbour interpolation if it was resampled)"


def label_values(label: sitk.Image) -> tuple[set[int], list[float]]:
    """The whole-number values of a label map, and (up to 5) fractional ones, which casting to integers would
    silently turn into another label (a float label map that was interpolated, for instance). NaN/Inf are left
    out: ``count_non_finite`` counts them from the file, where SimpleITK's NIfTI reader sees zeros."""
    values = np.unique(sitk.GetArrayViewFromImage(label))
    values = values[np.isfinite(values)]
    whole = values == np.round(values)
    return set(values[whole].astype(int).tolist()), values[~whole][:5].tolist()


NON_FINITE_FIX = "replace non-finite voxels (e.g. numpy.nan_to_num) or re-export the image"
RESAMPLE_FIX = ("resample every channel (and the label) of this case onto one grid, e.g. with SimpleITK.Resample "
                "onto the first channel, before nnUNetv2_plan_and_preprocess")


def count_non_finite(path: Path, image: sitk.Image) -> int:
    """NaN/Inf voxels as stored in the file. SimpleITK's NIfTI reader turns them into 0 silently, so NIfTI
    files are read with nibabel here (other readers, and nnU-Net's NibabelIO, would see the NaNs)."""
    if path.name.endswith((".nii", ".nii.gz")):
        import nibabel

        array = np.asanyarray(nibabel.load(str(path)).dataobj)
    else:
        array = sitk.GetArrayViewFromImage(image)
    return int(np.count_nonzero(~np.isfinite(array))) if np.issubdtype(array.dtype, np.floating) else 0


def group_case_files(folder: Path, file_ending: str) -> dict[str, dict[int, Path]]:
    pattern = re.compile(rf"^(?P<case>.+)_(?P<channel>\d{{4}}){re.escape(file_ending)}$")
    cases: dict[str, dict[int, Path]] = defaultdict(dict)
    for path in sorted(folder.iterdir()):
        match = pattern.match(path.name)
        if match:
            cases[match["case"]][int(match["channel"])] = path
    return cases


def verify_images(case: str, files: dict[int, Path], num_channels: int, channel_names: dict,
                  label_file: Path | None, allowed_labels: set[int]) -> list[Problem]:
    problems = []
    for channel in range(num_channels):
        if channel not in files:
            expected = f"{case}_{channel:04d}"
            problems.append(Problem(case, expected, f"channel {channel} ({channel_names[str(channel)]}) is missing",
                                    f"add {expected} for this case, or remove the case's other files"))
    for channel in sorted(set(files) - set(range(num_channels))):
        problems.append(Problem(case, files[channel].name,
                                f"channel {channel} is not declared in dataset.json channel_names "
                                f"({num_channels} channels)",
                                "remove the file, or declare the channel in dataset.json channel_names"))
    reference = None
    for channel in sorted(c for c in files if c < num_channels):
        try:
            image = read_image(files[channel])
        except UnreadableImage as e:
            problems.append(Problem(case, files[channel].name, f"unreadable ({e.reason})", e.fix))
            continue
        geometry = image_geometry(image)
        if reference is None:
            reference = (files[channel].name, geometry)
        else:
            mismatch = geometry_mismatch(reference[1], geometry)
            if mismatch:
                problems.append(Problem(case, files[channel].name, f"{mismatch} (of {reference[0]})", RESAMPLE_FIX))
        bad = count_non_finite(files[channel], image)
        if bad:
            problems.append(Problem(case, files[channel].name, f"{bad} NaN/Inf voxels", NON_FINITE_FIX))
    if label_file is not None:
        try:
            label = read_image(label_file)
        except UnreadableImage as e:
            problems.append(Problem(case, label_file.name, f"unreadable ({e.reason})", e.fix))
            return problems
        if reference is not None:
            mismatch = geometry_mismatch(reference[1], image_geometry(label))
            if mismatch:
                problems.append(Problem(case, label_file.name, f"{mismatch} (of {reference[0]})", RESAMPLE_FIX))
        bad = count_non_finite(label_file, label)
        if bad:
            problems.append(Problem(case, label_file.name, f"{bad} NaN/Inf voxels", FRACTIONAL_LABEL_FIX))
        values, fractional = label_values(label)
        if fractional:
            problems.append(Problem(case, label_file.name, f"non-integer label values {fractional}",
                                    FRACTIONAL_LABEL_FIX))
        undeclared = sorted(values - allowed_labels)
        if undeclared:
            problems.append(Problem(case, label_file.name, f"label values {undeclared} are not declared in "
                                    f"dataset.json labels (declared: {sorted(allowed_labels)})",
                                    "declare them in dataset.json 'labels' or remap them in the label file"))
    return problems


def verify_dataset(folder: str | Path, progress=None) -> list[Problem]:
    """Check a raw nnU-Net dataset folder; returns every problem found (empty list: all good)."""
    from nnunet_multimodal.evaluation.evaluate import read_dataset_json  # it reads images with this module

    folder = Path(folder)
    dataset_json_file = folder / "dataset.json"
    if not dataset_json_file.is_file():
        return [Problem("-", str(dataset_json_file), "dataset.json is missing",
                        "write dataset.json (channel_names, labels, numTraining, file_ending)")]
    try:
        dataset_json = read_dataset_json(dataset_json_file)
    except ValueError as e:
        return [Problem("-", str(dataset_json_file), str(e).removeprefix(f"{dataset_json_file} "),
                        "fix the file: JSON with channel_names, labels (background 0), numTraining, file_ending")]
    channel_names = dataset_json.get("channel_names") or dataset_json.get("modality") or {}
    file_ending = dataset_json.get("file_ending", ".nii.gz")
    num_channels = len(channel_names)
    allowed = declared_label_values(dataset_json.get("labels", {}))
    problems = []
    for images_sub, labels_sub in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        images_dir, labels_dir = folder / images_sub, folder / labels_sub
        if not images_dir.is_dir():
            if images_sub == "imagesTr":
                problems.append(Problem("-", str(images_dir), "imagesTr is missing", "add the training images"))
            continue
        cases = group_case_files(images_dir, file_ending)
        label_files = {p.name[: -len(file_ending)]: p for p in labels_dir.glob(f"*{file_ending}")} \
            if labels_dir.is_dir() else {}
        for case in sorted(set(label_files) - set(cases)):
            problems.append(Problem(case, label_files[case].name, f"label without images in {images_sub}",
                                    f"add the case's images to {images_sub} or remove the label"))
        if images_sub == "imagesTr":
            for case in sorted(set(cases) - set(label_files)):
                problems.append(Problem(case, f"{labels_sub}/{case}{file_ending}", "training case without label",
                                        f"add the label to {labels_sub} or remove the case's images"))
            declared = dataset_json.get("numTraining")
            if declared is not None and declared != len(cases):
                problems.append(Problem("-", "dataset.json", f"numTraining is {declared} but imagesTr holds "
                                        f"{len(cases)} cases", f"set numTraining to {len(cases)}"))
        for index, case in enumerate(sorted(cases)):
            if progress:
                progress(f"{images_sub} {index + 1}/{len(cases)}: {case}")
            problems += verify_images(case, cases[case], num_channels, channel_names, label_files.get(case),
                                      allowed)
    return problems
