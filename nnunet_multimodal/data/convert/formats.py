"""The source layouts: ISLES'22 (BIDS) and PI-CAI / ProstateX bi-parametric MRI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

from nnunet_multimodal.data.convert.common import (
    ConversionError,
    ConversionReport,
    DatasetWriter,
    read_image,
    resample_onto,
    same_grid,
)


@dataclass(frozen=True)
class SourceCase:
    case: str
    channels: list[Path]          # the first is the reference grid
    label: Path


@dataclass(frozen=True)
class Format:
    name: str
    default_dataset_name: str
    channel_names: tuple[str, ...]
    labels: dict
    allowed_label_values: tuple[int, ...]
    description: str
    label_map: dict | None = None            # source value -> nnU-Net label value
    regions_class_order: tuple[int, ...] | None = None

    def cases(self, source: Path) -> Iterator[SourceCase]:
        raise NotImplementedError


class Isles22(Format):
    """BIDS: rawdata/sub-X/ses-Y/sub-X_ses-Y_{dwi,adc,flair}.nii.gz, derivatives/sub-X/ses-Y/*_msk.nii.gz.
    DWI is the reference grid (ADC and the mask share it); FLAIR has its own grid and is resampled onto DWI."""

    def cases(self, source: Path) -> Iterator[SourceCase]:
        sessions = sorted((source / "rawdata").glob("sub-*/ses-*"))
        if not sessions:
            raise ConversionError(f"no rawdata/sub-*/ses-* folders under {source}: is this an ISLES'22 BIDS root?")
        for session in sessions:
            stem = f"{session.parent.name}_{session.name}"
            yield SourceCase(stem, [session / f"{stem}_{m}.nii.gz" for m in ("dwi", "adc", "flair")],
                             source / "derivatives" / session.parent.name / session.name / f"{stem}_msk.nii.gz")


class Picai(Format):
    """PI-CAI / ProstateX: images/<patient>/<patient>_<study>_{t2w,adc,hbv}.mha, annotations/<patient>_<study>.nii.gz.
    T2W is the reference grid (the PI-CAI convention); ADC, HBV and the annotation are resampled onto it."""

    def cases(self, source: Path) -> Iterator[SourceCase]:
        t2w_files = sorted((source / "images").glob("*/*_t2w.mha"))
        if not t2w_files:
            raise ConversionError(f"no images/*/*_t2w.mha under {source}: is this a PI-CAI/ProstateX folder?")
        for t2w in t2w_files:
            stem = t2w.name[: -len("_t2w.mha")]
            yield SourceCase(stem, [t2w, t2w.with_name(f"{stem}_adc.mha"), t2w.with_name(f"{stem}_hbv.mha")],
                             source / "annotations" / f"{stem}.nii.gz")


@dataclass(frozen=True)
class BraTS(Format):
    """BraTS 2018-2021: <case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz; 2023+: <case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz.
    Channel order and label/region conventions are nnU-Net's (dataset_conversion/Dataset137_BraTS21.py)."""

    suffixes: tuple[str, ...] = ()
    separator: str = "_"

    def cases(self, source: Path) -> Iterator[SourceCase]:
        first = self.suffixes[0]
        folders = [p for p in sorted(source.iterdir())
                   if p.is_dir() and (p / f"{p.name}{self.separator}{first}.nii.gz").exists()]
        if not folders:
            raise ConversionError(f"no BraTS case folders (<case>/<case>{self.separator}{first}.nii.gz) under {source}")
        for folder in folders:
            stem = folder.name
            yield SourceCase(stem, [folder / f"{stem}{self.separator}{s}.nii.gz" for s in self.suffixes],
                             folder / f"{stem}{self.separator}seg.nii.gz")


@dataclass(frozen=True)
class MMWHS(Format):
    """MM-WHS 2017: <modality>_train/<modality>_train_<n>_{image,label}.nii.gz, one dataset per modality."""

    modality: str = "ct"

    def cases(self, source: Path) -> Iterator[SourceCase]:
        images = sorted((source / f"{self.modality}_train").glob(f"{self.modality}_train_*_image.nii.gz"))
        if not images:
            raise ConversionError(f"no {self.modality}_train/{self.modality}_train_*_image.nii.gz under {source}")
        for image in images:
            stem = image.name[: -len("_image.nii.gz")]
            yield SourceCase(stem, [image], image.with_name(f"{stem}_label.nii.gz"))


BRATS_REGIONS_2021 = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
# BraTS 2023+ GLI labels: 1 NETC, 2 SNFH (edema), 3 ET; WT = {1,2,3}, TC = {1,3}, ET = {3}
BRATS_REGIONS_2023 = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
# MM-WHS label values: myocardium 205, left atrium 420 (421 in one public MR label, same structure), left
# ventricle 500, right atrium 550, right ventricle 600, ascending aorta 820, pulmonary artery 850
MMWHS_MAP = {0: 0, 205: 1, 420: 2, 421: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7}
MMWHS_LABELS = {"background": 0, "myocardium": 1, "left atrium": 2, "left ventricle": 3, "right atrium": 4,
                "right ventricle": 5, "ascending aorta": 6, "pulmonary artery": 7}
