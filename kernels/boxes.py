"""Axis-aligned 2D boxes: IoU, delta encoding, clipping, anchors.

Boxes are ``[..., 4]`` float ``(y1, x1, y2, x2)`` in pixels, half-open like a slice: a box
covering rows ``r0..r1-1`` and columns ``c0..c1-1`` is ``(r0, c0, r1, c1)``, so its height is
``y2 - y1`` (detectron2 / torchvision convention without the legacy "+1").

Deltas are ``(dy, dx, dh, dw)`` as in Faster R-CNN: centre offsets in units of the reference
box size, log size ratios, each divided by ``weights``.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["box_area", "box_iou", "box_iou_np", "encode_boxes", "decode_boxes", "clip_boxes", "make_anchors",
           "DEFAULT_SCALE_CLAMP"]

# Largest log size ratio a decoded delta may have (detectron2: log(1000 / 16)); keeps exp finite.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def _check_boxes(name, boxes):
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"{name} must be [..., 4] (y1, x1, y2, x2); got shape {tuple(boxes.shape)}")


def box_area(boxes):
    """Area of ``[..., 4]`` boxes (0 for degenerate ones)."""
    _check_boxes("boxes", boxes)
    h = jnp.maximum(boxes[..., 2] - boxes[..., 0], 0.0)
    w = jnp.maximum(boxes[..., 3] - boxes[..., 1], 0.0)
    return h * w


def box_iou(a, b):
    """Pairwise IoU ``[N, 4] x [M, 4] -> [N, M]`` (0 where the union is empty)."""
    _check_boxes("a", a)
    _check_boxes("b", b)
    tl = jnp.maximum(a[:, None, :2], b[None, :, :2])
    br = jnp.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = jnp.maximum(br - tl, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return jnp.where(union > 0, inter / jnp.where(union > 0, union, 1.0), 0.0)


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Numpy twin of :func:`box_iou` (float64), written with loops as the obvious reference."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    out = np.zeros((len(a), len(b)))
    for i, p in enumerate(a):
        for j, q in enumerate(b):
            ih = max(min(p[2], q[2]) - max(p[0], q[0]), 0.0)
            iw = max(min(p[3], q[3]) - max(p[1], q[1]), 0.0)
            inter = ih * iw
            union = max(p[2] - p[0], 0) * max(p[3] - p[1], 0) + max(q[2] - q[0], 0) * max(q[3] - q[1], 0) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def encode_boxes(reference, target, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)):
    """Deltas ``(dy, dx, dh, dw)`` taking ``reference`` boxes to ``target`` boxes (same shape ``[..., 4]``)."""
    _check_boxes("reference", reference)
    _check_boxes("target", target)
    rh = jnp.maximum(reference[..., 2] - reference[..., 0], 1e-6)
    rw = jnp.maximum(reference[..., 3] - reference[..., 1], 1e-6)
    ry = reference[..., 0] + 0.5 * rh
    rx = reference[..., 1] + 0.5 * rw
    th = jnp.maximum(target[..., 2] - target[..., 0], 1e-6)
    tw = jnp.maximum(target[..., 3] - target[..., 1], 1e-6)
    ty = target[..., 0] + 0.5 * th
    tx = target[..., 1] + 0.5 * tw
    wy, wx, wh, ww = weights
    return jnp.stack([wy * (ty - ry) / rh, wx * (tx - rx) / rw, wh * jnp.log(th / rh), ww * jnp.log(tw / rw)], -1)


def decode_boxes(reference, deltas, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
                 scale_clamp: float = DEFAULT_SCALE_CLAMP):
    """Inverse of :func:`encode_boxes`; log size ratios are clamped to ``scale_clamp`` first."""
    _check_boxes("reference", reference)
    _check_boxes("deltas", deltas)
    rh = reference[..., 2] - reference[..., 0]
    rw = reference[..., 3] - reference[..., 1]
    ry = reference[..., 0] + 0.5 * rh
    rx = reference[..., 1] + 0.5 * rw
    wy, wx, wh, ww = weights
    dy, dx = deltas[..., 0] / wy, deltas[..., 1] / wx
    dh = jnp.minimum(deltas[..., 2] / wh, scale_clamp)
    dw = jnp.minimum(deltas[..., 3] / ww, scale_clamp)
    cy, cx = ry + dy * rh, rx + dx * rw
    h, w = rh * jnp.exp(dh), rw * jnp.exp(dw)
    return jnp.stack([cy - 0.5 * h, cx - 0.5 * w, cy + 0.5 * h, cx + 0.5 * w], -1)


def clip_boxes(boxes, height, width):
    """Clip ``[..., 4]`` boxes to the image ``[0, height] x [0, width]``."""
    _check_boxes("boxes", boxes)
    y = jnp.clip(boxes[..., 0::2], 0.0, height)
    x = jnp.clip(boxes[..., 1::2], 0.0, width)
    return jnp.stack([y[..., 0], x[..., 0], y[..., 1], x[..., 1]], -1)


def make_anchors(feature_shape: Sequence[int], stride: int, sizes: Sequence[float],
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> np.ndarray:
    """Anchors of one feature level, ``[h * w * A, 4]`` float32 (numpy: static under ``jit``).

    Ordered position-major then anchor (the layout of a ``[h, w, A]`` prediction map reshaped
    to ``[h * w * A]``); anchor ``a`` enumerates ``sizes x aspect_ratios`` with ratio = h / w
    and area ``size**2``; centres sit at ``(i + 0.5) * stride``.
    """
    if len(feature_shape) != 2 or min(feature_shape) < 1:
        raise ValueError(f"feature_shape must be (h, w) with positive sizes, got {tuple(feature_shape)}")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if not sizes or min(sizes) <= 0 or not aspect_ratios or min(aspect_ratios) <= 0:
        raise ValueError(f"sizes and aspect_ratios must be positive, got {tuple(sizes)}, {tuple(aspect_ratios)}")
    shapes = []
    for s in sizes:
        for r in aspect_ratios:
            w = s / math.sqrt(r)
            shapes.append((s * s / w, w))  # (h, w) with h / w = r, h * w = s^2
    shapes = np.asarray(shapes, np.float64)
    h, w = feature_shape
    cy, cx = np.meshgrid((np.arange(h) + 0.5) * stride, (np.arange(w) + 0.5) * stride, indexing="ij")
    c = np.stack([cy, cx], -1).reshape(-1, 1, 2)
    half = shapes[None] / 2
    return np.concatenate([c - half, c + half], -1).reshape(-1, 4).astype(np.float32)
