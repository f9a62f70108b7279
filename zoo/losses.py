"""Segmentation losses on logits ``[B, *S, K]`` and integer labels ``[B, *S]``.

Soft Dice/Jaccard/Tversky are computed over the whole batch per class (nnU-Net's "batch
Dice"), then averaged over the foreground classes (class 0 excluded when ``K > 1``).

Losses are named in configs by a string; parameters go in parentheses, e.g. ``"focal(gamma=3)"``,
``"tversky(alpha=0.5, beta=0.5)"``, ``"weighted_ce(class_weights=(0.1, 1, 1, 1))"``. A plain
``"weighted_ce"`` weights each class by its inverse frequency in the batch.
"""

from __future__ import annotations

import ast
import functools

import jax
import jax.numpy as jnp

__all__ = ["cross_entropy", "weighted_cross_entropy", "dice_loss", "dice_ce", "jaccard_loss", "focal_loss",
           "tversky_loss", "get_loss", "parse_loss", "LOSSES"]


def _check(logits, labels):
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} must be labels {tuple(labels.shape)} + [K]")


def _log_prob_of_label(logits, labels):
    """``log softmax(logits)[label]`` through a one-hot product, not a gather: a gather's gradient is a
    scatter-add, which XLA:CPU spent seconds constant-folding when compiling a 3D train step."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.sum(logp * jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32), axis=-1)


def cross_entropy(logits, labels, class_weights=None):
    _check(logits, labels)
    ce = -_log_prob_of_label(logits, labels)
    if class_weights is None:
        return ce.mean()
    w = jnp.asarray(class_weights, jnp.float32)[labels]
    return (ce * w).sum() / jnp.maximum(w.sum(), 1e-6)


def weighted_cross_entropy(logits, labels, class_weights=None):
    """CE weighted per class; ``class_weights=None``: inverse class frequency in this batch (classes
    absent from the batch get no weight), normalised so the weights of present classes average to 1."""
    _check(logits, labels)
    if class_weights is not None:
        if len(class_weights) != logits.shape[-1]:
            raise ValueError(f"class_weights has {len(class_weights)} entries for {logits.shape[-1]} classes")
        return cross_entropy(logits, labels, class_weights)
    k = logits.shape[-1]
    counts = jnp.bincount(labels.reshape(-1), length=k).astype(jnp.float32)
    present = counts > 0
    inv = jnp.where(present, 1.0 / jnp.maximum(counts, 1.0), 0.0)
    w = jax.lax.stop_gradient(inv * present.sum().astype(jnp.float32) / jnp.maximum(inv.sum(), 1e-12))
    return cross_entropy(logits, labels, w)


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
    logp_t = _log_prob_of_label(logits, labels)
    return (-((1 - jnp.exp(logp_t)) ** gamma) * logp_t).mean()


def dice_ce(logits, labels, dice_weight: float = 1.0, ce_weight: float = 1.0):
    return dice_weight * dice_loss(logits, labels) + ce_weight * cross_entropy(logits, labels)


LOSSES = {
    "ce": cross_entropy,
    "weighted_ce": weighted_cross_entropy,
    "dice": dice_loss,
    "dice_ce": dice_ce,
    "jaccard": jaccard_loss,
    "focal": focal_loss,
    "tversky": tversky_loss,
}


def parse_loss(spec: str) -> tuple[str, dict]:
    """``"tversky(alpha=0.5, beta=0.5)"`` → ``("tversky", {"alpha": 0.5, "beta": 0.5})``."""
    if not isinstance(spec, str):
        raise ValueError(f"loss must be a string such as 'dice_ce' or 'focal(gamma=3)', got {spec!r}")
    spec = spec.strip()
    if "(" not in spec:
        return spec, {}
    if not spec.endswith(")"):
        raise ValueError(f"loss {spec!r}: expected NAME(key=value, ...)")
    name = spec[:spec.index("(")].strip()
    try:
        call = ast.parse(f"f{spec[spec.index('('):]}", mode="eval").body
        if call.args:
            raise ValueError("positional arguments")
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}
    except (SyntaxError, ValueError) as e:
        raise ValueError(f"loss {spec!r}: expected NAME(key=literal, ...) ({e})") from None
    return name, kwargs


def get_loss(name: str):
    """Loss function ``(logits, labels) -> scalar`` for a name, optionally with parameters (see module doc)."""
    base, kwargs = parse_loss(name)
    if base not in LOSSES:
        raise ValueError(f"unknown loss {base!r}; expected one of {sorted(LOSSES)}")
    fn = LOSSES[base]
    if not kwargs:
        return fn
    import inspect

    accepted = set(list(inspect.signature(fn).parameters)[2:])
    bad = sorted(set(kwargs) - accepted)
    if bad:
        raise ValueError(f"loss {base!r} got unknown parameter(s) {bad}; it accepts {sorted(accepted)}")
    if "class_weights" in kwargs:
        kwargs["class_weights"] = tuple(float(w) for w in kwargs["class_weights"])
    return functools.partial(fn, **kwargs)