MMWHS_NOTE = "MM-WHS 2017 (Zhuang et al.); labels mapped to 1..7, shared by the CT and MR datasets"

FORMATS = {
    "isles22": Isles22("isles22", "ISLES22", ("DWI", "ADC", "FLAIR"), {"background": 0, "infarct": 1}, (0, 1),
                       "ISLES'22 ischemic stroke lesions (CC BY-SA 4.0; cite Hernandez Petzsche et al., Sci Data "
                       "2022); FLAIR resampled onto DWI by nnunet-multimodal"),
    "picai": Picai("picai", "PICAI", ("T2W", "ADC", "HBV"), {"background": 0, "csPCa": 1}, (0, 1),
                   "PI-CAI / ProstateX bi-parametric prostate MRI; ADC, HBV and labels resampled onto T2W by "
                   "nnunet-multimodal"),
    "brats": BraTS("brats", "BraTS", ("T1", "T1ce", "T2", "Flair"), BRATS_REGIONS_2021, (0, 1, 2, 4),
                   "BraTS 2018-2021 gliomas; labels 0/1/2/4 -> 0/2/1/3 and WT/TC/ET regions as in nnU-Net's "
                   "Dataset137_BraTS21", label_map={0: 0, 1: 2, 2: 1, 4: 3}, regions_class_order=(1, 2, 3),
                   suffixes=("t1", "t1ce", "t2", "flair"), separator="_"),
    "brats2023": BraTS("brats2023", "BraTS2023", ("T1", "T1C", "T2W", "T2F"), BRATS_REGIONS_2023, (0, 1, 2, 3),
                       "BraTS 2023+ gliomas (channel names as nnU-Net's Dataset226); WT/TC/ET regions",
                       regions_class_order=(2, 1, 3), suffixes=("t1n", "t1c", "t2w", "t2f"), separator="-"),
    "mmwhs_ct": MMWHS("mmwhs_ct", "MMWHS_CT", ("CT",), MMWHS_LABELS, tuple(MMWHS_MAP), MMWHS_NOTE,
                      label_map=MMWHS_MAP, modality="ct"),
    "mmwhs_mr": MMWHS("mmwhs_mr", "MMWHS_MR", ("MR",), MMWHS_LABELS, tuple(MMWHS_MAP), MMWHS_NOTE,
                      label_map=MMWHS_MAP, modality="mr"),
}


def convert_case(case: SourceCase, fmt: Format, report: ConversionReport) -> tuple[list[sitk.Image], sitk.Image]:
    reference = read_image(case.channels[0])
    images = [sitk.Cast(reference, sitk.sitkFloat32)]
    for path in case.channels[1:]:
        image = read_image(path)
        if not same_grid(image, reference):
            report.resampled.append(f"{path.name} onto {case.channels[0].name}")
        images.append(resample_onto(image, reference, is_label=False, source=path))
    label = read_image(case.label)
    values = set(np.unique(sitk.GetArrayViewFromImage(label)).astype(int).tolist())
    unexpected = sorted(values - set(fmt.allowed_label_values))
    if unexpected:
        raise ConversionError(f"{case.label} has label values {unexpected}; the {fmt.name} format defines "
                              f"{list(fmt.allowed_label_values)}")
    if fmt.label_map is not None:
        lut = np.zeros(max(fmt.label_map) + 1, np.uint8)
        for source_value, target_value in fmt.label_map.items():
            lut[source_value] = target_value
        mapped = sitk.GetImageFromArray(lut[sitk.GetArrayViewFromImage(label).astype(np.int64)])
        mapped.CopyInformation(label)
        label = mapped
    if not same_grid(label, reference):
        report.resampled.append(f"{case.label.name} onto {case.channels[0].name} (nearest neighbour)")
    label = resample_onto(label, reference, is_label=True, source=case.label)
    return images, label


def convert(fmt_name: str, source: str | Path, raw_folder: str | Path, dataset_id: int, name: str | None = None,
            skip_bad: bool = False, progress: bool = False) -> tuple[Path, ConversionReport]:
    if fmt_name not in FORMATS:
        raise ValueError(f"unknown format {fmt_name!r}; supported: {sorted(FORMATS)}")
    fmt = FORMATS[fmt_name]
    source = Path(source)
    cases = list(fmt.cases(source))
    writer = DatasetWriter(raw_folder, dataset_id, name or fmt.default_dataset_name)
    report = ConversionReport()
    try:
        for case in tqdm(cases, desc=f"converting {fmt.name}", disable=not progress):
            try:
                images, label = convert_case(case, fmt, report)
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
                        "channel_names": {str(i): n for i, n in enumerate(fmt.channel_names)},
                        "labels": fmt.labels, "numTraining": len(report.converted), "file_ending": ".nii.gz"}
        if fmt.regions_class_order is not None:
            dataset_json["regions_class_order"] = list(fmt.regions_class_order)
        return writer.finish(dataset_json), report
    except BaseException:
        writer.abort()
        raise
