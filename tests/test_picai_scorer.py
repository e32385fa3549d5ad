"""PI-CAI Dice and lesion detection on binary masks: hand-computed cases, ``evaluate_case`` re-derived, the real
ProstateX masks."""

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import SHARED, cli_lesion_case
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from nnunet_multimodal.evaluation.picai_scorer import EPSILON, case_metrics, detection_summary

ANNOTATIONS = SHARED / "data/prostatex/annotations"
needs_shared = pytest.mark.skipif(not ANNOTATIONS.is_dir(), reason="../shared/data is absent (users' clones)")
SPACING = (1.0, 1.0, 1.0)


def line(*runs, length=20):
    """A (1, 1, length) mask with the voxels of the given (start, stop) runs set: lesions along one axis."""
    mask = np.zeros((1, 1, length), bool)
    for start, stop in runs:
        mask[0, 0, start:stop] = True
    return mask


def counts(metrics):
    return metrics["lesion_TP"], metrics["lesion_FP"], metrics["lesion_FN"]


def official_lesion_results(reference, prediction, min_overlap=0.10, overlap_func="IoU",
                            allow_unmatched_candidates_with_minimal_overlap=True):
    """picai_eval's ``evaluate_case`` (``eval.py``) for a binary detection map: ``parse_detection_map`` and
    ``ndimage.label`` with a 3×3×3 block, ``calculate_iou`` / ``calculate_dsc`` per pair of full masks, then the
    +1-prioritised ``linear_sum_assignment``."""
    block = np.ones((3, 3, 3))
    candidates, candidate_count = ndimage.label(prediction, block)
    if not reference.any():
        return [(0, 1.0, 0.0)] * candidate_count
    lesions, lesion_count = ndimage.label(reference, block)
    overlaps = np.zeros((lesion_count, candidate_count))
    for i in range(lesion_count):
        lesion = lesions == i + 1
        for j in range(candidate_count):
            candidate = candidates == j + 1
            shared = np.sum(candidate[lesion])
            if overlap_func == "IoU":
                value = (shared + 1e-8) / (np.sum(candidate) + np.sum(lesion) - shared + 1e-8)
            else:
                value = (2.0 * shared + 1e-8) / (np.sum(candidate) + np.sum(lesion) + 1e-8)
            overlaps[i, j] = value
    overlaps[overlaps < min_overlap] = 0
    overlaps[overlaps > 0] += 1
    rows, columns = linear_sum_assignment(overlaps, maximize=True)
    kept = overlaps[rows, columns] > 0
    results = [(1, 1.0, overlaps[r, c] - 1) for r, c in zip(rows[kept], columns[kept])]
    results += [(1, 0.0, 0.0)] * (lesion_count - int(kept.sum()))
    if allow_unmatched_candidates_with_minimal_overlap:
        unmatched = (overlaps == 0).all(axis=0)
    else:
        unmatched = ~np.isin(np.arange(candidate_count), columns[kept])
    return results + [(0, 1.0, 0.0)] * int(unmatched.sum())


def assert_official(reference, prediction, **options):
    ours = case_metrics(reference, prediction, (1.0,) * reference.ndim, **options)["lesion_results"]
    expected = official_lesion_results(reference, prediction, **options)
    assert [entry[:2] for entry in ours] == [entry[:2] for entry in expected]
    assert [entry[2] for entry in ours] == pytest.approx([entry[2] for entry in expected], abs=1e-6)


