"""A BraTS-like synthetic 3D brain tumour phantom: T1, T1c, T2 and FLAIR with glioma-like lesions.

Everything here is synthetic. A skull-stripped brain (every modality exactly zero outside the brain mask) with
folded cortex (grey matter around sulci of CSF), white matter, deep grey nuclei and two lateral ventricles;
1-3 lesions of sizes spread from a few voxels to a large tumour, each an irregular enhancing rim around a
necrotic core (small lesions are solid), or a non-enhancing tumour, inside oedema that spreads further through
white matter than through cortex and fades towards its border. Labels follow BraTS 2023: 1 necrosis or
non-enhancing tumour core, 2 oedema, 3 enhancing tumour, trained as the regions WT, TC and ET.

Each modality sees the tissues as real MRI does (TISSUE_CONTRAST); acquisition adds partial volume over thick
slices, a point-spread blur, a bias field, Rician noise and per-case units. The difficulty presets change the
noise, the bias, the oedema's contrast and the lesion size range. Cases are reproducible from (seed, case index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np
from scipy import ndimage

from nnunet_multimodal.data.convert.layouts import BRATS_REGIONS_2023, LAYOUTS
from nnunet_multimodal.data.phantom_acquisition import (
    bias_field,
    block_mean,
    centre_samples,
    fine_coordinates,
    log_uniform,
    odd_supersampling,
    point_spread,
    rician,
    scanner_units,
    smooth_field,
)
from nnunet_multimodal.data.phantom_datasets import PhantomCase

BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER, OEDEMA, NECROSIS, NON_ENHANCING, ENHANCING = range(8)
TISSUES = ("background", "CSF", "grey matter", "white matter", "oedema", "necrosis", "non-enhancing tumour",
           "enhancing tumour")
# BraTS 2023 label of each tissue: 1 necrosis / non-enhancing core, 2 oedema, 3 enhancing
LABEL_OF_TISSUE = np.array([0, 0, 0, 0, 2, 1, 1, 3], dtype=np.uint8)

# Mean intensity per tissue (TISSUES order, background 0) as each sequence shows it: CSF bright in T2 and dark in
# FLAIR; white matter brighter than grey in T1, darker in T2; oedema bright in T2 and FLAIR and only a little
# darker than white matter in T1/T1c (it is blended with the tissue it infiltrates); the enhancing rim bright
# only in T1c; necrosis dark in T1 and T1c, bright in T2; non-enhancing tumour bright in T2 and FLAIR like oedema.
TISSUE_CONTRAST: dict[str, tuple[float, ...]] = {
    "T1": (0.0, 0.30, 0.62, 0.82, 0.66, 0.32, 0.52, 0.58),
    "T1c": (0.0, 0.30, 0.64, 0.82, 0.68, 0.28, 0.54, 1.25),
    "T2": (0.0, 1.00, 0.62, 0.45, 0.88, 0.95, 0.80, 0.68),
    "FLAIR": (0.0, 0.12, 0.62, 0.48, 0.92, 0.55, 0.82, 0.75),
}

# Knob values that differ from the defaults ("realistic") per difficulty preset
DIFFICULTIES: dict[str, dict] = {
    "easy": {"noise": 0.03, "bias": 0.1, "edema_contrast": 1.0, "lesion_radius_mm": (4.0, 18.0)},
    "realistic": {},
    "hard": {"noise": 0.10, "bias": 0.3, "edema_contrast": 0.45, "lesion_radius_mm": (1.0, 14.0)},
}


@dataclass(frozen=True)
class _Lesion:
    centre: np.ndarray          # mm
    radius: float               # mm, of the tumour (rim and core) before deformation
    axes: np.ndarray            # relative semi-axes of the (deformed) ellipsoid
    core_fraction: float        # necrotic core radius / radius; 0 for a solid lesion
    enhancing: bool
    edema_factor: float         # oedema reach in white matter / radius


@dataclass(frozen=True)
class BratsPhantomSpec:
    """What to generate. ``shape`` and ``spacing`` are (z, y, x) with spacing in mm; the brain fills the field of
    view. ``noise`` is the Rician sigma relative to white matter in T1, ``bias`` the bias field's log-intensity
    standard deviation, ``edema_contrast`` how far oedema moves from the tissue it infiltrates towards its own
    intensity (1: fully), ``lesion_radius_mm`` the range of tumour radii (log-uniform; the first lesion is the
    largest third of the range), ``contrast_jitter`` the per-case relative spread of each tissue's intensity."""

    kind: ClassVar[str] = "brats"
    dataset_name: ClassVar[str] = "SyntheticBraTS"
    modalities: ClassVar[tuple[str, ...]] = ("T1", "T1c", "T2", "FLAIR")

    shape: tuple[int, int, int] = (32, 112, 96)
    spacing: tuple[float, float, float] = (3.0, 1.0, 1.0)
    seed: int = 0
    noise: float = 0.06
    bias: float = 0.2
    edema_contrast: float = 0.7
    lesion_radius_mm: tuple[float, float] = (1.5, 18.0)
    contrast_jitter: float = 0.05
    intensity_scale: tuple[float, float] = (200.0, 3000.0)

    def __post_init__(self):
        if len(self.shape) != 3 or self.shape[0] < 8 or min(self.shape[1:]) < 32:
            raise ValueError(f"shape must be (z, y, x) with at least 8 slices of at least 32 x 32 voxels, got "
                             f"{self.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive millimetre values (z, y, x), got {self.spacing}")
        if self.noise < 0 or self.bias < 0 or not 0 <= self.contrast_jitter < 0.2:
            raise ValueError(f"noise and bias must be >= 0 and contrast_jitter in [0, 0.2), got {self.noise}, "
                             f"{self.bias}, {self.contrast_jitter}")
        if not 0 < self.edema_contrast <= 1:
            raise ValueError(f"edema_contrast must be in (0, 1], got {self.edema_contrast}")
        low, high = self.lesion_radius_mm
        if not 0 < low <= high:
            raise ValueError(f"lesion_radius_mm must be (low, high) with 0 < low <= high, got {self.lesion_radius_mm}")

    @classmethod
    def at_difficulty(cls, difficulty: str, **fields) -> BratsPhantomSpec:
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {difficulty!r}; choose from {sorted(DIFFICULTIES)}")
        return cls(**{**DIFFICULTIES[difficulty], **fields})

    @property
    def labels(self) -> dict:
        return dict(BRATS_REGIONS_2023)

    @property
    def regions_class_order(self) -> list[int]:
        return list(LAYOUTS["brats2023"].regions_class_order)

    @property
    def sitk_spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.spacing[::-1])

    def knobs(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def generate(self, case_index: int) -> PhantomCase:
        return generate_brats_case(self, case_index)


@dataclass
class _Anatomy:
    """Maps on the fine grid; the last three are derived once for all modalities by ``finish``."""

    healthy: np.ndarray         # BACKGROUND, CSF, GREY_MATTER or WHITE_MATTER
    tumour: np.ndarray          # 0 or OEDEMA, NECROSIS, NON_ENHANCING, ENHANCING
    edema_strength: np.ndarray  # 1 at the tumour, fading to 0.5 at the oedema border, 0 elsewhere
    in_tumour: np.ndarray | None = None      # necrosis, non-enhancing or enhancing
    edema_weight: np.ndarray | None = None   # how far oedema moves a voxel towards oedema's intensity
    heterogeneity: np.ndarray | None = None  # multiplicative texture

    def finish(self, edema_contrast: float, texture: np.ndarray) -> None:
        self.in_tumour = self.tumour >= NECROSIS
        self.edema_weight = edema_contrast * self.edema_strength
        # strong inside the tumour, subtle in healthy tissue
        self.heterogeneity = 1 + np.where(self.in_tumour, np.float32(0.10), np.float32(0.03)) * texture


def _ellipsoid_radius(axes: list[np.ndarray], centre: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """Normalised distance from ``centre`` (1 on the ellipsoid's surface), by broadcasting the 1-D axes."""
    total = 0
    for axis, (coordinates, c, a) in enumerate(zip(axes, centre, semi_axes)):
        shape = [1, 1, 1]
        shape[axis] = -1
        total = total + (((coordinates - c) / a) ** 2).reshape(shape)
    return np.sqrt(total)


def _healthy_brain(spec: BratsPhantomSpec, axes: list[np.ndarray], rng: np.random.Generator):
    field_of_view = np.array(spec.shape) * np.array(spec.spacing)
    semi_axes = field_of_view / 2 * rng.uniform(0.80, 0.88, 3)
    centre = field_of_view * rng.uniform(-0.03, 0.03, 3)
    # the surface wobbles by a few percent of the radius, over patches a few centimetres across
    radius = _ellipsoid_radius(axes, centre, semi_axes) / (1 + 0.05 * smooth_field(rng, axes, 30.0))
    depth_mm = (1 - radius) * semi_axes.mean()
    folds = smooth_field(rng, axes, 7.0)
    healthy = np.where(radius < 1, WHITE_MATTER, BACKGROUND).astype(np.uint8)
    # cortex: a ribbon under the surface, deeper around sulci (the folding field's zero surfaces)
    healthy[(radius < 1) & ((depth_mm < 3.0) | ((depth_mm < 14.0) & (np.abs(folds) < 0.45)))] = GREY_MATTER
    healthy[(radius < 1) & ((depth_mm < 0.8) | ((depth_mm < 11.0) & (np.abs(folds) < 0.08)))] = CSF
    for side in (-1, 1):
        nucleus = centre + semi_axes * np.array([0.0, 0.05, side * 0.16])
        healthy[_ellipsoid_radius(axes, nucleus, semi_axes * np.array([0.18, 0.15, 0.11])) < 1] = GREY_MATTER
    ventricle_size = rng.uniform(0.7, 1.3)
    ventricle_shape = 1 + 0.15 * smooth_field(rng, axes, 15.0)
    for side in (-1, 1):
        ventricle = centre + semi_axes * np.array([0.12, -0.05, side * 0.09])
        extent = semi_axes * np.array([0.16, 0.40, 0.07]) * ventricle_size
        healthy[_ellipsoid_radius(axes, ventricle, extent) < ventricle_shape] = CSF
    return healthy, centre, semi_axes


def _draw_lesions(spec: BratsPhantomSpec, rng: np.random.Generator, semi_axes: np.ndarray) -> list[_Lesion]:
    low, high = spec.lesion_radius_mm
    cap = 0.3 * semi_axes.min()  # a tumour (and its oedema) must fit in the brain
    count = int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))
    lesions = []
    for index in range(count):
        # the first lesion is the main tumour, the others satellites over the whole range
        radius = min(log_uniform(rng, max(low, high / 3), high) if index == 0 else log_uniform(rng, low, high), cap)
        solid = radius < 4.0 or rng.uniform() < 0.15
        lesions.append(_Lesion(centre=np.zeros(3), radius=radius, axes=rng.uniform(0.75, 1.25, 3),
                               core_fraction=0.0 if solid else rng.uniform(0.4, 0.8),
                               enhancing=rng.uniform() < 0.85, edema_factor=rng.uniform(1.25, 2.0)))
    return lesions


