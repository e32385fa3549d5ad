"""Per-case values of the BraTS 2023+ segmentation scorer for one label or region, with the libraries it calls.

The scorer is github.com/rachitsaluja/BraTS-2023-Metrics (``eval.py`` ``get_LesionWiseResults`` and
``get_LesionWiseScores``; ``brats_2023_metrics/surface_distance/brats_metrics.py`` is the same code); the 2024
evaluation still runs it for BraTS-MEN. Its facts, reproduced here:
- HD95 is DeepMind's surface-distance (``compute_surface_distances`` with the image spacing, then
  ``compute_robust_hausdorff(..., 95)``): distances between surface elements weighted by their area; an empty
  mask gives inf, which the scorer reports as 374;
- ``Legacy_Dice`` / ``Legacy_HD95`` are computed on the whole masks: 1 and 0 when both are empty;
- ``Sensitivity`` = TP / (TP + FN + eps) and ``Specificity`` = TN / (TN + FP + eps) over all voxels,
  sensitivity 1 when both masks are empty;
- lesions are cc3d's 26-connected components. Reference components are grouped when the reference, dilated
  ``dilation`` times with the 18-connected structure, joins them; each group (a lesion) is dilated the same way
  on its own, and every predicted component it touches is matched to it whole;
- a lesion of at most ``min_volume`` mm³ (voxels × voxel volume) is left out of the scores and of
  ``Num_TP``/``Num_FN``, but the predicted components it touches are still no false positives; predicted
  components are never dropped for their size;
- ``Num_FP`` = predicted components touching no lesion; each scores Dice 0 and HD95 374;
- ``LesionWise_Score_Dice`` = Σ lesion Dice / (lesions + FP), ``LesionWise_Score_HD95`` = (Σ lesion HD95 +
  374·FP) / (lesions + FP); 1 and 0 when the denominator is 0.
The challenge's parameters (dilation, min_volume) are ``get_challenge_parameters``'s: GLI, SSA, PED 3 and 50;
MEN 1 and 50; MET 1 and 2.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import cc3d
import numpy as np
import surface_distance
from scipy import ndimage

HD95_OF_A_MISS = 374.0   # what the scorer writes for the inf of a missed or hallucinated structure
BRATS_METRICS = ("LesionWise_Score_Dice", "LesionWise_Score_HD95", "Legacy_Dice", "Legacy_HD95", "Sensitivity",
                 "Specificity", "Num_TP", "Num_FP", "Num_FN", "GT_Complete_Volume")


@dataclass(frozen=True)
class BratsTask:
    dilation: int        # iterations of 18-connected dilation grouping and matching lesions
    min_volume: float    # mm³: reference lesions of at most this volume are left out


BRATS_TASKS = {"GLI": BratsTask(3, 50.0), "SSA": BratsTask(3, 50.0), "PED": BratsTask(3, 50.0),
               "MEN": BratsTask(1, 50.0), "MET": BratsTask(1, 2.0)}
DEFAULT_BRATS_TASK = "GLI"
DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)


def robust_hd95(reference: np.ndarray, prediction: np.ndarray, spacing) -> float:
    """surface-distance's 95 % robust Hausdorff distance (mm), 374 when exactly one mask is empty. The library is
    not called with an empty mask: its code for one uses ``np.Inf``, which NumPy 2 removed, and the scorer
    replaces the inf it would give by 374 anyway."""
    if not reference.any() or not prediction.any():
        return HD95_OF_A_MISS
    with warnings.catch_warnings():   # it reaches scipy.ndimage's functions through namespaces SciPy 2 drops
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="surface_distance")
        distances = surface_distance.compute_surface_distances(reference, prediction,
                                                               tuple(float(s) for s in spacing))
    return float(surface_distance.compute_robust_hausdorff(distances, 95))


def sensitivity_and_specificity(reference: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    eps = float(np.finfo(float).eps)     # the scorer's guard against empty denominators
    tp = int(np.logical_and(reference, prediction).sum())
    fp = int(prediction.sum()) - tp
    fn = int(reference.sum()) - tp
    tn = int(np.logical_not(reference | prediction).sum())
    sensitivity = 1.0 if tp + fp + fn == 0 else tp / (tp + fn + eps)
    return sensitivity, tn / (tn + fp + eps)


def voxels_to_mm3(count: int, spacing) -> float:
    volume = float(count)
    for step in spacing:          # the scorer's left-to-right product, so volumes at the threshold compare alike
        volume *= float(step)
    return volume


def reference_lesions(reference: np.ndarray, dilation: int) -> tuple[np.ndarray, int]:
    """Lesion ids 1..N on the reference voxels: a reference voxel gets the id of the 26-connected component of
    the dilated reference it lies in (the scorer relabels its components by the dilated components, which
    gives the same grouping)."""
    grown = ndimage.binary_dilation(reference, DILATION_STRUCTURE, iterations=dilation)
    groups, count = cc3d.connected_components(grown, connectivity=26, return_N=True)
    return np.where(reference, groups, 0), int(count)


def brats_region_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, task: str = DEFAULT_BRATS_TASK
                         ) -> dict:
    """The scorer's values for one label or region of one case (3D masks, spacing in the masks' axis order)."""
    if task not in BRATS_TASKS:
        raise ValueError(f"BraTS task must be one of {sorted(BRATS_TASKS)}, got {task!r}")
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} and prediction shape {prediction.shape} differ")
    if reference.ndim != 3:
        raise ValueError(f"the BraTS scorer works on 3D volumes; got a {reference.ndim}D mask")
    settings = BRATS_TASKS[task]
    reference, prediction = reference.astype(bool), prediction.astype(bool)
    both_empty = not reference.any() and not prediction.any()
    intersection = int(np.logical_and(reference, prediction).sum())
    legacy_dice = 1.0 if both_empty else 2.0 * intersection / (int(reference.sum()) + int(prediction.sum()))
    legacy_hd95 = 0.0 if both_empty else robust_hd95(reference, prediction, spacing)
    sensitivity, specificity = sensitivity_and_specificity(reference, prediction)

    lesions, num_lesions = reference_lesions(reference, settings.dilation)
    predicted = cc3d.connected_components(prediction, connectivity=26)
    num_predicted = int(predicted.max())
    matched, dices, distances, found, missed = set(), [], [], 0, 0
    for lesion_id in range(1, num_lesions + 1):
        lesion = lesions == lesion_id
        reach = ndimage.binary_dilation(lesion, DILATION_STRUCTURE, iterations=settings.dilation)
        touching = np.unique(predicted[reach])
        touching = touching[touching != 0]
        matched.update(touching.tolist())
        if voxels_to_mm3(int(lesion.sum()), spacing) <= settings.min_volume:
            continue
        union = np.isin(predicted, touching)
        dices.append(2.0 * int(np.logical_and(lesion, union).sum()) / (int(lesion.sum()) + int(union.sum())))
        distances.append(robust_hd95(lesion, union, spacing))
        if touching.size:
            found += 1
        else:
            missed += 1
    false_positives = num_predicted - len(matched)
    scored = len(dices) + false_positives
    return {
        "LesionWise_Score_Dice": sum(dices) / scored if scored else 1.0,
        "LesionWise_Score_HD95": (sum(distances) + HD95_OF_A_MISS * false_positives) / scored if scored else 0.0,
        "Legacy_Dice": legacy_dice,
        "Legacy_HD95": legacy_hd95,
        "Sensitivity": sensitivity,
        "Specificity": specificity,
        "Num_TP": found,
        "Num_FP": false_positives,
        "Num_FN": missed,
        "GT_Complete_Volume": voxels_to_mm3(int(reference.sum()), spacing),
    }
