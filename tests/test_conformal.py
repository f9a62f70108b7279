"""scoring.conformal (conformal risk control of the missed-lesion fraction) against a brute-force reference and a
synthetic coverage check; scoring.calibration's voxel reliability histogram and temperature fit."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.calibration import ReliabilityHistogram, expected_calibration_error, fit_temperature, temperature_nll
from scoring.conformal import conformal_threshold, empirical_risk, min_calibration_cases, miss_fraction


def _cases(rng, n, shape=(12, 12), low=0.0):
    probs, masks = [], []
    for _ in range(n):
        m = rng.random(shape) < rng.uniform(low, 0.4)
        p = np.clip(np.where(m, rng.beta(4, 2, shape), rng.beta(2, 5, shape)), 0, 1)
        probs.append(np.round(p, 2))  # ties between voxels and cases
        masks.append(m)
    return probs, masks


def _brute(probs, masks, alpha):
    """The largest t over every value in [0, 1] on a fine grid and every lesion probability, by direct counting."""
    n = len(probs)
    grid = np.unique(np.concatenate([np.linspace(0, 1, 1001), *[p[m] for p, m in zip(probs, masks)]]))
    best = None
    for t in grid:
        losses = [((p < t) & m).sum() / m.sum() if m.any() else 0.0 for p, m in zip(probs, masks)]
        if (n * np.mean(losses) + 1) / (n + 1) <= alpha + 1e-12:
            best = t
    return best


@pytest.mark.parametrize("seed,n,alpha", [(0, 9, 0.1), (1, 20, 0.1), (2, 30, 0.2), (3, 12, 0.05 + 0.03)])
def test_threshold_equals_brute_force(seed, n, alpha):
    probs, masks = _cases(np.random.default_rng(seed), n)
    t = conformal_threshold(probs, masks, alpha)
    assert t == pytest.approx(_brute(probs, masks, alpha))
    assert (n * empirical_risk(probs, masks, t) + 1) / (n + 1) <= alpha + 1e-12


def test_miss_fraction_by_hand():
    p = np.array([[0.1, 0.5], [0.9, 0.3]])
    m = np.array([[1, 1], [1, 0]], bool)
    assert miss_fraction(p, m, 0.5) == pytest.approx(1 / 3)   # 0.1 missed; 0.5 >= 0.5 kept
    assert miss_fraction(p, m, 0.51) == pytest.approx(2 / 3)
    assert miss_fraction(p, np.zeros_like(m), 0.9) == 0.0


def test_too_few_cases_and_bad_input_are_named():
    probs, masks = _cases(np.random.default_rng(0), 8)
    assert min_calibration_cases(0.1) == 9
    with pytest.raises(ValueError, match="at least 9 calibration cases"):
        conformal_threshold(probs, masks, 0.1)
    with pytest.raises(ValueError, match="alpha"):
        conformal_threshold(probs, masks, 1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        conformal_threshold([np.zeros((2, 2))] * 9, [np.zeros((3, 3))] * 9, 0.1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        conformal_threshold([np.full((2, 2), 2.0)] * 9, [np.ones((2, 2))] * 9, 0.1)


def test_expected_miss_fraction_stays_below_alpha():
    """Exchangeable cases: over many draws of 10 calibration cases + 1 test case, the mean test miss fraction
    is at most alpha (the paper's guarantee), and not far below it (the threshold is not trivially 0)."""
    rng = np.random.default_rng(7)
    alpha, n, draws = 0.1, 30, 200
    probs, masks = _cases(rng, draws * (n + 1), shape=(16, 16), low=0.1)
    losses = []
    for d in range(draws):
        sl = slice(d * (n + 1), (d + 1) * (n + 1))
        p, m = probs[sl], masks[sl]
        t = conformal_threshold(p[:n], m[:n], alpha)
        losses.append(miss_fraction(p[n], m[n], t))
    mean = float(np.mean(losses))
    assert mean <= alpha + 2 * np.std(losses) / np.sqrt(draws)
    assert mean > 0.05


def test_reliability_histogram_equals_binary_ece_and_chunks_add():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2000, 3)) * 2
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = rng.integers(0, 3, 2000)
    whole = ReliabilityHistogram(10).update(proba, labels)
    chunks = ReliabilityHistogram(10).update(proba[:700], labels[:700]).update(proba[700:], labels[700:])
    conf, correct = proba.max(1), (proba.argmax(1) == labels).astype(float)
    assert whole.ece == pytest.approx(expected_calibration_error(correct, conf, 10))
    assert chunks.ece == pytest.approx(whole.ece)
    c = whole.curve()
    assert sum(c["count"]) == 2000 and len(c["accuracy"]) == len(c["confidence"])
    with pytest.raises(ValueError, match="labels must lie"):
        ReliabilityHistogram().update(proba, labels + 3)


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    """Labels drawn from softmax(z / T): the fitted temperature of z is T."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40000, 4)) * 3
    p = np.exp(z / true_t)
    p /= p.sum(1, keepdims=True)
    y = (rng.random((len(z), 1)) > np.cumsum(p, 1)).sum(1)
    t = fit_temperature(z, y)
    assert t == pytest.approx(true_t, rel=0.05)
    assert temperature_nll(z, y, t) <= temperature_nll(z, y, 1.0)
