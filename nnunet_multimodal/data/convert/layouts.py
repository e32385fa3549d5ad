"""Challenge file layouts, in one table: where a case's channel files, its label and a prediction live, the
channels' names in nnU-Net's dataset.json, and the label convention. `nnunet-mm convert` reads training data
through it; the submission runner reads test data and writes predictions through it.

A case folder holds files named ``<stem><separator><key><file_ending>``, one per channel key; ``label`` and
``prediction`` are paths under the source and output roots with ``{folder}`` (the case folder relative to
``images``) and ``{stem}`` filled in.
"""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LayoutCase:
    case: str                       # the stem: nnU-Net case name and prediction name
    relative_folder: str            # the case folder relative to the layout's images folder
    channels: tuple[Path, ...]      # expected channel files in channel order (a file may be absent)
    label: Path
    extra: tuple[Path, ...] = ()    # files in the case folder that are no channel, label or allowed sidecar

    def missing(self) -> list[int]:
        return [i for i, path in enumerate(self.channels) if not path.is_file()]


@dataclass(frozen=True)
class UnrecognisedFolder:
    folder: Path
    files: tuple[Path, ...]


@dataclass(frozen=True)
class Layout:
    name: str
    images: str                             # folder of the case folders under the source root ("" = the root)
    case_folders: str                       # glob of case folders under ``images``
    channel_keys: tuple[str, ...]           # file keys in channel order
    channel_names: tuple[str, ...]          # dataset.json channel names, same order
    separator: str
    file_ending: str
    label: str                              # training label under the source root
    prediction: str                         # prediction under the output root
    labels: dict                            # dataset.json labels (with regions where the challenge has them)
    allowed_label_values: tuple[int, ...]   # label values in the challenge's files
    label_map: dict | None = None           # challenge value -> nnU-Net value (None: the same values)
    regions_class_order: tuple[int, ...] | None = None
    co_registered: bool = False             # all channels share one grid: any present channel can be the reference
    sidecars: tuple[str, ...] = ()          # other files a case folder may hold (glob patterns)

    def channel_file(self, folder: Path, stem: str, channel: int) -> Path:
        return folder / f"{stem}{self.separator}{self.channel_keys[channel]}{self.file_ending}"

    def stem_and_channel(self, filename: str) -> tuple[str, int] | None:
        for channel, key in sorted(enumerate(self.channel_keys), key=lambda c: -len(c[1])):
            suffix = f"{self.separator}{key}{self.file_ending}"
            if filename.endswith(suffix) and len(filename) > len(suffix):
                return filename[: -len(suffix)], channel
        return None

    def output_label_map(self) -> dict[int, int]:
        """nnU-Net label value -> challenge value (the first challenge value where several map to one)."""
        if self.label_map is None:
            return {v: v for v in self.allowed_label_values}
        inverse: dict[int, int] = {}
        for source, target in self.label_map.items():
            inverse.setdefault(target, source)
        return inverse

    def dataset_json_labels(self) -> dict:
        dataset_json = {"labels": self.labels}
        if self.regions_class_order is not None:
            dataset_json["regions_class_order"] = list(self.regions_class_order)
        return dataset_json

    def scan(self, root: Path) -> tuple[list[LayoutCase], list[UnrecognisedFolder]]:
        """Every case under ``root`` (a case is a stem with at least one channel file), and the case folders
        in which no file is named like a channel."""
        images = root / self.images
        cases, unrecognised = [], []
        for folder in sorted(p for p in images.glob(self.case_folders) if p.is_dir()):
            relative = folder.relative_to(images).as_posix()
            stems: dict[str, list[Path]] = defaultdict(list)
            others = []
            for path in sorted(folder.iterdir()):
                match = self.stem_and_channel(path.name) if path.is_file() else None
                if match:
                    stems[match[0]].append(path)
                elif not any(fnmatch.fnmatch(path.name, pattern) for pattern in self.sidecars):
                    others.append(path)
            if not stems:
                unrecognised.append(UnrecognisedFolder(folder, tuple(others)))
                continue
            labels = {stem: root / self.label.format(folder=relative, stem=stem) for stem in stems}
            others = [p for p in others if p not in labels.values()]
            unowned = [p for p in others if not any(p.name.startswith(f"{s}{self.separator}") for s in stems)]
            for stem in sorted(stems):
                owned = [p for p in others if p.name.startswith(f"{stem}{self.separator}")]
                channels = tuple(self.channel_file(folder, stem, c) for c in range(len(self.channel_keys)))
                cases.append(LayoutCase(stem, relative, channels, labels[stem], tuple(owned + unowned)))
        return cases, unrecognised

    def prediction_path(self, output_root: Path, case: LayoutCase) -> Path:
        return output_root / self.prediction.format(folder=case.relative_folder, stem=case.case)

    def describe(self) -> str:
        names = ", ".join(f"{k} ({n})" for k, n in zip(self.channel_keys, self.channel_names))
        folders = "<case folder>" if self.case_folders == "*" else self.case_folders
        where = f"{self.images}/" if self.images else ""
        return f"{where}{folders}/<case>{self.separator}<key>{self.file_ending} with keys {names}"


