import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_multimodal.cli import main
from nnunet_multimodal.evaluation.evaluate import (
    OUTPUT_NAMES,
    evaluate_folders,
    labels_or_regions_from_dataset_json,
)
from nnunet_multimodal.evaluation.metrics import HD95_CAP, LesionSettings, dice, hd95, iou, lesion_wise, mask_metrics


def square(shape=(40, 40), rows=(10, 30), cols=(10, 30)):
    mask = np.zeros(shape, bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def test_dice_and_iou_by_hand():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 0], bool)
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert iou(a, b) == pytest.approx(2 / 4)


def test_identical_masks_have_zero_hd95():
    assert hd95(square(), square(), (1, 1)) == 0


def test_shifted_squares():
    # every surface distance is at most the shift, and far more than 5 % of them equal it
    assert hd95(square(), square(cols=(13, 33)), (1, 1)) == pytest.approx(3.0)
    assert hd95(square(), square(cols=(13, 33)), (1.0, 0.5)) == pytest.approx(1.5)  # anisotropic spacing


def test_one_voxel_objects():
    a, b = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    a[0, 0], b[3, 4] = True, True
    assert hd95(a, b, (1, 1)) == pytest.approx(5.0)
    assert hd95(a, b, (2, 1)) == pytest.approx(math.hypot(6, 4))


def test_concentric_spheres():
    grid = np.indices((40, 40, 40)) - 20
    radius = np.sqrt((grid ** 2).sum(0))
    assert hd95(radius <= 10, radius <= 12, (1, 1, 1)) == pytest.approx(2.0, abs=0.5)


def test_empty_mask_conventions():
    empty, full = np.zeros((5, 5), bool), square((5, 5), (1, 3), (1, 3))
    assert math.isnan(dice(empty, empty))
    assert math.isnan(hd95(empty, empty, (1, 1)))
    assert math.isnan(hd95(full, empty, (1, 1)))
    assert dice(full, empty) == 0
    assert dice(empty, empty, "brats") == 1
    assert hd95(empty, empty, (1, 1), "brats") == 0
    assert hd95(full, empty, (1, 1), "brats") == HD95_CAP
    assert hd95(empty, full, (1, 1), "brats") == HD95_CAP
    with pytest.raises(ValueError, match="convention"):
        mask_metrics(full, full, (1, 1), convention="isles")


def test_singleton_axis_of_2d_cases_is_ignored():
    volume_a, volume_b = square()[None], square(cols=(13, 33))[None]
    assert mask_metrics(volume_a, volume_b, (1, 1, 1))["HD95"] == pytest.approx(3.0)


def lesions_case():
    reference = np.zeros((1, 40, 40), bool)
    reference[0, 2:8, 2:8] = True          # lesion A
    reference[0, 20:26, 20:26] = True      # lesion B
    prediction = np.zeros_like(reference)
    prediction[0, 2:8, 2:8] = True         # A found exactly
    prediction[0, 35:37, 35:37] = True     # a 4-voxel false positive; B missed
    return reference, prediction


def test_lesion_wise_matching():
    reference, prediction = lesions_case()
    result = lesion_wise(reference[0], prediction[0], (1, 1))
    assert result["reference_lesions"] == 2
    assert result["false_positive_lesions"] == 1
    assert result["lesion_dice"] == pytest.approx(1 / 3)
    assert result["lesion_hd95"] == pytest.approx(2 * HD95_CAP / 3)
    assert lesion_wise(reference[0], prediction[0], (1, 1), LesionSettings(min_volume=35))["reference_lesions"] == 2
    assert lesion_wise(reference[0], prediction[0], (1, 1), LesionSettings(min_volume=36))["reference_lesions"] == 0


def test_prediction_on_a_lesion_left_out_is_no_false_positive():
    reference, prediction = lesions_case()
    prediction[0, 21:24, 21:24] = True     # B found in part
    result = lesion_wise(reference[0], prediction[0], (0.5, 0.5), LesionSettings(min_volume=9))  # A, B: 9 mm²
    assert result == {"lesion_dice": 0.0, "lesion_hd95": HD95_CAP, "reference_lesions": 0,
                      "false_positive_lesions": 1}


def test_predictions_within_the_dilated_lesion_match_it():
    reference = np.zeros((20, 20), bool)
    reference[5:10, 5:10] = True
    prediction = reference.copy()
    prediction[11:13, 5:10] = True         # one row of background between it and the lesion: 2 steps away
    apart = lesion_wise(reference, prediction, (1, 1), LesionSettings(dilation=1))
    assert apart["false_positive_lesions"] == 1
    assert apart["lesion_dice"] == pytest.approx(0.5)
    near = lesion_wise(reference, prediction, (1, 1), LesionSettings(dilation=2))
    assert near["false_positive_lesions"] == 0
    assert near["lesion_dice"] == pytest.approx(2 * 25 / (25 + 35))


