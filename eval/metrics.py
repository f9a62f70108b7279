"""Segmentation metrics: small jittable functions with numpy twins.

Conventions (stated once, used everywhere):
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

  * Surface metrics (MedPy >= 0.5, see :mod:`eval.surface`): a surface is the mask minus its
    erosion by the face-connected structuring element; distances are Euclidean in ``spacing``
    units (default 1 per axis) to the nearest surface voxel of the other mask. ``hausdorff``
    is the maximum and ``hd95`` the 95th percentile (``np.percentile``, linear) of the
    distances **pooled from both directions**; ``assd`` is the mean of all those distances
    taken together. ``directed=True`` uses only prediction → target distances. Both masks
    empty → ``empty_value`` (NaN); exactly one empty → ``one_empty_value`` (``inf`` for the
    distances, 0 for ``surface_dice``).
  * ``auc_roc``/``auprc`` take probabilities in ``[0, 1]`` and binary labels; with a single
    class present they return NaN (undefined). ``auprc`` is average precision (the
    step-wise sum of scikit-learn's ``average_precision_score``).

Jittable twins (``*_jax``) exist for the confusion-based metrics; they validate shapes (static)
but cannot validate values under ``jit``.
"""

from __future__ import annotations

import numpy as np

from eval import surface as _surface

__all__ = [
    "dice", "dice_per_class", "dice_per_class_np",
    "jaccard", "accuracy", "sensitivity", "specificity", "precision", "f1", "volume_similarity",
    "hausdorff", "hd95", "assd", "surface_dice", "auc_roc", "auprc",
    "confusion_counts", "confusion_counts_jax", "confusion_matrix", "confusion_matrix_jax",
    "dice_jax", "jaccard_jax", "accuracy_jax", "sensitivity_jax", "specificity_jax", "precision_jax",
    "f1_jax", "volume_similarity_jax", "BRATS_REGIONS", "brats_regions", "brats_region_metrics",
    "brats_region_dice_jax", "per_class_metrics", "CONFUSION_METRICS", "SURFACE_METRICS", "METRICS",
    "binary_metrics",
]


# --------------------------------------------------------------------------- validation

def _as_mask(x, name: str, threshold: float = 0.5) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{name} must be a binary mask (0/1); got integer values in "
                             f"[{a.min()}, {a.max()}] (pass a label map to the per-class functions)")
        return a.astype(bool)
    if np.issubdtype(a.dtype, np.floating):
        if np.isnan(a).any():
            raise ValueError(f"{name} contains NaN")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{name} holds probabilities outside [0, 1] (range [{a.min()}, {a.max()}])")
        return a >= threshold
    raise ValueError(f"{name} must be bool, integer 0/1 or float probabilities; got dtype {a.dtype}")


