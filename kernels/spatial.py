"""Spatial preprocessing of one sample ``image [*S, C]`` (+ ``label [*S]``): resize, crop/pad, foreground crop.

Every function returns ``(image, label)`` (label None when not given). All are jittable except
:func:`crop_to_foreground`, whose output shape depends on the data (use :func:`foreground_bbox`,
which is jittable, plus a fixed-size crop inside ``jit``).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kernels.geometry import check_sample

__all__ = ["resize", "pad_to", "center_crop_or_pad", "random_crop_or_pad", "crop", "foreground_bbox",
           "crop_to_foreground"]


def _size(size, d: int, name: str = "size") -> tuple:
    if isinstance(size, (int, np.integer)):
        size = (int(size),) * d
    size = tuple(int(s) for s in size)
    if len(size) != d or any(s < 1 for s in size):
        raise ValueError(f"{name} must be {d} positive ints (one per spatial dim); got {size}")
    return size


def resize(image, size, label=None, antialias: bool = True):
    """Resize to ``size`` (an int or one int per spatial dim): linear for the image (``jax.image.resize``,
    half-pixel centres), nearest for the label."""
    d = check_sample(image, label)
    size = _size(size, d)
    image = jnp.asarray(image)
    out = jax.image.resize(image, (*size, image.shape[-1]), "linear", antialias=antialias).astype(image.dtype)
    out_label = None
    if label is not None:
        out_label = jax.image.resize(jnp.asarray(label), size, "nearest").astype(jnp.asarray(label).dtype)
    return out, out_label


def pad_to(image, size, label=None, value: float = 0.0):
    """Pad (symmetrically, extra voxel after) each spatial axis up to at least ``size``; never crops."""
    d = check_sample(image, label)
    size = _size(size, d)
    pads = []
    for n, s in zip(image.shape[:-1], size):
        extra = max(s - n, 0)
        pads.append((extra // 2, extra - extra // 2))
    image = jnp.pad(jnp.asarray(image), pads + [(0, 0)], constant_values=value)
    if label is not None:
        label = jnp.pad(jnp.asarray(label), pads)
    return image, label


def crop(image, start, size, label=None):
    """Crop a ``size`` window at ``start`` (ints or traced int array; clamped to stay inside)."""
    d = check_sample(image, label)
    size = _size(size, d)
    if any(s > n for s, n in zip(size, image.shape[:-1])):
        raise ValueError(f"size {size} exceeds the image spatial shape {tuple(image.shape[:-1])}; pad first")
    start = jnp.asarray(start, jnp.int32).reshape(d)
    idx = [start[a] for a in range(d)]
    image = jax.lax.dynamic_slice(jnp.asarray(image), idx + [jnp.int32(0)], (*size, image.shape[-1]))
    if label is not None:
        label = jax.lax.dynamic_slice(jnp.asarray(label), idx, size)
    return image, label


def center_crop_or_pad(image, size, label=None):
    """Pad to at least ``size`` then take the central ``size`` window."""
    d = check_sample(image, label)
    size = _size(size, d)
    image, label = pad_to(image, size, label)
    start = [(n - s) // 2 for n, s in zip(image.shape[:-1], size)]
    return crop(image, start, size, label)


def random_crop_or_pad(key, image, size, label=None):
    """Pad to at least ``size`` then take a uniformly random ``size`` window."""
    d = check_sample(image, label)
    size = _size(size, d)
    image, label = pad_to(image, size, label)
    high = jnp.asarray([n - s + 1 for n, s in zip(image.shape[:-1], size)], jnp.int32)
    start = jax.random.randint(key, (d,), 0, high)
    return crop(image, start, size, label)


def foreground_bbox(mask, margin: int | Sequence[int] = 0):
    """Bounding box ``(lo, hi)`` (int32 ``[D]`` each, ``hi`` exclusive) of ``mask != 0`` grown by
    ``margin`` voxels and clipped to the array; the whole array when the mask is empty. Jittable."""
    mask = jnp.asarray(mask) != 0
    d = mask.ndim
    margin = jnp.broadcast_to(jnp.asarray(margin, jnp.int32), (d,))
    lo, hi = [], []
    for a, n in enumerate(mask.shape):
        any_ = jnp.any(mask, axis=tuple(b for b in range(d) if b != a))
        idx = jnp.arange(n, dtype=jnp.int32)
        first = jnp.min(jnp.where(any_, idx, n))
        last = jnp.max(jnp.where(any_, idx, -1))
        empty = last < 0
        lo.append(jnp.where(empty, 0, jnp.maximum(first - margin[a], 0)))
        hi.append(jnp.where(empty, n, jnp.minimum(last + 1 + margin[a], n)))
    return jnp.stack(lo).astype(jnp.int32), jnp.stack(hi).astype(jnp.int32)


def crop_to_foreground(image, label=None, mask=None, margin: int | Sequence[int] = 0):
    """Crop to the bounding box of ``mask`` (default: ``label != 0``; else ``image`` nonzero in any
    channel) grown by ``margin``. Not jittable (the output shape depends on the data)."""
    check_sample(image, label)
    if mask is None:
        mask = label if label is not None else jnp.any(jnp.asarray(image) != 0, axis=-1)
    if tuple(np.shape(mask)) != tuple(image.shape[:-1]):
        raise ValueError(f"mask must have the spatial shape of image {tuple(image.shape[:-1])}; "
                         f"got shape {tuple(np.shape(mask))}")
    lo, hi = (np.asarray(v) for v in foreground_bbox(mask, margin))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return jnp.asarray(image)[sl], (None if label is None else jnp.asarray(label)[sl])
