"""What an MR scanner does to a synthetic anatomy, shared by the BraTS-like and prostate-like phantoms.

Smooth random fields (for shapes, textures and bias), partial volume (rendering on a finer grid and averaging
blocks of it into voxels, then a point-spread blur), Rician noise (the magnitude of complex Gaussian noise, as in
magnitude MR images) and per-case intensity scaling. Everything here is synthetic.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def odd_supersampling(spacing: tuple[float, ...]) -> tuple[int, ...]:
    """Fine samples per voxel along each axis: the smallest odd number at least the axis' spacing over the
    finest spacing, so a thick slice integrates several thin ones and every voxel has a fine sample at its centre
    (where the label is read, as an annotator marks what a slice shows at its centre)."""
    finest = min(spacing)
    return tuple(2 * max(0, math.ceil((s / finest - 1) / 2 - 1e-6)) + 1 for s in spacing)


def fine_coordinates(shape: tuple[int, ...], spacing: tuple[float, ...],
                     factors: tuple[int, ...]) -> list[np.ndarray]:
    """Millimetre coordinates of the fine samples per axis, centred on the field of view."""
    axes = []
    for n, s, f in zip(shape, spacing, factors):
        axes.append(((np.arange(n * f, dtype=np.float32) + 0.5) / f - n / 2) * s)
    return axes


def centre_samples(fine: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """The fine sample at each voxel's centre (factors are odd)."""
    return fine[tuple(slice(f // 2, None, f) for f in factors)]


def block_mean(fine: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Average each voxel's block of fine samples: partial volume of a voxel that spans several tissues."""
    if all(f == 1 for f in factors):
        return fine
    shape = []
    for n, f in zip(fine.shape, factors):
        shape += [n // f, f]
    return fine.reshape(shape).mean(axis=tuple(range(1, 2 * fine.ndim, 2)))


def _axis_weights(coordinates: np.ndarray, correlation_mm: float) -> np.ndarray:
    """Gaussian weights from control points spaced correlation_mm / 2 apart (reaching beyond the axis' ends so
    the borders are as random as the middle), normalised so that the field has unit variance at every point."""
    step = correlation_mm / 2
    margin = 2 * correlation_mm
    controls = np.arange(coordinates.min() - margin, coordinates.max() + margin + step, step, dtype=np.float32)
    weights = np.exp(-0.5 * ((coordinates[:, None] - controls[None, :]) / step) ** 2)
    return weights / np.sqrt((weights ** 2).sum(axis=1, keepdims=True))


def smooth_field(rng: np.random.Generator, coordinates: list[np.ndarray], correlation_mm: float) -> np.ndarray:
    """A smooth Gaussian random field with zero mean and unit variance over the grid given by its axes'
    millimetre coordinates, with features about correlation_mm across. Separable (one small matrix product per
    axis), so a million-voxel field takes milliseconds."""
    weights = [_axis_weights(c, correlation_mm) for c in coordinates]
    field = rng.standard_normal([w.shape[1] for w in weights], dtype=np.float32)
    for axis, w in enumerate(weights):
        field = np.moveaxis(np.tensordot(field, w, axes=([axis], [1])), -1, axis)
    return field


def bias_field(rng: np.random.Generator, coordinates: list[np.ndarray], strength: float) -> np.ndarray:
    """Smooth multiplicative intensity inhomogeneity (receive-coil sensitivity): exp(strength x field), positive."""
    return np.exp(strength * smooth_field(rng, coordinates, correlation_mm=80.0))


def rician(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation sigma per component."""
    real = image + sigma * rng.standard_normal(image.shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(image.shape, dtype=np.float32)
    return np.hypot(real, imaginary)


def point_spread(image: np.ndarray, sigma_voxels: tuple[float, ...]) -> np.ndarray:
    """Blur by the acquisition's point-spread function (a Gaussian of sigma_voxels per axis)."""
    if not any(sigma_voxels):
        return image
    return ndimage.gaussian_filter(image, sigma_voxels, mode="nearest")


def log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    """Sizes spread evenly over scales, so small lesions are as common as large ones."""
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def scanner_units(image: np.ndarray, rng: np.random.Generator, scale_range: tuple[float, float],
                  max_offset: float) -> np.ndarray:
    """Arbitrary per-case, per-modality units, as MR intensities have: a random scale and a small offset."""
    scale = log_uniform(rng, *scale_range)
    return (scale * (image + rng.uniform(0.0, max_offset))).astype(np.float32)
