"""Segmentation losses on logits ``[B, *S, K]`` and integer labels ``[B, *S]``.

Soft Dice/Jaccard/Tversky are computed over the whole batch per class (nnU-Net's "batch
Dice"), then averaged over the foreground classes (class 0 excluded when ``K > 1``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["cross_entropy", "dice_loss", "dice_ce", "jaccard_loss", "focal_loss", "tversky_loss",
           "get_loss", "LOSSES"]


def _check(logits, labels):
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be labels {tuple(labels.shape)} + [K]")


def cross_entropy(logits, labels, class_weights=None):
    _check(logits, labels)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if class_weights is None:
        return ce.mean()
    w = jnp.asarray(class_weights, jnp.float32)[labels]
    return (ce * w).sum() / jnp.maximum(w.sum(), 1e-6)


def _soft_counts(logits, labels):
    k = logits.shape[-1]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).reshape(-1, k)
    onehot = jax.nn.one_hot(labels.reshape(-1), k, dtype=jnp.float32)
    tp = (probs * onehot).sum(0)
    fp = (probs * (1 - onehot)).sum(0)
    fn = ((1 - probs) * onehot).sum(0)
    return tp, fp, fn


def _foreground_mean(per_class):
    return per_class[1:].mean() if per_class.shape[0] > 1 else per_class.mean()


def dice_loss(logits, labels, smooth: float = 1e-5):
    _check(logits, labels)
    tp, fp, fn = _soft_counts(logits, labels)
    return 1.0 - _foreground_mean((2 * tp + smooth) / (2 * tp + fp + fn + smooth))


def jaccard_loss(logits, labels, smooth: float = 1e-5):
    _check(logits, labels)
    tp, fp, fn = _soft_counts(logits, labels)
    return 1.0 - _foreground_mean((tp + smooth) / (tp + fp + fn + smooth))


def tversky_loss(logits, labels, alpha: float = 0.3, beta: float = 0.7, smooth: float = 1e-5):
    _check(logits, labels)
    tp, fp, fn = _soft_counts(logits, labels)
    return 1.0 - _foreground_mean((tp + smooth) / (tp + alpha * fp + beta * fn + smooth))


def focal_loss(logits, labels, gamma: float = 2.0):
    _check(logits, labels)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logp_t = jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]
    return (-((1 - jnp.exp(logp_t)) ** gamma) * logp_t).mean()


def dice_ce(logits, labels):
    return dice_loss(logits, labels) + cross_entropy(logits, labels)


LOSSES = {
    "ce": cross_entropy,
    "dice": dice_loss,
    "dice_ce": dice_ce,
    "jaccard": jaccard_loss,
    "focal": focal_loss,
    "tversky": tversky_loss,
}


def get_loss(name: str):
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {sorted(LOSSES)}")
    return LOSSES[name]
