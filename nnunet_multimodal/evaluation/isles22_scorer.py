"""Per-case metrics with the conventions of the ISLES'22 challenge's evaluation code.

The challenge scores each case with four values (github.com/ezequieldlrosa/isles22, ``utils/eval_utils.py``, and
its leaderboard container github.com/ezequieldlrosa/isles22_docker_evaluation, ``eval_metrics_isles.py``):
- Dice, 1 when both masks are empty;
- absolute volume difference in ml: voxel counts times the voxel volume, product of the spacing / 1000 (the
  leaderboard takes |det| of the affine, the same for the orthonormal directions of medical images);
- absolute difference of the numbers of lesions, lesions being 26-connected components;
- lesion-wise F1 = TP / (TP + (FP + FN) / 2), where a reference lesion overlapping the prediction by at least one
  voxel is a TP (else a FN) and a predicted lesion touching no reference voxel is a FP; 1 when both are empty.

2D arrays (not in the challenge) use the 2D analogue of 26-connectivity, 8.
"""

from __future__ import annotations

import cc3d
import numpy as np

# cc3d's name for "every neighbour sharing a face, an edge or a corner" per number of axes
FULL_CONNECTIVITY = {2: 8, 3: 26}
EMPTY_VALUE = 1.0


def binary_masks(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} and prediction shape {prediction.shape} differ")
    if reference.ndim not in FULL_CONNECTIVITY:
        raise ValueError(f"masks must be 2D or 3D, got {reference.ndim} axes")
    return np.asarray(reference).astype(bool), np.asarray(prediction).astype(bool)


def lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (26-connectivity in 3D) labelled 1..N, and N."""
    labels, count = cc3d.connected_components(mask, connectivity=FULL_CONNECTIVITY[mask.ndim], return_N=True)
    return labels, int(count)


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    total = int(reference.sum()) + int(prediction.sum())
    if total == 0:
        return EMPTY_VALUE
    return 2.0 * int(np.logical_and(reference, prediction).sum()) / total


def voxel_volume_ml(spacing) -> float:
    return float(np.prod(spacing)) / 1000.0


def absolute_volume_difference_ml(reference: np.ndarray, prediction: np.ndarray, spacing) -> float:
    # each volume scaled before subtracting, in the challenge's order of operations
    voxel_volume = voxel_volume_ml(spacing)
    return float(abs(int(reference.sum()) * voxel_volume - int(prediction.sum()) * voxel_volume))


def lesion_detection(reference: np.ndarray, prediction: np.ndarray) -> dict:
    """Lesion counts and lesion-wise F1: any shared voxel makes a reference lesion detected."""
    reference_labels, reference_count = lesions(reference)
    prediction_labels, prediction_count = lesions(prediction)
    overlap = np.logical_and(reference, prediction)
    detected = np.unique(reference_labels[overlap]).size
    touching = np.unique(prediction_labels[overlap]).size
    tp, fn, fp = detected, reference_count - detected, prediction_count - touching
    f1 = EMPTY_VALUE if tp + fp + fn == 0 else tp / (tp + (fp + fn) / 2)
    return {"lesion_F1": float(f1), "lesion_TP": tp, "lesion_FP": fp, "lesion_FN": fn,
            "reference_lesions": reference_count, "predicted_lesions": prediction_count,
            "absolute_lesion_count_difference": abs(reference_count - prediction_count)}


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing) -> dict:
    """The ISLES'22 values of one case; ``spacing`` in mm in the arrays' axis order."""
    reference, prediction = binary_masks(reference, prediction)
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for {reference.ndim} axes")
    return {"Dice": dice(reference, prediction),
            "absolute_volume_difference_ml": absolute_volume_difference_ml(reference, prediction, spacing),
            **lesion_detection(reference, prediction)}
