"""The source layouts: ISLES'22 (BIDS) and PI-CAI / ProstateX bi-parametric MRI."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

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


FORMATS = {
    "isles22": Isles22("isles22", "ISLES22", ("DWI", "ADC", "FLAIR"), {"background": 0, "infarct": 1}, (0, 1),
                       "ISLES'22 ischemic stroke lesions (CC BY-SA 4.0; cite Hernandez Petzsche et al., Sci Data "
                       "2022); FLAIR resampled onto DWI by nnunet-multimodal"),
    "picai": Picai("picai", "PICAI", ("T2W", "ADC", "HBV"), {"background": 0, "csPCa": 1}, (0, 1),
                   "PI-CAI / ProstateX bi-parametric prostate MRI; ADC, HBV and labels resampled onto T2W by "
                   "nnunet-multimodal"),
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
    if not same_grid(label, reference):
        report.resampled.append(f"{case.label.name} onto {case.channels[0].name} (nearest neighbour)")
    label = resample_onto(label, reference, is_label=True, source=case.label)
    return images, label


def convert(fmt_name: str, source: str | Path, raw_folder: str | Path, dataset_id: int, name: str | None = None,
            skip_bad: bool = False, progress=None) -> tuple[Path, ConversionReport]:
    if fmt_name not in FORMATS:
        raise ValueError(f"unknown format {fmt_name!r}; supported: {sorted(FORMATS)}")
    fmt = FORMATS[fmt_name]
    source = Path(source)
    cases = list(fmt.cases(source))
    writer = DatasetWriter(raw_folder, dataset_id, name or fmt.default_dataset_name)
    report = ConversionReport()
    try:
        for index, case in enumerate(cases):
            if progress:
                progress(f"{index + 1}/{len(cases)}: {case.case}")
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
        return writer.finish(dataset_json), report
    except BaseException:
        writer.abort()
        raise
