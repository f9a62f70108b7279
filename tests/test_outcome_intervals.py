"""zoo.outcome.intervals: the risk intervals the application shows (bootstrap ensemble of isotonic recalibrations
for binary outcomes, the Breslow baseline's band for Cox models): their coverage on simulated cohorts whose true
risk is known, and the one clear error for bad input."""

from __future__ import annotations

import numpy as np
import pytest

from zoo.outcome.intervals import CalibrationBootstrap, breslow_band
from zoo.outcome.survival import breslow


def _cohort(rng, n, true_risk):
    score = rng.uniform(0.02, 0.98, n)
    return score, (rng.uniform(size=n) < true_risk(score)).astype(float)


def test_calibration_bootstrap_covers_the_true_risk_and_narrows_with_more_patients():
    true_risk = lambda s: 0.1 + 0.6 * s  # noqa: E731 - a miscalibrated model: the observed risk is not the score
    rng = np.random.default_rng(0)
    at = np.array([0.3, 0.5, 0.7])
    hits, widths = [], {}
    for n in (60, 600):
        w = []
        for rep in range(12 if n == 60 else 4):
            s, y = _cohort(rng, n, true_risk)
            cb = CalibrationBootstrap(s, y, n_boot=100, level=0.95, seed=rep)
            lo, hi = cb.interval(at)
            assert np.all(lo <= hi) and np.all((lo >= 0) & (hi <= 1))
            hits.extend(((lo <= true_risk(at)) & (true_risk(at) <= hi)).tolist())
            w.append(np.mean(hi - lo))
        widths[n] = float(np.mean(w))
    assert np.mean(hits) >= 0.8, np.mean(hits)  # nominal 95 %; isotonic fits are biased near the ends
    assert widths[600] < 0.6 * widths[60], widths


def test_breslow_band_has_its_nominal_coverage_on_simulated_cox_cohorts():
    """Exponential baseline (H0(t) = t / 100), log relative hazards known: the band of S(t | x) at t = 60 holds the
    true S in about 95 % of 300 simulated cohorts, and it equals exp(-r H0) at its centre on the log scale."""
    rng = np.random.default_rng(1)
    r, t_at, hits = np.exp(0.4), 60.0, []
    for _ in range(300):
        eta = rng.normal(0, 0.5, 150)
        t_event = rng.exponential(100.0 / np.exp(eta))
        t_cens = rng.uniform(0, 200, 150)
        time, event = np.minimum(t_event, t_cens), (t_event <= t_cens).astype(np.int32)
        times, h0 = breslow(eta, time, event)
        lo, hi = breslow_band(times, h0, r, [t_at])
        truth = np.exp(-r * t_at / 100.0)
        hits.append(lo[0] <= truth <= hi[0])
        point = np.exp(-r * h0[np.searchsorted(times, t_at, side="right") - 1])
        assert lo[0] < point < hi[0]
        assert np.log(-np.log(lo[0])) - np.log(-np.log(point)) == pytest.approx(
            np.log(-np.log(point)) - np.log(-np.log(hi[0])), rel=1e-6)  # symmetric on the log-H0 scale
    assert 0.9 <= np.mean(hits) <= 0.99, np.mean(hits)


def test_breslow_band_before_the_first_event_and_wider_at_a_higher_level():
    times, h0 = np.array([5.0, 10.0, 20.0]), np.array([0.1, 0.25, 0.3])
    lo, hi = breslow_band(times, h0, 2.0, [1.0, 15.0])
    assert lo[0] == hi[0] == 1.0 and lo[1] < np.exp(-0.5) < hi[1]
    lo99, hi99 = breslow_band(times, h0, 2.0, [15.0], level=0.99)
    assert lo99[0] < lo[1] and hi99[0] > hi[1]


@pytest.mark.parametrize("call,fragment", [
    (lambda: CalibrationBootstrap([0.1, 0.2, 0.3], [0, 1, 0]), ">= 4 patients"),
    (lambda: CalibrationBootstrap([0.1, 0.2, 0.3, 0.4], [1, 1, 1, 1]), "single class"),
    (lambda: CalibrationBootstrap([0.1, 0.2, np.nan, 0.4], [0, 1, 0, 1]), "finite"),
    (lambda: CalibrationBootstrap([0.1, 0.2, 0.3, 0.4], [0, 2, 0, 1]), "0/1"),
    (lambda: CalibrationBootstrap([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], level=95), "level"),
    (lambda: breslow_band([3.0, 1.0], [0.1, 0.2], 1.0, [2.0]), "non-decreasing"),
    (lambda: breslow_band([1.0, 3.0], [0.1, 0.2], -1.0, [2.0]), "relative risk"),
])
def test_bad_input_is_one_clear_error(call, fragment):
    with pytest.raises(ValueError, match=fragment):
        call()
