"""The converters: each challenge layout of the shared table (``layouts.py``) to a verified nnU-Net raw dataset."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_multimodal.data.convert.common import (
    ConversionError,
    ConversionReport,
    DatasetWriter,
    check_dataset_id_free,
    read_image,
    resample_onto,
)
from nnunet_multimodal.data.convert.layouts import LAYOUTS, Layout, LayoutCase
from nnunet_multimodal.data.grid import same_grid
from nnunet_multimodal.data.verify import FRACTIONAL_LABEL_FIX, label_values


class WrongFormat(ConversionError):
    """The source holds another format's data: a mistake about the whole folder, which --skip-bad must not hide."""


@dataclass(frozen=True)
class OtherFormatValues:
    """Label values that only another format defines: a source holding them was given the wrong format."""

    values: frozenset[int]
    meaning: str        # what the values are in the other format
    format_name: str


@dataclass(frozen=True)
class Format:
    """A converter: a layout of the shared table (file naming, channels, label convention) and the dataset it
    becomes. The first channel is the reference grid."""

    layout: Layout
    default_dataset_name: str
    description: str
    other_format_values: OtherFormatValues | None = None

    @property
    def name(self) -> str:
        return self.layout.name

    def cases(self, source: Path) -> list[LayoutCase]:
        cases, _ = self.layout.scan(source)
        if not cases:
            raise ConversionError(f"no {self.name} cases under {source}: expected {self.layout.describe()}")
        return cases


MMWHS_NOTE = "MM-WHS 2017 (Zhuang et al.); labels mapped to 1..7, shared by the CT and MR datasets"

FORMATS = {
    "isles22": Format(LAYOUTS["isles22"], "ISLES22",
                      "ISLES'22 ischemic stroke lesions (CC BY-SA 4.0; cite Hernandez Petzsche et al., Sci Data "
                      "2022); FLAIR resampled onto DWI by nnunet-multimodal"),
    "picai": Format(LAYOUTS["picai"], "PICAI",
                    "PI-CAI / ProstateX bi-parametric prostate MRI; ADC, HBV and labels resampled onto T2W by "
                    "nnunet-multimodal"),
    "brats": Format(LAYOUTS["brats"], "BraTS",
                    "BraTS 2018-2021 gliomas; labels 0/1/2/4 -> 0/2/1/3 and WT/TC/ET regions as in nnU-Net's "
                    "Dataset137_BraTS21"),
    "brats2023": Format(LAYOUTS["brats2023"], "BraTS2023",
                        "BraTS 2023+ gliomas (channel names as nnU-Net's Dataset226); WT/TC/ET regions",
                        OtherFormatValues(frozenset({4}), "the resection cavity (RC) of BraTS 2024 post-treatment "
                                                          "gliomas", "brats2024")),
    "brats2024": Format(LAYOUTS["brats2024"], "BraTS2024",
                        "BraTS 2024 post-treatment gliomas (labels as nnU-Net's Dataset226: 1 NETC, 2 SNFH, 3 ET, "
                        "4 RC); the BraTS 2024 scorer's WT/TC/NETC/SNFH/ET/RC as regions"),
    "mmwhs_ct": Format(LAYOUTS["mmwhs_ct"], "MMWHS_CT", MMWHS_NOTE),
    "mmwhs_mr": Format(LAYOUTS["mmwhs_mr"], "MMWHS_MR", MMWHS_NOTE),
}


def channels_on_reference_grid(paths: list[Path], resampled: list[str]) -> list[sitk.Image]:
    """The images of ``paths`` as float32 on the first one's grid; the others are resampled in physical space
    where their grid differs (noted in ``resampled``)."""
    reference = read_image(paths[0])
    images = [sitk.Cast(reference, sitk.sitkFloat32)]
    for path in paths[1:]:
        image = read_image(path)
        if not same_grid(image, reference):
            resampled.append(f"{path.name} onto {paths[0].name}")
        images.append(resample_onto(image, reference, is_label=False, source=path))
    return images


