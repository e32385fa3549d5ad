"""When two images lie on one voxel grid: the plugin's one check, used by ``verify``, the converters,
prediction's input checks and evaluation.

Spacing uses nnU-Net's own tolerance (``numpy.allclose``'s defaults, which its SimpleITK reader applies to the
channels of a case and ``--verify_dataset_integrity`` to image against label): any looser, and a dataset we
pass would stop nnU-Net's preprocessing. nnU-Net only warns about origins and directions; we refuse them beyond
a hundredth of a millimetre (far below any voxel) and 1e-3 per direction-cosine entry (about 0.06 degrees),
because channels shifted or rotated against each other are a silent wrong result, not a cosmetic one.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

SPACING_RTOL = 1e-5
SPACING_ATOL = 1e-8
ORIGIN_ATOL_MM = 1e-2
DIRECTION_ATOL = 1e-3


def image_geometry(image: sitk.Image) -> dict:
    return {"shape": image.GetSize(), "spacing": image.GetSpacing(), "origin": image.GetOrigin(),
            "direction": image.GetDirection()}


def same_spacing(a, b) -> bool:
    return bool(np.allclose(a, b, rtol=SPACING_RTOL, atol=SPACING_ATOL))


def geometry_mismatch(reference: dict, other: dict) -> str | None:
    """What differs (the first of shape, spacing, origin, direction), or None on one grid."""
    if reference["shape"] != other["shape"]:
        return f"shape {other['shape']} differs from {reference['shape']}"
    if not same_spacing(reference["spacing"], other["spacing"]):
        return f"spacing {other['spacing']} differs from {reference['spacing']}"
    if not np.allclose(reference["origin"], other["origin"], rtol=0, atol=ORIGIN_ATOL_MM):
        return f"origin {other['origin']} differs from {reference['origin']}"
    if not np.allclose(reference["direction"], other["direction"], rtol=0, atol=DIRECTION_ATOL):
        return f"direction {other['direction']} differs from {reference['direction']}"
    return None


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return geometry_mismatch(image_geometry(a), image_geometry(b)) is None
