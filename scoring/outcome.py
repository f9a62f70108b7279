"""Patient-level outcome metrics of class probabilities: accuracy, precision, recall, specificity, F1, AUC."""

from __future__ import annotations

import numpy as np

__all__ = ["outcome_metrics"]


def outcome_metrics(y_true, proba) -> dict:
    """Accuracy, precision, recall, specificity, F1 and AUC-ROC of ``proba [N, K]`` against ``y_true [N]``.

    Binary (``K = 2``): class 1 is the positive (adverse) outcome; the prediction is the argmax
    (threshold 0.5). ``K > 2``: precision/recall/F1 are macro averages, AUC is one-vs-rest macro,
    specificity is omitted. Undefined values (no positive predictions; a single class in
    ``y_true`` for AUC) are NaN, not 0, so they cannot pass for a score.
    """
    from sklearn import metrics as skm

    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba, np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"proba must be [N, K] with N = len(y_true) = {y.shape[0]}; got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or Inf")
    k = p.shape[1]
    pred = p.argmax(axis=1)
    out = {"n": int(len(y)), "prevalence": float(np.mean(y == 1)) if k == 2 else None,
           "accuracy": float(np.mean(pred == y))}
    nan = float("nan")
    if k == 2:
        tp = int(np.sum((pred == 1) & (y == 1)))
        fp = int(np.sum((pred == 1) & (y == 0)))
        fn = int(np.sum((pred == 0) & (y == 1)))
        tn = int(np.sum((pred == 0) & (y == 0)))
        prec = tp / (tp + fp) if tp + fp else nan
        rec = tp / (tp + fn) if tp + fn else nan
        out.update(precision=prec, recall=rec, specificity=tn / (tn + fp) if tn + fp else nan,
                   f1=2 * prec * rec / (prec + rec) if tp else (0.0 if tp + fp and tp + fn else nan),
                   confusion={"tp": tp, "fp": fp, "fn": fn, "tn": tn})
        out["auc_roc"] = float(skm.roc_auc_score(y, p[:, 1])) if len(np.unique(y)) == 2 else nan
    else:
        labels = list(range(k))
        out.update(precision=float(skm.precision_score(y, pred, labels=labels, average="macro", zero_division=0)),
                   recall=float(skm.recall_score(y, pred, labels=labels, average="macro", zero_division=0)),
                   f1=float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)))
        present = np.unique(y)
        out["auc_roc"] = (float(skm.roc_auc_score(y, p / p.sum(1, keepdims=True), multi_class="ovr",
                                                  labels=labels)) if len(present) == k else nan)
    return out
