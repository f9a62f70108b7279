"""Patient-level splits: no patient on both sides, stratified, reproducible, order-independent."""

from __future__ import annotations

import numpy as np
import pytest

from data_pipelines import patient_kfold, patient_split, site_split, train_val_test_split


def _cohort(n_patients=23, seed=0):
    """Several samples per patient (like slices), with a per-patient binary stratum."""
    rng = np.random.default_rng(seed)
    ids, strat = [], []
    for p in range(n_patients):
        pos = p % 3 == 0
        for _ in range(int(rng.integers(1, 5))):
            ids.append(f"pat{p:03d}")
            strat.append(int(pos))
    return np.array(ids), np.array(strat)


@pytest.mark.parametrize("k,stratified", [(2, False), (5, False), (5, True), (23, False)])
def test_kfold_partitions_patients(k, stratified):
    ids, strat = _cohort()
    folds = patient_kfold(ids, k, seed=3, stratify=strat if stratified else None)
    assert len(folds) == k
    seen = np.concatenate([f.val for f in folds])
    assert sorted(seen.tolist()) == list(range(len(ids)))  # every sample validated exactly once
    for f in folds:
        assert not set(ids[f.train]) & set(ids[f.val])
        assert len(f.train) + len(f.val) == len(ids)
    sizes = [len(set(ids[f.val])) for f in folds]
    assert max(sizes) - min(sizes) <= 1  # patients dealt evenly


def test_kfold_stratification_balances_strata():
    ids = np.array([f"p{i}" for i in range(40)])
    strat = np.array([1] * 10 + [0] * 30)
    for f in patient_kfold(ids, 5, seed=1, stratify=strat):
        assert strat[f.val].sum() == 2 and len(f.val) == 8


def test_kfold_reproducible_and_order_independent():
    ids, strat = _cohort()
    a = patient_kfold(ids, 4, seed=7, stratify=strat)
    b = patient_kfold(ids, 4, seed=7, stratify=strat)
    c = patient_kfold(ids, 4, seed=8, stratify=strat)
    assert all(np.array_equal(x.val, y.val) for x, y in zip(a, b))
    assert not all(np.array_equal(x.val, y.val) for x, y in zip(a, c))
    perm = np.random.default_rng(0).permutation(len(ids))
    d = patient_kfold(ids[perm], 4, seed=7, stratify=strat[perm])
    for x, y in zip(a, d):
        assert set(ids[x.val]) == set(ids[perm][y.val])


@pytest.mark.parametrize("k,msg", [(1, "k must be an integer >= 2"), (24, "need at least 24 patients"),
                                   (2.5, "k must be an integer")])
def test_kfold_bad_k(k, msg):
    ids, _ = _cohort()
    with pytest.raises(ValueError, match=msg):
        patient_kfold(ids, k, seed=0)


def test_kfold_stratify_length_checked():
    with pytest.raises(ValueError, match="stratify has 2 entries"):
        patient_kfold(["a", "b", "c"], 2, 0, stratify=[0, 1])


def test_sklearn_style_splitter():
    ids, strat = _cohort()
    splits = list(patient_kfold(ids, 3, seed=0, stratify=strat))  # (train, val) pairs, as scikit-learn's split
    assert len(splits) == 3 and all(not set(ids[tr]) & set(ids[va]) for tr, va in splits)


def test_train_val_test_and_patient_split():
    ids, strat = _cohort(40)
    out = train_val_test_split(ids, (0.6, 0.2, 0.2), seed=0, stratify=strat)
    pats = {k: set(ids[v]) for k, v in out.items()}
    assert not (pats["train"] & pats["val"]) and not (pats["train"] & pats["test"]) and not (pats["val"] & pats["test"])
    assert sum(len(v) for v in out.values()) == len(ids)
    assert [len(pats[k]) for k in ("train", "val", "test")] == [24, 8, 8]
    tr, va = patient_split(["a", "b", "c", "d"], 0.2, seed=0)
    assert len(set(np.array(list("abcd"))[va])) == 1 and len(tr) == 3  # both sides non-empty
    with pytest.raises(ValueError, match="val_fraction"):
        patient_split(ids, 1.0)
    with pytest.raises(ValueError, match="at least 2 patients"):
        patient_split(["a", "a"], 0.5)
    with pytest.raises(ValueError, match="fractions"):
        train_val_test_split(ids, (0.5, 0.2, 0.2))


def _permute_reference(ids, val_fraction, seed):
    """The rule ``method="permute"`` documents: a permutation of the sorted patients, its first
    round(n * val_fraction) (clamped to [1, n - 1]) patients are validation."""
    unique = np.unique(np.asarray(ids))
    perm = np.random.default_rng(seed).permutation(len(unique))
    n_val = min(max(int(round(len(unique) * val_fraction)), 1), len(unique) - 1)
    is_val = np.isin(np.asarray(ids), unique[perm[:n_val]])
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


@pytest.mark.parametrize("n,val_fraction,seed", [(40, 0.25, [0, 1]), (7, 0.1, [5, 1]), (5, 0.9, 2), (23, 0.5, 3)])
def test_patient_split_permute(n, val_fraction, seed):
    ids, _ = _cohort(n)
    tr, va = patient_split(ids, val_fraction, seed=seed, method="permute")
    want_tr, want_va = _permute_reference(ids, val_fraction, seed)
    np.testing.assert_array_equal(tr, want_tr)
    np.testing.assert_array_equal(va, want_va)
    assert not set(ids[tr]) & set(ids[va]) and len(set(ids[va])) >= 1 and len(set(ids[tr])) >= 1
    with pytest.raises(ValueError, match="does not stratify"):
        patient_split(ids, val_fraction, seed=seed, stratify=ids, method="permute")
    with pytest.raises(ValueError, match="method must be 'deal' or 'permute'"):
        patient_split(ids, val_fraction, method="shuffle")


def test_site_split():
    sites = ["A", "A", "B", "C", "B"]
    internal, external = site_split(sites, "B")
    assert internal.tolist() == [0, 1, 3] and external.tolist() == [2, 4]
    with pytest.raises(ValueError, match=r"external site\(s\) \['Z'\] not in the data"):
        site_split(sites, "Z")
    with pytest.raises(ValueError, match="cover every site"):
        site_split(sites, ["A", "B", "C"])
    with pytest.raises(ValueError, match=r"patients \['p1'\] appear at both"):
        site_split(sites, "B", patient_ids=["p0", "p1", "p1", "p2", "p3"])
