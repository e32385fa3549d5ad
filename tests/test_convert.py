"""Converters on the real cases in ../shared/data (skipped without it) and on synthetic layouts."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import SHARED

from nnunet_multimodal.cli import main
from nnunet_multimodal.data.convert.common import ConversionError
from nnunet_multimodal.data.convert.formats import convert

needs_shared = pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared/data is absent (users' clones)")


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@needs_shared
def test_isles22_real_case(tmp_path):
    folder, report = convert("isles22", SHARED / "data" / "isles22", tmp_path, 801)
    case = "sub-strokecase0009_ses-0001"
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "DWI", "1": "ADC", "2": "FLAIR"}
    dwi_source = sitk.ReadImage(str(SHARED / "data/isles22/rawdata/sub-strokecase0009/ses-0001" / f"{case}_dwi.nii.gz"))
    for channel in range(3):
        image = sitk.ReadImage(str(folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz"))
        assert image.GetSize() == dwi_source.GetSize()
        assert np.allclose(image.GetSpacing(), dwi_source.GetSpacing())
        assert np.allclose(image.GetDirection(), dwi_source.GetDirection(), atol=1e-5)
    assert report.resampled == [f"{case}_flair.nii.gz onto {case}_dwi.nii.gz"]
    lesion = array(folder / "labelsTr" / f"{case}.nii.gz") > 0
    dwi, adc = array(folder / "imagesTr" / f"{case}_0000.nii.gz"), array(folder / "imagesTr" / f"{case}_0001.nii.gz")
    brain = (dwi > np.percentile(dwi, 50)) & ~lesion
    assert lesion.sum() == 523
    assert dwi[lesion].mean() > 1.5 * dwi[brain].mean()      # infarct bright on DWI
    assert adc[lesion].mean() < 0.7 * adc[brain].mean()      # and dark on ADC


@needs_shared
def test_picai_real_cases_resampled_in_physical_space(tmp_path):
    folder, report = convert("picai", SHARED / "data" / "prostatex", tmp_path, 802)
    case = "ProstateX-0000_07-07-2011"
    t2w = array(folder / "imagesTr" / f"{case}_0000.nii.gz")
    lesion = array(folder / "labelsTr" / f"{case}.nii.gz") > 0
    assert t2w.shape == (19, 384, 384)
    assert lesion.sum() == 512
    assert t2w[lesion].mean() < 0.6 * t2w.mean()             # the csPCa lesion is dark on T2W
    # the annotation's y axis is flipped against the image: copying the array would miss the lesion
    copied = array(SHARED / "data/prostatex/annotations" / f"{case}.nii.gz") > 0
    assert t2w[copied].mean() > t2w[lesion].mean() * 1.3
    negative = array(folder / "labelsTr" / "ProstateX-0001_07-08-2011.nii.gz")
    # the empty mask came from the ADC grid
    assert negative.shape == (19, 384, 384)
    assert negative.max() == 0
    assert sum("(nearest neighbour)" in r for r in report.resampled) == 2


@needs_shared
@pytest.mark.parametrize("fmt, folder, dataset_id", [("isles22", "isles22", 803), ("picai", "prostatex", 804)])
def test_converted_dataset_passes_nnunet_integrity_check(workspace, fmt, folder, dataset_id):
    """nnU-Net's own check (what --verify_dataset_integrity runs), in this process: it raises on any failure."""
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    written, _ = convert(fmt, SHARED / "data" / folder, workspace.raw, dataset_id)
    verify_dataset_integrity(str(written), num_processes=1)


def picai_layout(root: Path, cases=2, label_value=1, shift_adc_mm=0.0, missing=None) -> Path:
    for i in range(cases):
        stem = f"P{i}_study"
        (root / "images" / f"P{i}").mkdir(parents=True, exist_ok=True)
        (root / "annotations").mkdir(exist_ok=True)
        t2w = sitk.GetImageFromArray(np.random.default_rng(i).random((4, 16, 16)).astype(np.float32) * 100)
        t2w.SetSpacing((0.5, 0.5, 3.0))
        adc = sitk.GetImageFromArray(np.ones((4, 4, 4), np.float32) * 1000)
        adc.SetSpacing((2.0, 2.0, 3.0))
        adc.SetOrigin((shift_adc_mm, 0.0, 0.0))
        label = sitk.GetImageFromArray(np.zeros((4, 16, 16), np.uint8))
        label.CopyInformation(t2w)
        label[8, 8, 2] = label_value
        for suffix, image in (("t2w", t2w), ("adc", adc), ("hbv", adc)):
            if missing != (i, suffix):
                sitk.WriteImage(image, str(root / "images" / f"P{i}" / f"{stem}_{suffix}.mha"))
        sitk.WriteImage(label, str(root / "annotations" / f"{stem}.nii.gz"))
    return root


