"""Synthetic EHR: the one generator of phantom patients' covariates, risk and outcome.

A patient has an age (years, 18-90), a sex (``"F"``/``"M"``) and 0/1 comorbidities (``COMORBIDITIES``)
that become more likely with age (and, for cardiac disease and smoking, for men). Their adverse-outcome
log-odds (``risk_score``) combine one standard deviation of tumour size (which only the image shows), age
and the EHR fields with ``RISK_WEIGHTS``; image and EHR parts have similar variance, so each alone
explains about half of the risk.

Two views of the same generator:

* ``synthetic_ehr(rng, n)``: a cohort's covariate columns (``data_pipelines.outcome_data`` builds the
  outcome cohort from it);
* ``clinical_record(config, index)`` / ``clinical_table(config, n)``: a table row per phantom
  (``data_pipelines.phantoms``) with its own random stream, a ``site`` and a logistic outcome draw;
  ``data_pipelines.tfds_builders.phantoms`` stores it beside the images.

Covariate encoding (``COVARIATE_NAMES``, ``encode_covariates``): age standardised with fixed constants
``(age - 62) / 12``, sex one-hot (F, M), comorbidities as 0/1 indicators: the one covariate encoder
(``data_pipelines.covariates.CovariateEncoder``) restored from these constants (``PHANTOM_ENCODER``), not fitted,
so a single record (the application's form) encodes the same as a cohort.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from data_pipelines import phantoms
from data_pipelines.covariates import CovariateEncoder

__all__ = ["COMORBIDITIES", "COVARIATE_NAMES", "AGE_MEAN", "AGE_SD", "RISK_WEIGHTS", "SITES", "synthetic_ehr",
           "PHANTOM_ENCODER", "encode_covariates", "risk_score", "clinical_record", "clinical_table"]

COMORBIDITIES = ("diabetes", "hypertension", "cardiac_disease", "smoker")
COVARIATE_NAMES = ("age_z", "sex_F", "sex_M") + COMORBIDITIES
AGE_MEAN, AGE_SD = 62.0, 12.0
SITES = ("site_A", "site_B", "site_C")

#: The phantom covariates' fixed encoding, in the order of ``COVARIATE_NAMES``.
PHANTOM_ENCODER = CovariateEncoder.from_dict({
    "covariates": ("age", "sex") + COMORBIDITIES, "categorical": ("sex",), "levels": {"sex": ("F", "M")},
    "drop_reference": False, "standardise": {"age": (AGE_MEAN, AGE_SD)}})

# Log-odds contributions of one standard deviation of tumour size, one of age, and each 0/1 covariate.
RISK_WEIGHTS = {"size": 1.4, "age": 1.0, "diabetes": 0.8, "hypertension": 0.4, "cardiac_disease": 0.9,
                "smoker": 0.5, "female": -0.3, "bias": -0.9}

# A single record has no cohort to standardise tumour size over: the equivalent diameter
# (fraction ** (1/D)) of the phantoms is about 0.25 +- 0.1.
_RECORD_SIZE_MEAN, _RECORD_SIZE_SD = 0.25, 0.1


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def synthetic_ehr(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` patients from ``rng``: ``(age [n] float64 years, sex [n] "F"/"M", comorbidities [n, 4] float32 0/1)``."""
    age = np.clip(rng.normal(AGE_MEAN, AGE_SD, n), 18, 90).round()
    sex = np.where(rng.uniform(size=n) < 0.5, "F", "M")
    a = (age - 60.0) / 10.0
    male = sex == "M"
    p = np.stack([_sigmoid(-2.0 + 0.4 * a), _sigmoid(-0.5 + 0.5 * a), _sigmoid(-2.2 + 0.5 * a + 0.3 * male),
                  _sigmoid(-1.3 + 0.4 * male)], axis=1)
    com = (rng.uniform(size=p.shape) < p).astype(np.float32)
    return age, sex, com


