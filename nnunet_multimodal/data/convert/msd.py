"""Medical Segmentation Decathlon: nnU-Net's own converter (4D NIfTI split into channels), staged and verified."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nnunet_multimodal.data.convert.common import ConversionError, check_dataset_id_free
from nnunet_multimodal.data.verify import UnreadableImage, check_complete, verify_dataset


def check_source_files(source: Path) -> None:
    """nnU-Net's converter reads the 4D images with SimpleITK, which decodes a file cut short without an error
    (the missing voxels as zeros), and copies the others: every source file is checked first, so the error
    names it rather than the copy."""
    for path in sorted(source.glob("*/*.nii.gz")):
        if not path.name.startswith((".", "_")):  # nnU-Net skips these (macOS' ._ files among them)
            try:
                check_complete(path)
            except UnreadableImage as e:
                raise ConversionError(str(e)) from e


def convert_msd(source: str | Path, raw_folder: str | Path, dataset_id: int) -> Path:
    from nnunetv2.dataset_conversion.convert_MSD_dataset import convert_msd_dataset

    raw_folder = Path(raw_folder)
    check_dataset_id_free(raw_folder, dataset_id)  # nnU-Net's own check would be reported as a bad task folder
    check_source_files(Path(source))
    staging = raw_folder / f".msd-{dataset_id}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    previous = os.environ.get("nnUNet_raw")
    # nnU-Net's converter writes into nnUNet_raw (read at call time): point it at the staging folder
    os.environ["nnUNet_raw"] = str(staging)
    try:
        convert_msd_dataset(str(Path(source)), dataset_id, num_processes=1)
        produced = next(staging.iterdir())
        problems = verify_dataset(produced)
        if problems:
            raise ConversionError("the converted dataset fails verify:\n" + "\n".join(map(str, problems)))
        target = raw_folder / produced.name
        produced.rename(target)
        return target
    except (AssertionError, ValueError) as e:
        raise ConversionError(f"{source} is not an MSD task folder (TaskXX_Name with imagesTr, imagesTs, "
                              f"labelsTr, dataset.json): {e}") from e
    finally:
        if previous is None:
            os.environ.pop("nnUNet_raw", None)
        else:
            os.environ["nnUNet_raw"] = previous
        shutil.rmtree(staging, ignore_errors=True)
