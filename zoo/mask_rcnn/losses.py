"""Mask R-CNN losses with masks for padding (every sum is over valid entries only).

Normalisation follows detectron2: RPN losses divide by the number of sampled anchors, box-head
losses by the number of sampled RoIs, the mask loss by the number of foreground RoIs (all at
least 1, so an image without objects gives finite, background-only losses).
"""

from __future__ import annotations

import jax.numpy as jnp

__all__ = ["rpn_losses", "box_losses", "mask_loss", "smooth_l1"]


def smooth_l1(x, beta: float):
    ax = jnp.abs(x)
    if beta <= 0:
        return ax
    return jnp.where(ax < beta, 0.5 * ax * ax / beta, ax - 0.5 * beta)


def rpn_losses(logits, deltas, pos, neg, target_deltas, beta: float = 0.0):
    """``logits [B, A]``, ``deltas/target_deltas [B, A, 4]``, ``pos/neg [B, A]`` bool → (objectness, box)."""
    import optax  # training only: prediction (every model is registered at import) does not pay for it

    sampled = (pos | neg).astype(jnp.float32)
    n = jnp.maximum(sampled.sum(), 1.0)
    bce = optax.sigmoid_binary_cross_entropy(logits, pos.astype(jnp.float32))
    cls = (bce * sampled).sum() / n
    box = (smooth_l1(deltas - target_deltas, beta).sum(-1) * pos.astype(jnp.float32)).sum() / n
    return cls, box


def box_losses(logits, deltas, classes, valid, foreground, target_deltas, beta: float = 0.0):
    """``logits [N, K]``, ``deltas [N, K, 4]``, ``classes [N]`` → (classification, regression).

    Regression uses the deltas of the ground-truth class of each foreground RoI.
    """
    import optax  # training only: prediction (every model is registered at import) does not pay for it

    v = valid.astype(jnp.float32)
    n = jnp.maximum(v.sum(), 1.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, classes)
    cls = (ce * v).sum() / n
    d = jnp.take_along_axis(deltas, classes[:, None, None], axis=1)[:, 0]
    reg = (smooth_l1(d - target_deltas, beta).sum(-1) * foreground.astype(jnp.float32)).sum() / n
    return cls, reg


def mask_loss(mask_logits, classes, foreground, targets):
    """Per-pixel BCE of the gt-class mask of each foreground RoI: ``mask_logits [N, m, m, K]``, ``targets [N, m, m]``."""
    import optax  # training only: prediction (every model is registered at import) does not pay for it

    lg = jnp.take_along_axis(mask_logits, classes[:, None, None, None], axis=-1)[..., 0]
    bce = optax.sigmoid_binary_cross_entropy(lg, targets.astype(jnp.float32)).mean((1, 2))
    fg = foreground.astype(jnp.float32)
    return (bce * fg).sum() / jnp.maximum(fg.sum(), 1.0)
