"""Dice and lesion detection on binary masks with the conventions of the PI-CAI evaluation code.

github.com/DIAGNijmegen/picai_eval (``picai_eval/eval.py`` ``evaluate_case``, ``picai_eval/analysis_utils.py``,
``picai_eval/metrics.py``), applied to a binary prediction used as its detection map:
- lesions and lesion candidates are 26-connected components (scipy's ``ndimage.label`` with a 3×3×3 block of ones);
  a binary map gives every candidate the confidence 1;
- the overlap of a candidate with a reference lesion is IoU or Dice, each as (numerator + 1e-8) / (denominator + 1e-8);
- overlaps below ``min_overlap`` (default 0.10 IoU) cannot match; among the rest, a one-to-one assignment
  maximises first the number of matches, then the summed overlap (Hungarian algorithm, ``linear_sum_assignment``);
- matched reference lesions are TPs, the others FNs; candidates that overlap no reference lesion enough are FPs,
  while a candidate that overlaps enough but lost its lesion to another candidate is not counted at all
  (``allow_unmatched_candidates_with_minimal_overlap=True``; False makes it a FP);
- a case without reference lesions has no TPs or FNs, every candidate is a FP.
Case Dice is ``calculate_dsc`` on the whole masks: 1 when both are empty, 1e-8 / (n + 1e-8) (about 0) when one is.
The AUROC, AP and PI-CAI score need graded detection maps and are not computed here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

EPSILON = 1e-8
OVERLAP_FUNCTIONS = ("IoU", "DSC")
DEFAULT_MIN_OVERLAP = 0.10


def binary_masks(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} and prediction shape {prediction.shape} differ")
    return np.asarray(reference).astype(bool), np.asarray(prediction).astype(bool)


def lesions(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected components (26-connectivity in 3D, 8 in 2D) labelled 1..N, and N."""
    return ndimage.label(mask, structure=np.ones((3,) * mask.ndim))


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    numerator = int(np.logical_and(reference, prediction).sum()) * 2.0
    return float((numerator + EPSILON) / (int(reference.sum()) + int(prediction.sum()) + EPSILON))


def overlap_matrix(reference_labels: np.ndarray, reference_count: int, candidate_labels: np.ndarray,
                   candidate_count: int, overlap_func: str) -> np.ndarray:
    """Overlap of every reference lesion (rows) with every candidate (columns)."""
    # one pass over the voxels: joint histogram of (reference label, candidate label)
    joint = np.bincount(reference_labels.ravel().astype(np.int64) * (candidate_count + 1) + candidate_labels.ravel(),
                        minlength=(reference_count + 1) * (candidate_count + 1))
    joint = joint.reshape(reference_count + 1, candidate_count + 1)
    intersection = joint[1:, 1:]
    reference_sizes = joint[1:, :].sum(axis=1, keepdims=True)
    candidate_sizes = joint[:, 1:].sum(axis=0, keepdims=True)
    if overlap_func == "IoU":
        return (intersection + EPSILON) / (candidate_sizes + reference_sizes - intersection + EPSILON)
    return (intersection * 2.0 + EPSILON) / (candidate_sizes + reference_sizes + EPSILON)


def lesion_results(reference: np.ndarray, prediction: np.ndarray, min_overlap: float = DEFAULT_MIN_OVERLAP,
                   overlap_func: str = "IoU", allow_unmatched_candidates_with_minimal_overlap: bool = True
                   ) -> list[tuple[int, float, float]]:
    """``evaluate_case``'s list of (is_lesion, confidence, overlap): (1, 1, overlap) per TP, (1, 0, 0) per FN,
    (0, 1, 0) per FP; TPs in reference-lesion order."""
    if overlap_func not in OVERLAP_FUNCTIONS:
        raise ValueError(f"overlap_func must be one of {OVERLAP_FUNCTIONS}, got {overlap_func!r}")
    if not 0.0 <= min_overlap <= 1.0:
        raise ValueError(f"min_overlap must lie in [0, 1], got {min_overlap}")
    candidate_labels, candidate_count = lesions(prediction)
    if not reference.any():
        return [(0, 1.0, 0.0)] * candidate_count
    reference_labels, reference_count = lesions(reference)
    overlaps = overlap_matrix(reference_labels, reference_count, candidate_labels, candidate_count, overlap_func)
    overlaps[overlaps < min_overlap] = 0
    # adding 1 to every admissible overlap makes the assignment maximise the number of matches first
    overlaps[overlaps > 0] += 1
    rows, columns = linear_sum_assignment(overlaps, maximize=True)
    matched = overlaps[rows, columns] > 0
    rows, columns = rows[matched], columns[matched]
    results = [(1, 1.0, float(overlaps[row, column] - 1)) for row, column in zip(rows, columns)]
    results += [(1, 0.0, 0.0)] * (reference_count - len(rows))
    if allow_unmatched_candidates_with_minimal_overlap:
        false_positives = int((~(overlaps > 0).any(axis=0)).sum())
    else:
        false_positives = candidate_count - len(columns)
    return results + [(0, 1.0, 0.0)] * false_positives


def case_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, min_overlap: float = DEFAULT_MIN_OVERLAP,
                 overlap_func: str = "IoU", allow_unmatched_candidates_with_minimal_overlap: bool = True) -> dict:
    """The PI-CAI values of one case. ``spacing`` (mm, the arrays' axis order) is checked only: PI-CAI counts
    voxels. ``lesion_results`` is ``evaluate_case``'s list, which picai_eval's ``Metrics`` accepts as is."""
    reference, prediction = binary_masks(reference, prediction)
    if len(spacing) != reference.ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(spacing)} values for {reference.ndim} axes")
    results = lesion_results(reference, prediction, min_overlap, overlap_func,
                             allow_unmatched_candidates_with_minimal_overlap)
    return {"Dice": dice(reference, prediction),
            "lesion_TP": sum(1 for is_lesion, confidence, _ in results if is_lesion and confidence > 0),
            "lesion_FP": sum(1 for is_lesion, _, _ in results if not is_lesion),
            "lesion_FN": sum(1 for is_lesion, confidence, _ in results if is_lesion and confidence == 0),
            "lesion_results": results,
            # evaluate_case's case-level target and confidence ('max' of the detection map)
            "case_target": int(reference.any()), "case_confidence": float(prediction.any())}


def detection_summary(cases: Iterable[dict]) -> dict:
    """Dataset-level lesion sensitivity, precision and false positives per case of binary maps: picai_eval's
    ``Metrics.lesion_TPR``, ``precision`` and ``lesion_FPR`` at the one threshold a binary map has (confidence 1).
    NaN where the denominator is zero (no reference lesions; no candidates; no cases)."""
    cases = list(cases)
    tp, fp, fn = (sum(case[key] for case in cases) for key in ("lesion_TP", "lesion_FP", "lesion_FN"))
    return {"lesion_sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "lesion_precision": tp / (tp + fp) if tp + fp else float("nan"),
            "false_positives_per_case": fp / len(cases) if cases else float("nan"),
            "cases": len(cases), "reference_lesions": tp + fn}
