"""Bootstrap confidence intervals over cases (percentile method).

Cases are the resampling unit (voxels within a case are not independent). NaN values
(metric not applicable to a case, e.g. Dice with an empty target and prediction) are
ignored by the default statistic ``nanmean``; a resample with no finite value gives NaN
and is dropped from the percentile computation.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

__all__ = ["CI", "bootstrap_ci", "paired_delta_ci", "unpaired_delta_ci", "bootstrap_statistics"]


@dataclasses.dataclass(frozen=True)
class CI:
    """A point estimate with a ``level`` confidence interval ``[low, high]`` from ``n`` cases."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def format(self, digits: int = 3) -> str:
        if not np.isfinite(self.estimate):
            return "n/a"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def _values(values, name: str) -> np.ndarray:
    v = np.asarray(values, np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one value per case [N], got shape {v.shape}")
    return v


def _check(n_boot: int, level: float):
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive int, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _nanmean_rows(x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=-1)


def _percentiles(boot: np.ndarray, level: float) -> tuple[float, float]:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return float("nan"), float("nan")
    a = (1 - level) / 2
    lo, hi = np.percentile(boot, [100 * a, 100 * (1 - a)])
    return float(lo), float(hi)


def bootstrap_ci(values, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> CI:
    """NaN-aware mean of per-case ``values [N]`` with a percentile bootstrap CI (cases resampled)."""
    _check(n_boot, level)
    v = _values(values, "values")
    n_finite = int(np.isfinite(v).sum())
    if n_finite == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0, level)
    est = float(_nanmean_rows(v))
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    lo, hi = _percentiles(_nanmean_rows(v[idx]), level)
    return CI(est, lo, hi, n_finite, level)


def paired_delta_ci(a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> CI:
    """Mean of ``b - a`` over the same cases (``a``, ``b`` ``[N]``, aligned) with a paired bootstrap CI.

    Cases where either value is NaN are dropped.
    """
    a, b = _values(a, "a"), _values(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired values need the same cases: a has {a.size}, b has {b.size}")
    d = b - a
    return bootstrap_ci(d[np.isfinite(d)], n_boot=n_boot, level=level, seed=seed)


def unpaired_delta_ci(a, b, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> CI:
    """``mean(b) - mean(a)`` for independent case sets (each resampled separately), with a CI."""
    _check(n_boot, level)
    a, b = _values(a, "a"), _values(b, "b")
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return CI(float("nan"), float("nan"), float("nan"), 0, level)
    rng = np.random.default_rng(seed)
    ba = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(1)
    bb = b[rng.integers(0, b.size, size=(n_boot, b.size))].mean(1)
    lo, hi = _percentiles(bb - ba, level)
    return CI(float(b.mean() - a.mean()), lo, hi, int(min(a.size, b.size)), level)


def bootstrap_statistics(statistic, n: int, *, n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> dict[str, CI]:
    """Percentile bootstrap CIs of a set-level statistic (e.g. AUC) over ``n`` cases resampled.

    ``statistic(idx [M] int) -> {name: float}`` computes every quantity on the cases ``idx``; the
    estimate is its value on all cases, and a resample where a quantity is undefined (NaN) is
    dropped from that quantity's percentiles.
    """
    _check(n_boot, level)
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of cases, got {n!r}")
    est = statistic(np.arange(n))
    rng = np.random.default_rng(seed)
    boot = {k: np.empty(n_boot) for k in est}
    for b in range(n_boot):
        vals = statistic(rng.integers(0, n, size=n))
        for k in boot:
            boot[k][b] = vals.get(k, float("nan"))
    out = {}
    for k, v in est.items():
        lo, hi = _percentiles(boot[k], level) if np.isfinite(v) else (float("nan"), float("nan"))
        out[k] = CI(float(v), lo, hi, int(n), level)
    return out
