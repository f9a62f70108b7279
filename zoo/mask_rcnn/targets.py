"""Ground truth from instance maps and IoU target assignment, all with static shapes under ``jit``.

``gt_from_instances`` turns ``instances [B, H, W]`` (object ids 1..M, 0 = none) and the semantic
``label`` map into at most ``max_instances`` boxes / classes / masks per image plus a validity
mask, so a batch with 0 objects and one with 4 trace to the same program. Ids above
``max_instances`` are ignored.

Samplers pick random subsets with data-dependent sizes but static shapes: candidates are
ranked by a random key and kept while their rank is below the (traced) quota.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from kernels.boxes import box_iou

__all__ = ["gt_from_instances", "match", "sample_quota", "rpn_targets", "roi_targets"]


def gt_from_instances(instances, labels, max_instances: int, num_classes: int):
    """Per-image ground truth from ``instances [B, H, W]`` and ``labels [B, H, W]``.

    Returns ``boxes [B, M, 4]`` (half-open pixel boxes), ``classes [B, M]`` int32 (the most
    frequent foreground label inside the object; 1 when the object has no foreground label),
    ``masks [B, M, H, W]`` bool and ``valid [B, M]`` bool, with ``M = max_instances``.
    """
    if instances.ndim != 3 or labels.shape != instances.shape:
        raise ValueError(f"instances and label must both be [B, H, W]; got {tuple(instances.shape)} "
                         f"and {tuple(labels.shape)}")
    _, h, w = instances.shape
    ids = jnp.arange(1, max_instances + 1, dtype=instances.dtype)
    masks = instances[:, None] == ids[None, :, None, None]
    rows, cols = masks.any(3), masks.any(2)
    valid = rows.any(-1)
    y1 = jnp.argmax(rows, -1)
    y2 = h - jnp.argmax(rows[..., ::-1], -1)
    x1 = jnp.argmax(cols, -1)
    x2 = w - jnp.argmax(cols[..., ::-1], -1)
    boxes = jnp.stack([y1, x1, y2, x2], -1).astype(jnp.float32) * valid[..., None].astype(jnp.float32)
    onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    counts = jnp.einsum("bmhw,bhwk->bmk", masks.astype(jnp.float32), onehot)
    counts = counts.at[..., 0].set(-1.0)
    classes = jnp.where(valid, jnp.argmax(counts, -1), 0).astype(jnp.int32)
    return boxes, classes, masks, valid


def match(boxes, gt_boxes, gt_valid):
    """IoU of every box with every valid gt → ``(max_iou [N], argmax [N], iou [N, M])`` (invalid gt: -1)."""
    iou = jnp.where(gt_valid[None, :], box_iou(boxes, gt_boxes), -1.0)
    return iou.max(-1), jnp.argmax(iou, -1), iou


def sample_quota(key, candidates, quota):
    """Uniformly choose ``min(quota, count)`` of the ``candidates [N]`` (bool) → bool ``[N]``."""
    pri = jnp.where(candidates, jax.random.uniform(key, candidates.shape), -1.0)
    rank = jnp.argsort(jnp.argsort(-pri))
    return candidates & (rank < quota)


def rpn_targets(key, anchors, gt_boxes, gt_valid, batch_size: int, positive_fraction: float,
                fg_iou: float, bg_iou: float):
    """Anchor labels for one image → ``(pos [A], neg [A], matched gt index [A])``.

    Positive: IoU >= ``fg_iou`` or the best anchor of some gt (detectron2's low-quality matches);
    negative: IoU < ``bg_iou``. At most ``batch_size`` anchors are sampled, a ``positive_fraction``
    of them positive at most.
    """
    max_iou, idx, iou = match(anchors, gt_boxes, gt_valid)
    best = iou.max(0)
    low_quality = jnp.any((iou >= best[None, :] - 1e-6) & gt_valid[None, :] & (best[None, :] > 0), axis=1)
    pos = (max_iou >= fg_iou) | low_quality
    neg = (max_iou < bg_iou) & ~pos
    k1, k2 = jax.random.split(key)
    pos = sample_quota(k1, pos, int(batch_size * positive_fraction))
    neg = sample_quota(k2, neg, batch_size - pos.sum())
    return pos, neg, idx


def roi_targets(key, proposals, proposals_valid, gt_boxes, gt_classes, gt_valid, num_rois: int,
                positive_fraction: float, fg_iou: float):
    """Sample ``num_rois`` training RoIs from proposals + gt boxes for one image.

    Returns ``rois [R, 4]``, ``valid [R]``, ``foreground [R]``, ``classes [R]`` (0 = background)
    and ``matched [R]`` (gt index of each RoI). Foreground RoIs (at most
    ``int(num_rois * positive_fraction)``) come first, so a fixed-size prefix holds all of them.
    """
    boxes = jnp.concatenate([proposals, gt_boxes], 0)
    ok = jnp.concatenate([proposals_valid, gt_valid], 0)
    max_iou, idx, _ = match(boxes, gt_boxes, gt_valid)
    fg = ok & (max_iou >= fg_iou)
    bg = ok & ~fg
    k1, k2, k3 = jax.random.split(key, 3)
    fg = sample_quota(k1, fg, int(num_rois * positive_fraction))
    bg = sample_quota(k2, bg, num_rois - fg.sum())
    chosen = fg | bg
    # Chosen boxes first (foreground before background), in random order within each group.
    pri = jnp.where(fg, 2.0, jnp.where(bg, 1.0, 0.0)) + jax.random.uniform(k3, chosen.shape)
    _, sel = jax.lax.top_k(pri, num_rois)
    fg_sel = fg[sel]
    classes = jnp.where(fg_sel, gt_classes[idx[sel]], 0)
    return boxes[sel], chosen[sel], fg_sel, classes, idx[sel]
