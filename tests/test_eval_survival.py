"""scoring.survival and scoring.calibration against scikit-survival / scikit-learn on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import calibration as cal
from scoring import survival as S

sksurv_metrics = pytest.importorskip("sksurv.metrics")
from sksurv.nonparametric import kaplan_meier_estimator  # noqa: E402
from sksurv.util import Surv  # noqa: E402

TOL = 1e-6


def _cohort(seed, n, round_time=1, round_risk=2):
    rng = np.random.default_rng(seed)
    t = np.round(rng.exponential(5.0, n), round_time) + 0.1  # rounding: tied times
    e = rng.uniform(size=n) < 0.6
    risk = np.round(rng.normal(size=n) - 0.2 * t, round_risk)  # rounding: tied risks; informative
    return e, t, risk


CASES = [dict(seed=0, n=200), dict(seed=1, n=57), dict(seed=2, n=300, round_time=0), dict(seed=3, n=120, round_risk=0)]


@pytest.mark.parametrize("case", CASES)
def test_parity_with_scikit_survival(case):
    e, t, risk = _cohort(case["seed"], case["n"], case.get("round_time", 1), case.get("round_risk", 2))
    e_tr, t_tr, _ = _cohort(case["seed"] + 100, 400)
    t_tr[0] = t.max() + 1.0  # the training follow-up covers the test's
    y_tr, y_te = Surv.from_arrays(e_tr, t_tr), Surv.from_arrays(e, t)

    ours, ref = S.concordance_index_censored(e, t, risk), sksurv_metrics.concordance_index_censored(e, t, risk)
    assert abs(ours[0] - ref[0]) < TOL and tuple(ours[1:]) == tuple(int(v) for v in ref[1:])
    for tau in (None, float(np.percentile(t, 80))):
        ours = S.concordance_index_ipcw(y_tr, y_te, risk, tau=tau)
        ref = sksurv_metrics.concordance_index_ipcw(y_tr, y_te, risk, tau=tau)
        assert abs(ours[0] - ref[0]) < TOL and tuple(ours[1:]) == tuple(int(v) for v in ref[1:])

    times = np.percentile(t, [20, 40, 60, 80])
    surv = np.exp(-np.outer(np.exp(risk), times) / 5.0)
    for est in (risk, 1.0 - surv):  # 1-D risk, and time-dependent risk [N, T]
        a, m = S.cumulative_dynamic_auc(y_tr, y_te, est, times)
        ra, rm = sksurv_metrics.cumulative_dynamic_auc(y_tr, y_te, est, times)
        np.testing.assert_allclose(a, ra, atol=TOL)
        assert abs(m - rm) < TOL
    np.testing.assert_allclose(S.brier_score(y_tr, y_te, surv, times)[1],
                               sksurv_metrics.brier_score(y_tr, y_te, surv, times)[1], atol=TOL)
    assert abs(S.integrated_brier_score(y_tr, y_te, surv, times)
               - sksurv_metrics.integrated_brier_score(y_tr, y_te, surv, times)) < TOL
    for reverse in (False, True):
        ours, ref = S.kaplan_meier(e, t, reverse=reverse), kaplan_meier_estimator(e, t, reverse=reverse)
        np.testing.assert_allclose(ours[0], ref[0])
        np.testing.assert_allclose(ours[1], ref[1], atol=TOL)


def test_harrell_hand_example():
    # pairs (event i, later j): (0,1) concordant, (0,2) concordant, (1,2) tied risk -> (2 + 0.5) / 3
    c = S.concordance_index_censored([1, 1, 0], [1.0, 2.0, 3.0], [3.0, 1.0, 1.0])
    assert c[0] == pytest.approx(2.5 / 3) and c[1:4] == (2, 0, 1)


@pytest.mark.parametrize("call,match", [
    (lambda: S.concordance_index_censored([0, 0], [1.0, 2.0], [1.0, 2.0]), "censored"),
    (lambda: S.concordance_index_censored([1, 2], [1.0, 2.0], [1.0, 2.0]), "0/1"),
    (lambda: S.concordance_index_censored([1, 1], [-1.0, 2.0], [1.0, 2.0]), "finite and >= 0"),
    (lambda: S.concordance_index_censored([1, 1], [1.0, 2.0], [1.0]), "estimate"),
    (lambda: S.cumulative_dynamic_auc(S.surv_array([1, 0, 1], [1.0, 2.0, 3.0]),
                                      S.surv_array([1, 0, 1], [1.0, 2.0, 3.0]), [1.0, 2.0, 3.0], [3.0]),
     "follow-up"),
])
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_calibration_at_horizon_perfect_and_biased():
    rng = np.random.default_rng(0)
    rate = np.exp(rng.normal(size=4000))
    t = rng.exponential(1.0 / rate)
    e = np.ones_like(t, dtype=int)
    s_true = np.exp(-rate * 1.0)
    good = S.calibration_at_horizon(e, t, s_true, 1.0, n_groups=5)
    bad = S.calibration_at_horizon(e, t, np.clip(s_true + 0.2, 0, 1), 1.0, n_groups=5)
    assert good["ici"] < 0.03 < bad["ici"]
    assert sum(good["n"]) == 4000 and np.all(np.diff(good["predicted"]) > 0)


# ------------------------------------------------------------------------------------------------ binary

def _binary(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.4).astype(int)
    a = np.clip(0.4 + 0.25 * (y - 0.4) + rng.normal(0, 0.2, n), 0, 1)
    b = np.clip(0.4 + 0.1 * (y - 0.4) + rng.normal(0, 0.2, n), 0, 1)
    a[:10] = 0.6  # ties, and values on a bin edge
    return y, a, b


def test_binary_against_scikit_learn():
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import brier_score_loss, roc_auc_score

    y, a, b = _binary()
    assert abs(cal.brier_binary(y, a) - brier_score_loss(y, a)) < 1e-12
    for n_bins in (5, 10):
        ours, ref = cal.calibration_curve(y, a, n_bins), calibration_curve(y, a, n_bins=n_bins)
        np.testing.assert_allclose(ours[0], ref[0], atol=1e-12)
        np.testing.assert_allclose(ours[1], ref[1], atol=1e-12)
    d = cal.delong_test(y, a, b)
    assert abs(d["auc_a"] - roc_auc_score(y, a)) < 1e-12 and abs(d["auc_b"] - roc_auc_score(y, b)) < 1e-12
    assert d["delta"] < 0 and d["p_value"] < 0.05  # a is the better score
    same = cal.delong_test(y, a, a)
    assert same["delta"] == 0 and same["p_value"] == 1.0


def test_delong_variance_matches_structural_components():
    # slow reference: DeLong's placement values by explicit pairwise comparison
    y, a, b = _binary(1, 80)
    pos, neg = y == 1, y == 0

    def components(s):
        psi = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
        return psi.mean(1), psi.mean(0)

    (va10, va01), (vb10, vb01) = components(a), components(b)
    m, n = pos.sum(), neg.sum()
    var = (np.var(va10, ddof=1) + np.var(vb10, ddof=1) - 2 * np.cov(va10, vb10)[0, 1]) / m \
        + (np.var(va01, ddof=1) + np.var(vb01, ddof=1) - 2 * np.cov(va01, vb01)[0, 1]) / n
    assert cal.delong_test(y, a, b)["se"] == pytest.approx(np.sqrt(var), rel=1e-10)


def test_ece_and_net_benefit_by_hand():
    y = np.array([0, 1, 1, 0])
    p = np.array([0.1, 0.9, 0.6, 0.4])
    # bins of width 0.5: {0.1, 0.4} mean p 0.25 vs y 0; {0.9, 0.6} mean p 0.75 vs y 1 -> ECE 0.25
    assert cal.expected_calibration_error(y, p, n_bins=2) == pytest.approx(0.25)
    nb = cal.net_benefit(y, p, [0.5])
    # treat p >= 0.5: TP 2, FP 0 -> 2/4; treat all: 0.5 - 0.5 * 1 = 0
    assert nb["model"] == [pytest.approx(0.5)] and nb["treat_all"] == [pytest.approx(0.0)]
    with pytest.raises(ValueError, match="0/1"):
        cal.brier_binary([0, 2], [0.1, 0.2])