def blobs(shape, seed, fraction):
    """Seeded random blobs: a smoothed noise field thresholded to keep about ``fraction`` of the voxels."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 1.0)
    return field > np.quantile(field, 1 - fraction)


def test_dice_by_hand():
    assert case_metrics(line((0, 3)), line((1, 4)), SPACING)["Dice"] == (2 * 2 + EPSILON) / (6 + EPSILON)


def test_dice_of_two_empty_masks_is_one():
    assert case_metrics(line(), line(), SPACING)["Dice"] == 1.0


def test_dice_with_one_empty_mask_is_epsilon_over_the_size():
    assert case_metrics(line((0, 4)), line(), SPACING)["Dice"] == EPSILON / (4 + EPSILON)


def test_exact_match_is_one_true_positive_with_overlap_one():
    assert case_metrics(line((2, 6)), line((2, 6)), SPACING)["lesion_results"] == [(1, 1.0, 1.0)]


def test_overlap_below_min_iou_is_a_miss_and_a_false_positive():
    # one voxel of a 20-voxel lesion: IoU 0.05 < 0.10
    assert counts(case_metrics(line((0, 20)), line((19, 20)), SPACING)) == (0, 1, 1)


def test_overlap_at_min_iou_is_a_hit():
    # two voxels of a 20-voxel lesion: IoU (2 + 1e-8) / (20 + 1e-8), just above 0.10
    metrics = case_metrics(line((0, 20)), line((18, 20)), SPACING)
    assert metrics["lesion_results"] == [(1, 1.0, pytest.approx(0.1, abs=1e-9))]


def test_dice_overlap_function():
    # the same two voxels: Dice 4 / 22
    metrics = case_metrics(line((0, 20)), line((18, 20)), SPACING, overlap_func="DSC")
    assert metrics["lesion_results"] == [(1, 1.0, pytest.approx(4 / 22, abs=1e-9))]


def test_min_overlap_option():
    assert counts(case_metrics(line((0, 20)), line((18, 20)), SPACING, min_overlap=0.2)) == (0, 1, 1)


def test_matching_maximises_the_number_of_matches_before_the_overlap():
    # lesions 0-9 and 11-14; candidate A (3-12) overlaps the first best (7/13) and the second by 2/12,
    # candidate B (0-1) the first by 2/10: A→second, B→first gives two matches instead of one
    metrics = case_metrics(line((0, 10), (11, 15)), line((3, 13), (0, 2)), SPACING)
    assert metrics["lesion_results"] == [(1, 1.0, pytest.approx(0.2)), (1, 1.0, pytest.approx(2 / 12))]


def test_second_candidate_on_a_matched_lesion_is_not_counted():
    assert counts(case_metrics(line((0, 10)), line((0, 4), (6, 10)), SPACING)) == (1, 0, 0)


def test_second_candidate_on_a_matched_lesion_is_a_false_positive_when_not_allowed():
    metrics = case_metrics(line((0, 10)), line((0, 4), (6, 10)), SPACING,
                           allow_unmatched_candidates_with_minimal_overlap=False)
    assert counts(metrics) == (1, 1, 0)


def test_case_without_reference_lesions_counts_every_candidate_as_false_positive():
    assert case_metrics(line(), line((0, 2), (5, 7)), SPACING)["lesion_results"] == [(0, 1.0, 0.0)] * 2


def test_two_empty_masks_have_no_lesion_results():
    assert case_metrics(line(), line(), SPACING)["lesion_results"] == []


def test_empty_prediction_misses_every_lesion():
    assert counts(case_metrics(line((0, 2), (5, 7)), line(), SPACING)) == (0, 0, 2)


def test_case_target_and_confidence():
    metrics = case_metrics(line(), line((3, 4)), SPACING)
    assert (metrics["case_target"], metrics["case_confidence"]) == (0, 1.0)


def test_voxels_touching_at_a_corner_are_one_lesion():
    diagonal = np.zeros((2, 2, 2), bool)
    diagonal[0, 0, 0] = diagonal[1, 1, 1] = True
    assert counts(case_metrics(diagonal, diagonal, SPACING)) == (1, 0, 0)


def test_detection_summary_by_hand():
    cases = [{"lesion_TP": 1, "lesion_FP": 1, "lesion_FN": 1}, {"lesion_TP": 0, "lesion_FP": 1, "lesion_FN": 0}]
    summary = detection_summary(cases)
    assert (summary["lesion_sensitivity"], summary["lesion_precision"], summary["false_positives_per_case"]) == (
        0.5, pytest.approx(1 / 3), 1.0)


def test_detection_summary_without_reference_lesions_has_no_sensitivity():
    assert math.isnan(detection_summary([{"lesion_TP": 0, "lesion_FP": 2, "lesion_FN": 0}])["lesion_sensitivity"])


def test_detection_summary_without_candidates_has_no_precision():
    assert math.isnan(detection_summary([{"lesion_TP": 0, "lesion_FP": 0, "lesion_FN": 1}])["lesion_precision"])


def test_unknown_overlap_function_is_refused():
    with pytest.raises(ValueError, match="overlap_func"):
        case_metrics(line((0, 2)), line((0, 2)), SPACING, overlap_func="HD95")


def test_min_overlap_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="min_overlap"):
        case_metrics(line((0, 2)), line((0, 2)), SPACING, min_overlap=1.5)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ"):
        case_metrics(line((0, 2)), line((0, 2), length=21), SPACING)


def test_spacing_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="spacing"):
        case_metrics(line((0, 2)), line((0, 2)), (1.0, 1.0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("overlap_func", ["IoU", "DSC"])
@pytest.mark.parametrize("allow_unmatched", [True, False])
def test_random_masks_match_evaluate_case(seed, overlap_func, allow_unmatched):
    reference = blobs((8, 16, 14), seed, 0.1)
    prediction = blobs((8, 16, 14), seed + 100, 0.1) | (reference & blobs((8, 16, 14), seed + 200, 0.4))
    assert_official(reference, prediction, overlap_func=overlap_func,
                    allow_unmatched_candidates_with_minimal_overlap=allow_unmatched)


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_dice_matches_calculate_dsc(seed):
    reference, prediction = blobs((8, 16, 14), seed, 0.1), blobs((8, 16, 14), seed + 100, 0.2)
    shared = np.sum(prediction[reference == 1])
    expected = (2.0 * shared + 1e-8) / (np.sum(prediction) + np.sum(reference) + 1e-8)
    assert case_metrics(reference, prediction, (3.0, 0.5, 0.5))["Dice"] == pytest.approx(expected, abs=1e-6)


def read_annotation(name):
    image = sitk.ReadImage(str(ANNOTATIONS / name))
    return sitk.GetArrayFromImage(image) > 0, image.GetSpacing()[::-1]


@needs_shared
def test_real_lesion_against_itself():
    mask, spacing = read_annotation("ProstateX-0000_07-07-2011.nii.gz")
    assert case_metrics(mask, mask, spacing)["lesion_results"] == [(1, 1.0, 1.0)]


@needs_shared
def test_real_lesion_against_an_eroded_copy_matches_evaluate_case():
    mask, _ = read_annotation("ProstateX-0000_07-07-2011.nii.gz")
    assert_official(mask, ndimage.binary_erosion(mask))


@needs_shared
def test_real_lesion_free_case_with_a_false_positive():
    mask, spacing = read_annotation("ProstateX-0001_07-08-2011.nii.gz")
    prediction = mask.copy()
    prediction[9, 60:64, 40:44] = True
    assert counts(case_metrics(mask, prediction, spacing)) == (0, 1, 0)


def test_cli_metrics_picai_adds_the_detection_summary(tmp_path):
    from nnunet_multimodal.cli import main

    reference, prediction, (ref, pred) = cli_lesion_case(tmp_path)
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "--metrics", "picai"]) == 0
    summary = json.loads((pred / "summary_nnunet_mm.json").read_text())
    assert summary["picai_detection"]["1"] == pytest.approx(
        detection_summary([case_metrics(reference, prediction, (2.0, 1.0, 1.0))]))


def test_cli_metrics_picai_writes_lesion_counts_not_the_lesion_list(tmp_path):
    from nnunet_multimodal.cli import main

    reference, prediction, (ref, pred) = cli_lesion_case(tmp_path)
    assert main(["evaluate", "-ref", str(ref), "-pred", str(pred), "-l", "1", "--metrics", "picai"]) == 0
    expected = case_metrics(reference, prediction, (2.0, 1.0, 1.0))
    del expected["lesion_results"]
    summary = json.loads((pred / "summary_nnunet_mm.json").read_text())
    assert summary["metric_per_case"][0]["metrics"]["1"] == pytest.approx(expected)