BRATS_REGIONS_2021 = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
# BraTS 2023+ GLI labels: 1 NETC, 2 SNFH (edema), 3 ET; WT = {1,2,3}, TC = {1,3}, ET = {3}
BRATS_REGIONS_2023 = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [1, 3], "enhancing tumor": [3]}
# BraTS 2024 post-treatment GLI labels: 1 NETC, 2 SNFH, 3 ET, 4 RC (resection cavity). Its scorer
# (BraTS-2024-Metrics, metrics_GLI.py) reports WT = {1,2,3}, TC = {1,3} (the cavity is in neither), NETC, SNFH, ET
# and RC; all six are trained as regions, so nnU-Net's validation, find_best_configuration and `nnunet-mm evaluate`
# score what the challenge scores. Listed from the outside in, each nested region after the one holding it
# (SNFH = WT outside TC, NETC = TC outside ET), so that decoding lets the inner region's decision win, then RC.
BRATS_REGIONS_2024 = {"background": 0, "WT": [1, 2, 3], "SNFH": [2], "TC": [1, 3], "NETC": [1], "ET": [3], "RC": [4]}
# MM-WHS label values: myocardium 205, left atrium 420 (421 in one public MR label, same structure), left
# ventricle 500, right atrium 550, right ventricle 600, ascending aorta 820, pulmonary artery 850
MMWHS_MAP = {0: 0, 205: 1, 420: 2, 421: 2, 500: 3, 550: 4, 600: 5, 820: 6, 850: 7}
MMWHS_LABELS = {"background": 0, "myocardium": 1, "left atrium": 2, "left ventricle": 3, "right atrium": 4,
                "right ventricle": 5, "ascending aorta": 6, "pulmonary artery": 7}


def _mmwhs(modality: str) -> Layout:
    return Layout(f"mmwhs_{modality}", "", f"{modality}_train", ("image",), (modality.upper(),), "_", ".nii.gz",
                  label="{folder}/{stem}_label.nii.gz", prediction="{stem}_label.nii.gz", labels=MMWHS_LABELS,
                  allowed_label_values=tuple(MMWHS_MAP), label_map=MMWHS_MAP)


