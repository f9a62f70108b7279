"""Surfaces of binary masks and the distances between them, in spacing units.

Conventions (MedPy >= 0.5, used by :mod:`eval.metrics`):
  * The **surface** of a mask is the mask minus its binary erosion by the face-connected
    structuring element (``scipy.ndimage.generate_binary_structure(ndim, 1)``: 4-neighbourhood
    in 2D, 6 in 3D), eroded with ``border_value=0`` so foreground voxels on the image border
    are surface voxels.
  * The distance from a surface voxel of A to B is the Euclidean distance, with voxel
    ``spacing``, to the nearest surface voxel of B (``scipy.ndimage.distance_transform_edt`` of
    the complement of B's surface with ``sampling=spacing``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["check_spacing", "surface_mask", "surface_distances", "distance_to_surface"]


def check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """``spacing`` as a tuple of ``ndim`` positive finite floats (``None`` → all ones)."""
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        spacing = (spacing,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(f"spacing must have {ndim} entries (one per spatial axis), got {spacing!r}")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing entries must be positive and finite, got {spacing!r}")
    return sp


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean surface ``[*S]`` of a boolean mask ``[*S]``: mask minus its face-connected erosion."""
    mask = np.asarray(mask, bool)
    if mask.ndim == 0:
        raise ValueError("mask must have at least one spatial axis, got a scalar")
    if not mask.any():
        return mask.copy()
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)


def distance_to_surface(mask: np.ndarray, spacing=None) -> np.ndarray:
    """Distance ``[*S]`` (spacing units) from every voxel to the nearest surface voxel of ``mask``.

    ``mask`` must be non-empty (the distance to nothing is undefined).
    """
    mask = np.asarray(mask, bool)
    surf = surface_mask(mask)
    if not surf.any():
        raise ValueError("mask is empty: no surface to measure distances to")
    return ndimage.distance_transform_edt(~surf, sampling=check_spacing(spacing, mask.ndim))


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing=None) -> tuple[np.ndarray, np.ndarray]:
    """``(d_pred_to_target, d_target_to_pred)``: one distance per surface voxel of each mask.

    Both masks must be non-empty; :mod:`eval.metrics` handles the empty cases before calling.
    """
    pred = np.asarray(pred, bool)
    target = np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    sp = check_spacing(spacing, pred.ndim)
    sp_pred, sp_target = surface_mask(pred), surface_mask(target)
    if not sp_pred.any() or not sp_target.any():
        raise ValueError("surface distances need two non-empty masks")
    d_pt = ndimage.distance_transform_edt(~sp_target, sampling=sp)[sp_pred]
    d_tp = ndimage.distance_transform_edt(~sp_pred, sampling=sp)[sp_target]
    return d_pt, d_tp
