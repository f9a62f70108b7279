"""The one covariate encoder (data_pipelines.covariates): train-fitted imputation, one-hot, standardisation,
restored state; the phantom cohort's fixed encoding; cohort tables read from CSV / Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_pipelines import ehr, phantoms
from data_pipelines.covariates import CovariateEncoder
from zoo.outcome.cohorts import read_table


def _table():
    return pd.DataFrame({"patient_id": ["p1", "p2", "p3", "p4"], "age": [40, 60, 80, 50],
                         "sex": ["F", "M", "M", "F"], "smoker": [0, 1, 0, 1], "bmi": [22.0, np.nan, 30.0, 26.0]})


def _encoder():
    # every level its own column, age and bmi standardised, the binary smoker as it is
    return CovariateEncoder(["age", "sex", "smoker", "bmi"], ["sex"], standardise=["age", "bmi"],
                            drop_reference=False, levels={"sex": ("F", "M")})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_table_round_trip(tmp_path, suffix):
    path = tmp_path / f"ehr{suffix}"
    (_table().to_csv(path, index=False) if suffix == ".csv" else _table().to_parquet(path))
    df = read_table(path)
    assert list(df["patient_id"]) == ["p1", "p2", "p3", "p4"]
    other = tmp_path / "ehr.xlsx"
    other.write_text("x")
    with pytest.raises(ValueError, match="unknown table format"):
        read_table(other)


def test_encoder_one_hot_and_standardise_with_train_stats():
    df = _table()
    enc = _encoder().fit(df.iloc[:2])  # fit on "training" rows only
    assert list(enc.feature_names) == ["age", "sex=F", "sex=M", "smoker", "bmi"]
    x = enc.transform(df)
    assert x.shape == (4, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], (np.array([40, 60, 80, 50]) - 50.0) / 10.0)
    np.testing.assert_array_equal(x[:, 1:3], [[1, 0], [0, 1], [0, 1], [1, 0]])
    np.testing.assert_array_equal(x[:, 3], [0, 1, 0, 1])
    assert x[1, 4] == 0.0  # missing numeric -> training median (22) -> 0 after standardising
    with pytest.raises(ValueError, match="not fitted"):
        _encoder().transform(df)


def test_restored_encoder_matches_and_array_input():
    df = _table()
    enc = _encoder().fit(df)
    again = CovariateEncoder.from_dict(enc.to_dict())
    np.testing.assert_array_equal(again.transform(df), enc.transform(df))
    assert again.feature_names == enc.feature_names
    # a numeric matrix (the survival heads' standardiser): columns named in order
    m = np.array([[1.0, 10.0], [3.0, 10.0]])
    z = CovariateEncoder(["a", "b"], standardise=True).fit(m)
    np.testing.assert_array_equal(z.transform(m), [[-1.0, 0.0], [1.0, 0.0]])  # constant column: sd 1
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        z.transform(np.zeros((2, 3)))
    # restored without medians: a missing value stays NaN (for the model to refuse)
    bare = CovariateEncoder.from_dict({"covariates": ["a"], "standardise": {"a": [1.0, 2.0]}})
    out = bare.transform(np.array([[3.0], [np.nan]]))
    assert out[0, 0] == 1.0 and np.isnan(out[1, 0])


@pytest.mark.parametrize("kwargs,match", [
    ({"covariates": ["a"], "categorical": ["b"]}, "not among the covariates"),
    ({"covariates": ["a", "b"], "categorical": ["b"], "standardise": ["b"]}, "not numeric"),
    ({"covariates": ["a"], "levels": {"a": ("x",)}}, "not categorical"),
])
def test_encoder_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CovariateEncoder(**kwargs)


def test_phantom_encoding_is_the_fixed_formula():
    age, sex, com = ehr.synthetic_ehr(np.random.default_rng(0), 200)
    x = ehr.encode_covariates(age, sex, com)
    want = np.stack([(age - ehr.AGE_MEAN) / ehr.AGE_SD, sex == "F", sex == "M"]
                    + [com[:, i].astype(np.float64) for i in range(com.shape[1])], axis=1).astype(np.float32)
    np.testing.assert_array_equal(x, want)
    assert x.shape[1] == len(ehr.COVARIATE_NAMES)
    with pytest.raises(ValueError, match="NaN"):
        ehr.encode_covariates([np.nan], ["F"], np.zeros((1, 4)))


def test_phantom_clinical_table_is_valid_and_outcome_tracks_tumour_size():
    cfg = phantoms.PhantomConfig(kind="brain", shape=(32, 32))
    table = ehr.clinical_table(cfg, 64)
    df = pd.DataFrame(table)
    assert df["patient_id"].tolist()[:2] == [phantoms.make_phantom(cfg, i)["patient_id"] for i in range(2)]
    assert df["age"].between(18, 90).all() and set(df["sex"]) <= {"F", "M"} and set(df["site"]) <= set(ehr.SITES)
    assert all(set(df[c]) <= {0, 1} for c in ehr.COMORBIDITIES) and df["patient_id"].is_unique
    frac, outcome = np.array(table["tumour_fraction"]), np.array(table["outcome"])
    assert 0 < outcome.mean() < 1
    assert frac[outcome == 1].mean() > frac[outcome == 0].mean()
    assert ehr.clinical_table(cfg, 3) == ehr.clinical_table(cfg, 3)  # deterministic
    enc = CovariateEncoder(["age", "sex", *ehr.COMORBIDITIES, "site"], ["sex", "site"], standardise=["age"],
                           drop_reference=False, levels={"sex": ("F", "M"), "site": ehr.SITES})
    x = enc.fit_transform(df)
    assert x.shape == (64, 10) and np.all(np.isfinite(x))
