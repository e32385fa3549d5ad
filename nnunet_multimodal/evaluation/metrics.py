"""Overlap and surface metrics on binary masks, with nnU-Net's and BraTS's empty-mask conventions.

HD95: the maximum of the two directed 95th percentiles of distances (in mm, from the voxel spacing) from the
surface voxels of one mask to the nearest surface voxel of the other. Surface voxels are the mask's voxels
with at least one face neighbour outside it. Lesion-wise metrics follow the BraTS 2023+ ranking: connected
components (26-connectivity in 3D, 8 in 2D) are lesions; each reference lesion is scored against the union of
predicted components touching it; predicted components touching no reference lesion count as false
positives with Dice 0 and HD95 ``HD95_CAP``; the case score is the sum over lesions divided by the number of
reference lesions plus false positives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

HD95_CAP = 374.0
CONVENTIONS = ("nnunet", "brats")


def dice(reference: np.ndarray, prediction: np.ndarray, convention: str = "nnunet") -> float:
    denominator = int(reference.sum()) + int(prediction.sum())
    if denominator == 0:
        return float("nan") if convention == "nnunet" else 1.0
    return 2.0 * int(np.logical_and(reference, prediction).sum()) / denominator


def iou(reference: np.ndarray, prediction: np.ndarray, convention: str = "nnunet") -> float:
    union = int(np.logical_or(reference, prediction).sum())
    if union == 0:
        return float("nan") if convention == "nnunet" else 1.0
    return int(np.logical_and(reference, prediction).sum()) / union


def surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def directed_surface_distances(source: np.ndarray, target: np.ndarray, spacing) -> np.ndarray:
    """Distances (mm) from every surface voxel of ``source`` to the nearest surface voxel of ``target``."""
    distance_to_target = ndimage.distance_transform_edt(~surface(target), sampling=spacing)
    return distance_to_target[surface(source)]


def hd95(reference: np.ndarray, prediction: np.ndarray, spacing, convention: str = "nnunet") -> float:
    has_reference, has_prediction = bool(reference.any()), bool(prediction.any())
    if not has_reference and not has_prediction:
        return float("nan") if convention == "nnunet" else 0.0
    if not has_reference or not has_prediction:
        return float("nan") if convention == "nnunet" else HD95_CAP
    forward = np.percentile(directed_surface_distances(reference, prediction, spacing), 95)
    backward = np.percentile(directed_surface_distances(prediction, reference, spacing), 95)
    return float(max(forward, backward))


@dataclass(frozen=True)
class LesionSettings:
    """BraTS-style lesion matching knobs: ``dilation`` iterations merge nearby reference components into one
    lesion (BraTS 2023 uses 3 for gliomas); components smaller than ``min_volume`` voxels are ignored in both
    masks (BraTS 2023 uses 50 for gliomas). Defaults do neither."""

    dilation: int = 0
    min_volume: int = 0


def _components(mask: np.ndarray, min_volume: int) -> tuple[np.ndarray, list[int]]:
    labelled, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim))
    if count == 0:
        return labelled, []
    sizes = np.bincount(labelled.ravel())
    return labelled, [i for i in range(1, count + 1) if sizes[i] >= min_volume]


def lesion_wise(reference: np.ndarray, prediction: np.ndarray, spacing, settings: LesionSettings = LesionSettings()
                ) -> dict:
    """Lesion-wise Dice and HD95 (BraTS 2023+), with lesion counts."""
    reference = reference.astype(bool)
    prediction = prediction.astype(bool)
    if settings.dilation > 0:
        grouped = ndimage.binary_dilation(reference, structure=np.ones((3,) * reference.ndim),
                                          iterations=settings.dilation)
        groups, group_ids = _components(grouped, 0)
        reference_lesions = [(groups == g) & reference for g in group_ids]
        reference_lesions = [m for m in reference_lesions if m.sum() >= settings.min_volume]
    else:
        labelled, ids = _components(reference, settings.min_volume)
        reference_lesions = [labelled == i for i in ids]
    predicted, predicted_ids = _components(prediction, settings.min_volume)
    predicted_lesions = {i: predicted == i for i in predicted_ids}

    if not reference_lesions and not predicted_lesions:
        return {"lesion_dice": 1.0, "lesion_hd95": 0.0, "reference_lesions": 0, "false_positive_lesions": 0}
    matched, dices, distances = set(), [], []
    for lesion in reference_lesions:
        touching = [i for i, m in predicted_lesions.items() if np.logical_and(m, lesion).any()]
        matched.update(touching)
        union = np.zeros_like(lesion)
        for i in touching:
            union |= predicted_lesions[i]
        dices.append(dice(lesion, union, "brats"))
        distances.append(hd95(lesion, union, spacing, "brats"))
    false_positives = len(set(predicted_lesions) - matched)
    denominator = len(reference_lesions) + false_positives
    return {"lesion_dice": float(sum(dices) / denominator),
            "lesion_hd95": float((sum(distances) + HD95_CAP * false_positives) / denominator),
            "reference_lesions": len(reference_lesions), "false_positive_lesions": false_positives}


def mask_metrics(reference: np.ndarray, prediction: np.ndarray, spacing, convention: str = "nnunet",
                 lesions: LesionSettings | None = None) -> dict:
    """All metrics of one label or region in one case."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if reference.shape != prediction.shape:
        raise ValueError(f"reference shape {reference.shape} and prediction shape {prediction.shape} differ")
    voxel_volume = float(np.prod(spacing))
    # 2D images stored as one-slice volumes: without the singleton axis every voxel would be "surface"
    kept = [axis for axis, size in enumerate(reference.shape) if size > 1]
    reference = reference.astype(bool).reshape([reference.shape[a] for a in kept])
    prediction = prediction.astype(bool).reshape([prediction.shape[a] for a in kept])
    spacing = [spacing[a] for a in kept]
    tp = int(np.logical_and(reference, prediction).sum())
    result = {
        "Dice": dice(reference, prediction, convention),
        "IoU": iou(reference, prediction, convention),
        "HD95": hd95(reference, prediction, spacing, convention),
        "TP": tp, "FP": int(prediction.sum()) - tp, "FN": int(reference.sum()) - tp,
        "n_ref": int(reference.sum()), "n_pred": int(prediction.sum()),
        "volume_ref_mm3": int(reference.sum()) * voxel_volume,
        "volume_pred_mm3": int(prediction.sum()) * voxel_volume,
    }
    if lesions is not None:
        result.update(lesion_wise(reference, prediction, spacing, lesions))
    return result