def encode_covariates(age: Sequence[float], sex: Sequence[str], comorbidities: np.ndarray) -> np.ndarray:
    """EHR fields → model covariates ``[N, len(COVARIATE_NAMES)]`` float32.

    Args:
      age: years, ``[N]``.
      sex: ``"F"`` or ``"M"`` per patient, ``[N]``.
      comorbidities: 0/1 ``[N, len(COMORBIDITIES)]`` in the order of ``COMORBIDITIES``.
    """
    age = np.asarray(age, np.float64)
    sex = np.asarray(sex)
    com = np.asarray(comorbidities, np.float64)
    n = age.shape[0]
    if age.ndim != 1:
        raise ValueError(f"age must be 1-D [N], got shape {age.shape}")
    if not np.all(np.isfinite(age)):
        raise ValueError("age contains NaN or Inf (impute missing ages before encoding)")
    if sex.shape != (n,) or not np.all(np.isin(sex, ("F", "M"))):
        raise ValueError(f"sex must be [N={n}] of 'F'/'M', got shape {sex.shape} values {sorted(set(sex.tolist()))}")
    if com.shape != (n, len(COMORBIDITIES)) or not np.all(np.isin(com, (0.0, 1.0))):
        raise ValueError(f"comorbidities must be 0/1 of shape [N={n}, {len(COMORBIDITIES)}] "
                         f"({', '.join(COMORBIDITIES)}), got shape {com.shape}")
    columns = {"age": age, "sex": sex, **{c: com[:, i] for i, c in enumerate(COMORBIDITIES)}}
    return PHANTOM_ENCODER.transform(columns)


def risk_score(size_z: np.ndarray, covariates: np.ndarray, comorbidities: np.ndarray) -> np.ndarray:
    """Noiseless adverse-outcome log-odds ``[N]``.

    ``size_z [N]``: standardised tumour size; ``covariates [N, F]`` from ``encode_covariates``;
    ``comorbidities [N, 4]`` 0/1 as from ``synthetic_ehr``.
    """
    w = RISK_WEIGHTS
    return (w["size"] * size_z + w["age"] * covariates[:, 0] + w["female"] * covariates[:, 1] + w["bias"]
            + sum(w[c] * comorbidities[:, i] for i, c in enumerate(COMORBIDITIES)))


def clinical_record(config: phantoms.PhantomConfig, index: int, label: np.ndarray | None = None) -> dict:
    """EHR-like covariates of phantom patient ``index`` (its own random stream; images are unchanged).

    ``age`` (years, 18-90), ``sex`` ("F"/"M"), one 0/1 entry per ``COMORBIDITIES`` (``synthetic_ehr``),
    ``site`` (one of ``SITES``), ``tumour_fraction`` (of the label map) and ``outcome`` (0/1, adverse): a
    logistic draw with log-odds ``risk_score``, tumour size standardised with fixed constants.
    ``label``: the sample's label map (generated when ``None``).
    """
    if label is None:
        label = phantoms.make_phantom(config, index)["label"]
    rng = np.random.default_rng([config.seed, 1000 + phantoms.KINDS.index(config.kind), int(index)])
    age, sex, com = synthetic_ehr(rng, 1)
    site = SITES[int(rng.integers(len(SITES)))]
    label = np.asarray(label)
    frac = float((label > 0).mean())
    size_z = np.array([(frac ** (1.0 / max(label.ndim, 1)) - _RECORD_SIZE_MEAN) / _RECORD_SIZE_SD])
    logit = float(risk_score(size_z, encode_covariates(age, sex, com), com)[0])
    outcome = int(rng.uniform() < _sigmoid(logit))
    return {"patient_id": phantoms.phantom_id(config, index), "age": float(age[0]), "sex": str(sex[0]),
            **{c: int(com[0, i]) for i, c in enumerate(COMORBIDITIES)}, "site": site, "tumour_fraction": frac,
            "outcome": outcome}


def clinical_table(config: phantoms.PhantomConfig, num_samples: int, offset: int = 0) -> dict:
    """Column dict (``patient_id``, ``age``, ``sex``, comorbidities, ``site``, ``tumour_fraction``,
    ``outcome``) for phantoms ``offset .. offset + num_samples - 1``; ``pandas.DataFrame(table)`` works."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    rows = [clinical_record(config, offset + i) for i in range(int(num_samples))]
    return {k: [r[k] for r in rows] for k in rows[0]}