def test_synthetic_picai_layout(tmp_path):
    folder, report = convert("picai", picai_layout(tmp_path / "src"), tmp_path / "raw", 5)
    assert report.converted == ["P0_study", "P1_study"]
    assert array(folder / "imagesTr" / "P0_study_0001.nii.gz").shape == (4, 16, 16)


@pytest.mark.parametrize("breakage, message", [
    ({"missing": (1, "hbv")}, "P1_study_hbv.mha is missing"),
    ({"label_value": 4}, "label values [4]"),
    ({"shift_adc_mm": 500.0}, "does not overlap"),
])
def test_bad_cases_fail_clearly_and_write_nothing(tmp_path, breakage, message):
    source = picai_layout(tmp_path / "src", **breakage)
    with pytest.raises(ConversionError, match=message.replace("[", "\\[").replace("]", "\\]")):
        convert("picai", source, tmp_path / "raw", 5)
    assert not list((tmp_path / "raw").iterdir())   # no dataset and no staging folder left


@pytest.mark.parametrize("name", ["../Escaped", "sub/folder", "Two__Parts", ".hidden", "with space"])
def test_an_unsafe_dataset_name_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch, name):
    source = picai_layout(tmp_path / "src")
    (tmp_path / "raw").mkdir()
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "picai", str(source), "-d", "6", "--name", name]) == 2
    assert f"dataset name {name!r} is not usable" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "src"]
    assert not list((tmp_path / "raw").iterdir())


