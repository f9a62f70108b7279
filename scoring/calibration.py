"""Binary-outcome calibration and comparison: Brier score, ECE, calibration curve, logistic recalibration
slope and intercept, DeLong test, net benefit; top-label calibration of many voxels (a histogram, never a sort)
and a softmax temperature fitted by likelihood.

``y`` is 0/1 ``[N]``, ``p`` the predicted probability of class 1 ``[N]`` in [0, 1]. Conventions follow
scikit-learn (``brier_score_loss``, ``calibration.calibration_curve`` with ``strategy="uniform"``: empty bins
are dropped), so tests compare value for value. ECE uses the same equal-width bins (``n_bins``; a
probability on an inner edge falls in the lower bin), weighted by the share of patients in each bin.
DeLong's test (DeLong et al. 1988, the fast midrank algorithm of Sun & Xu 2014) compares two correlated AUCs
on the same patients. Net benefit (Vickers & Elkin 2006) at threshold ``pt``: ``TP/N - FP/N * pt / (1 - pt)``.

Segmentation probabilities ``[..., K]`` against labels ``[...]``: :class:`ReliabilityHistogram` accumulates, over
any number of chunks, the voxels' top-label confidence (``max_k p``) and correctness (``argmax_k p == label``) in
the same equal-width bins, so its ECE equals ``expected_calibration_error(correct, confidence)`` on the pooled
voxels (Guo et al. 2017's top-label ECE). :func:`fit_temperature` is Guo et al.'s temperature scaling: the scalar
``T`` minimising the mean negative log-likelihood of ``softmax(logits / T)`` (searched on ``log T``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["brier_binary", "calibration_curve", "calibration_binary", "logit", "expected_calibration_error",
           "delong_test", "net_benefit", "ReliabilityHistogram", "fit_temperature", "temperature_nll"]


def _check(y, p, name="p"):
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise ValueError(f"y and {name} must be 1-D of one length, got {y.shape} and {p.shape}")
    if not np.all(np.isin(y, (0.0, 1.0))):
        raise ValueError("y must be 0/1")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or Inf")
    return y, p


def brier_binary(y, p) -> float:
    """Mean squared error of probabilities against 0/1 outcomes."""
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2))


def logit(p):
    """``log(p / (1 - p))`` with ``p`` clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def _logistic_fit(y, x, offset, slope: bool, iters: int = 50):
    """Maximum-likelihood ``logit P(y) = a + b x + offset`` (``b`` only when ``slope``), Newton steps."""
    X = np.stack([np.ones_like(x), x], 1) if slope else np.ones((len(x), 1))
    beta = np.zeros(X.shape[1])
    for _ in range(iters):
        eta = X @ beta + offset
        p = 1 / (1 + np.exp(-np.clip(eta, -30, 30)))
        w = p * (1 - p) + 1e-12
        g = X.T @ (y - p)
        h = X.T @ (X * w[:, None]) + 1e-9 * np.eye(X.shape[1])
        step = np.linalg.solve(h, g)
        beta += step
        if np.max(np.abs(step)) < 1e-8:
            break
    return beta if np.all(np.isfinite(beta)) and np.max(np.abs(beta)) < 1e3 else np.full(X.shape[1], np.nan)


def calibration_binary(y, p) -> tuple[float, float]:
    """``(slope, intercept)``: the logistic recalibration slope ``b`` of ``logit P(y) = a + b logit(p)`` and the
    calibration-in-the-large ``a`` of ``logit P(y) = a + logit(p)`` (perfect: 1 and 0; NaN if one class)."""
    y = np.asarray(y, np.float64)
    if y.min() == y.max():
        return float("nan"), float("nan")
    lp = logit(p)
    slope = _logistic_fit(y, lp, np.zeros_like(lp), True)[1]
    intercept = _logistic_fit(y, np.zeros_like(lp), lp, False)[0]
    return float(slope), float(intercept)


