"""Overlap and surface metrics on binary masks, with nnU-Net's and BraTS's empty-mask conventions.

HD95: the maximum of the two directed 95th percentiles of distances (in mm, from the voxel spacing) from the
surface voxels of one mask to the nearest surface voxel of the other. Surface voxels are the mask's voxels
with at least one face neighbour outside it. Lesion-wise metrics follow the BraTS 2023+ evaluation code:
connected components (26-connectivity in 3D, 8 in 2D) are lesions; each reference lesion is scored against the
union of predicted components within its dilated extent; predicted components matching no reference lesion
count as false positives with Dice 0 and HD95 ``HD95_CAP``; the case score is the sum over lesions divided by
the number of reference lesions plus false positives.
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
    """Lesion matching as the BraTS 2023+ evaluation code does it. ``dilation``: iterations of growing each
    reference lesion by its 18-connected neighbours (8 in 2D): reference components within reach form one
    lesion, and predicted components within reach match it. ``min_volume`` (mm³): reference lesions of at most
    this volume are left out of the score, and predictions on them are no false positives. The challenge uses
    3 and 50 (GLI, SSA, PED), 1 and 50 (MEN), 1 and 2 (MET). Defaults: components as they are, none left out."""

    dilation: int = 0
    min_volume: float = 0.0


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=np.ones((3,) * mask.ndim))


def lesion_wise(reference: np.ndarray, prediction: np.ndarray, spacing, settings: LesionSettings = LesionSettings()
                ) -> dict:
    """Lesion-wise Dice and HD95 (BraTS 2023+), with lesion counts."""
    reference = reference.astype(bool)
    prediction = prediction.astype(bool)
    reach = ndimage.generate_binary_structure(reference.ndim, 2)

    def grown(mask: np.ndarray) -> np.ndarray:  # scipy dilates until nothing changes for iterations=0
        return ndimage.binary_dilation(mask, reach, settings.dilation) if settings.dilation > 0 else mask

    groups, num_groups = _components(grown(reference))
    predicted, num_predicted = _components(prediction)
    voxel_volume = float(np.prod(spacing))
    matched, dices, distances = set(), [], []
    for group in range(1, num_groups + 1):
        lesion = (groups == group) & reference
        touching = np.unique(predicted[grown(lesion)])
        touching = touching[touching != 0]
        matched.update(touching.tolist())
        if lesion.sum() * voxel_volume <= settings.min_volume:
            continue
        union = np.isin(predicted, touching)
        dices.append(dice(lesion, union, "brats"))
        distances.append(hd95(lesion, union, spacing, "brats"))
    false_positives = num_predicted - len(matched)
    denominator = len(dices) + false_positives
    if denominator == 0:
        return {"lesion_dice": 1.0, "lesion_hd95": 0.0, "reference_lesions": 0, "false_positive_lesions": 0}
    return {"lesion_dice": float(sum(dices) / denominator),
            "lesion_hd95": float((sum(distances) + HD95_CAP * false_positives) / denominator),
            "reference_lesions": len(dices), "false_positive_lesions": false_positives}


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
