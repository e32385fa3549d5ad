"""Synthetic multi-modal phantoms written as nnU-Net raw datasets.

Every image here is synthetic. Anatomy: a body, an organ inside it, a lesion inside the organ and a fourth
structure (a cyst beside the organ, or in the region style a core inside the lesion). Each modality is a
contrast profile (mean intensity per tissue); the default profiles show every labelled structure in at
least two modalities, and the lesion best in T2, so fusing modalities helps and losing one degrades
gracefully. Cases are reproducible from (seed, case index); two datasets written with the same seed share
their anatomy and labels case by case whatever their modalities, which gives MKD's paired-appearance data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnunet_multimodal.environment import datasets_with_id

TISSUES = ("air", "body", "organ", "lesion", "extra")

# Mean intensity per tissue in TISSUES order; "extra" is the cyst (label style) or the core (region style).
CONTRAST_PROFILES: dict[str, tuple[float, ...]] = {
    "T1": (0.05, 0.50, 0.80, 0.80, 0.20),
    "T2": (0.05, 0.50, 0.30, 0.95, 0.90),
    "FLAIR": (0.05, 0.40, 0.40, 0.70, 0.40),
    "T1ce": (0.05, 0.45, 0.70, 0.85, 0.15),
    # single-modality profiles with every structure visible, for the unpaired (MKD) pair of datasets
    "MRlike": (0.05, 0.50, 0.80, 0.30, 0.10),
    "CTlike": (0.00, 0.35, 0.55, 0.75, 0.95),
}

LABEL_STYLE_LABELS = {"background": 0, "organ": 1, "lesion": 2, "cyst": 3}
REGION_STYLE_LABELS = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "inner": 3}


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate. ``shape`` is (y, x) in 2D and (z, y, x) in 3D; spacing is 1 mm isotropic."""

    shape: tuple[int, ...] = (96, 96)
    modalities: tuple[str, ...] = ("T1", "T2", "FLAIR")
    label_style: str = "labels"
    noise: float = 0.05
    bias: float = 0.15
    seed: int = 0
    intensity_scale: tuple[float, float] = (800.0, 1200.0)
    extra_json: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.shape) not in (2, 3):
            raise ValueError(f"shape must be 2D (y, x) or 3D (z, y, x), got {self.shape}")
        if min(self.shape) < 16:
            raise ValueError(f"shape {self.shape} is too small: every axis needs at least 16 voxels")
        unknown = [m for m in self.modalities if m not in CONTRAST_PROFILES]
        if unknown or not self.modalities:
            raise ValueError(f"unknown modalities {unknown}; choose from {sorted(CONTRAST_PROFILES)}")
        if self.label_style not in ("labels", "regions"):
            raise ValueError(f"label_style must be 'labels' or 'regions', got {self.label_style!r}")

    @property
    def labels(self) -> dict:
        return LABEL_STYLE_LABELS if self.label_style == "labels" else REGION_STYLE_LABELS


def _ellipsoid(grid: list[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii)) <= 1.0


def tissue_map(spec: PhantomSpec, case_index: int) -> np.ndarray:
    """Integer map of TISSUES indices for one case."""
    rng = np.random.default_rng([spec.seed, case_index, 0])
    size = np.array(spec.shape, dtype=float)
    grid = np.meshgrid(*[np.arange(s, dtype=float) for s in spec.shape], indexing="ij")
    tissues = np.zeros(spec.shape, dtype=np.uint8)

    body_centre = size / 2 + rng.uniform(-0.03, 0.03, len(size)) * size
    body_radii = size * rng.uniform(0.38, 0.45, len(size))
    tissues[_ellipsoid(grid, body_centre, body_radii)] = 1

    organ_radii = body_radii * rng.uniform(0.5, 0.6, len(size))
    organ_centre = body_centre + rng.uniform(-0.25, 0.25, len(size)) * body_radii
    organ = _ellipsoid(grid, organ_centre, organ_radii)
    tissues[organ] = 2

    lesion_radius = organ_radii.min() * rng.uniform(0.5, 0.65)
    lesion_centre = organ_centre + rng.uniform(-0.3, 0.3, len(size)) * (organ_radii - lesion_radius)
    lesion = _ellipsoid(grid, lesion_centre, np.full(len(size), lesion_radius))
    tissues[lesion] = 3

    if spec.label_style == "regions":
        core = _ellipsoid(grid, lesion_centre, np.full(len(size), lesion_radius * 0.5))
        tissues[core] = 4
    else:
        # the cyst sits in the body beside the organ, in a random direction
        direction = rng.normal(size=len(size))
        direction /= np.linalg.norm(direction)
        cyst_radius = organ_radii.min() * rng.uniform(0.4, 0.5)
        distance = np.linalg.norm(organ_radii) * 0.5 + body_radii.min() * 0.45
        cyst_centre = organ_centre - direction * distance * 0.6
        cyst_centre = np.clip(cyst_centre, body_centre - body_radii * 0.6, body_centre + body_radii * 0.6)
        cyst = _ellipsoid(grid, cyst_centre, np.full(len(size), cyst_radius)) & (tissues == 1)
        tissues[cyst] = 4
    return tissues


