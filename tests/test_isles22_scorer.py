"""ISLES'22 per-case metrics: hand-computed cases, the official functions re-derived, the real ISLES'22 mask."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import SHARED, cli_lesion_case
from scipy import ndimage

from nnunet_multimodal.evaluation.isles22_scorer import case_metrics

ISLES_MASK = SHARED / "data/isles22/derivatives/sub-strokecase0009/ses-0001/sub-strokecase0009_ses-0001_msk.nii.gz"
needs_shared = pytest.mark.skipif(not ISLES_MASK.is_file(), reason="../shared/data is absent (users' clones)")
SPACING = (1.0, 1.0, 1.0)


def line(*voxels, length=12):
    """A (1, 1, length) mask with the given voxels set: lesions along one axis."""
    mask = np.zeros((1, 1, length), bool)
    mask[0, 0, list(voxels)] = True
    return mask


def official_values(reference, prediction, spacing):
    """The four values as ISLES'22's ``compute_dice``, ``compute_absolute_volume_difference``,
    ``compute_absolute_lesion_difference`` and ``compute_lesion_f1_score`` compute them (isles22_docker_evaluation,
    ``eval_metrics_isles.py``): scipy labelling with a 3×3×3 block, one full-mask comparison per cluster."""
    reference, prediction = reference.astype(bool), prediction.astype(bool)
    total = reference.sum() + prediction.sum()
    dice = 1.0 if total == 0 else 2.0 * np.logical_and(reference, prediction).sum() / total
    voxel_ml = np.prod(spacing) / 1000
    volume_difference = np.abs(reference.sum() * voxel_ml - prediction.sum() * voxel_ml)
    block = np.ones((3, 3, 3))
    reference_labels, reference_count = ndimage.label(reference, block)
    prediction_labels, prediction_count = ndimage.label(prediction, block)
    both = np.logical_and(reference, prediction)
    tp = sum(bool((reference_labels == k)[both].any()) for k in range(1, reference_count + 1))
    fn = reference_count - tp
    fp = sum(not (prediction_labels == k)[reference].any() for k in range(1, prediction_count + 1))
    f1 = 1.0 if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2)
    return {"Dice": dice, "absolute_volume_difference_ml": volume_difference,
            "absolute_lesion_count_difference": abs(reference_count - prediction_count), "lesion_F1": f1}


def assert_official(reference, prediction, spacing):
    ours = case_metrics(reference, prediction, spacing)
    for key, expected in official_values(reference, prediction, spacing).items():
        assert ours[key] == pytest.approx(expected, abs=1e-6), key


def blobs(shape, seed, fraction):
    """Seeded random blobs: a smoothed noise field thresholded to keep about ``fraction`` of the voxels."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.0)
    return field > np.quantile(field, 1 - fraction)


def test_dice_by_hand():
    assert case_metrics(line(0, 1, 2), line(1, 2, 3), SPACING)["Dice"] == pytest.approx(2 * 2 / 6)


def test_dice_of_two_empty_masks_is_one():
    assert case_metrics(line(), line(), SPACING)["Dice"] == 1.0


def test_dice_with_one_empty_mask_is_zero():
    assert case_metrics(line(0, 1), line(), SPACING)["Dice"] == 0.0


def test_volume_difference_in_ml_from_the_spacing():
    # 3 voxels against 1 of 2 × 0.5 × 3 mm = 3 mm³ = 0.003 ml
    metrics = case_metrics(line(0, 1, 2), line(5), (2.0, 0.5, 3.0))
    assert metrics["absolute_volume_difference_ml"] == pytest.approx(2 * 0.003)


def test_volume_difference_of_two_empty_masks_is_zero():
    assert case_metrics(line(), line(), SPACING)["absolute_volume_difference_ml"] == 0.0


def test_lesion_count_difference_by_hand():
    assert case_metrics(line(0, 3, 6), line(0, 1), SPACING)["absolute_lesion_count_difference"] == 2


