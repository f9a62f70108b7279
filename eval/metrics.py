"""Segmentation metrics: small jittable functions with numpy twins.

Conventions (stated once, used everywhere):
  * Masks are boolean/0-1 arrays ``[*S]``; label maps are integer ``[*S]``.
  * Dice of an empty prediction against an empty target is **NaN** ("not applicable"), so
    per-class means over cases use ``nanmean`` and a case with no such structure does not
    inflate or deflate the score. Pass ``empty_value=1.0`` for the MONAI ``ignore_empty=False``
    convention.
"""

from __future__ import annotations

import numpy as np

__all__ = ["dice", "dice_per_class", "dice_per_class_np"]


def dice_per_class_np(pred: np.ndarray, target: np.ndarray, num_classes: int, empty_value: float = np.nan):
    """Dice per class of one case from integer label maps ``[*S]`` → ``[num_classes]`` (numpy)."""
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    out = np.empty(num_classes, np.float64)
    for k in range(num_classes):
        p, t = pred == k, target == k
        denom = p.sum() + t.sum()
        out[k] = empty_value if denom == 0 else 2.0 * np.logical_and(p, t).sum() / denom
    return out


def dice_per_class(pred, target, num_classes: int, empty_value: float = float("nan")):
    """Jittable Dice per class of one case from integer label maps ``[*S]`` → ``[num_classes]``."""
    import jax.numpy as jnp

    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    k = jnp.arange(num_classes)
    p = pred.reshape(-1)[:, None] == k
    t = target.reshape(-1)[:, None] == k
    inter = jnp.sum(p & t, axis=0).astype(jnp.float32)
    denom = (jnp.sum(p, axis=0) + jnp.sum(t, axis=0)).astype(jnp.float32)
    return jnp.where(denom > 0, 2.0 * inter / jnp.maximum(denom, 1.0), jnp.float32(empty_value))


def dice(pred, target, empty_value: float = float("nan")) -> float:
    """Dice of two binary masks ``[*S]`` (numpy)."""
    pred = np.asarray(pred).astype(bool)
    target = np.asarray(target).astype(bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    denom = pred.sum() + target.sum()
    return float(empty_value) if denom == 0 else float(2.0 * np.logical_and(pred, target).sum() / denom)
