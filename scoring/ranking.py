"""Ranking metrics of probabilities against binary labels: AUC-ROC and average precision (AUPRC).

Scores are probabilities in ``[0, 1]`` and labels binary (any shape, flattened); with a single
class present the metrics are NaN (undefined). ``auprc`` is average precision (the step-wise
sum of scikit-learn's ``average_precision_score``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["auc_roc", "auprc"]


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
