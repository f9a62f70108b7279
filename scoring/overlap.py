"""Overlap metrics of binary masks and label maps: confusion counts, Dice & co., confusion matrices.

Conventions:
  * Masks are boolean/0-1 arrays ``[*S]``; label maps are integer ``[*S]``. Binary-mask
    metrics accept bool, integer 0/1, or float probabilities in ``[0, 1]`` (thresholded at
    ``threshold``, default 0.5). Shape mismatch, NaN, probabilities outside ``[0, 1]`` and
    integers other than 0/1 raise ``ValueError``.
  * Dice of an empty prediction against an empty target is **NaN** ("not applicable"), so
    per-class means over cases use ``nanmean`` and a case with no such structure does not
    inflate or deflate the score. Pass ``empty_value=1.0`` for the MONAI ``ignore_empty=False``
    convention. Every ratio metric returns ``empty_value`` when its denominator is zero:

    ==================  ===========================  ======================================
    metric              formula                      denominator zero when
    ==================  ===========================  ======================================
    dice, f1            2TP / (2TP + FP + FN)        pred and target both empty
    jaccard             TP / (TP + FP + FN)          pred and target both empty
    accuracy            (TP + TN) / N                never (N > 0 is required)
    sensitivity         TP / (TP + FN)               target empty
    specificity         TN / (TN + FP)               target everywhere foreground
    precision           TP / (TP + FP)               pred empty
    volume_similarity   1 - |FP - FN| / (2TP+FP+FN)  pred and target both empty
    ==================  ===========================  ======================================

Jittable twins (``*_jax``) exist for the confusion-based metrics; they validate shapes (static)
but cannot validate values under ``jit``.
"""

from __future__ import annotations

import numpy as np

from scoring._inputs import label_map as _label_map
from scoring._inputs import mask_pair as _pair

__all__ = [
    "confusion_counts", "dice", "jaccard", "accuracy", "sensitivity", "specificity", "precision", "f1",
    "volume_similarity", "confusion_matrix", "per_class_metrics", "confusion_counts_jax", "dice_jax",
    "jaccard_jax", "accuracy_jax", "sensitivity_jax", "specificity_jax", "precision_jax", "f1_jax",
    "volume_similarity_jax", "confusion_matrix_jax", "dice_per_class", "dice_per_class_np",
    "CONFUSION_METRICS",
]


# --------------------------------------------------------------------------- confusion metrics (numpy)