def _place(lesion: _Lesion, rng: np.random.Generator, centre: np.ndarray, semi_axes: np.ndarray,
           axes: list[np.ndarray], healthy: np.ndarray) -> _Lesion:
    """A centre inside the brain, deep enough for the tumour, not in CSF (20 tries, then the last one)."""
    reach = 1 - (1.3 * lesion.radius + 3.0) / semi_axes.min()
    for _ in range(20):
        direction = rng.normal(size=3)
        point = centre + semi_axes * direction / np.linalg.norm(direction) * max(reach, 0.1) * rng.uniform() ** (1 / 3)
        index = tuple(int(np.clip(np.searchsorted(a, p), 0, len(a) - 1)) for a, p in zip(axes, point))
        if healthy[index] not in (CSF, BACKGROUND):
            break
    return replace(lesion, centre=point)


def _grow(lesion: _Lesion, rng: np.random.Generator, axes: list[np.ndarray], anatomy: _Anatomy) -> None:
    """Draw one lesion into the anatomy, within its bounding box; tumour over oedema, enhancing rim over core."""
    extent = lesion.radius * lesion.axes.max() * lesion.edema_factor * 1.8 + 2.0
    box = tuple(slice(int(np.searchsorted(a, c - extent)), int(np.searchsorted(a, c + extent)))
                for a, c in zip(axes, lesion.centre))
    box_axes = [a[s] for a, s in zip(axes, box)]
    if any(len(a) == 0 for a in box_axes):
        return
    distance = _ellipsoid_radius(box_axes, lesion.centre, lesion.radius * lesion.axes)
    correlation = max(0.8 * lesion.radius, 2.0)
    tumour = distance * np.exp(0.25 * smooth_field(rng, box_axes, correlation)) < 1
    core = tumour & (distance * np.exp(0.3 * smooth_field(rng, box_axes, correlation)) < lesion.core_fraction)
    edema_distance = distance * np.exp(0.35 * smooth_field(rng, box_axes, correlation))
    healthy = anatomy.healthy[box]
    # oedema follows white matter tracts and spares most of the cortex
    reach = np.where(healthy == WHITE_MATTER, lesion.edema_factor, 1 + 0.35 * (lesion.edema_factor - 1))
    allowed = (healthy != BACKGROUND) & (healthy != CSF)
    # only what is connected to the tumour: no specks of oedema cut off by cortex or CSF
    pieces, _ = ndimage.label(allowed & ((edema_distance < reach) | tumour))
    edema = np.isin(pieces, np.unique(pieces[tumour & allowed])) & (pieces > 0) & ~tumour
    labels = anatomy.tumour[box]
    strength = anatomy.edema_strength[box]
    new_edema = allowed & edema & ((labels == 0) | (labels == OEDEMA))
    labels[new_edema] = OEDEMA
    fade = 1 - 0.5 * np.clip((edema_distance - 1) / (reach - 1), 0, 1)
    strength[new_edema] = np.maximum(strength[new_edema], fade[new_edema])
    if lesion.enhancing:
        labels[allowed & core & (labels != ENHANCING)] = NECROSIS
        labels[allowed & tumour & ~core] = ENHANCING
    else:
        labels[allowed & tumour & (labels != ENHANCING)] = NON_ENHANCING


