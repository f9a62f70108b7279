"""Sliding-window inference for volumes larger than the training patch (MONAI-style).

``sliding_window_inference(predict_fn, image [B, *S, C], roi_size, overlap=0.5, mode="gaussian",
batch_size=4) -> [B, *S, K]``: the image is padded (symmetrically, with ``pad_value``) up to
``roi_size`` where it is smaller, tiled with windows whose starts step by ``roi * (1 - overlap)``
(the last window flush with the far edge), ``predict_fn`` runs on stacks of ``batch_size``
windows inside one ``lax.scan`` (so the loop is compiled once), and overlapping predictions are
blended with a Gaussian (``sigma = sigma_scale * roi``) or constant importance map.
Window positions and the normalising weight map depend only on static shapes and are computed
with numpy at trace time.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sliding_window_inference", "window_starts", "importance_map"]

MODES = ("gaussian", "constant")


def _roi(roi_size, d: int) -> tuple:
    if isinstance(roi_size, (int, np.integer)):
        roi_size = (int(roi_size),) * d
    roi = tuple(int(r) for r in roi_size)
    if len(roi) != d or any(r < 1 for r in roi):
        raise ValueError(f"roi_size must be {d} positive ints (one per spatial dim); got {roi_size!r}")
    return roi


def window_starts(spatial: Sequence[int], roi: Sequence[int], overlap: float) -> np.ndarray:
    """Window start indices ``[W, D]`` covering ``spatial`` (each axis already >= roi)."""
    per_axis = []
    for n, r in zip(spatial, roi):
        step = max(int(r * (1.0 - overlap)), 1)
        count = int(math.ceil(max(n - r, 0) / step)) + 1
        starts = sorted({min(i * step, n - r) for i in range(count)})
        per_axis.append(starts)
    grids = np.meshgrid(*per_axis, indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int32)


def importance_map(roi: Sequence[int], mode: str = "gaussian", sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights ``[*roi]`` (max 1): a separable Gaussian centred on the window, or ones."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if mode == "constant":
        return np.ones(tuple(roi), np.float32)
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be positive; got {sigma_scale!r}")
    w = np.ones((), np.float64)
    for r in roi:
        x = np.arange(r) - (r - 1) / 2.0
        g = np.exp(-0.5 * (x / (sigma_scale * r)) ** 2)
        w = np.multiply.outer(w, g)
    w = w / w.max()
    # Keep every voxel's weight positive so voxels seen by a single window edge still normalise.
    return np.maximum(w, 1e-6).astype(np.float32)


def sliding_window_inference(predict_fn: Callable, image, roi_size, overlap: float = 0.5,
                             mode: str = "gaussian", batch_size: int = 4, sigma_scale: float = 0.125,
                             pad_value: float = 0.0):
    """Blend ``predict_fn([batch_size, *roi, C]) -> [batch_size, *roi, K]`` over windows of ``image
    [B, *S, C]``; returns ``[B, *S, K]`` float32. Jittable (wrap the call in ``jax.jit``)."""
    shape = tuple(np.shape(image))
    if len(shape) not in (4, 5):
        raise ValueError(f"image must be [B, *S, C] with 2 or 3 spatial dims (rank 4 or 5); got shape {shape}")
    d = len(shape) - 2
    roi = _roi(roi_size, d)
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    image = jnp.asarray(image)
    b, spatial, c = shape[0], shape[1:-1], shape[-1]

    pads = [(max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(spatial, roi)]
    if any(p != (0, 0) for p in pads):
        image = jnp.pad(image, [(0, 0)] + pads + [(0, 0)], constant_values=pad_value)
    padded = tuple(image.shape[1:-1])

    starts = window_starts(padded, roi, overlap)
    weights = importance_map(roi, mode, sigma_scale)
    norm = np.zeros(padded, np.float64)
    for s in starts:
        norm[tuple(slice(a, a + r) for a, r in zip(s, roi))] += weights
    inv_norm = (1.0 / norm).astype(np.float32)

    # Every (batch element, window) pair, padded to whole groups of batch_size with no-op entries.
    n_win = len(starts)
    total = b * n_win
    groups = -(-total // batch_size)
    pad_n = groups * batch_size - total
    bidx = np.concatenate([np.repeat(np.arange(b), n_win), np.zeros(pad_n, int)]).astype(np.int32)
    wst = np.concatenate([np.tile(starts, (b, 1)), np.zeros((pad_n, d), np.int32)]).astype(np.int32)
    valid = np.concatenate([np.ones(total), np.zeros(pad_n)]).astype(np.float32)

    patch_struct = jax.ShapeDtypeStruct((batch_size, *roi, c), image.dtype)
    out_struct = jax.eval_shape(predict_fn, patch_struct)
    out_shape = tuple(out_struct.shape)
    if len(out_shape) != d + 2 or out_shape[:-1] != (batch_size, *roi):
        raise ValueError(f"predict_fn must map [{batch_size}, *{roi}, C] to [{batch_size}, *{roi}, K]; "
                         f"got output shape {out_shape}")
    k = out_shape[-1]
    w = jnp.asarray(weights)[None, ..., None]

    def take(bi, st):
        return jax.lax.dynamic_slice(image, [bi, *[st[a] for a in range(d)], jnp.int32(0)], (1, *roi, c))[0]

    def step(acc, xs):
        bi, st, ok = xs
        patches = jax.vmap(take)(bi, st)
        pred = predict_fn(patches).astype(jnp.float32) * w * ok.reshape((-1,) + (1,) * (d + 1))

        def add(i, acc):
            idx = [bi[i], *[st[i, a] for a in range(d)], jnp.int32(0)]
            cur = jax.lax.dynamic_slice(acc, idx, (1, *roi, k))
            return jax.lax.dynamic_update_slice(acc, cur + pred[i][None], idx)

        return jax.lax.fori_loop(0, batch_size, add, acc), None

    acc0 = jnp.zeros((b, *padded, k), jnp.float32)
    xs = (jnp.asarray(bidx.reshape(groups, batch_size)), jnp.asarray(wst.reshape(groups, batch_size, d)),
          jnp.asarray(valid.reshape(groups, batch_size)))
    acc, _ = jax.lax.scan(step, acc0, xs)
    out = acc * jnp.asarray(inv_norm)[None, ..., None]
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial))
    return out[(slice(None),) + crop + (slice(None),)]