def confusion_counts(pred, target, *, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, TN)`` of two binary masks ``[*S]`` (numpy)."""
    p, t = _pair(pred, target, threshold)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, fn, p.size - tp - fp - fn


def _ratio(num: float, den: float, empty_value: float) -> float:
    return float(empty_value) if den == 0 else float(num / den)


def dice(pred, target, empty_value: float = float("nan"), *, spacing=None, threshold: float = 0.5) -> float:
    """Dice ``2TP / (2TP + FP + FN)`` of two binary masks ``[*S]``; both empty → ``empty_value``.

    ``spacing`` is accepted for a uniform signature; overlap ratios do not depend on it.
    (``empty_value`` stays positional-or-keyword: the original signature was ``dice(pred, target, empty_value)``.)
    """
    tp, fp, fn, _ = confusion_counts(pred, target, threshold=threshold)
    return _ratio(2 * tp, 2 * tp + fp + fn, empty_value)


def jaccard(pred, target, *, spacing=None, empty_value: float = float("nan"), threshold: float = 0.5) -> float:
    """Jaccard / IoU ``TP / (TP + FP + FN)``; both empty → ``empty_value``."""
    tp, fp, fn, _ = confusion_counts(pred, target, threshold=threshold)
    return _ratio(tp, tp + fp + fn, empty_value)


def accuracy(pred, target, *, spacing=None, empty_value: float = float("nan"), threshold: float = 0.5) -> float:
    """Voxel accuracy ``(TP + TN) / N`` (always defined for non-empty arrays)."""
    tp, fp, fn, tn = confusion_counts(pred, target, threshold=threshold)
    return _ratio(tp + tn, tp + fp + fn + tn, empty_value)


def sensitivity(pred, target, *, spacing=None, empty_value: float = float("nan"),
                threshold: float = 0.5) -> float:
    """Sensitivity / recall ``TP / (TP + FN)``; empty target → ``empty_value``."""
    tp, _, fn, _ = confusion_counts(pred, target, threshold=threshold)
    return _ratio(tp, tp + fn, empty_value)


def specificity(pred, target, *, spacing=None, empty_value: float = float("nan"),
                threshold: float = 0.5) -> float:
    """Specificity ``TN / (TN + FP)``; target foreground everywhere → ``empty_value``."""
    _, fp, _, tn = confusion_counts(pred, target, threshold=threshold)
    return _ratio(tn, tn + fp, empty_value)


def precision(pred, target, *, spacing=None, empty_value: float = float("nan"), threshold: float = 0.5) -> float:
    """Precision / PPV ``TP / (TP + FP)``; empty prediction → ``empty_value``."""
    tp, fp, _, _ = confusion_counts(pred, target, threshold=threshold)
    return _ratio(tp, tp + fp, empty_value)


def f1(pred, target, *, spacing=None, empty_value: float = float("nan"), threshold: float = 0.5) -> float:
    """F1 = harmonic mean of precision and recall = Dice for binary masks (``2TP / (2TP+FP+FN)``)."""
    return dice(pred, target, empty_value=empty_value, threshold=threshold)


def volume_similarity(pred, target, *, spacing=None, empty_value: float = float("nan"),
                      threshold: float = 0.5) -> float:
    """Volume similarity ``1 - |FP - FN| / (2TP + FP + FN)`` = ``1 - ||P| - |T|| / (|P| + |T|)``."""
    tp, fp, fn, _ = confusion_counts(pred, target, threshold=threshold)
    return _ratio(2 * tp + fp + fn - abs(fp - fn), 2 * tp + fp + fn, empty_value)


# --------------------------------------------------------------------------- confusion matrices

def confusion_matrix(pred, target, num_classes: int) -> np.ndarray:
    """``[K, K]`` int64 counts, rows = target (true) class, columns = predicted class (as scikit-learn)."""
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    p = _label_map(pred, "pred", num_classes)
    t = _label_map(target, "target", num_classes)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    return np.bincount((t * num_classes + p).reshape(-1), minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def per_class_metrics(cm, empty_value: float = float("nan")) -> dict[str, np.ndarray]:
    """One-vs-rest confusion metrics per class ``[K]`` from a confusion matrix ``[K, K]`` (numpy)."""
    cm = np.asarray(cm, np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be square [K, K], got shape {cm.shape}")
    tp = np.diag(cm)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn

    def r(num, den):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.where(den > 0, den, 1), empty_value)

    return {"dice": r(2 * tp, 2 * tp + fp + fn), "jaccard": r(tp, tp + fp + fn),
            "accuracy": r(tp + tn, tp + fp + fn + tn), "sensitivity": r(tp, tp + fn),
            "specificity": r(tn, tn + fp), "precision": r(tp, tp + fp),
            "volume_similarity": r(2 * tp + fp + fn - np.abs(fp - fn), 2 * tp + fp + fn)}


# --------------------------------------------------------------------------- jittable twins

def check_shapes_jax(pred, target):
    """Raise ``ValueError`` naming both shapes unless ``pred`` and ``target`` have the same (static) shape: the
    check every jittable metric makes first (a shape is known at trace time, so it works under ``jit``)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")


def confusion_counts_jax(pred, target, threshold: float = 0.5):
    """Jittable ``(TP, FP, FN, TN)`` float32 scalars of binary masks / probabilities ``[*S]``."""
    import jax.numpy as jnp

    check_shapes_jax(pred, target)
    p = pred if pred.dtype == jnp.bool_ else (pred >= threshold if jnp.issubdtype(pred.dtype, jnp.floating)
                                               else pred > 0)
    t = target if target.dtype == jnp.bool_ else (target >= threshold
                                                   if jnp.issubdtype(target.dtype, jnp.floating) else target > 0)
    tp = jnp.sum(p & t, dtype=jnp.float32)
    fp = jnp.sum(p & ~t, dtype=jnp.float32)
    fn = jnp.sum(~p & t, dtype=jnp.float32)
    tn = jnp.float32(p.size) - tp - fp - fn
    return tp, fp, fn, tn