def convert_case(case: LayoutCase, fmt: Format, report: ConversionReport) -> tuple[list[sitk.Image], sitk.Image]:
    layout = fmt.layout
    images = channels_on_reference_grid(list(case.channels), report.resampled)
    label = read_image(case.label)
    values, fractional = label_values(label)
    if fractional:
        raise ConversionError(f"{case.label} has non-integer label values {fractional}; {FRACTIONAL_LABEL_FIX}")
    unexpected = sorted(values - set(layout.allowed_label_values))
    other = fmt.other_format_values
    if unexpected and other is not None and set(unexpected) <= other.values:
        raise WrongFormat(f"{case.label} has label values {unexpected}, {other.meaning}, which the {fmt.name} format "
                          f"does not define: convert this folder with `nnunet-mm convert {other.format_name}`")
    if unexpected:
        raise ConversionError(f"{case.label} has label values {unexpected}; the {fmt.name} format defines "
                              f"{list(layout.allowed_label_values)}")
    if layout.label_map is not None:
        lut = np.zeros(max(layout.label_map) + 1, np.uint8)
        for source_value, target_value in layout.label_map.items():
            lut[source_value] = target_value
        mapped = sitk.GetImageFromArray(lut[sitk.GetArrayViewFromImage(label).astype(np.int64)])
        mapped.CopyInformation(label)
        label = mapped
    reference = case.channels[0]
    if not same_grid(label, images[0]):
        report.resampled.append(f"{case.label.name} onto {reference.name} (nearest neighbour)")
    label = resample_onto(label, images[0], is_label=True, source=case.label)
    return images, label


def convert_mmwhs(source: str | Path, raw_folder: str | Path, dataset_id: int, name: str | None = None,
                  skip_bad: bool = False, progress: bool = False) -> list[tuple[Path, ConversionReport]]:
    """MM-WHS as two datasets sharing the label map: CT as ``dataset_id``, MR as the next id. Both are written
    or neither (a CT dataset without its MR partner would block the rerun's id)."""
    modalities = ("ct", "mr")
    for offset, modality in enumerate(modalities):
        FORMATS[f"mmwhs_{modality}"].cases(Path(source))
        check_dataset_id_free(raw_folder, dataset_id + offset)
    written = []
    try:
        for offset, modality in enumerate(modalities):
            written.append(convert(f"mmwhs_{modality}", source, raw_folder, dataset_id + offset,
                                   name and f"{name}_{modality.upper()}", skip_bad, progress))
    except BaseException:
        for folder, _ in written:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return written


def convert(fmt_name: str, source: str | Path, raw_folder: str | Path, dataset_id: int, name: str | None = None,
            skip_bad: bool = False, progress: bool = False) -> tuple[Path, ConversionReport]:
    if fmt_name not in FORMATS:
        raise ValueError(f"unknown format {fmt_name!r}; supported: {sorted(FORMATS)}")
    fmt = FORMATS[fmt_name]
    source = Path(source)
    cases = fmt.cases(source)
    writer = DatasetWriter(raw_folder, dataset_id, name or fmt.default_dataset_name)
    report = ConversionReport()
    try:
        for case in tqdm(cases, desc=f"converting {fmt.name}", disable=not progress):
            try:
                images, label = convert_case(case, fmt, report)
            except WrongFormat as e:
                raise WrongFormat(f"case {case.case}: {e}") from e
            except ConversionError as e:
                if not skip_bad:
                    raise ConversionError(f"case {case.case}: {e} (pass --skip-bad to convert the other cases "
                                          f"and report this one)") from e
                report.skipped[case.case] = str(e)
                continue
            writer.write_case(case.case, images, label)
            report.converted.append(case.case)
        if not report.converted:
            raise ConversionError(f"no case of {source} could be converted")
        dataset_json = {"name": name or fmt.default_dataset_name, "description": fmt.description,
                        "channel_names": {str(i): n for i, n in enumerate(fmt.layout.channel_names)},
                        **fmt.layout.dataset_json_labels(), "numTraining": len(report.converted),
                        "file_ending": ".nii.gz"}
        return writer.finish(dataset_json), report
    except BaseException:
        writer.abort()
        raise