def test_skip_bad_reports_and_converts_the_rest(tmp_path, capsys, monkeypatch):
    source = picai_layout(tmp_path / "src", missing=(1, "adc"))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "picai", str(source), "-d", "6"]) == 2
    assert "--skip-bad" in capsys.readouterr().err
    assert main(["convert", "picai", str(source), "-d", "6", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "converted 1 case(s)" in out
    assert "skipped P1_study" in out
    assert "P1_study_adc.mha is missing" in out


def test_unreadable_file(tmp_path):
    source = picai_layout(tmp_path / "src", cases=1)
    (source / "images" / "P0" / "P0_study_adc.mha").write_bytes(b"not an image")
    with pytest.raises(ConversionError, match="P0_study_adc.mha is unreadable"):
        convert("picai", source, tmp_path / "raw", 5)


def write_volume(array, path, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def brats_layout(root: Path, separator: str, suffixes, label_values) -> Path:
    rng = np.random.default_rng(0)
    for i in range(2):
        case = f"BraTS{separator}{i:05d}"
        for suffix in suffixes:
            write_volume(rng.random((8, 8, 8)).astype(np.float32), root / case / f"{case}{separator}{suffix}.nii.gz")
        seg = np.zeros((8, 8, 8), np.uint8)
        for j, value in enumerate(label_values):
            seg[j] = value
        write_volume(seg, root / case / f"{case}{separator}seg.nii.gz")
    return root


def test_brats_2021_uses_nnunet_label_convention(tmp_path):
    from nnunetv2.dataset_conversion.Dataset137_BraTS21 import convert_labels_back_to_BraTS

    from nnunet_multimodal.evaluation.evaluate import labels_or_regions_from_dataset_json

    source = brats_layout(tmp_path / "src", "_", ("t1", "t1ce", "t2", "flair"), (0, 1, 2, 4))
    folder, _ = convert("brats", source, tmp_path / "raw", 137)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"}
    assert labels_or_regions_from_dataset_json(dataset_json) == [(1, 2, 3), (2, 3), (3,)]
    original = array(source / "BraTS_00000" / "BraTS_00000_seg.nii.gz")
    converted = array(folder / "labelsTr" / "BraTS_00000.nii.gz")
    assert set(np.unique(converted)) == {0, 1, 2, 3}
    assert np.array_equal(convert_labels_back_to_BraTS(converted), original)   # nnU-Net's inverse mapping
    assert np.array_equal(array(folder / "imagesTr" / "BraTS_00000_0001.nii.gz"),
                          array(source / "BraTS_00000" / "BraTS_00000_t1ce.nii.gz"))
    bad = brats_layout(tmp_path / "bad", "_", ("t1", "t1ce", "t2", "flair"), (0, 3))
    with pytest.raises(ConversionError, match="label values \\[3\\]"):
        convert("brats", bad, tmp_path / "raw", 138)


def test_brats_2023_regions(tmp_path):
    from nnunet_multimodal.evaluation.evaluate import labels_or_regions_from_dataset_json

    source = brats_layout(tmp_path / "src", "-", ("t1n", "t1c", "t2w", "t2f"), (0, 1, 2, 3))
    folder, _ = convert("brats2023", source, tmp_path / "raw", 226)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert labels_or_regions_from_dataset_json(dataset_json) == [(1, 2, 3), (1, 3), (3,)]
    assert dataset_json["regions_class_order"] == [2, 1, 3]
    assert np.array_equal(array(folder / "labelsTr" / "BraTS-00001.nii.gz"),
                          array(source / "BraTS-00001" / "BraTS-00001-seg.nii.gz"))


BRATS_2024_KEYS = ("t1n", "t1c", "t2w", "t2f")


def test_brats_2024_keeps_labels_and_trains_the_scorers_six_regions(tmp_path):
    source = brats_layout(tmp_path / "src", "-", BRATS_2024_KEYS, (0, 1, 2, 3, 4))
    folder, _ = convert("brats2024", source, tmp_path / "raw", 227)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T1C", "2": "T2W", "3": "T2F"}
    # BraTS-2024-Metrics metrics_GLI.py get_TissueWiseSeg: WT 1-3 and TC 1,3 leave the resection cavity (4) out
    assert dataset_json["labels"] == {"background": 0, "WT": [1, 2, 3], "SNFH": [2], "TC": [1, 3], "NETC": [1],
                                      "ET": [3], "RC": [4]}
    assert dataset_json["regions_class_order"] == [2, 2, 1, 1, 3, 4]
    assert np.array_equal(array(folder / "labelsTr" / "BraTS-00001.nii.gz"),
                          array(source / "BraTS-00001" / "BraTS-00001-seg.nii.gz"))


def test_brats_2024_regions_decode_back_to_the_labels(tmp_path):
    """nnU-Net's training targets of the converted labels, decoded as nnU-Net's predictor decodes regions."""
    import torch
    from batchgeneratorsv2.transforms.utils.seg_to_regions import ConvertSegmentationToRegionsTransform
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    source = brats_layout(tmp_path / "src", "-", BRATS_2024_KEYS, (0, 1, 2, 3, 4))
    folder, _ = convert("brats2024", source, tmp_path / "raw", 227)
    dataset_json = json.loads((folder / "dataset.json").read_text())
    manager = LabelManager(dataset_json["labels"], dataset_json["regions_class_order"])
    labels = array(folder / "labelsTr" / "BraTS-00000.nii.gz")
    targets = ConvertSegmentationToRegionsTransform(manager.foreground_regions)(
        segmentation=torch.from_numpy(labels[None].astype(np.int16)))["segmentation"]
    decoded = manager.convert_probabilities_to_segmentation(targets.float().numpy())
    assert set(np.unique(labels)) == {0, 1, 2, 3, 4}
    assert np.array_equal(decoded, labels)


def test_brats_2023_on_2024_data_names_brats2024_even_with_skip_bad(tmp_path, monkeypatch, capsys):
    source = brats_layout(tmp_path / "src", "-", BRATS_2024_KEYS, (0, 1, 2, 3, 4))
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "brats2023", str(source), "-d", "226", "--skip-bad"]) == 2
    error = capsys.readouterr().err
    assert "BraTS-00000-seg.nii.gz has label values [4]" in error
    assert "convert this folder with `nnunet-mm convert brats2024`" in error
    assert not list((tmp_path / "raw").iterdir())


def test_brats_2023_names_no_other_format_for_unknown_values(tmp_path):
    source = brats_layout(tmp_path / "src", "-", BRATS_2024_KEYS, (0, 4, 5))
    with pytest.raises(ConversionError, match=r"label values \[4, 5\]; the brats2023 format defines") as error:
        convert("brats2023", source, tmp_path / "raw", 226)
    assert "brats2024" not in str(error.value)


def test_mmwhs_two_datasets_with_one_label_map(tmp_path, monkeypatch, capsys):
    for modality, spacing in (("ct", (0.4, 0.4, 0.6)), ("mr", (1.0, 1.0, 1.0))):
        label = np.zeros((6, 8, 8), np.uint16)
        label[1], label[2], label[3] = 205, 500, 850
        write_volume(np.random.default_rng(1).random((6, 8, 8)).astype(np.float32),
                     tmp_path / "src" / f"{modality}_train" / f"{modality}_train_1001_image.nii.gz", spacing)
        write_volume(label, tmp_path / "src" / f"{modality}_train" / f"{modality}_train_1001_label.nii.gz", spacing)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "mmwhs", str(tmp_path / "src"), "-d", "40"]) == 0
    ct, mr = tmp_path / "raw" / "Dataset040_MMWHS_CT", tmp_path / "raw" / "Dataset041_MMWHS_MR"
    ct_json, mr_json = (json.loads((f / "dataset.json").read_text()) for f in (ct, mr))
    assert ct_json["labels"] == mr_json["labels"]
    assert set(np.unique(array(ct / "labelsTr" / "ct_train_1001.nii.gz"))) == {0, 1, 3, 7}
    assert json.loads((mr / "dataset.json").read_text())["channel_names"] == {"0": "MR"}


