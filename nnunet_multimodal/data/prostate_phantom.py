"""A PI-CAI-like synthetic 2D prostate phantom: T2W, ADC and HBV (high b-value diffusion) of an axial slice.

Everything here is synthetic. The slice shows periprostatic fat, obturator and levator muscles, the rectum behind
the gland (wall and lumen), and the gland: a transition zone of nodular texture inside a peripheral zone. A
lesion (label 2, in the peripheral zone more often than in the transition zone, irregular, sizes spread over a
range) is present in some cases only, as in PI-CAI where most examinations are negative. The gland (label 1) is
seen mainly in T2W; the lesion is dark in ADC and bright in HBV, and only faint in T2W.

Acquisition as in bi-parametric MRI: partial volume (rendered on a 3x finer grid and averaged), a point-spread
blur that is wider for the lower-resolution diffusion images, a small shift of the diffusion images against T2W
(patient motion between sequences; the labels follow T2W), a bias field, Rician noise that is strongest in HBV,
and per-case units (ADC in nearly fixed units, as it is quantitative). Cases are reproducible from (seed, case
index).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np
from scipy import ndimage

from nnunet_multimodal.data.phantom_acquisition import (
    bias_field,
    block_mean,
    centre_samples,
    fine_coordinates,
    log_uniform,
    point_spread,
    rician,
    scanner_units,
    smooth_field,
)
from nnunet_multimodal.data.phantom_datasets import PhantomCase

FAT, MUSCLE, RECTAL_WALL, RECTAL_LUMEN, CAPSULE, PERIPHERAL_ZONE, TRANSITION_ZONE, LESION = range(8)
TISSUES = ("fat", "muscle", "rectal wall", "rectal lumen", "capsule", "peripheral zone", "transition zone", "lesion")
LABEL_OF_TISSUE = np.array([0, 0, 0, 0, 0, 1, 1, 2], dtype=np.uint8)
LABELS = {"background": 0, "gland": 1, "lesion": 2}
SUPERSAMPLING = (3, 3)

# Mean intensity per tissue (TISSUES order). T2W: bright fat and peripheral zone told apart by the dark capsule
# around the gland, a darker transition zone, dark muscle. ADC and HBV: the gland only a little above its
# surroundings, everything dim in HBV but the lesion. A lesion's
# value is reached only in part: it is blended with the zone it grows in (LESION_T2W_VISIBILITY in T2W,
# lesion_contrast in the diffusion images).
TISSUE_CONTRAST: dict[str, tuple[float, ...]] = {
    "T2W": (0.92, 0.25, 0.35, 0.12, 0.22, 0.72, 0.48, 0.35),
    "ADC": (0.68, 0.55, 0.50, 0.20, 0.62, 0.72, 0.62, 0.30),
    "HBV": (0.20, 0.18, 0.28, 0.05, 0.18, 0.22, 0.25, 0.80),
}
LESION_T2W_VISIBILITY = 0.35
# Rician sigma per modality, in units of the spec's noise: diffusion images have the lowest SNR
NOISE_FACTOR = {"T2W": 1.0, "ADC": 1.5, "HBV": 2.0}
# per-case intensity units: arbitrary for T2W and HBV, ADC nearly fixed (it is quantitative, in 10^-6 mm^2/s)
INTENSITY_SCALE = {"T2W": (100.0, 1500.0), "ADC": (1700.0, 1900.0), "HBV": (5.0, 100.0)}
# texture amplitude (relative) in the transition zone's nodules and elsewhere
NODULE_TEXTURE = {"T2W": (0.15, 0.04), "ADC": (0.07, 0.03), "HBV": (0.05, 0.03)}

# Knob values that differ from the defaults ("realistic") per difficulty preset
DIFFICULTIES: dict[str, dict] = {
    "easy": {"noise": 0.03, "bias": 0.1, "lesion_contrast": 1.0, "lesion_radius_mm": (3.0, 9.0),
             "dwi_shift_mm": 0.0},
    "realistic": {},
    "hard": {"noise": 0.08, "bias": 0.3, "lesion_contrast": 0.55, "lesion_radius_mm": (1.5, 7.0),
             "dwi_shift_mm": 2.0},
}


@dataclass(frozen=True)
class ProstatePhantomSpec:
    """What to generate. ``shape`` and ``spacing`` are (y, x), spacing in mm, written with ``slice_thickness``
    as the third axis. ``noise`` is the T2W Rician sigma relative to the brightest tissues, ``bias`` the bias
    field's log-intensity standard deviation, ``lesion_contrast`` how far a lesion moves ADC and HBV from its zone
    towards the lesion's intensity (1: fully), ``lesion_radius_mm`` the range of lesion radii (log-uniform),
    ``lesion_probability`` the share of cases with a lesion, ``dwi_blur_mm`` the diffusion images' extra blur,
    ``dwi_shift_mm`` the largest shift of the diffusion images against T2W."""

    kind: ClassVar[str] = "prostate"
    dataset_name: ClassVar[str] = "SyntheticProstate"
    modalities: ClassVar[tuple[str, ...]] = ("T2W", "ADC", "HBV")

    shape: tuple[int, int] = (128, 128)
    spacing: tuple[float, float] = (0.6, 0.6)
    slice_thickness: float = 3.0
    seed: int = 0
    noise: float = 0.05
    bias: float = 0.2
    lesion_contrast: float = 0.8
    lesion_radius_mm: tuple[float, float] = (2.0, 9.0)
    lesion_probability: float = 0.6
    dwi_blur_mm: float = 1.2
    dwi_shift_mm: float = 1.0
    contrast_jitter: float = 0.05

    def __post_init__(self):
        if len(self.shape) != 2 or len(self.spacing) != 2 or min(self.spacing) <= 0 or self.slice_thickness <= 0:
            raise ValueError(f"shape and spacing must be (y, x) with positive spacing and slice_thickness, got "
                             f"{self.shape}, {self.spacing}, {self.slice_thickness}")
        field_of_view = [n * s for n, s in zip(self.shape, self.spacing)]
        if min(field_of_view) < 60:
            raise ValueError(f"the field of view {field_of_view} mm (shape x spacing) must be at least 60 mm wide "
                             f"to hold the gland and the rectum: raise shape or spacing")
        if self.noise < 0 or self.bias < 0 or self.dwi_blur_mm < 0 or self.dwi_shift_mm < 0:
            raise ValueError("noise, bias, dwi_blur_mm and dwi_shift_mm must be >= 0")
        if not 0 < self.lesion_contrast <= 1 or not 0 <= self.lesion_probability <= 1:
            raise ValueError(f"lesion_contrast must be in (0, 1] and lesion_probability in [0, 1], got "
                             f"{self.lesion_contrast}, {self.lesion_probability}")
        if not 0 <= self.contrast_jitter < 0.2:
            raise ValueError(f"contrast_jitter must be in [0, 0.2), got {self.contrast_jitter}")
        low, high = self.lesion_radius_mm
        if not 0 < low <= high:
            raise ValueError(f"lesion_radius_mm must be (low, high) with 0 < low <= high, got {self.lesion_radius_mm}")

    @classmethod
    def at_difficulty(cls, difficulty: str, **fields) -> ProstatePhantomSpec:
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {difficulty!r}; choose from {sorted(DIFFICULTIES)}")
        return cls(**{**DIFFICULTIES[difficulty], **fields})

    @property
    def labels(self) -> dict:
        return dict(LABELS)

    @property
    def regions_class_order(self) -> None:
        return None

    @property
    def sitk_spacing(self) -> tuple[float, float, float]:
        return float(self.spacing[1]), float(self.spacing[0]), float(self.slice_thickness)

    def knobs(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def generate(self, case_index: int) -> PhantomCase:
        return generate_prostate_case(self, case_index)


def _inside(axes: list[np.ndarray], centre, semi_axes, wobble: np.ndarray | float = 1.0) -> np.ndarray:
    y, x = axes
    radius = np.sqrt(((y[:, None] - centre[0]) / semi_axes[0]) ** 2 + ((x[None, :] - centre[1]) / semi_axes[1]) ** 2)
    return radius < wobble


def _pelvis(axes: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Tissue map of the slice on the fine grid."""
    tissues = np.full([len(a) for a in axes], FAT, dtype=np.uint8)
    for side in (-1, 1):
        tissues[_inside(axes, (rng.uniform(-4, 4), side * rng.uniform(30, 34)), (22, 6))] = MUSCLE
        tissues[_inside(axes, (rng.uniform(16, 20), side * rng.uniform(20, 24)), (6, 4))] = MUSCLE
    gland_centre = np.array([rng.uniform(-4, 0), rng.uniform(-2, 2)])
    gland_axes = np.array([rng.uniform(12, 17), rng.uniform(16, 23)])
    rectum_centre = (gland_centre[0] + gland_axes[0] + rng.uniform(8, 11), rng.uniform(-2, 2))
    rectum_axes = np.array([rng.uniform(7, 10), rng.uniform(12, 16)])
    tissues[_inside(axes, rectum_centre, rectum_axes)] = RECTAL_WALL
    tissues[_inside(axes, rectum_centre, rectum_axes - 3)] = RECTAL_LUMEN
    outline = 1 + 0.06 * smooth_field(rng, axes, 15.0)
    gland = _inside(axes, gland_centre, gland_axes, outline)
    # the capsule: a band about a millimetre wide around the gland, outside it
    tissues[_inside(axes, gland_centre, gland_axes, outline + 1.2 / gland_axes.mean()) & (tissues == FAT)] = CAPSULE
    tissues[gland] = PERIPHERAL_ZONE
    # the transition zone sits anteriorly and grows with age (benign hyperplasia)
    zone_axes = gland_axes * rng.uniform(0.5, 0.8)
    zone_centre = gland_centre - np.array([0.25 * gland_axes[0], 0.0])
    tissues[gland & _inside(axes, zone_centre, zone_axes, 1 + 0.1 * smooth_field(rng, axes, 10.0))] = TRANSITION_ZONE
    return tissues