LAYOUTS: dict[str, Layout] = {
    # BIDS: rawdata/sub-X/ses-Y/sub-X_ses-Y_{dwi,adc,flair}.nii.gz (+ JSON sidecars); masks under derivatives/.
    # Predictions go where the masks are under derivatives/, so the output folder pairs with derivatives/.
    "isles22": Layout("isles22", "rawdata", "sub-*/ses-*", ("dwi", "adc", "flair"), ("DWI", "ADC", "FLAIR"), "_",
                      ".nii.gz", label="derivatives/{folder}/{stem}_msk.nii.gz",
                      prediction="{folder}/{stem}_msk.nii.gz", labels={"background": 0, "infarct": 1},
                      allowed_label_values=(0, 1), sidecars=("*.json",)),
    # PI-CAI public training data: images/<patient>/<patient>_<study>_{t2w,adc,hbv}.mha; T2W is the output grid
    "picai": Layout("picai", "images", "*", ("t2w", "adc", "hbv"), ("T2W", "ADC", "HBV"), "_", ".mha",
                    label="annotations/{stem}.nii.gz", prediction="{stem}.mha",
                    labels={"background": 0, "csPCa": 1}, allowed_label_values=(0, 1)),
    # BraTS 2018-2021, nnU-Net's Dataset137_BraTS21 convention: 0/1/2/4 -> 0/2/1/3 and WT/TC/ET regions
    "brats": Layout("brats", "", "*", ("t1", "t1ce", "t2", "flair"), ("T1", "T1ce", "T2", "Flair"), "_", ".nii.gz",
                    label="{folder}/{stem}_seg.nii.gz", prediction="{stem}.nii.gz", labels=BRATS_REGIONS_2021,
                    allowed_label_values=(0, 1, 2, 4), label_map={0: 0, 1: 2, 2: 1, 4: 3},
                    regions_class_order=(1, 2, 3), co_registered=True),
    # BraTS 2023+ (channel names as nnU-Net's Dataset226); labels kept, regions ordered so that they decode to them
    "brats2023": Layout("brats2023", "", "*", ("t1n", "t1c", "t2w", "t2f"), ("T1", "T1C", "T2W", "T2F"), "-",
                        ".nii.gz", label="{folder}/{stem}-seg.nii.gz", prediction="{stem}.nii.gz",
                        labels=BRATS_REGIONS_2023, allowed_label_values=(0, 1, 2, 3), regions_class_order=(2, 1, 3),
                        co_registered=True),
    # BraTS 2024 post-treatment gliomas: the 2023 files plus the resection cavity label 4, kept as it is
    "brats2024": Layout("brats2024", "", "*", ("t1n", "t1c", "t2w", "t2f"), ("T1", "T1C", "T2W", "T2F"), "-",
                        ".nii.gz", label="{folder}/{stem}-seg.nii.gz", prediction="{stem}.nii.gz",
                        labels=BRATS_REGIONS_2024, allowed_label_values=(0, 1, 2, 3, 4),
                        regions_class_order=(2, 2, 1, 1, 3, 4), co_registered=True),
    "mmwhs_ct": _mmwhs("ct"),
    "mmwhs_mr": _mmwhs("mr"),
}


def _labels_or_regions(dataset_json: dict) -> tuple[list, list | None]:
    from nnunet_multimodal.evaluation.evaluate import labels_or_regions_from_dataset_json

    order = dataset_json.get("regions_class_order")
    # compared as regions: a region of one label may be written 3 or [3]
    values = [tuple(map(int, v)) if isinstance(v, tuple) else ((int(v),) if order else int(v))
              for v in labels_or_regions_from_dataset_json(dataset_json)]
    return values, order and [int(v) for v in order]


def model_fits_layout(layout: Layout, dataset_json: dict) -> list[str]:
    """Problems that stop a model trained on ``dataset_json`` from serving ``layout`` (empty when it fits):
    the same channels in the same order (names compared case-insensitively) and the same labels or regions."""
    problems = []
    channels = dataset_json["channel_names"]
    model_channels = [channels[k] for k in sorted(channels, key=int)]
    if [c.lower() for c in model_channels] != [c.lower() for c in layout.channel_names]:
        problems.append(f"the model's channels are {model_channels} (dataset.json channel_names); the {layout.name} "
                        f"layout provides {list(layout.channel_names)} in this order")
    (ours, our_order), (theirs, their_order) = map(_labels_or_regions, (dataset_json, layout.dataset_json_labels()))
    if (ours, our_order) != (theirs, their_order):
        problems.append(f"the model predicts labels/regions {ours} with regions_class_order {our_order}; the "
                        f"{layout.name} layout's convention is {theirs} with regions_class_order {their_order}")
    return problems