def mmwhs_source(root, modalities=("ct", "mr"), label_dtype=np.uint16, extra_value=None):
    for modality in modalities:
        label = np.zeros((6, 8, 8), label_dtype)
        label[1], label[2] = 205, 500
        if extra_value is not None:
            label[3, 0, 0] = extra_value
        write_volume(np.random.default_rng(1).random((6, 8, 8)).astype(np.float32),
                     root / f"{modality}_train" / f"{modality}_train_1001_image.nii.gz", (1.0, 1.0, 1.0))
        write_volume(label, root / f"{modality}_train" / f"{modality}_train_1001_label.nii.gz", (1.0, 1.0, 1.0))
    return root


def test_mmwhs_writes_both_datasets_or_neither(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    (tmp_path / "raw").mkdir()
    assert main(["convert", "mmwhs", str(mmwhs_source(tmp_path / "ct_only", ("ct",))), "-d", "40"]) == 2
    assert "mr_train" in capsys.readouterr().err
    assert not list((tmp_path / "raw").iterdir())
    source = mmwhs_source(tmp_path / "src")
    assert main(["convert", "mmwhs", str(source), "-d", "999"]) == 2
    assert "outside 1-999" in capsys.readouterr().err
    assert not list((tmp_path / "raw").iterdir())


def test_dataset_id_taken_in_preprocessed_or_results_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    (tmp_path / "pre" / "Dataset040_Old").mkdir(parents=True)
    assert main(["convert", "mmwhs", str(mmwhs_source(tmp_path / "src")), "-d", "39"]) == 2
    error = capsys.readouterr().err
    assert "dataset id 40 is taken" in error
    assert "Dataset040_Old" in error
    assert "-d" in error
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())


def test_fractional_label_values_are_refused_not_truncated(tmp_path):
    source = mmwhs_source(tmp_path / "src", ("ct",), np.float32, extra_value=205.6)
    with pytest.raises(ConversionError, match=r"non-integer label values \[205.6"):
        convert("mmwhs_ct", source, tmp_path / "raw", 40)


def msd_task(folder: Path) -> Path:
    """Two cases of a 2-channel MSD task: 4D images, 3D labels."""
    task = folder / "Task05_Prostate"
    rng = np.random.default_rng(2)
    for i in range(2):
        four_d = sitk.JoinSeries([sitk.GetImageFromArray(rng.random((4, 8, 8)).astype(np.float32)) for _ in range(2)])
        (task / "imagesTr").mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(four_d, str(task / "imagesTr" / f"prostate_{i:02d}.nii.gz"))
        write_volume((rng.random((4, 8, 8)) > 0.5).astype(np.uint8), task / "labelsTr" / f"prostate_{i:02d}.nii.gz")
    (task / "imagesTs").mkdir()
    (task / "dataset.json").write_text(json.dumps({
        "name": "PROSTATE", "modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "PZ"},
        "numTraining": 2, "training": [], "test": []}))
    return task


def test_msd_through_nnunet_converter(tmp_path, monkeypatch):
    task = msd_task(tmp_path)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "msd", str(task), "-d", "505"]) == 0
    folder = tmp_path / "raw" / "Dataset505_Prostate"
    assert json.loads((folder / "dataset.json").read_text())["channel_names"] == {"0": "T2", "1": "ADC"}
    assert sorted(p.name for p in (folder / "imagesTr").iterdir())[:2] == ["prostate_00_0000.nii.gz",
                                                                           "prostate_00_0001.nii.gz"]
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["Dataset505_Prostate"]
    assert main(["convert", "msd", str(tmp_path / "raw"), "-d", "506"]) == 2


def test_msd_source_cut_short_is_named_before_nnunets_converter_reads_it(tmp_path, monkeypatch, capsys):
    task = msd_task(tmp_path)
    cut = task / "imagesTr" / "prostate_01.nii.gz"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])   # SimpleITK would read the rest as zeros
    (task / "imagesTr" / "._prostate_00.nii.gz").write_bytes(b"macOS metadata")   # skipped, as nnU-Net does
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    assert main(["convert", "msd", str(task), "-d", "507"]) == 2
    assert f"{cut} is unreadable (gzip: Compressed file ended" in capsys.readouterr().err