def _add_lesions(spec: ProstatePhantomSpec, axes: list[np.ndarray], tissues: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """Draw 0-2 lesions into ``tissues``; returns each fine sample's lesion strength (0 outside lesions)."""
    strength = np.zeros(tissues.shape, np.float32)
    if rng.uniform() >= spec.lesion_probability:
        return strength
    gland = (tissues == PERIPHERAL_ZONE) | (tissues == TRANSITION_ZONE)
    for _ in range(1 if rng.uniform() < 0.8 else 2):
        zone = PERIPHERAL_ZONE if rng.uniform() < 0.7 or not (tissues == TRANSITION_ZONE).any() else TRANSITION_ZONE
        candidates = np.flatnonzero(tissues == zone)
        if candidates.size == 0:
            continue
        centre = [a[i] for a, i in zip(axes, np.unravel_index(rng.choice(candidates), tissues.shape))]
        radius = log_uniform(rng, *spec.lesion_radius_mm)
        semi_axes = radius * rng.uniform(0.7, 1.3, 2)
        lesion = gland & _inside(axes, centre, semi_axes, np.exp(0.3 * smooth_field(rng, axes, max(radius, 2.0))))
        tissues[lesion] = LESION
        strength[lesion] = rng.uniform(0.6, 1.0)  # how aggressive: how far it moves ADC and HBV
    return strength


def _render(spec: ProstatePhantomSpec, tissues: np.ndarray, underlying: np.ndarray, strength: np.ndarray,
            texture: np.ndarray, modality: str, rng: np.random.Generator, shift_mm: np.ndarray,
            native_axes: list[np.ndarray]) -> np.ndarray:
    contrast = np.asarray(TISSUE_CONTRAST[modality], np.float32)
    contrast = contrast * (1 + spec.contrast_jitter * rng.standard_normal(len(contrast))).astype(np.float32)
    image = contrast[underlying]
    visibility = LESION_T2W_VISIBILITY if modality == "T2W" else spec.lesion_contrast
    image += visibility * strength * (contrast[LESION] - image)
    nodules, elsewhere = NODULE_TEXTURE[modality]
    image *= 1 + np.where(tissues == TRANSITION_ZONE, np.float32(nodules), np.float32(elsewhere)) * texture
    image = block_mean(image, SUPERSAMPLING)
    spacing = np.array(spec.spacing)
    if modality == "T2W":
        image = point_spread(image, (0.5, 0.5))
    else:
        image = point_spread(image, tuple(spec.dwi_blur_mm / spacing))
        image = ndimage.shift(image, shift_mm / spacing, order=1, mode="nearest")
    image = rician(image * bias_field(rng, native_axes, spec.bias), spec.noise * NOISE_FACTOR[modality], rng)
    return scanner_units(image, rng, INTENSITY_SCALE[modality], max_offset=0.05)


def generate_prostate_case(spec: ProstatePhantomSpec, case_index: int) -> PhantomCase:
    rng = np.random.default_rng([spec.seed, case_index, 0])
    axes = fine_coordinates(spec.shape, spec.spacing, SUPERSAMPLING)
    tissues = _pelvis(axes, rng)
    underlying = tissues.copy()  # the zone each lesion grows in, which it is blended with
    strength = _add_lesions(spec, axes, tissues, rng)
    texture = smooth_field(rng, axes, 3.0)
    # the diffusion images (ADC and HBV come from one acquisition) are shifted together
    angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(0, spec.dwi_shift_mm)
    shift_mm = length * np.array([np.sin(angle), np.cos(angle)])
    native_axes = [a[f // 2::f] for a, f in zip(axes, SUPERSAMPLING)]
    images = {}
    for m_index, modality in enumerate(spec.modalities):
        modality_rng = np.random.default_rng([spec.seed, case_index, 1 + m_index])
        images[modality] = _render(spec, tissues, underlying, strength, texture, modality, modality_rng, shift_mm,
                                   native_axes)
    native = centre_samples(tissues, SUPERSAMPLING)
    return PhantomCase(images=images, label=LABEL_OF_TISSUE[native], tissues=native)
