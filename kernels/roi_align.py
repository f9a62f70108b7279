"""RoIAlign (Mask R-CNN, He et al. 2017) with torchvision / detectron2 ``aligned=True`` semantics.

Each box is split into ``output_size`` bins; each bin averages ``sampling_ratio**2`` bilinear
samples at regularly spaced points. With ``aligned=True`` a box coordinate ``c`` (pixels of the
image, scaled by ``spatial_scale`` onto the feature map) is shifted by -0.5 so that pixel
centres sit at integer feature coordinates. Samples more than one pixel outside the map
contribute 0; samples within one pixel are clamped to the border (as torchvision does).

``sampling_ratio`` must be a positive int: torchvision's adaptive ``sampling_ratio=0`` depends on
each box's size, which would make the shapes data-dependent under ``jit``.

The implementation is a flat-index gather of the four bilinear neighbours of every sample
(``[N, oh * s, ow * s]`` points), so its gradient w.r.t. the features is a scatter-add and the cost
does not depend on the feature map size. :func:`roi_align_np` is the loop reference.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["roi_align", "roi_align_np"]


def _check(features, boxes, output_size, sampling_ratio):
    if features.ndim != 3:
        raise ValueError(f"features must be [H, W, C]; got shape {tuple(features.shape)}")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4] (y1, x1, y2, x2); got shape {tuple(boxes.shape)}")
    out = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if len(out) != 2 or min(out) < 1:
        raise ValueError(f"output_size must be a positive int or (h, w), got {output_size!r}")
    if not isinstance(sampling_ratio, (int, np.integer)) or sampling_ratio < 1:
        raise ValueError(f"sampling_ratio must be a positive int (adaptive 0 is not static under jit), "
                         f"got {sampling_ratio!r}")
    return out


def _axis_samples(start, bin_size, n_bins, ratio, size):
    """Sample positions along one axis → (low index, high index, high weight, valid) ``[N, n_bins*ratio]``."""
    k = jnp.arange(n_bins * ratio, dtype=jnp.float32)
    pos = start[:, None] + (k[None] // ratio + ((k[None] % ratio) + 0.5) / ratio) * bin_size[:, None]
    valid = (pos >= -1.0) & (pos <= size)
    pos = jnp.maximum(pos, 0.0)
    low = jnp.floor(pos).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.minimum(low, size - 1)
    high = jnp.where(at_edge, low, low + 1)
    frac = jnp.where(at_edge, 0.0, pos - low.astype(jnp.float32))
    return low, high, frac, valid


def roi_align(features, boxes, output_size: int | Sequence[int] = 7, sampling_ratio: int = 2,
              spatial_scale: float = 1.0, aligned: bool = True):
    """Pool ``features [H, W, C]`` inside ``boxes [N, 4]`` (y1, x1, y2, x2) → ``[N, oh, ow, C]``.

    Args:
      features: one feature map, channels-last.
      boxes: boxes in image pixels; multiplied by ``spatial_scale`` (1 / stride of the map).
      output_size: bins per box, int or ``(oh, ow)``.
      sampling_ratio: samples per bin along each axis (static, >= 1).
      aligned: shift by -0.5 pixel (``True``, detectron2 default) or the legacy Mask R-CNN
        behaviour (``False``: no shift, boxes at least one pixel wide).
    """
    oh, ow = _check(features, boxes, output_size, sampling_ratio)
    h, w, c = features.shape
    s = int(sampling_ratio)
    dtype = features.dtype
    b = boxes.astype(jnp.float32) * spatial_scale - (0.5 if aligned else 0.0)
    bh, bw = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    if not aligned:
        bh, bw = jnp.maximum(bh, 1.0), jnp.maximum(bw, 1.0)
    y0, y1, fy, vy = _axis_samples(b[:, 0], bh / oh, oh, s, h)
    x0, x1, fx, vx = _axis_samples(b[:, 1], bw / ow, ow, s, w)
    flat = features.reshape(h * w, c)

    def tap(yi, xi):
        idx = yi[:, :, None] * w + xi[:, None, :]  # [N, oh*s, ow*s]
        return jnp.take(flat, idx.reshape(-1), axis=0).reshape(idx.shape + (c,))

    fy_, fx_ = fy[:, :, None, None].astype(dtype), fx[:, None, :, None].astype(dtype)
    val = ((1 - fy_) * ((1 - fx_) * tap(y0, x0) + fx_ * tap(y0, x1))
           + fy_ * ((1 - fx_) * tap(y1, x0) + fx_ * tap(y1, x1)))
    mask = (vy[:, :, None] & vx[:, None, :]).astype(dtype)[..., None]
    val = val * mask
    n = boxes.shape[0]
    return val.reshape(n, oh, s, ow, s, c).mean(axis=(2, 4))


def _bilinear_np(f, y, x):
    h, w = f.shape[:2]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(f.shape[2], np.float64)
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(np.floor(y)), int(np.floor(x))
    if yl >= h - 1:
        yh = yl = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xh = xl = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    return ((1 - ly) * (1 - lx) * f[yl, xl] + (1 - ly) * lx * f[yl, xh]
            + ly * (1 - lx) * f[yh, xl] + ly * lx * f[yh, xh])


def roi_align_np(features, boxes, output_size=7, sampling_ratio=2, spatial_scale=1.0, aligned=True):
    """Loop reference of :func:`roi_align` (float64), a transcription of torchvision's CPU kernel."""
    f = np.asarray(features, np.float64)
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    out = np.zeros((len(boxes), oh, ow, f.shape[2]))
    off = 0.5 if aligned else 0.0
    for n, box in enumerate(np.asarray(boxes, np.float64)):
        y1, x1, y2, x2 = box * spatial_scale - off
        rh, rw = y2 - y1, x2 - x1
        if not aligned:
            rh, rw = max(rh, 1.0), max(rw, 1.0)
        bh, bw = rh / oh, rw / ow
        for i in range(oh):
            for j in range(ow):
                acc = np.zeros(f.shape[2])
                for iy in range(sampling_ratio):
                    y = y1 + i * bh + (iy + 0.5) * bh / sampling_ratio
                    for ix in range(sampling_ratio):
                        x = x1 + j * bw + (ix + 0.5) * bw / sampling_ratio
                        acc += _bilinear_np(f, y, x)
                out[n, i, j] = acc / sampling_ratio ** 2
    return out
