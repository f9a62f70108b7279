"""Inference outputs: per-class NMS, masks pasted back to image size, semantic label map."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.boxes import clip_boxes, decode_boxes
from kernels.nms import nms

__all__ = ["select_detections", "paste_masks", "semantic_map", "BOX_WEIGHTS"]

# Delta weights of the box head (detectron2's ROI_BOX_HEAD.BBOX_REG_WEIGHTS).
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


def select_detections(proposals, proposals_valid, logits, deltas, image_shape, score_threshold: float,
                      nms_threshold: float, max_detections: int, min_size: float = 1e-3):
    """Detections of one image from its box-head outputs.

    ``proposals [P, 4]``, ``logits [P, K]``, ``deltas [P, K, 4]`` → ``boxes [D, 4]``, ``scores [D]``,
    ``classes [D]`` (1..K-1), ``valid [D]``. NMS runs per class (boxes of different classes are
    shifted apart so one NMS call does them all).
    """
    h, w = image_shape
    k = logits.shape[-1]
    probs = jax.nn.softmax(logits, -1)[:, 1:]  # [P, K-1]
    boxes = decode_boxes(proposals[:, None, :], deltas[:, 1:], BOX_WEIGHTS)
    boxes = clip_boxes(boxes, h, w)
    cls = jnp.broadcast_to(jnp.arange(1, k, dtype=jnp.int32), probs.shape)
    size_ok = ((boxes[..., 2] - boxes[..., 0]) > min_size) & ((boxes[..., 3] - boxes[..., 1]) > min_size)
    ok = proposals_valid[:, None] & (probs > score_threshold) & size_ok
    boxes, probs, cls, ok = boxes.reshape(-1, 4), probs.reshape(-1), cls.reshape(-1), ok.reshape(-1)
    offset = (cls.astype(jnp.float32) * float(max(h, w) + 1))[:, None]
    idx, valid = nms(boxes + offset, probs, nms_threshold, max_detections, valid=ok)
    return boxes[idx], jnp.where(valid, probs[idx], 0.0), jnp.where(valid, cls[idx], 0), valid


def _paste_weights(lo, hi, size: int, m: int):
    """Interpolation matrix ``[D, size, m]`` from image pixels to mask cells (bilinear, zero outside)."""
    centres = jnp.arange(size, dtype=jnp.float32) + 0.5
    u = (centres[None, :] - lo[:, None]) / jnp.maximum(hi - lo, 1e-6)[:, None] * m - 0.5
    return jnp.maximum(0.0, 1.0 - jnp.abs(u[..., None] - jnp.arange(m, dtype=jnp.float32)))


def paste_masks(masks, boxes, image_shape):
    """Paste ``masks [D, m, m]`` (probabilities) into their ``boxes [D, 4]`` → ``[D, H, W]``.

    Bilinear sampling with zeros outside the mask grid (``grid_sample(align_corners=False)``,
    what detectron2 does), written as two small matrix products per detection.
    """
    h, w = image_shape
    m = masks.shape[-1]
    wy = _paste_weights(boxes[:, 0], boxes[:, 2], h, m)
    wx = _paste_weights(boxes[:, 1], boxes[:, 3], w, m)
    return jnp.einsum("dhi,dij,dwj->dhw", wy, masks, wx)


def semantic_map(pasted, scores, classes, valid, score_threshold: float, mask_threshold: float):
    """Label map ``[H, W]`` int32: union of the instance masks of each class (overlaps: best score wins)."""
    keep = valid & (scores >= score_threshold)
    on = (pasted >= mask_threshold) & keep[:, None, None]
    s = jnp.where(on, scores[:, None, None], -1.0)
    best = jnp.argmax(s, 0)
    return jnp.where(s.max(0) > -1.0, classes[best], 0).astype(jnp.int32)
