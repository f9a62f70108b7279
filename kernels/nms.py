"""Greedy non-maximum suppression with static shapes (jittable, vmappable).

Greedy NMS keeps box ``j`` (in descending score order) iff no *kept* box before it overlaps it
by more than the threshold. That rule is a fixed point ``keep = f(keep)`` where entry ``j``
depends only on entries before it, so iterating ``f`` from "keep everything" is exact after at
most ``N`` rounds and in practice after a few (each round fixes at least one more prefix
entry). Each round is one ``[N, N]`` masked reduction, run in a ``lax.while_loop`` — no Python
loop over boxes, no data-dependent shapes. :func:`nms_np` is the textbook loop reference.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kernels.boxes import box_iou

__all__ = ["nms", "nms_np"]


def nms(boxes, scores, iou_threshold: float, max_outputs: int, valid=None):
    """Indices of the boxes greedy NMS keeps, best first, padded to ``max_outputs``.

    Args:
      boxes: ``[N, 4]`` (y1, x1, y2, x2).
      scores: ``[N]``; non-finite scores (and ``valid == False``) never count as boxes.
      iou_threshold: a box is suppressed by a kept, higher-scoring box with IoU ``>`` this.
      max_outputs: static length of the result.
      valid: optional ``[N]`` bool of boxes that take part.

    Returns:
      ``(indices [max_outputs] int32, valid [max_outputs] bool)``; padded slots hold index 0
      and ``valid == False``. Ties in score keep the lower index first.
    """
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [N, 4]; got shape {tuple(boxes.shape)}")
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"scores must be [N] = [{boxes.shape[0]}]; got shape {tuple(scores.shape)}")
    if not isinstance(max_outputs, (int, np.integer)) or max_outputs < 1:
        raise ValueError(f"max_outputs must be a positive int, got {max_outputs!r}")
    n = boxes.shape[0]
    ok = jnp.isfinite(scores)
    if valid is not None:
        ok = ok & valid
    order = jnp.argsort(jnp.where(ok, -scores, jnp.inf), stable=True)
    b = boxes[order]
    ok = ok[order]
    iou = box_iou(b, b)
    earlier = jnp.arange(n)[:, None] < jnp.arange(n)[None, :]
    suppresses = (iou > iou_threshold) & earlier & ok[:, None]  # [i, j]: i may suppress j

    def step(state):
        keep, _ = state
        new = ok & ~jnp.any(suppresses & keep[:, None], axis=0)
        return new, jnp.any(new != keep)

    keep, _ = jax.lax.while_loop(lambda s: s[1], step, (ok, jnp.array(True)))
    # Kept entries first (stable: still in score order), then pad.
    pos = jnp.argsort(jnp.where(keep, 0, 1), stable=True)
    if max_outputs > n:
        pos = jnp.concatenate([pos, jnp.zeros(max_outputs - n, pos.dtype)])
        sel_valid = jnp.concatenate([keep[pos[:n]], jnp.zeros(max_outputs - n, bool)])
    else:
        pos = pos[:max_outputs]
        sel_valid = keep[pos]
    idx = jnp.where(sel_valid, order[pos], 0).astype(jnp.int32)
    return idx, sel_valid


def nms_np(boxes, scores, iou_threshold: float, max_outputs: int):
    """Loop reference: kept indices (best first, at most ``max_outputs``) as an int array."""
    from kernels.boxes import box_iou_np

    boxes = np.asarray(boxes, np.float64)
    scores = np.asarray(scores, np.float64)
    order = [i for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]
    keep = []
    while order and len(keep) < max_outputs:
        i = order.pop(0)
        keep.append(i)
        if order:
            ious = box_iou_np(boxes[i:i + 1], boxes[order])[0]
            order = [j for j, v in zip(order, ious) if v <= iou_threshold]
    return np.asarray(keep, np.int64)