def test_voxels_touching_at_a_corner_are_one_lesion():
    diagonal = np.zeros((2, 2, 2), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True
    assert case_metrics(diagonal, diagonal, SPACING)["reference_lesions"] == 1


def test_lesion_f1_by_hand():
    # reference lesions at 0-1 and 5-6; the prediction touches the first by one voxel and adds one at 10
    metrics = case_metrics(line(0, 1, 5, 6), line(1, 2, 10), SPACING)
    assert (metrics["lesion_TP"], metrics["lesion_FP"], metrics["lesion_FN"]) == (1, 1, 1)
    assert metrics["lesion_F1"] == pytest.approx(1 / (1 + (1 + 1) / 2))


def test_one_predicted_lesion_detects_every_reference_lesion_it_touches():
    # no one-to-one matching: a component bridging two reference lesions makes both TPs
    assert case_metrics(line(0, 2), line(0, 1, 2), SPACING)["lesion_F1"] == 1.0


def test_lesion_f1_of_two_empty_masks_is_one():
    assert case_metrics(line(), line(), SPACING)["lesion_F1"] == 1.0


def test_lesion_f1_without_reference_lesions_is_zero():
    assert case_metrics(line(), line(4), SPACING)["lesion_F1"] == 0.0


def test_lesion_f1_with_an_empty_prediction_is_zero():
    assert case_metrics(line(4), line(), SPACING)["lesion_F1"] == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ"):
        case_metrics(line(0), line(0, length=13), SPACING)


def test_spacing_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(line(0), line(0), (1.0, 1.0))


def test_four_axes_are_refused():
    with pytest.raises(ValueError, match="2D or 3D"):
        case_metrics(np.zeros((1, 1, 1, 2)), np.zeros((1, 1, 1, 2)), (1.0,) * 4)


@pytest.mark.parametrize("seed", range(5))
def test_random_masks_match_the_official_functions(seed):
    reference = blobs((10, 16, 14), seed, 0.12)
    prediction = blobs((10, 16, 14), seed + 100, 0.1) | (reference & blobs((10, 16, 14), seed + 200, 0.5))
    assert_official(reference, prediction, (3.0, 0.7, 0.45))


@needs_shared
def test_real_mask_against_itself():
    image = sitk.ReadImage(str(ISLES_MASK))
    mask = sitk.GetArrayFromImage(image) > 0
    metrics = case_metrics(mask, mask, image.GetSpacing()[::-1])
    assert (metrics["Dice"], metrics["absolute_volume_difference_ml"], metrics["lesion_F1"]) == (1.0, 0.0, 1.0)


@needs_shared
def test_real_mask_against_an_eroded_copy_matches_the_official_functions():
    image = sitk.ReadImage(str(ISLES_MASK))
    mask = sitk.GetArrayFromImage(image) > 0
    eroded = ndimage.binary_erosion(mask)
    assert case_metrics(mask, eroded, image.GetSpacing()[::-1])["lesion_F1"] < 1  # small lesions vanish
    assert_official(mask, eroded, image.GetSpacing()[::-1])


def test_cli_metrics_isles22_writes_the_challenge_values(tmp_path):
    from nnunet_multimodal.cli import main

    reference, prediction, (ref, pred) = cli_lesion_case(tmp_path)
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "--metrics", "isles22"]) == 0
    summary = json.loads((pred / "summary_nnunet_mm.json").read_text())
    assert summary["metric_per_case"][0]["metrics"]["1"] == pytest.approx(
        case_metrics(reference, prediction, (2.0, 1.0, 1.0)))


def test_cli_metrics_isles22_records_its_name(tmp_path):
    from nnunet_multimodal.cli import main

    _, _, (ref, pred) = cli_lesion_case(tmp_path)
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "--metrics", "isles22"]) == 0
    assert json.loads((pred / "summary_nnunet_mm.json").read_text())["metrics"] == "isles22"


def test_cli_metrics_isles22_refuses_our_lesion_options(tmp_path, capsys):
    from nnunet_multimodal.cli import main

    _, _, (ref, pred) = cli_lesion_case(tmp_path)
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "--metrics", "isles22",
                 "--lesion-wise"]) == 2
    assert "--lesion-wise set up --metrics nnunet; --metrics isles22" in capsys.readouterr().err
