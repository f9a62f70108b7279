"""Bootstrap confidence intervals over cases (percentile method): the project's one bootstrap.

Cases are the resampling unit (voxels within a case are not independent). NaN values
(metric not applicable to a case, e.g. Dice with an empty target and prediction) are
ignored by the default statistic ``nanmean``; a resample with no finite value gives NaN
and is dropped from the percentile computation.

* :func:`bootstrap_ci`: the mean of per-case values; :func:`paired_delta_ci` / :func:`unpaired_delta_ci`:
  differences of means (paired on the same cases, or two independent case sets);
* :func:`bootstrap_statistics`: a percentile CI of **any** set-level statistic (AUC, C-index, a dict of
  metrics) over resampled indices, of one case set (``n``) or of several resampled each within itself
  (``n=[n_1, n_2, ...]``, e.g. the test sets of cross-validation folds: the statistic gets one index array per
  set and may average over them), with :func:`resample_indices` the draws it uses and
  :func:`percentile_interval` the interval of any bootstrap distribution. The outcome report's CIs use it.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

__all__ = ["CI", "bootstrap_ci", "paired_delta_ci", "unpaired_delta_ci", "bootstrap_statistics",
           "resample_indices", "percentile_interval"]


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


def percentile_interval(boot, level: float = 0.95) -> tuple[float, float]:
    """``(low, high)``: the central ``level`` percentile interval of the finite values of ``boot``
    (NaN, NaN when none is finite)."""
    boot = np.asarray(boot, np.float64)
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
    lo, hi = percentile_interval(_nanmean_rows(v[idx]), level)
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
    lo, hi = percentile_interval(bb - ba, level)
    return CI(float(b.mean() - a.mean()), lo, hi, int(min(a.size, b.size)), level)


def resample_indices(sizes, n_boot: int, seed: int = 0) -> list[list[np.ndarray]]:
    """``draws[set][b]``: ``n_boot`` resamples (with replacement) of each case set of ``sizes``, drawn set by set
    from one ``np.random.default_rng(seed)`` (so one set's draws do not depend on how many sets follow)."""
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, int(n), size=int(n)) for _ in range(n_boot)] for n in sizes]


def bootstrap_statistics(statistic, n, *, n_boot: int = 2000, level: float = 0.95,
                         seed: int = 0) -> dict[str, CI]:
    """Percentile bootstrap CIs of a set-level statistic (e.g. AUC) over ``n`` cases resampled.

    ``statistic(idx [M] int) -> {name: float}`` computes every quantity on the cases ``idx``; the
    estimate is its value on all cases, and a resample where a quantity is undefined (NaN) is
    dropped from that quantity's percentiles. ``n`` may also be a sequence of set sizes (several
    case sets, each resampled within itself, e.g. cross-validation folds): ``statistic`` then takes
    a list of index arrays, one per set. A quantity whose estimate is NaN gets a NaN interval; ``CI.n``
    is the number of cases (all sets together).
    """
    _check(n_boot, level)
    groups = not isinstance(n, (int, np.integer))
    sizes = list(n) if groups else [n]
    if not sizes or any(not isinstance(k, (int, np.integer)) or k < 1 for k in sizes):
        raise ValueError(f"n must be a positive number of cases (or a list of them), got {n!r}")
    est = statistic([np.arange(k) for k in sizes] if groups else np.arange(n))
    draws = resample_indices(sizes, n_boot, seed)
    boot = {k: np.empty(n_boot) for k in est}
    for b in range(n_boot):
        vals = statistic([d[b] for d in draws] if groups else draws[0][b])
        for k in boot:
            boot[k][b] = vals.get(k, float("nan"))
    out = {}
    for k, v in est.items():
        lo, hi = percentile_interval(boot[k], level) if np.isfinite(v) else (float("nan"), float("nan"))
        out[k] = CI(float(v), lo, hi, int(sum(sizes)), level)
    return out