def test_dilation_reaches_18_neighbours_in_3d():
    reference = np.zeros((8, 8, 8), bool)
    reference[2, 2, 2] = True
    corner, edge = np.zeros_like(reference), np.zeros_like(reference)
    corner[3, 3, 3] = True                  # a corner neighbour of the lesion: 26- but not 18-connected
    edge[3, 3, 2] = True                    # an edge neighbour: 18-connected
    settings = LesionSettings(dilation=1)
    assert lesion_wise(reference, corner, (1, 1, 1), settings)["false_positive_lesions"] == 1
    assert lesion_wise(reference, edge, (1, 1, 1), settings)["false_positive_lesions"] == 0


def test_lesion_dilation_groups_nearby_components():
    reference = np.zeros((20, 20), bool)
    reference[5:8, 5:8] = True
    reference[5:8, 9:12] = True            # one voxel column apart
    prediction = reference.copy()
    prediction[5:8, 9:12] = False
    separate = lesion_wise(reference, prediction, (1, 1))
    grouped = lesion_wise(reference, prediction, (1, 1), LesionSettings(dilation=1))
    assert separate["reference_lesions"] == 2
    assert separate["lesion_dice"] == pytest.approx(0.5)
    assert grouped["reference_lesions"] == 1
    assert grouped["lesion_dice"] == pytest.approx(2 * 9 / (18 + 9))


def test_both_empty_lesion_wise():
    empty = np.zeros((4, 4), bool)
    assert lesion_wise(empty, empty, (1, 1))["lesion_dice"] == 1.0


def write(array, path, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


@pytest.fixture
def folders(tmp_path):
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    ref.mkdir()
    pred.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        labels = np.zeros((1, 32, 32), np.uint8)
        labels[0, 4:20, 4:20] = 1
        labels[0, 8:16, 8:16] = 2
        labels[0, 10:13, 10:13] = 3
        noisy = labels.copy()
        noisy[0, rng.integers(0, 32, 20), rng.integers(0, 32, 20)] = rng.integers(0, 4, 20)
        if i == 2:
            labels[labels == 3] = 2        # label 3 absent in this reference
            noisy[noisy == 3] = 0
        write(labels, ref / f"c{i}.nii.gz")
        write(noisy, pred / f"c{i}.nii.gz")
    return ref, pred


def test_agreement_with_nnunet_dice(folders, tmp_path):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder_simple

    ref, pred = folders
    compute_metrics_on_folder_simple(str(ref), str(pred), [1, 2, 3], str(tmp_path / "nnunet.json"), num_processes=1)
    theirs = json.loads((tmp_path / "nnunet.json").read_text())
    ours = evaluate_folders(ref, pred, [1, 2, 3], progress=False)
    for case_theirs, case_ours in zip(theirs["metric_per_case"], ours["metric_per_case"]):
        for label in ("1", "2", "3"):
            a, b = case_theirs["metrics"][label]["Dice"], case_ours["metrics"][label]["Dice"]
            assert (a is None or math.isnan(a)) == math.isnan(b)
            if not math.isnan(b):
                assert a == pytest.approx(b)


def test_regions_from_dataset_json(folders):
    ref, pred = folders
    dataset_json = {"labels": {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "inner": 3},
                    "regions_class_order": [1, 2, 3]}
    regions = labels_or_regions_from_dataset_json(dataset_json)
    assert regions == [(1, 2, 3), (2, 3), 3]
    summary = evaluate_folders(ref, ref, regions, progress=False)
    assert set(summary["mean"]) == {"(1, 2, 3)", "(2, 3)", "3"}
    assert summary["mean"]["(1, 2, 3)"]["Dice"] == 1.0
    assert summary["mean"]["(1, 2, 3)"]["HD95"] == 0.0
    assert summary["metric_per_case"][0]["metrics"]["(2, 3)"]["n_ref"] == 64


def test_region_keys_are_the_keys_of_nnunets_summary(folders):
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    ref, _ = folders
    labels = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "inner": 3}
    summary = evaluate_folders(ref, ref, labels_or_regions_from_dataset_json(
        {"labels": labels, "regions_class_order": [1, 2, 3]}), progress=False)
    nnunets = [label_or_region_to_key(r) for r in LabelManager(labels, [1, 2, 3]).foreground_regions]
    assert list(summary["mean"]) == nnunets


