"""The phantom outcome cohort (data_pipelines.outcome_data) through load_dataset: arrays, info, config errors."""

from __future__ import annotations

import numpy as np
import pytest


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
