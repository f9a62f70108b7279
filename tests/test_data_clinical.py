"""Clinical covariates: validation, encoding, joining by patient id, the phantom clinical table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_pipelines import clinical, ehr, phantoms

SCHEMA = {"age": clinical.Field("numeric", 18, 100), "sex": clinical.Field("categorical", categories=("F", "M")),
          "smoker": clinical.Field("binary"), "bmi": clinical.Field("numeric", 10, 80, required=False)}


def _table():
    return pd.DataFrame({"patient_id": ["p1", "p2", "p3", "p4"], "age": [40, 60, 80, 50],
                         "sex": ["F", "M", "M", "F"], "smoker": [0, 1, 0, 1], "bmi": [22.0, np.nan, 30.0, 26.0]})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_read_and_validate_round_trip(tmp_path, suffix):
    path = tmp_path / f"ehr{suffix}"
    (_table().to_csv(path, index=False) if suffix == ".csv" else _table().to_parquet(path))
    df = clinical.validate(clinical.read_table(path), SCHEMA, source=str(path))
    assert list(df["patient_id"]) == ["p1", "p2", "p3", "p4"]


@pytest.mark.parametrize("edit,msg", [
    (lambda d: d.assign(age=[40, 60, 120, 50]), r"'age': values \[120\] outside \[18, 100\] \(patients \['p3'\]\)"),
    (lambda d: d.assign(sex=["F", "M", "X", "F"]), r"'sex': unknown categories \['X'\]"),
    (lambda d: d.assign(smoker=[0, 2, 0, 1]), r"'smoker': binary column has values \[2\]"),
    (lambda d: d.assign(age=[40, "old", 80, 50]), r"'age': non-numeric values \['old'\]"),
    (lambda d: d.assign(age=[40, None, 80, 50]), r"'age': missing values for \['p2'\]"),
    (lambda d: d.assign(patient_id=["p1", "p1", "p3", "p4"]), r"duplicated patient_id: \['p1'\]"),
    (lambda d: d.drop(columns=["sex"]), r"column 'sex' missing"),
])
def test_validate_names_the_problem(edit, msg):
    with pytest.raises(ValueError, match=msg):
        clinical.validate(edit(_table()), SCHEMA, source="ehr.csv")


def test_encoder_one_hot_and_standardise_with_train_stats():
    df = _table()
    enc = clinical.ClinicalEncoder(SCHEMA).fit(df.iloc[:2])  # fit on "training" rows only
    assert enc.feature_names == ["age", "sex=F", "sex=M", "smoker", "bmi"]
    x = enc.transform(df)
    assert x.shape == (4, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], (np.array([40, 60, 80, 50]) - 50.0) / 10.0)
    np.testing.assert_array_equal(x[:, 1:3], [[1, 0], [0, 1], [0, 1], [1, 0]])
    assert x[1, 4] == 0.0  # missing optional numeric -> training mean -> 0 after standardising
    with pytest.raises(ValueError, match="not fitted"):
        clinical.ClinicalEncoder(SCHEMA).transform(df)


def test_join_aligns_and_reports_missing_or_duplicated_ids():
    df = _table()
    out = clinical.join(["p3", "p1", "p3"], df)
    assert list(out["patient_id"]) == ["p3", "p1", "p3"] and list(out["age"]) == [80, 40, 80]
    with pytest.raises(ValueError, match=r"no row for 2 patient ids, e\.g\. \['p8', 'p9'\]"):
        clinical.join(["p1", "p9", "p8"], df, source="ehr.csv")
    with pytest.raises(ValueError, match=r"duplicated patient_id \['p2'\]"):
        clinical.join(["p1"], pd.concat([df, df.iloc[[1]]]))


def test_phantom_clinical_table_is_valid_and_outcome_tracks_tumour_size():
    cfg = phantoms.PhantomConfig(kind="brain", shape=(32, 32))
    table = ehr.clinical_table(cfg, 64)
    df = clinical.validate(table, clinical.PHANTOM_SCHEMA)
    assert df["patient_id"].tolist()[:2] == [phantoms.make_phantom(cfg, i)["patient_id"] for i in range(2)]
    frac, outcome = np.array(table["tumour_fraction"]), np.array(table["outcome"])
    assert 0 < outcome.mean() < 1
    assert frac[outcome == 1].mean() > frac[outcome == 0].mean()
    assert ehr.clinical_table(cfg, 3) == ehr.clinical_table(cfg, 3)  # deterministic
    x = clinical.ClinicalEncoder(clinical.PHANTOM_SCHEMA).fit_transform(df)
    assert x.shape == (64, 10) and np.all(np.isfinite(x))


def _outcome_cfg(**kw):
    from zoo.configs import load_config

    c = load_config("outcome_smoke").data
    c.image_size, c.num_patients = (16, 16), 60
    for k, v in kw.items():
        c[k] = v
    return c


def test_outcome_cohort_through_load_dataset():
    from data_pipelines import outcome_data
    from data_pipelines.datasets import load_dataset

    train, val, info = load_dataset(_outcome_cfg())
    want_tr, want_va, want_info = outcome_data.make_outcome_dataset(outcome_data.OutcomeDataConfig(
        kind="brain", shape=(16, 16), num_patients=60, val_fraction=0.25, noise_sd=0.5, seed=0))
    for k in want_tr:
        np.testing.assert_array_equal(np.asarray(train[k]), np.asarray(want_tr[k]))
        np.testing.assert_array_equal(np.asarray(val[k]), np.asarray(want_va[k]))
    assert info.covariate_names == outcome_data.COVARIATE_NAMES and info.num_classes == 2
    assert info.class_names == ("good", "adverse") and info.channel_names == ("FLAIR", "T1", "T1c", "T2")
    assert info.spatial_dims == 2 and info.name == "outcome_phantoms/brain"
    assert info.extra == {k: want_info[k] for k in ("risk_weights", "noise_sd", "prevalence")}


@pytest.mark.parametrize("kw,msg", [
    ({"image_size": (16, 16, 16)}, r"data.image_size \(16, 16, 16\) does not have data.spatial_dims=2 entries"),
    ({"num_patients": 4}, r"the outcome has a single class; use more data.num_patients"),
])
def test_outcome_cohort_config_errors(kw, msg):
    from data_pipelines.datasets import load_dataset

    with pytest.raises(ValueError, match=msg):
        load_dataset(_outcome_cfg(**kw))