def test_cli_outputs_and_errors(folders, tmp_path, capsys):
    ref, pred = folders
    out = tmp_path / "out"
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "2", "3", "-o", str(out),
                 "--lesion-wise", "--convention", "brats"]) == 0
    summary = json.loads((out / "summary_nnunet_mm.json").read_text())
    assert summary["convention"] == "brats"
    assert "lesion_dice" in summary["mean"]["1"]
    assert (out / "per_case_nnunet_mm.csv").read_text().count("\n") == 1 + 3 * 3
    assert (out / "boxplots_nnunet_mm.png").stat().st_size > 1000
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "--lesion-dilation", "3"]) == 2
    assert "add --lesion-wise" in capsys.readouterr().err
    write(np.zeros((1, 16, 16)), pred / "c0.nii.gz")
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "-o", str(out)]) == 2
    assert "c0.nii.gz" in capsys.readouterr().err
    write(np.zeros((1, 32, 32)), pred / "extra.nii.gz")
    with pytest.raises(FileNotFoundError, match="no reference"):
        evaluate_folders(ref, pred, [1], progress=False)


def test_png_dataset_evaluated_twice_into_its_prediction_folder(tmp_path, capsys):
    label = np.zeros((16, 16), np.uint8)
    label[4:10, 4:10] = 1
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
        sitk.WriteImage(sitk.GetImageFromArray(label), str(tmp_path / folder / "case.png"))
    for _ in range(2):      # the first run leaves boxplots_nnunet_mm.png among the predictions, and replaces it
        assert main(["evaluate", "-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-l", "1",
                     "--file-ending", ".png"]) == 0
    summary = json.loads((tmp_path / "pred" / "summary_nnunet_mm.json").read_text())
    assert len(summary["metric_per_case"]) == 1
    assert summary["mean"]["1"]["Dice"] == 1.0


def evaluate_command(ref, pred, *extra) -> list[str]:
    return ["evaluate", "-ref", str(ref), "-pred", str(pred), *extra]


def test_nnunets_summary_in_the_prediction_folder_is_left_alone(folders):
    ref, pred = folders
    nnunet_summary = '{"foreground_mean": {"Dice": 0.5}}'   # what find_best_configuration reads
    (pred / "summary.json").write_text(nnunet_summary)
    assert main(evaluate_command(ref, pred, "-l", "1", "2", "3")) == 0
    assert (pred / "summary.json").read_text() == nnunet_summary


@pytest.mark.parametrize("name", OUTPUT_NAMES)
def test_an_output_file_we_did_not_write_is_not_replaced(folders, tmp_path, capsys, name):
    ref, pred = folders
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / name).write_text("someone else's")
    assert main(evaluate_command(ref, pred, "-l", "1", "-o", str(tmp_path / "out"))) == 2
    assert f"{tmp_path / 'out' / name} exists and was not written by nnunet-mm evaluate" in capsys.readouterr().err
    assert (tmp_path / "out" / name).read_text() == "someone else's"


def write_dataset_json(path, labels):
    path.write_text(json.dumps({"labels": labels, "file_ending": ".nii.gz"}))
    return path


def test_reference_values_the_dataset_json_does_not_declare_are_refused(folders, tmp_path, capsys):
    ref, pred = folders
    djfile = write_dataset_json(tmp_path / "dataset.json", {"background": 0, "a": 1, "b": 2})
    assert main(evaluate_command(ref, pred, "-djfile", str(djfile))) == 2
    assert f"{ref / 'c0.nii.gz'} holds label values [3] that {djfile} does not declare" in capsys.readouterr().err


def test_references_without_a_prediction_are_noted_and_listed(folders, capsys):
    ref, pred = folders
    (pred / "c2.nii.gz").unlink()
    assert main(evaluate_command(ref, pred, "-l", "1")) == 0
    assert f"note: 1 reference(s) in {ref} have no prediction and are not scored: c2.nii.gz" in capsys.readouterr().err
    summary = json.loads((pred / "summary_nnunet_mm.json").read_text())
    assert summary["references_without_prediction"] == ["c2.nii.gz"]


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"name": "no labels"}', '{"labels": {"a": 1}}',
                                     '{"labels": {"background": 1, "a": 2}}', '{"labels": ["background"]}'])
@pytest.mark.parametrize("command", ["evaluate", "evaluate-missing"])
def test_malformed_dataset_json_is_one_line_naming_the_file(folders, tmp_path, capsys, content, command):
    ref, pred = folders
    djfile = tmp_path / "dataset.json"
    djfile.write_text(content)
    arguments = [command, "-djfile", str(djfile)] + (
        ["-ref", str(ref), "-pred", str(pred)] if command == "evaluate"   # evaluate-missing: before any model loads
        else ["-i", str(pred), "-ref", str(ref), "-o", str(tmp_path / "out"), "-d", "999", "-c", "2d"])
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"nnunet-mm {command}: error: {djfile} is no usable dataset.json")
    assert error.count("\n") == 1