def brats_anatomy(spec: BratsPhantomSpec, case_index: int) -> tuple[_Anatomy, tuple[int, ...], list[np.ndarray]]:
    rng = np.random.default_rng([spec.seed, case_index, 0])
    factors = odd_supersampling(spec.spacing)
    axes = fine_coordinates(spec.shape, spec.spacing, factors)
    healthy, centre, semi_axes = _healthy_brain(spec, axes, rng)
    anatomy = _Anatomy(healthy, np.zeros_like(healthy), np.zeros(healthy.shape, np.float32))
    texture = smooth_field(rng, axes, 3.0)
    for lesion in _draw_lesions(spec, rng, semi_axes):
        _grow(_place(lesion, rng, centre, semi_axes, axes, healthy), rng, axes, anatomy)
    anatomy.finish(spec.edema_contrast, texture)
    return anatomy, factors, axes


def _render(spec: BratsPhantomSpec, anatomy: _Anatomy, modality: str, rng: np.random.Generator,
            factors: tuple[int, ...], axes: list[np.ndarray]) -> np.ndarray:
    contrast = np.asarray(TISSUE_CONTRAST[modality], np.float32)
    contrast = contrast * (1 + spec.contrast_jitter * rng.standard_normal(len(contrast))).astype(np.float32)
    image = contrast[anatomy.healthy]
    # oedema: the infiltrated tissue's intensity moved towards oedema's by its (fading) strength
    image += anatomy.edema_weight * (contrast[OEDEMA] - image)
    image[anatomy.in_tumour] = contrast[anatomy.tumour[anatomy.in_tumour]]
    image *= anatomy.heterogeneity
    image = point_spread(block_mean(image, factors), tuple(0.5 if f == 1 else 0.0 for f in factors))
    native_axes = [a[f // 2::f] for a, f in zip(axes, factors)]
    image = rician(image * bias_field(rng, native_axes, spec.bias), spec.noise * contrast[WHITE_MATTER], rng)
    return scanner_units(image, rng, spec.intensity_scale, max_offset=0.1)


def generate_brats_case(spec: BratsPhantomSpec, case_index: int) -> PhantomCase:
    anatomy, factors, axes = brats_anatomy(spec, case_index)
    tissues = centre_samples(np.where(anatomy.tumour > 0, anatomy.tumour, anatomy.healthy), factors)
    # skull-stripped: the brain mask is the voxels whose centre is in the brain; partial volume darkens its edge
    brain = tissues != BACKGROUND
    images = {}
    for m_index, modality in enumerate(spec.modalities):
        rng = np.random.default_rng([spec.seed, case_index, 1 + m_index])
        images[modality] = np.where(brain, _render(spec, anatomy, modality, rng, factors, axes), 0).astype(np.float32)
    return PhantomCase(images=images, label=LABEL_OF_TISSUE[tissues], tissues=tissues.astype(np.uint8))