def _ratio_jax(num, den, empty_value):
    import jax.numpy as jnp

    return jnp.where(den > 0, num / jnp.maximum(den, 1.0), jnp.float32(empty_value))


def dice_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`dice`."""
    tp, fp, fn, _ = confusion_counts_jax(pred, target, threshold)
    return _ratio_jax(2 * tp, 2 * tp + fp + fn, empty_value)


def jaccard_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`jaccard`."""
    tp, fp, fn, _ = confusion_counts_jax(pred, target, threshold)
    return _ratio_jax(tp, tp + fp + fn, empty_value)


def accuracy_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`accuracy`."""
    tp, fp, fn, tn = confusion_counts_jax(pred, target, threshold)
    return _ratio_jax(tp + tn, tp + fp + fn + tn, empty_value)


def sensitivity_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`sensitivity`."""
    tp, _, fn, _ = confusion_counts_jax(pred, target, threshold)
    return _ratio_jax(tp, tp + fn, empty_value)


def specificity_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`specificity`."""
    _, fp, _, tn = confusion_counts_jax(pred, target, threshold)
    return _ratio_jax(tn, tn + fp, empty_value)


def precision_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`precision`."""
    tp, fp, _, _ = confusion_counts_jax(pred, target, threshold)
    return _ratio_jax(tp, tp + fp, empty_value)


def f1_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`f1` (= Dice)."""
    return dice_jax(pred, target, empty_value=empty_value, threshold=threshold)


def volume_similarity_jax(pred, target, *, empty_value: float = float("nan"), threshold: float = 0.5):
    """Jittable twin of :func:`volume_similarity`."""
    import jax.numpy as jnp

    tp, fp, fn, _ = confusion_counts_jax(pred, target, threshold)
    return _ratio_jax(2 * tp + fp + fn - jnp.abs(fp - fn), 2 * tp + fp + fn, empty_value)


def confusion_matrix_jax(pred, target, num_classes: int):
    """Jittable ``[K, K]`` int32 confusion matrix of label maps (rows = target, columns = prediction).

    Labels outside ``[0, K)`` are dropped (they cannot be checked under ``jit``).
    """
    import jax.numpy as jnp

    check_shapes_jax(pred, target)
    p = pred.reshape(-1).astype(jnp.int32)
    t = target.reshape(-1).astype(jnp.int32)
    valid = (p >= 0) & (p < num_classes) & (t >= 0) & (t < num_classes)
    idx = jnp.where(valid, t * num_classes + p, num_classes * num_classes)
    counts = jnp.bincount(idx, length=num_classes * num_classes + 1)[:-1]
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


# --------------------------------------------------------------------------- per-class / legacy

def dice_per_class_np(pred: np.ndarray, target: np.ndarray, num_classes: int, empty_value: float = np.nan):
    """Dice per class of one case from integer label maps ``[*S]`` → ``[num_classes]`` (numpy).

    Labels outside ``[0, num_classes)`` (or not integers) raise ``ValueError`` naming the values: they
    would otherwise count as no class and vanish from every Dice.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    for name, a in (("pred", pred), ("target", target)):
        if not a.size or a.dtype == bool:
            continue
        ok = (a >= 0) & (a < num_classes)
        if not np.issubdtype(a.dtype, np.integer):
            ok &= a == np.round(a)
        if not ok.all():
            bad = np.unique(a[~ok])
            raise ValueError(f"dice_per_class_np: {name} has label values {bad[:10].tolist()}"
                             f"{' ...' if bad.size > 10 else ''} outside [0, {num_classes - 1}] "
                             f"(num_classes={num_classes})")
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


#: Name → numpy function of the binary-mask overlap metrics.
CONFUSION_METRICS = {"dice": dice, "jaccard": jaccard, "accuracy": accuracy, "sensitivity": sensitivity,
                     "specificity": specificity, "precision": precision, "f1": f1,
                     "volume_similarity": volume_similarity}
