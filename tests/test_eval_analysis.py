"""Bootstrap CIs, streaming accumulation and the error/subgroup analysis helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from eval import error_analysis as A
import scoring as M
from eval.bootstrap import bootstrap_ci, bootstrap_statistics, paired_delta_ci, unpaired_delta_ci
from eval.deltas import CaseValues, paired_deltas
from eval.studies.ablations import ABLATIONS, ablation_markdown
from eval.streaming import HistogramAUC, SegmentationAccumulator


def test_bootstrap_ci_covers_mean_and_ignores_nan():
    rng = np.random.default_rng(0)
    v = rng.normal(0.8, 0.05, size=40)
    ci = bootstrap_ci(np.r_[v, np.nan], n_boot=500)
    assert ci.n == 40 and abs(ci.estimate - v.mean()) < 1e-12
    assert ci.low < ci.estimate < ci.high
    # Width close to the normal approximation 2 * 1.96 * sd / sqrt(n).
    assert 0.5 < (ci.high - ci.low) / (2 * 1.96 * v.std() / math.sqrt(40)) < 1.5
    assert math.isnan(bootstrap_ci([np.nan, np.nan]).estimate)
    d = paired_delta_ci(v, v + 0.1, n_boot=200)
    assert abs(d.estimate - 0.1) < 1e-12 and abs(d.low - 0.1) < 1e-12 and abs(d.high - 0.1) < 1e-12
    u = unpaired_delta_ci(v, v + 0.2, n_boot=300)
    assert u.low < 0.2 < u.high
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(v, n_boot=0)
    with pytest.raises(ValueError, match="same cases"):
        paired_delta_ci(v, v[:3])


def test_bootstrap_statistics_of_several_case_sets_resamples_each_within_itself():
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=7), rng.normal(size=11)]  # e.g. two folds' test sets

    def stat(idxs):  # a statistic of every set, averaged (what a cross-validated report gives)
        return {"mean": float(np.mean([x[i].mean() for x, i in zip(xs, idxs)]))}

    ci = bootstrap_statistics(stat, [7, 11], n_boot=200, seed=5)["mean"]
    # The same as drawing every set's resamples in turn from one generator, by hand.
    r = np.random.default_rng(5)
    draws = [[r.integers(0, len(x), len(x)) for _ in range(200)] for x in xs]
    boot = [np.mean([x[draws[i][b]].mean() for i, x in enumerate(xs)]) for b in range(200)]
    assert ci.estimate == pytest.approx(np.mean([x.mean() for x in xs]), abs=1e-12) and ci.n == 18
    assert (ci.low, ci.high) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])), abs=1e-12)
    # One set: the index array itself, as before.
    one = bootstrap_statistics(lambda i: {"m": float(xs[0][i].mean())}, 7, n_boot=50)["m"]
    assert one.estimate == pytest.approx(xs[0].mean()) and one.n == 7
    with pytest.raises(ValueError, match="positive number of cases"):
        bootstrap_statistics(stat, [7, 0])


def test_paired_deltas_pair_the_shared_cases_and_name_the_others():
    ab = ABLATIONS["loss"]
    ref = CaseValues(("c1", "c2", "c3", "c3"), {"dice": np.array([0.5, 0.6, 0.7, 0.8])})
    treat = CaseValues(("c4", "c3", "c2", "c3"), {"dice": np.array([0.1, 0.9, 0.7, 1.0])})
    (row,) = paired_deltas({"r": ref, "t": treat}, [(ab, "r", "t")], metrics=("dice",), n_boot=100)
    # c2 and the two slices of c3 (paired by occurrence); c1 and c4 were scored by one run only.
    assert row["n"] == 3 and row["dropped_cases"] == ["c1", "c4"]
    assert row["delta"] == pytest.approx(np.mean([0.7 - 0.6, 0.9 - 0.7, 1.0 - 0.8]))
    assert row["reference_mean"] == pytest.approx(0.7) and not row["identical"]
    assert "left out of the pair" in ablation_markdown([row]) and "c1, c4" in ablation_markdown([row])
    apart = CaseValues(("x",), {"dice": np.array([1.0])})
    (err,) = paired_deltas({"r": ref, "t": apart}, [(ab, "r", "t")], metrics=("dice",))
    assert "share no case" in err["error"]
    rows = CaseValues.of_rows([{"case": "a", "dice": 0.5}, {"case": "b", "dice": 0.25}], ("dice",))
    (same,) = paired_deltas({"r": rows, "t": rows}, [(ab, "r", "t")], metrics=("dice",), n_boot=10)
    assert same["identical"] and same["delta"] == 0.0 and same["dropped_cases"] == []


def _label_maps(n, shape, k, seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, k, size=(n, *shape))
    p = np.where(rng.uniform(size=t.shape) < 0.7, t, rng.integers(0, k, size=t.shape))
    return p, t


@pytest.mark.parametrize("shape,k,structures", [((12, 10), 2, None), ((5, 6, 7), 4, dict(M.BRATS_REGIONS))])
def test_streaming_accumulator_equals_direct_computation(shape, k, structures):
    p, t = _label_maps(5, shape, k, k)
    acc = SegmentationAccumulator(k, ("dice", "sensitivity", "hd95"), structures, spacing=(1.0,) * len(shape))
    acc.update(p[:2], t[:2])
    acc.update(p[2:], t[2:], case_ids=["c", "d", "e"])
    assert acc.case_ids == [0, 1, "c", "d", "e"]
    structs = structures or {f"class{c}": (c,) for c in range(1, k)}
    for i in range(5):
        for s, labels in structs.items():
            pm, tm = np.isin(p[i], labels), np.isin(t[i], labels)
            assert acc.per_case("dice", s)[i] == pytest.approx(M.dice(pm, tm), abs=1e-12, nan_ok=True)
            assert acc.per_case("hd95", s)[i] == pytest.approx(M.hd95(pm, tm), abs=1e-12, nan_ok=True)
    want_cm = sum(M.confusion_matrix(a, b, k) for a, b in zip(p, t))
    assert np.array_equal(acc.confusion, want_cm)
    assert acc.summary()["num_cases"] == 5


def test_histogram_auc_exact_on_grid():
    rng = np.random.default_rng(3)
    t = rng.integers(0, 3, size=(4, 9, 9))
    probs = rng.dirichlet(np.ones(3), size=t.shape)
    probs = np.round(probs * 10) / 10  # on the 11-level grid
    h = HistogramAUC(3, num_bins=11)
    h.update(probs[:2], t[:2])
    h.update(probs[2:], t[2:])
    for c in range(3):
        y, s = (t == c).ravel(), probs[..., c].ravel()
        assert h.auc_roc()[c] == pytest.approx(skm.roc_auc_score(y, s), abs=1e-9)
        assert h.auprc()[c] == pytest.approx(skm.average_precision_score(y, s), abs=1e-9)
    with pytest.raises(ValueError, match="outside"):
        h.update(probs * 2, t)


def test_lesion_table_and_size_bands():
    t = np.zeros((12, 12), bool)
    t[1:3, 1:3] = True      # 4 voxels, detected
    t[6:11, 6:11] = True    # 25 voxels, missed
    t[1, 8] = True          # 1 voxel, detected with a larger prediction
    p = np.zeros_like(t)
    p[1:3, 1:4] = True      # 6 voxels over the small lesion
    p[0:3, 8] = True        # 3 voxels over the single voxel
    rows = sorted(A.lesion_table(p, t, spacing=(2.0, 1.0)), key=lambda r: r["size"])
    assert [r["size"] for r in rows] == [1, 4, 25]
    assert [r["detected"] for r in rows] == [True, True, False]
    assert rows[0]["dice"] == pytest.approx(2 * 1 / (3 + 1))
    assert rows[1]["dice"] == pytest.approx(2 * 4 / (6 + 4)) and rows[2]["dice"] == 0.0
    assert rows[2]["volume"] == 50.0
    labels, edges = A.size_bands([r["size"] for r in rows], edges=(2, 10))
    assert labels == ["small", "medium", "large"]
    strata = A.stratify([1.0, 0.5, 0.0, 0.2], ["a", "b", "a", "b"], min_n=3, n_boot=100)
    assert [(r["stratum"], r["n"], r["mean"], r["small"]) for r in strata] == [("a", 2, 0.5, True),
                                                                                ("b", 2, pytest.approx(0.35), True)]


def test_boundary_error_bands_hand_case():
    t = np.zeros((1, 9), bool)
    t[0, 2:7] = True            # surface voxels at columns 2..6 (row has height 1: all are surface)
    p = np.zeros_like(t)
    p[0, 0:5] = True            # FP at columns 0, 1 (distances 2, 1); FN at 5, 6 (distance 0)
    b = A.boundary_error_bands(p, t, bands=(0, 1, 2, np.inf))
    assert b["fn"].tolist() == [2, 0, 0]
    assert b["fp"].tolist() == [0, 1, 1]
    assert b["voxels"].sum() == 9
    with pytest.raises(ValueError, match="bands"):
        A.boundary_error_bands(p, t, bands=(0, 0))


def test_worst_cases_reasons_and_subgroups():
    values = {"dice": np.array([0.9, 0.0, 0.1, 0.8]), "hd95": np.array([1.0, np.nan, 30.0, 2.0])}
    vols = np.array([[100, 100], [50, 0], [1000, 200], [0, 0]])
    w = A.worst_cases(["a", "b", "c", "d"], values, volumes=vols, k=2)
    assert [r["case"] for r in w] == ["b", "c"]
    assert "missed" in w[0]["reasons"][0]
    assert any("under-segmentation" in r for r in w[1]["reasons"])
    assert A.age_bands([10, 45, 85, np.nan]) == ["0-39", "40-59", "80+", "unknown"]
    rng = np.random.default_rng(0)
    v = np.r_[rng.normal(0.8, 0.02, 30), rng.normal(0.6, 0.02, 4)]
    site = ["A"] * 30 + ["B"] * 4
    rows = A.subgroup_table(v, {"site": site}, min_n=10, n_boot=300)
    b = [r for r in rows if r["level"] == "B"][0]
    assert b["small"] and b["n"] == 4 and b["delta_ci_high"] < 0  # clearly worse, flagged small
    ext = A.external_validation(v[:30], v[30:], n_boot=300)
    assert ext["small"] and ext["delta"]["high"] < 0
    with pytest.raises(ValueError, match="labels"):
        A.subgroup_table(v, {"sex": ["F"]})