def _pair(pred, target, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    p = _as_mask(pred, "pred", threshold)
    t = _as_mask(target, "target", threshold)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    if p.size == 0:
        raise ValueError(f"pred and target are empty arrays (shape {p.shape})")
    return p, t


def confusion_counts(pred, target, *, threshold: float = 0.5) -> tuple[int, int, int, int]:
    """``(TP, FP, FN, TN)`` of two binary masks ``[*S]`` (numpy)."""
    p, t = _pair(pred, target, threshold)
    tp = int(np.count_nonzero(p & t))
    fp = int(np.count_nonzero(p & ~t))
    fn = int(np.count_nonzero(~p & t))
    return tp, fp, fn, p.size - tp - fp - fn


def _ratio(num: float, den: float, empty_value: float) -> float:
    return float(empty_value) if den == 0 else float(num / den)


# --------------------------------------------------------------------------- confusion metrics (numpy)

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


# --------------------------------------------------------------------------- surface metrics (numpy)

def _distances(pred, target, spacing, threshold, directed: bool):
    p, t = _pair(pred, target, threshold)
    sp = _surface.check_spacing(spacing, p.ndim)
    if not p.any() or not t.any():
        return None, (not p.any() and not t.any())
    d_pt, d_tp = _surface.surface_distances(p, t, sp)
    return (d_pt if directed else np.concatenate([d_pt, d_tp])), False


def hausdorff(pred, target, *, spacing=None, directed: bool = False, empty_value: float = float("nan"),
              one_empty_value: float = float("inf"), threshold: float = 0.5) -> float:
    """Hausdorff distance: max of the pooled surface distances (both directions), spacing units."""
    d, both_empty = _distances(pred, target, spacing, threshold, directed)
    if d is None:
        return float(empty_value if both_empty else one_empty_value)
    return float(d.max())


def hd95(pred, target, *, spacing=None, directed: bool = False, percentile: float = 95.0,
         empty_value: float = float("nan"), one_empty_value: float = float("inf"),
         threshold: float = 0.5) -> float:
    """95th percentile of the surface distances pooled from both directions (MedPy >= 0.5), spacing units."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    d, both_empty = _distances(pred, target, spacing, threshold, directed)
    if d is None:
        return float(empty_value if both_empty else one_empty_value)
    return float(np.percentile(d, percentile))


def assd(pred, target, *, spacing=None, directed: bool = False, empty_value: float = float("nan"),
         one_empty_value: float = float("inf"), threshold: float = 0.5) -> float:
    """Average symmetric surface distance: mean of all pooled surface distances (MedPy >= 0.5).

    ``directed=True`` gives the average surface distance from the prediction to the target.
    """
    d, both_empty = _distances(pred, target, spacing, threshold, directed)
    if d is None:
        return float(empty_value if both_empty else one_empty_value)
    return float(d.mean())


def surface_dice(pred, target, *, spacing=None, tolerance: float = 1.0, empty_value: float = float("nan"),
                 one_empty_value: float = 0.0, threshold: float = 0.5) -> float:
    """Normalised surface Dice at ``tolerance`` (Nikolov et al. 2018), counting surface voxels.

    ``(#{p in S_P: d(p, S_T) <= tol} + #{t in S_T: d(t, S_P) <= tol}) / (|S_P| + |S_T|)``.
    """
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")
    p, t = _pair(pred, target, threshold)
    sp = _surface.check_spacing(spacing, p.ndim)
    if not p.any() or not t.any():
        return float(empty_value if not p.any() and not t.any() else one_empty_value)
    d_pt, d_tp = _surface.surface_distances(p, t, sp)
    return float((np.count_nonzero(d_pt <= tolerance) + np.count_nonzero(d_tp <= tolerance))
                 / (d_pt.size + d_tp.size))


# --------------------------------------------------------------------------- ranking metrics

def _scores_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(labels)
    if y.reshape(-1).shape != s.shape:
        raise ValueError(f"scores shape {np.shape(scores)} != labels shape {np.shape(labels)}")
    if s.size == 0:
        raise ValueError("scores is empty")
    if np.isnan(s).any():
        raise ValueError("scores contains NaN")
    if s.min() < 0 or s.max() > 1:
        raise ValueError(f"scores must be probabilities in [0, 1]; got range [{s.min()}, {s.max()}]")
    y = y.reshape(-1)
    if y.dtype != bool:
        if np.issubdtype(y.dtype, np.floating) and np.isnan(y).any():
            raise ValueError("labels contains NaN")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be binary (0/1 or bool)")
    return s, y.astype(bool)


def auc_roc(scores, labels) -> float:
    """Area under the ROC curve of probabilities ``scores`` against binary ``labels`` (any shape).

    Exact Mann-Whitney statistic with ties counted one half (equals scikit-learn's
    ``roc_auc_score``); NaN when only one class is present.
    """
    from scipy.stats import rankdata

    s, y = _scores_labels(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auprc(scores, labels) -> float:
    """Area under the precision-recall curve as average precision ``sum_n (R_n - R_{n-1}) P_n``.

    Thresholds at each distinct score (scikit-learn's ``average_precision_score``); NaN when
    there are no positives.
    """
    s, y = _scores_labels(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    fp = (last + 1) - tp
    prec = tp / (tp + fp)
    rec = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


# --------------------------------------------------------------------------- confusion matrices

def _label_map(x, name: str, num_classes: int) -> np.ndarray:
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
        if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
            raise ValueError(f"{name} contains NaN")
        if not np.all(a == np.round(a)):
            raise ValueError(f"{name} must be an integer label map; got non-integer {a.dtype} values")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} labels must be in [0, {num_classes - 1}]; got range [{a.min()}, {a.max()}]")
    return a


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

def _check_shapes_jax(pred, target):
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")


def confusion_counts_jax(pred, target, threshold: float = 0.5):
    """Jittable ``(TP, FP, FN, TN)`` float32 scalars of binary masks / probabilities ``[*S]``."""
    import jax.numpy as jnp

    _check_shapes_jax(pred, target)
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

    _check_shapes_jax(pred, target)
    p = pred.reshape(-1).astype(jnp.int32)
    t = target.reshape(-1).astype(jnp.int32)
    valid = (p >= 0) & (p < num_classes) & (t >= 0) & (t < num_classes)
    idx = jnp.where(valid, t * num_classes + p, num_classes * num_classes)
    counts = jnp.bincount(idx, length=num_classes * num_classes + 1)[:-1]
    return counts.reshape(num_classes, num_classes).astype(jnp.int32)


# --------------------------------------------------------------------------- BraTS regions

#: BraTS evaluation regions for label maps with 1 = necrosis/NCR, 2 = oedema/ED, 3 = enhancing/ET.
BRATS_REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def brats_regions(label_map) -> dict[str, np.ndarray]:
    """Region masks ``{WT, TC, ET}`` ``[*S]`` of a BraTS label map (labels 0..3, see ``BRATS_REGIONS``)."""
    lab = _label_map(label_map, "label_map", 4)
    return {name: np.isin(lab, labels) for name, labels in BRATS_REGIONS.items()}


def brats_region_metrics(pred, target, *, spacing=None, metrics=("dice", "jaccard", "sensitivity",
                                                                   "specificity", "hd95")) -> dict:
    """``{region: {metric: value}}`` for the BraTS regions WT/TC/ET of two label maps ``[*S]``."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {sorted(METRICS)}")
    p, t = brats_regions(pred), brats_regions(target)
    if p["WT"].shape != t["WT"].shape:
        raise ValueError(f"prediction shape {p['WT'].shape} != target shape {t['WT'].shape}")
    return {r: {m: METRICS[m](p[r], t[r], spacing=spacing) for m in metrics} for r in BRATS_REGIONS}


def brats_region_dice_jax(pred, target, empty_value: float = float("nan")):
    """Jittable Dice of the regions ``[WT, TC, ET]`` → ``[3]`` float32 from label maps ``[*S]``."""
    import jax.numpy as jnp

    _check_shapes_jax(pred, target)
    out = []
    for labels in BRATS_REGIONS.values():
        lab = jnp.asarray(labels)
        out.append(dice_jax(jnp.isin(pred, lab), jnp.isin(target, lab), empty_value=empty_value))
    return jnp.stack(out)


# --------------------------------------------------------------------------- per-class / legacy

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


#: Name → numpy function of the binary-mask metrics.
CONFUSION_METRICS = {"dice": dice, "jaccard": jaccard, "accuracy": accuracy, "sensitivity": sensitivity,
                     "specificity": specificity, "precision": precision, "f1": f1,
                     "volume_similarity": volume_similarity}
SURFACE_METRICS = {"hd95": hd95, "hausdorff": hausdorff, "assd": assd, "surface_dice": surface_dice}
METRICS = {**CONFUSION_METRICS, **SURFACE_METRICS}


def binary_metrics(pred, target, metrics=("dice", "jaccard", "accuracy", "sensitivity", "specificity"), *,
                   spacing=None, tolerance: float = 1.0, one_empty_distance: float = float("inf")) -> dict:
    """Several metrics of one binary pair at once (validation done once).

    ``tolerance`` goes to ``surface_dice``; ``one_empty_distance`` is what the distance metrics
    return when exactly one mask is empty (e.g. the image diagonal, to keep means finite).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {sorted(METRICS)}")
    p, t = _pair(pred, target)
    out = {}
    for m in metrics:
        if m == "surface_dice":
            out[m] = surface_dice(p, t, spacing=spacing, tolerance=tolerance)
        elif m in SURFACE_METRICS:
            out[m] = METRICS[m](p, t, spacing=spacing, one_empty_value=one_empty_distance)
        else:
            out[m] = METRICS[m](p, t)
    return out
