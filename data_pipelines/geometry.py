"""Geometry: canonical reorientation, resampling to a spacing, resizing, world <-> voxel.

Arrays follow ``data_pipelines.readers``: images ``[*S, C]``, label maps ``[*S]``, and an
``ImageMeta`` whose ``direction`` columns are the LPS world directions of the array axes.
Images are resampled with linear interpolation, label maps with nearest neighbour (so label
values are never invented).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from data_pipelines.readers import ImageMeta

__all__ = ["reorient", "resample_to_spacing", "resize", "resized_meta", "check_same_geometry", "world_to_voxel",
           "voxel_to_world", "orientation_code"]

_AXES = {"L": (0, 1), "R": (0, -1), "P": (1, 1), "A": (1, -1), "S": (2, 1), "I": (2, -1)}


def orientation_code(meta: ImageMeta) -> str:
    """Three letters (LPS-style, e.g. ``"LPS"``, ``"RAS"``): where each array axis points in the world."""
    d = meta.direction_matrix
    out = []
    for a in range(d.shape[1]):
        w = int(np.argmax(np.abs(d[:, a])))
        positive = d[w, a] > 0
        out.append({0: "LR", 1: "PA", 2: "SI"}[w][0 if positive else 1])
    return "".join(out)


def reorient(array: np.ndarray, meta: ImageMeta, target: str = "LPS", is_label: bool = False):
    """Permute/flip the array axes so they point along ``target`` (e.g. ``"LPS"`` or ``"RAS"``).

    ``array``: ``[*S, C]`` (image) or ``[*S]`` (``is_label=True``). Only axis permutations and flips
    (no interpolation); the world position of every voxel is unchanged (origin/direction updated).
    """
    nd = meta.ndim
    target = target.upper()
    if len(target) != nd or sorted(_AXES[c][0] for c in target if c in _AXES) != list(range(nd)):
        raise ValueError(f"target orientation {target!r} must name each of {nd} world axes once (e.g. 'LPS')")
    spatial = array.ndim - (0 if is_label else 1)
    if spatial != nd:
        raise ValueError(f"array of shape {array.shape} does not have {nd} spatial axes (+ channels)")
    d = meta.direction_matrix
    world_of_axis = [int(np.argmax(np.abs(d[:, a]))) for a in range(nd)]
    if sorted(world_of_axis) != list(range(nd)):
        raise ValueError(f"{meta.path}: oblique direction {d.tolist()} cannot be reoriented by axis flips")
    perm = [world_of_axis.index(_AXES[c][0]) for c in target]
    shape = array.shape
    spacing = np.asarray(meta.spacing)[perm]
    direction = d[:, perm].copy()
    origin = np.asarray(meta.origin, np.float64).copy()
    out = np.transpose(array, tuple(perm) + tuple(range(nd, array.ndim)))
    for new_a, c in enumerate(target):
        w, sign = _AXES[c]
        if np.sign(direction[w, new_a]) != sign:
            n = shape[perm[new_a]]
            origin = origin + direction[:, new_a] * spacing[new_a] * (n - 1)
            direction[:, new_a] *= -1
            out = np.flip(out, axis=new_a)
    return np.ascontiguousarray(out), meta.replace(spacing=tuple(float(s) for s in spacing),
                                                   origin=tuple(float(o) for o in origin),
                                                   direction=tuple(tuple(float(v) for v in r) for r in direction))


def _interp_matrix(n_in: int, n_out: int, scale: float, offset: float, antialias: bool) -> np.ndarray:
    """``[n_out, n_in]`` linear-interpolation weights for ``out[i] = in[i * scale + offset]``.

    A triangle kernel (width ``max(scale, 1)`` with antialiasing, so downsampling averages like
    ``jax.image.resize``); weights renormalised at the borders (edge values are held).
    """
    width = max(scale, 1.0) if antialias else 1.0
    x = np.arange(n_out, dtype=np.float64) * scale + offset
    j = np.arange(n_in, dtype=np.float64)
    w = np.maximum(0.0, 1.0 - np.abs(j[None, :] - x[:, None]) / width)
    s = w.sum(axis=1, keepdims=True)
    # Points beyond the border (no overlap): take the nearest edge voxel.
    empty = s[:, 0] == 0
    if np.any(empty):
        w[empty, np.clip(np.rint(x[empty]).astype(int), 0, n_in - 1)] = 1.0
        s = w.sum(axis=1, keepdims=True)
    return (w / s).astype(np.float32)


def _sample(array: np.ndarray, out_shape, scale, offset, is_label: bool, antialias: bool):
    """Resample the spatial axes: ``out[x] = in[x * scale + offset]``.

    Images: separable linear interpolation as one small matrix product per axis (fast, and with
    antialiasing when downsampling). Labels: nearest neighbour by index (never invents values).
    """
    nd = len(scale)
    if is_label:
        idx = [np.clip(np.floor(np.arange(out_shape[a]) * scale[a] + offset[a] + 0.5).astype(np.int64),
                       0, array.shape[a] - 1) for a in range(nd)]
        return array[np.ix_(*idx)]
    out = array.astype(np.float32, copy=False)
    for a in range(nd):
        if out_shape[a] == array.shape[a] and scale[a] == 1.0 and offset[a] == 0.0:
            continue
        m = _interp_matrix(array.shape[a], int(out_shape[a]), float(scale[a]), float(offset[a]), antialias)
        out = np.moveaxis(np.tensordot(m, out, axes=([1], [a])), 0, a)
    return np.ascontiguousarray(out, dtype=np.float32)


def resample_to_spacing(array: np.ndarray, meta: ImageMeta, spacing: Sequence[float], is_label: bool = False):
    """Resample to ``spacing`` (mm per axis); voxel 0 keeps its world position.

    Images: linear interpolation (with a Gaussian pre-filter when downsampling); labels
    (``is_label=True``, ``[*S]``): nearest neighbour. Returns ``(array, meta)``.
    """
    nd = meta.ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != nd or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be {nd} positive numbers, got {spacing}")
    in_shape = array.shape[:nd]
    scale = [spacing[a] / meta.spacing[a] for a in range(nd)]
    out_shape = [max(int(round(in_shape[a] * meta.spacing[a] / spacing[a])), 1) for a in range(nd)]
    out = _sample(array, out_shape, scale, [0.0] * nd, is_label, True)
    return out, meta.replace(spacing=spacing)


def resize(array: np.ndarray, shape: Sequence[int], is_label: bool = False, antialias: bool = True) -> np.ndarray:
    """Resize the spatial axes to ``shape`` (pixel centres aligned, as ``jax.image.resize``).

    Images ``[*S, C]`` linear; labels ``[*S]`` nearest neighbour. The host form the loaders and prediction use
    on numpy arrays, kept on purpose beside its jittable twin ``kernels.spatial.resize``: it is that op's numpy
    reference (images equal within 1e-5, tests/test_data_readers.py; STYLE 8 and 11).
    """
    nd = len(shape)
    spatial = array.ndim - (0 if is_label else 1)
    if spatial != nd:
        raise ValueError(f"resize: array of shape {array.shape} does not have {nd} spatial axes "
                         f"({'label' if is_label else 'image [*S, C]'})")
    in_shape = array.shape[:nd]
    if tuple(in_shape) == tuple(shape):
        return array
    scale = [in_shape[a] / shape[a] for a in range(nd)]
    offset = [0.5 * scale[a] - 0.5 for a in range(nd)]
    return _sample(array, shape, scale, offset, is_label, antialias)


def resized_meta(meta: ImageMeta, in_shape, out_shape) -> ImageMeta:
    """Geometry after ``resize(in_shape -> out_shape)`` (pixel centres aligned): spacing scales by the
    size ratio and voxel 0 moves to the centre of the first output cell."""
    nd = meta.ndim
    scale = np.asarray([in_shape[a] / out_shape[a] for a in range(nd)], np.float64)
    spacing = np.asarray(meta.spacing) * scale
    shift = meta.direction_matrix @ ((scale - 1.0) / 2.0 * np.asarray(meta.spacing))
    return meta.replace(spacing=tuple(float(v) for v in spacing),
                        origin=tuple(float(v) for v in np.asarray(meta.origin) + shift))


def check_same_geometry(shape_a, meta_a: ImageMeta, shape_b, meta_b: ImageMeta, atol: float = 1e-3) -> None:
    """Raise ``ValueError`` naming both files when two images do not share one voxel grid."""
    name_a, name_b = meta_a.path or "image", meta_b.path or "label"
    nd = meta_a.ndim
    problems = []
    if tuple(shape_a[:nd]) != tuple(shape_b[:nd]):
        problems.append(f"shape {tuple(shape_a[:nd])} vs {tuple(shape_b[:nd])}")
    if not np.allclose(meta_a.spacing, meta_b.spacing, atol=atol):
        problems.append(f"spacing {meta_a.spacing} vs {meta_b.spacing}")
    if not np.allclose(meta_a.origin, meta_b.origin, atol=max(atol, 1e-2)):
        problems.append(f"origin {meta_a.origin} vs {meta_b.origin}")
    if not np.allclose(meta_a.direction_matrix, meta_b.direction_matrix, atol=atol):
        problems.append("direction differs")
    if problems:
        raise ValueError(f"{name_b}: geometry does not match {name_a}: " + "; ".join(problems))


def world_to_voxel(points, meta: ImageMeta) -> np.ndarray:
    """``[N, D]`` LPS world points (mm) -> continuous voxel indices ``[N, D]``."""
    pts = np.atleast_2d(np.asarray(points, np.float64))
    m = meta.direction_matrix * np.asarray(meta.spacing)[None, :]
    return np.linalg.solve(m, (pts - np.asarray(meta.origin)[None, :]).T).T


def voxel_to_world(index, meta: ImageMeta) -> np.ndarray:
    idx = np.atleast_2d(np.asarray(index, np.float64))
    m = meta.direction_matrix * np.asarray(meta.spacing)[None, :]
    return (m @ idx.T).T + np.asarray(meta.origin)[None, :]
