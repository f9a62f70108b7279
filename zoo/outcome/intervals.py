"""Intervals for the risks an outcome model gives one patient, and how each was made.

* :class:`CalibrationBootstrap` (binary outcomes): an ensemble of isotonic calibration maps (the risk observed
  among held-out patients as a non-decreasing function of the model's score), each fitted on a bootstrap
  resample of the held-out patients; a new patient's interval is the percentile interval of the ensemble at
  their score. It says how sure the held-out patients let us be of the risk at that score (few held-out
  patients near it: a wide interval); the network's own weights are held fixed.
* :func:`breslow_band` (Cox models): the pointwise interval of ``S(t | x) = exp(-exp(eta(x)) H0(t))`` from the
  Breslow baseline's variance (Aalen's estimator ``sum_j dH_j**2 / d_j``, with one event per distinct time:
  with tied events it overstates the variance, so the band is conservative), on the log of ``H0``; the risk
  score ``eta(x)`` is held fixed, so the band leaves out the network's own uncertainty.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

__all__ = ["CalibrationBootstrap", "breslow_band"]


def _check_level(level: float) -> float:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"interval level must be in (0, 1), got {level!r}")
    return float(level)


class CalibrationBootstrap:
    """``n_boot`` isotonic calibration maps of 0/1 ``outcome [N]`` on ``score [N]`` (model probabilities of
    held-out patients), each on a bootstrap resample (resamples with a single class are drawn again, at most
    ``10 * n_boot`` draws). :meth:`interval` gives the ``level`` percentile interval at new scores."""

    def __init__(self, score, outcome, *, n_boot: int = 200, level: float = 0.95, seed: int = 0):
        from sklearn.isotonic import IsotonicRegression

        s = np.asarray(score, np.float64).reshape(-1)
        y = np.asarray(outcome, np.float64).reshape(-1)
        if s.shape != y.shape or len(s) < 4:
            raise ValueError(f"calibration needs >= 4 patients with one score and one outcome each, got "
                             f"{s.shape} scores and {y.shape} outcomes")
        if not np.all(np.isfinite(s)) or not np.all(np.isin(y, (0.0, 1.0))):
            raise ValueError("calibration: scores must be finite and outcomes 0/1")
        if y.min() == y.max():
            raise ValueError("calibration: the held-out outcomes have a single class")
        if int(n_boot) < 10:
            raise ValueError(f"n_boot must be >= 10, got {n_boot}")
        self.level, self.n = _check_level(level), len(s)
        rng = np.random.default_rng(seed)
        self.maps = []
        for _ in range(10 * int(n_boot)):
            idx = rng.integers(0, len(s), len(s))
            if y[idx].min() == y[idx].max():
                continue
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s[idx], y[idx])
            self.maps.append((np.asarray(iso.X_thresholds_), np.asarray(iso.y_thresholds_)))
            if len(self.maps) == int(n_boot):
                break
        if len(self.maps) < int(n_boot):
            raise ValueError(f"calibration: only {len(self.maps)} of {n_boot} bootstrap resamples hold both classes")

    def ensemble(self, score) -> np.ndarray:
        """The calibrated risk ``[B, M]`` of every map at ``score [M]`` (linear between the maps' thresholds,
        constant beyond them, as scikit-learn's ``IsotonicRegression.predict``)."""
        s = np.atleast_1d(np.asarray(score, np.float64))
        return np.stack([np.interp(s, x, v) for x, v in self.maps])

    def interval(self, score) -> tuple[np.ndarray, np.ndarray]:
        """``(lower [M], upper [M])``: the ensemble's ``level`` percentile interval at ``score [M]``."""
        e = self.ensemble(score)
        a = (1.0 - self.level) / 2.0
        return np.quantile(e, a, axis=0), np.quantile(e, 1.0 - a, axis=0)


def breslow_band(times, cum_hazard, risk, at, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """``(lower [M], upper [M])`` of ``S(t | x)`` at times ``at [M]`` for one patient with relative risk
    ``risk = exp(eta(x))``, from the Breslow baseline ``cum_hazard`` at its event ``times`` (increasing; as
    ``zoo.outcome.survival.breslow`` writes them). See the module docstring for the variance and what the band
    leaves out. Before the first event time the band is ``[1, 1]``."""
    level = _check_level(level)
    t = np.asarray(times, np.float64)
    h = np.asarray(cum_hazard, np.float64)
    if t.ndim != 1 or t.shape != h.shape or len(t) == 0 or np.any(np.diff(t) < 0) or np.any(np.diff(h) < -1e-12):
        raise ValueError("breslow_band: times and cum_hazard must be equal-length, non-decreasing 1-D arrays")
    r = float(risk)
    if not np.isfinite(r) or r <= 0:
        raise ValueError(f"breslow_band: the relative risk must be finite and > 0, got {risk!r}")
    var = np.cumsum(np.diff(np.r_[0.0, h]) ** 2)
    idx = np.searchsorted(t, np.atleast_1d(np.asarray(at, np.float64)), side="right") - 1
    h0 = np.where(idx >= 0, h[np.maximum(idx, 0)], 0.0)
    v = np.where(idx >= 0, var[np.maximum(idx, 0)], 0.0)
    z = float(norm.ppf(0.5 + level / 2.0))
    spread = np.exp(z * np.sqrt(v) / np.maximum(h0, 1e-300))  # the interval of log H0, back on H0's scale
    h_lo, h_hi = np.where(h0 > 0, h0 / spread, 0.0), np.where(h0 > 0, h0 * spread, 0.0)
    return np.exp(-r * h_hi), np.exp(-r * h_lo)