def labels_from_tissues(tissues: np.ndarray, label_style: str) -> np.ndarray:
    """Tissue indices to nnU-Net label values: in both styles organ=1, lesion=2, extra (cyst/core)=3."""
    lut = np.array([0, 0, 1, 2, 3], dtype=np.uint8)
    return lut[tissues]


def _bias_field(shape: tuple[int, ...], strength: float, rng: np.random.Generator) -> np.ndarray:
    coords = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    linear = sum(rng.uniform(-1, 1) * c for c in coords)
    quadratic = sum(rng.uniform(-1, 1) * c ** 2 for c in coords)
    field = linear + 0.5 * quadratic
    return 1.0 + strength * field / max(np.abs(field).max(), 1e-6)


def render(tissues: np.ndarray, spec: PhantomSpec, case_index: int) -> dict[str, np.ndarray]:
    """One float32 image per modality: contrast profile x bias field + noise, at a scanner-like scale."""
    images = {}
    for m_index, modality in enumerate(spec.modalities):
        rng = np.random.default_rng([spec.seed, case_index, 1 + m_index, sum(map(ord, modality))])
        mean = np.asarray(CONTRAST_PROFILES[modality], dtype=np.float32)[tissues]
        image = mean * _bias_field(spec.shape, spec.bias, rng) + rng.normal(0, spec.noise, spec.shape)
        scale = rng.uniform(*spec.intensity_scale)
        images[modality] = (image * scale).astype(np.float32)
    return images


def generate_case(spec: PhantomSpec, case_index: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    tissues = tissue_map(spec, case_index)
    return render(tissues, spec, case_index), labels_from_tissues(tissues, spec.label_style)


def _write(array: np.ndarray, filename: Path) -> None:
    # 2D cases are stored as one-slice volumes, as nnU-Net expects 2D NIfTI data
    volume = array[None] if array.ndim == 2 else array
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(image, str(filename), useCompression=True)


def write_dataset(raw_folder: str | Path, dataset_id: int, name: str, spec: PhantomSpec,
                  num_training: int = 10, num_test: int = 0, overwrite: bool = False) -> Path:
    """Write ``Dataset{id:03d}_{name}`` (imagesTr, labelsTr, and imagesTs/labelsTs for held-out cases)."""
    folder = Path(raw_folder) / f"Dataset{dataset_id:03d}_{name}"
    existing = datasets_with_id(dataset_id, [raw_folder])
    if existing and not overwrite:
        raise FileExistsError(
            f"Dataset id {dataset_id} already exists in {raw_folder} ({existing[0].name}); choose another id "
            f"or remove that folder first."
        )
    for sub in ("imagesTr", "labelsTr") + (("imagesTs", "labelsTs") if num_test else ()):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for index in range(num_training + num_test):
        subset = "Tr" if index < num_training else "Ts"
        case = f"{name}_{index:03d}"
        images, label = generate_case(spec, index)
        for channel, modality in enumerate(spec.modalities):
            _write(images[modality], folder / f"images{subset}" / f"{case}_{channel:04d}.nii.gz")
        _write(label, folder / f"labels{subset}" / f"{case}.nii.gz")
    dataset_json = {
        "name": name,
        "description": "SYNTHETIC phantom generated by nnunet-multimodal (not real anatomy)",
        "reference": "synthetic",
        "channel_names": {str(i): m for i, m in enumerate(spec.modalities)},
        "labels": spec.labels,
        "numTraining": num_training,
        "file_ending": ".nii.gz",
        "synthetic_phantom": {"seed": spec.seed, "shape": list(spec.shape), "label_style": spec.label_style},
        **spec.extra_json,
    }
    if spec.label_style == "regions":
        dataset_json["regions_class_order"] = [1, 2, 3]
    (folder / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    return folder
