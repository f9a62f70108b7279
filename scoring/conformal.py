"""Conformal risk control of missed lesion voxels (Angelopoulos, Bates, Fisch, Lei, Schuster, "Conformal Risk
Control", 2022, arXiv:2208.02814).

A segmentation model gives each voxel a foreground probability ``p``; the prediction set of a threshold ``t``
is ``{p >= t}`` and its loss on one case is the **fraction of the case's lesion voxels it misses**,
``L(t) = #{lesion, p < t} / #{lesion}`` (0 for a case without lesion), bounded by ``B = 1`` and non-decreasing
in ``t`` (in the paper's notation ``lambda = 1 - t``: the set grows and the loss falls as ``lambda`` grows).
Given ``n`` calibration cases, the paper's threshold

    lambda_hat = inf { lambda : n/(n+1) * R_n(lambda) + B/(n+1) <= alpha }

(``R_n`` the mean loss over the calibration cases) guarantees ``E[L_{n+1}(lambda_hat)] <= alpha`` on a new,
exchangeable case. :func:`conformal_threshold` returns ``t_hat = 1 - lambda_hat``: the largest ``t`` with
``(n R_n(t) + 1) / (n + 1) <= alpha``. Because ``L`` only changes at the lesion voxels' probabilities, the
candidates are those values (and 0, where nothing is missed), searched by bisection over their sorted union.

``alpha`` in (0, 1); ``t = 0`` (every voxel) is always feasible once ``1/(n+1) <= alpha``, i.e.
``n >= 1/alpha - 1`` (9 cases at ``alpha = 0.1``); fewer cases raise ``ValueError``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["miss_fraction", "empirical_risk", "conformal_threshold", "min_calibration_cases"]


def min_calibration_cases(alpha: float) -> int:
    """The fewest calibration cases for which a threshold exists at ``alpha``: ``ceil(1/alpha - 1)``."""
    alpha = _alpha(alpha)
    return max(1, math.ceil(1.0 / alpha - 1.0 - 1e-12))


def _alpha(alpha) -> float:
    a = float(alpha)
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    return a


def _lesion_probs(probs, masks) -> list[np.ndarray]:
    """Sorted foreground probabilities of each case's lesion voxels (checked: one shape per pair, p in [0, 1])."""
    if len(probs) != len(masks):
        raise ValueError(f"probs and masks: {len(probs)} and {len(masks)} cases; give one mask per case")
    out = []
    for i, (p, m) in enumerate(zip(probs, masks)):
        p, m = np.asarray(p), np.asarray(m)
        if p.shape != m.shape:
            raise ValueError(f"case {i}: probabilities {p.shape} and mask {m.shape} differ in shape")
        p = p.astype(np.float64, copy=False)
        if p.size and (not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0):
            raise ValueError(f"case {i}: foreground probabilities must be finite and in [0, 1]")
        out.append(np.sort(p[m.astype(bool)]))
    return out


def _risk(lesions: list[np.ndarray], t: float) -> float:
    """Mean over cases of the fraction of lesion voxels with ``p < t`` (cases without lesion: 0)."""
    return float(np.mean([np.searchsorted(v, t, side="left") / len(v) if len(v) else 0.0 for v in lesions]))


def miss_fraction(prob, mask, threshold: float) -> float:
    """The fraction of ``mask``'s voxels with ``prob < threshold`` (0 when the mask is empty)."""
    return _risk(_lesion_probs([prob], [mask]), float(threshold))


def empirical_risk(probs, masks, threshold: float) -> float:
    """Mean :func:`miss_fraction` over cases at ``threshold``."""
    lesions = _lesion_probs(probs, masks)
    if not lesions:
        raise ValueError("empirical_risk needs at least one case")
    return _risk(lesions, float(threshold))


def conformal_threshold(probs, masks, alpha: float = 0.1) -> float:
    """``t_hat``: predict ``{p >= t_hat}`` so that the expected missed-lesion fraction on a new case is at most
    ``alpha`` (see the module docstring). ``probs``/``masks``: one foreground-probability map and one reference
    mask per calibration case (any shapes, pairwise equal)."""
    alpha = _alpha(alpha)
    lesions = _lesion_probs(probs, masks)
    n = len(lesions)
    need = min_calibration_cases(alpha)
    if n < need:
        raise ValueError(f"conformal risk control at alpha={alpha} needs at least {need} calibration cases "
                         f"(1/(n+1) <= alpha); got {n}")

    def ok(t):
        return (n * _risk(lesions, t) + 1.0) / (n + 1.0) <= alpha

    candidates = np.unique(np.concatenate([[0.0], *lesions]))  # the risk is constant between these, from the left
    lo, hi = 0, len(candidates) - 1  # ok(candidates[0] = 0) holds; find the last candidate that is ok
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(candidates[mid]):
            lo = mid
        else:
            hi = mid - 1
    return float(candidates[lo])
