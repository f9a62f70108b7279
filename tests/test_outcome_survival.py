"""Survival heads: Efron / logistic-hazard losses against numpy references, the synthetic hazard recovered."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.info import DatasetInfo
from data_pipelines.outcome_data import OutcomeDataConfig, make_outcome_dataset
from scoring.survival import concordance_index_censored
from zoo.outcome.survival import breslow, discretise, fit_deep_survival, survival_config, time_bins
from zoo.outcome.tasks import cox_efron_loss, logistic_hazard_loss


def _efron_reference(eta, time, event):
    """Efron's partial log-likelihood, loop over distinct event times (the textbook form)."""
    ll = 0.0
    for t in np.unique(time[event == 1]):
        dead = (time == t) & (event == 1)
        d = dead.sum()
        risk = np.exp(eta[time >= t]).sum()
        tied = np.exp(eta[dead]).sum()
        ll += eta[dead].sum() - sum(np.log(risk - l / d * tied) for l in range(d))
    return -ll / max(event.sum(), 1)


def _breslow_ties_reference(eta, time, event):
    ll = sum(eta[i] - np.log(np.exp(eta[time >= time[i]]).sum()) for i in np.flatnonzero(event))
    return -ll / max(event.sum(), 1)


CASES = [
    dict(time=[1, 1, 1, 2, 2, 3, 4, 4], event=[1, 1, 0, 1, 1, 0, 1, 0]),  # ties of events, and with censoring
    dict(time=[5, 4, 3, 2, 1], event=[1, 1, 1, 1, 1]),  # no ties
    dict(time=[2, 2, 2, 2], event=[1, 1, 1, 1]),  # all tied
    dict(time=[1, 2, 3], event=[0, 0, 0]),  # no event: loss 0
]


@pytest.mark.parametrize("case", CASES)
def test_efron_matches_numpy_reference(case):
    rng = np.random.default_rng(len(case["time"]))
    time, event = np.asarray(case["time"], np.float32), np.asarray(case["event"], np.int32)
    eta = rng.normal(size=len(time)).astype(np.float32) * 2
    ours = float(jax.jit(cox_efron_loss)(jnp.asarray(eta), jnp.asarray(time), jnp.asarray(event)))
    assert ours == pytest.approx(_efron_reference(eta.astype(np.float64), time, event), rel=1e-5, abs=1e-6)
    if len(np.unique(time[event == 1])) == event.sum():  # no tied events: Efron == Breslow
        assert ours == pytest.approx(_breslow_ties_reference(eta.astype(np.float64), time, event), rel=1e-5, abs=1e-6)
    grad = jax.grad(cox_efron_loss)(jnp.asarray(eta), jnp.asarray(time), jnp.asarray(event))
    assert np.all(np.isfinite(np.asarray(grad)))
    # invariant to a common shift of eta (and stable far from 0)
    shifted = float(cox_efron_loss(jnp.asarray(eta + 50.0), jnp.asarray(time), jnp.asarray(event)))
    assert shifted == pytest.approx(ours, rel=1e-4, abs=1e-5)


def test_logistic_hazard_matches_numpy_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype(np.float32)
    bins, event = np.array([0, 1, 3, 2, 0, 3], np.int32), np.array([1, 0, 1, 1, 0, 0], np.int32)
    h = 1 / (1 + np.exp(-logits.astype(np.float64)))
    ref = np.mean([-np.log(1 - h[i, :bins[i]]).sum()
                   - (np.log(h[i, bins[i]]) if event[i] else np.log(1 - h[i, bins[i]])) for i in range(6)])
    ours = float(logistic_hazard_loss(jnp.asarray(logits), jnp.asarray(bins), jnp.asarray(event)))
    assert ours == pytest.approx(ref, rel=1e-5)


def test_bins_and_breslow():
    time = np.array([1.0, 2.0, 2.0, 3.0, 5.0, 8.0])
    event = np.array([1, 1, 0, 1, 0, 1])
    edges = time_bins(time, event, 2)
    assert edges[0] == 0 and edges[-1] == 8.0 and len(edges) == 3
    assert discretise([0.0, edges[1], edges[1] + 0.1, 100.0], edges).tolist() == [0, 0, 1, 1]
    t, h0 = breslow(np.zeros(6), time, event)
    # eta = 0: Breslow is the Nelson-Aalen estimator, 1/6 + 1/5 at t = 2
    assert h0[list(t).index(2.0)] == pytest.approx(1 / 6 + 1 / 5)


def test_fused_model_recovers_the_synthetic_hazard(tmp_path):
    """Fused image + EHR deep Cox beats EHR-only Cox (scikit-survival) on held-out synthetic patients: the hazard
    depends on the tumour size, which only the image shows."""
    sk = pytest.importorskip("sksurv.linear_model")
    train, test, info = make_outcome_dataset(OutcomeDataConfig(num_patients=800, shape=(16, 16), seed=0))
    assert 0.2 < train["event"].mean() < 0.8 and train["time"].min() > 0
    n_fit = int(0.8 * len(train["time"]))
    fit = {k: v[:n_fit] for k, v in train.items() if k in ("image", "covariates", "time", "event")}
    select = {k: v[n_fit:] for k, v in train.items() if k in ("image", "covariates", "time", "event")}
    meta = DatasetInfo(info["name"], 1, tuple(info["channel_names"]), (), 2,
                       covariate_names=tuple(info["covariate_names"]))
    cfg = survival_config("cox", "both", steps=150, batch_size=64, learning_rate=3e-3, eval_every=50,
                          encoder_kwargs={"features": 8, "depth": 2, "norm": "none"})
    model = fit_deep_survival(cfg, fit, select, meta, str(tmp_path / "fused"))
    ev = test["event"].astype(bool)
    c_fused = concordance_index_censored(ev, test["time"], model.risk(test["covariates"], test["image"]))[0]
    y = np.empty(n_fit, dtype=[("event", bool), ("time", float)])
    y["event"], y["time"] = fit["event"].astype(bool), fit["time"]
    cox = sk.CoxPHSurvivalAnalysis(alpha=1e-3).fit(fit["covariates"].astype(float), y)
    c_ehr = concordance_index_censored(ev, test["time"], cox.predict(test["covariates"].astype(float)))[0]
    c_oracle = concordance_index_censored(ev, test["time"], test["risk"])[0]
    assert c_ehr < c_fused <= c_oracle + 0.02, (c_ehr, c_fused, c_oracle)
    s = model.survival(test["covariates"][:4], [1.0, 5.0, 10.0], test["image"][:4])
    assert s.shape == (4, 3) and np.all(np.diff(s, axis=1) <= 0) and np.all((s >= 0) & (s <= 1))