def _bins(p, n_bins):
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    return np.searchsorted(edges[1:-1], p)  # side="left", as scikit-learn


def calibration_curve(y, p, n_bins: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """``(prob_true, prob_pred)`` per non-empty equal-width bin (as ``sklearn.calibration.calibration_curve``)."""
    y, p = _check(y, p)
    b = _bins(p, n_bins)
    total = np.bincount(b, minlength=int(n_bins))
    true = np.bincount(b, weights=y, minlength=int(n_bins))
    pred = np.bincount(b, weights=p, minlength=int(n_bins))
    nz = total != 0
    return true[nz] / total[nz], pred[nz] / total[nz]


def expected_calibration_error(y, p, n_bins: int = 10) -> float:
    """``sum_b (n_b / N) |mean(y_b) - mean(p_b)|`` over equal-width bins."""
    y, p = _check(y, p)
    b = _bins(p, n_bins)
    total = np.bincount(b, minlength=int(n_bins)).astype(np.float64)
    gap = np.abs(np.bincount(b, weights=y, minlength=int(n_bins)) - np.bincount(b, weights=p, minlength=int(n_bins)))
    return float(gap.sum() / total.sum())


def _midrank(x):
    from scipy import stats  # here, not at import: scipy.stats costs a prediction process 0.3-0.5 s it never uses

    return stats.rankdata(x, method="average")


def delong_test(y, score_a, score_b) -> dict:
    """Two-sided DeLong test of ``AUC(a) == AUC(b)`` on the same patients.

    Returns ``{"auc_a", "auc_b", "delta" (b - a), "se", "z", "p_value"}``.
    """
    y, a = _check(y, score_a, "score_a")
    _, b = _check(y, score_b, "score_b")
    pos, neg = y == 1, y == 0
    m, n = int(pos.sum()), int(neg.sum())
    if m < 2 or n < 2:
        raise ValueError(f"delong_test needs at least 2 positives and 2 negatives, got {m} and {n}")
    aucs, v10, v01 = [], [], []
    for s in (a, b):
        tx, ty = _midrank(s[pos]), _midrank(s[neg])
        tz = _midrank(np.r_[s[pos], s[neg]])
        aucs.append((tz[:m].sum() - m * (m + 1) / 2.0) / (m * n))
        v10.append((tz[:m] - tx) / n)
        v01.append(1.0 - (tz[m:] - ty) / m)
    s10, s01 = np.cov(np.stack(v10)), np.cov(np.stack(v01))
    cov = s10 / m + s01 / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    delta = aucs[1] - aucs[0]
    se = float(np.sqrt(max(var, 0.0)))
    z = delta / se if se > 0 else (0.0 if delta == 0 else np.inf * np.sign(delta))
    from scipy import stats

    return {"auc_a": float(aucs[0]), "auc_b": float(aucs[1]), "delta": float(delta), "se": se, "z": float(z),
            "p_value": float(2 * stats.norm.sf(abs(z)))}


def net_benefit(y, p, thresholds) -> dict:
    """Decision-curve net benefit of treating ``p >= pt`` for each ``pt`` in ``thresholds`` (each in (0, 1)),
    with the treat-all and treat-none (0) references: ``{"threshold", "model", "treat_all"}`` lists."""
    y, p = _check(y, p)
    pts = np.asarray(thresholds, np.float64)
    if pts.ndim != 1 or np.any((pts <= 0) | (pts >= 1)):
        raise ValueError("thresholds must be 1-D, each in (0, 1)")
    n = len(y)
    model, treat_all = [], []
    prev = y.mean()
    for pt in pts:
        odds = pt / (1 - pt)
        treat = p >= pt
        tp, fp = float(np.sum(treat & (y == 1))), float(np.sum(treat & (y == 0)))
        model.append(tp / n - fp / n * odds)
        treat_all.append(float(prev - (1 - prev) * odds))
    return {"threshold": pts.tolist(), "model": model, "treat_all": treat_all}


class ReliabilityHistogram:
    """Top-label reliability of voxel probabilities, accumulated chunk by chunk in ``n_bins`` equal-width bins of
    confidence: ``counts``, ``correct`` (voxels whose argmax is the label) and ``confidence`` (sum of max p)."""

    def __init__(self, n_bins: int = 15):
        self.n_bins = int(n_bins)
        if self.n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.counts = np.zeros(self.n_bins, np.int64)
        self.correct = np.zeros(self.n_bins, np.float64)
        self.confidence = np.zeros(self.n_bins, np.float64)

    def update(self, proba, labels) -> "ReliabilityHistogram":
        """Add the voxels of ``proba [..., K]`` (probabilities over the last axis) against ``labels [...]``."""
        proba, labels = np.asarray(proba), np.asarray(labels)
        if proba.ndim < 1 or proba.shape[:-1] != labels.shape:
            raise ValueError(f"proba [..., K] and labels [...] must agree; got {proba.shape} and {labels.shape}")
        k = proba.shape[-1]
        flat = proba.reshape(-1, k)
        if labels.size and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"labels must lie in [0, {k - 1}] for K={k} classes; got [{labels.min()}, "
                             f"{labels.max()}]")
        conf = flat.max(axis=1).astype(np.float64)
        if not np.all(np.isfinite(conf)):
            raise ValueError("proba contains NaN or Inf")
        b = _bins(conf, self.n_bins)
        hit = (flat.argmax(axis=1) == labels.reshape(-1)).astype(np.float64)
        self.counts += np.bincount(b, minlength=self.n_bins)
        self.correct += np.bincount(b, weights=hit, minlength=self.n_bins)
        self.confidence += np.bincount(b, weights=conf, minlength=self.n_bins)
        return self

    @property
    def ece(self) -> float:
        """``sum_b (n_b / N) |accuracy_b - confidence_b|`` (NaN before any voxel)."""
        total = self.counts.sum()
        return float(np.abs(self.correct - self.confidence).sum() / total) if total else float("nan")

    def curve(self) -> dict:
        """The reliability diagram's points, per non-empty bin: ``accuracy``, ``confidence``, ``count`` and the
        bins' ``edges``."""
        nz = self.counts > 0
        return {"accuracy": (self.correct[nz] / self.counts[nz]).tolist(),
                "confidence": (self.confidence[nz] / self.counts[nz]).tolist(),
                "count": self.counts[nz].tolist(), "edges": np.linspace(0.0, 1.0, self.n_bins + 1).tolist()}


def _logits_labels(logits, labels):
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.shape != (z.shape[0],) or z.shape[0] == 0:
        raise ValueError(f"logits [N, K] and labels [N] (N >= 1) expected; got {z.shape} and {y.shape}")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits contain NaN or Inf (take log of clipped probabilities)")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}]")
    return z, y.astype(np.int64)


def temperature_nll(logits, labels, temperature: float) -> float:
    """Mean negative log-likelihood of ``softmax(logits / temperature)`` at ``labels``."""
    z, y = _logits_labels(logits, labels)
    s = z / float(temperature)
    s = s - s.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(s).sum(axis=1)) - s[np.arange(len(y)), y]))


def fit_temperature(logits, labels, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature ``T`` in ``bounds`` minimising :func:`temperature_nll` (bounded search on ``log T``).
    ``logits [N, K]`` (or log-probabilities), ``labels [N]``."""
    from scipy.optimize import minimize_scalar

    z, y = _logits_labels(logits, labels)
    lo, hi = (float(b) for b in bounds)
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    res = minimize_scalar(lambda u: temperature_nll(z, y, float(np.exp(u))), bounds=(np.log(lo), np.log(hi)),
                          method="bounded", options={"xatol": 1e-5})
    return float(np.exp(res.x))
