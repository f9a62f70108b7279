"""Surgical-outcome data sets built from the phantoms: preoperative image + EHR covariates + outcome.

Each synthetic patient has one phantom image (``data_pipelines.phantoms``; always with a tumour),
EHR covariates (age, sex, comorbidities) drawn with realistic correlations (comorbidities become
more likely with age), and a binary outcome (1 = adverse outcome, e.g. a 30-day complication).
The outcome depends on **both** the tumour's size, which only the image shows, and the
covariates, so a model that fuses the two beats either one alone:

    risk = w_size * size_z + w_age * age_z + sum_c w_c * comorbidity_c + w_female * female + bias
    outcome = 1[risk + noise > 0],  noise ~ N(0, noise_sd)

``size_z`` is the tumour's equivalent diameter (``fraction of the field of view ** (1/D)``, from the
phantom's label map) standardised over the cohort. Splits are by patient (one image per patient
here; the split is computed on patient ids so it stays patient-level if several images per
patient are added later).

Covariate encoding (``COVARIATE_NAMES``): age standardised with fixed constants
``(age - 62) / 12``, sex one-hot (F, M), comorbidities as 0/1 indicators.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from data_pipelines import phantoms

__all__ = ["OutcomeDataConfig", "COVARIATE_NAMES", "COMORBIDITIES", "RISK_WEIGHTS", "make_outcome_dataset",
           "encode_covariates", "check_covariates", "tumour_size", "patient_split"]

COMORBIDITIES = ("diabetes", "hypertension", "cardiac_disease", "smoker")
COVARIATE_NAMES = ("age_z", "sex_F", "sex_M") + COMORBIDITIES
AGE_MEAN, AGE_SD = 62.0, 12.0

# Log-odds contributions of one standard deviation of tumour size, one of age, and each 0/1 covariate.
# Image and EHR parts have similar variance, so each alone explains about half of the risk.
RISK_WEIGHTS = {"size": 1.4, "age": 1.0, "diabetes": 0.8, "hypertension": 0.4, "cardiac_disease": 0.9,
                "smoker": 0.5, "female": -0.3, "bias": -0.9}


@dataclasses.dataclass(frozen=True)
class OutcomeDataConfig:
    """Shape of an outcome data set.

    Attributes:
      kind: phantom kind (``brain`` | ``skin`` | ``lung``).
      shape: spatial size, 2 or 3 entries.
      channels: image channels kept (``None``: all the kind provides).
      num_patients: cohort size (train + validation).
      val_fraction: share of patients in validation.
      noise_sd: standard deviation of the latent noise (0: outcome fully determined by the risk).
      seed: seeds the phantoms, the covariates, the outcome noise and the split.
    """

    kind: str = "brain"
    shape: tuple[int, ...] = (32, 32)
    channels: int | None = None
    num_patients: int = 200
    val_fraction: float = 0.25
    noise_sd: float = 0.5
    seed: int = 0

    def __post_init__(self):
        if self.kind not in phantoms.KINDS:
            raise ValueError(f"kind must be one of {phantoms.KINDS}, got {self.kind!r}")
        if not isinstance(self.num_patients, int) or self.num_patients < 4:
            raise ValueError(f"num_patients must be an int >= 4, got {self.num_patients!r}")
        if not 0.0 < float(self.val_fraction) < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction!r}")
        if float(self.noise_sd) < 0:
            raise ValueError(f"noise_sd must be >= 0, got {self.noise_sd!r}")


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
    cols = [(age - AGE_MEAN) / AGE_SD, sex == "F", sex == "M"] + [com[:, i] for i in range(com.shape[1])]
    return np.stack(cols, axis=1).astype(np.float32)


def check_covariates(covariates, num_covariates: int | None = None, name: str = "covariates") -> np.ndarray:
    """Validate ``covariates [B, F]``: 2-D, ``F == num_covariates`` when given, all finite."""
    cov = np.asarray(covariates)
    if cov.ndim != 2:
        raise ValueError(f"{name} must be [B, F], got shape {cov.shape}")
    if num_covariates is not None and cov.shape[1] != num_covariates:
        raise ValueError(f"{name} has {cov.shape[1]} features per patient; the model expects {num_covariates}")
    if not np.all(np.isfinite(cov)):
        bad = sorted(set(np.nonzero(~np.isfinite(cov))[1].tolist()))
        raise ValueError(f"{name} contains NaN or Inf (feature columns {bad}); impute them first")
    return cov


def tumour_size(label: np.ndarray) -> np.ndarray:
    """Equivalent diameter of the foreground ``(label > 0).mean() ** (1/D)`` per case; ``label [N, *S]``."""
    label = np.asarray(label)
    nd = label.ndim - 1
    frac = (label > 0).reshape(label.shape[0], -1).mean(axis=1)
    return (frac ** (1.0 / nd)).astype(np.float32)


def patient_split(patient_ids: Sequence[str], val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``: every image of a patient lands on the same side."""
    ids = np.asarray(list(patient_ids))
    unique = np.unique(ids)
    perm = np.random.default_rng([seed, 1]).permutation(len(unique))
    n_val = min(max(int(round(len(unique) * val_fraction)), 1), len(unique) - 1)
    val_ids = set(unique[perm[:n_val]].tolist())
    is_val = np.array([i in val_ids for i in ids])
    return np.nonzero(~is_val)[0], np.nonzero(is_val)[0]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _ehr(seed: int, n: int):
    rng = np.random.default_rng([seed, 7])
    age = np.clip(rng.normal(AGE_MEAN, AGE_SD, n), 18, 90).round()
    sex = np.where(rng.uniform(size=n) < 0.5, "F", "M")
    a = (age - 60.0) / 10.0
    male = sex == "M"
    p = np.stack([_sigmoid(-2.0 + 0.4 * a), _sigmoid(-0.5 + 0.5 * a), _sigmoid(-2.2 + 0.5 * a + 0.3 * male),
                  _sigmoid(-1.3 + 0.4 * male)], axis=1)
    com = (rng.uniform(size=p.shape) < p).astype(np.float32)
    return age, sex, com


def make_outcome_dataset(config: OutcomeDataConfig) -> tuple[dict, dict, dict]:
    """Generate the cohort and split it by patient.

    Returns ``(train, val, info)``. ``train``/``val`` hold ``image [N, *S, C]`` float32,
    ``label [N, *S]`` int32 (the tumour segmentation), ``covariates [N, F]`` float32,
    ``outcome [N]`` int32, ``tumour_size [N]`` float32 (equivalent diameter, image-derived),
    ``risk [N]`` float32 (the noiseless latent log-odds, for analysis only) and
    ``patient_id`` (list). ``info`` names the covariates and classes and records the risk model.
    """
    shape = tuple(int(s) for s in config.shape)
    pc = phantoms.PhantomConfig(kind=config.kind, shape=shape, channels=config.channels, p_empty=0.0,
                                seed=config.seed)
    arrays = phantoms.PhantomSource(pc, config.num_patients).arrays()
    arrays.pop("instances")
    age, sex, com = _ehr(config.seed, config.num_patients)
    cov = encode_covariates(age, sex, com)
    size = tumour_size(arrays["label"])
    size_z = (size - size.mean()) / (size.std() + 1e-6)
    w = RISK_WEIGHTS
    risk = (w["size"] * size_z + w["age"] * cov[:, 0] + w["female"] * cov[:, 1] + w["bias"]
            + sum(w[c] * com[:, i] for i, c in enumerate(COMORBIDITIES)))
    noise = np.random.default_rng([config.seed, 11]).normal(0.0, float(config.noise_sd), config.num_patients)
    arrays.update(covariates=cov, outcome=(risk + noise > 0).astype(np.int32), tumour_size=size,
                  risk=risk.astype(np.float32))
    tr, va = patient_split(arrays["patient_id"], config.val_fraction, config.seed)

    def take(idx):
        return {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in arrays.items()}

    info = {"name": f"outcome_phantoms/{config.kind}", "spatial_dims": len(shape),
            "channel_names": phantoms.CHANNEL_NAMES[config.kind][:pc.num_channels],
            "covariate_names": COVARIATE_NAMES, "class_names": ("good", "adverse"), "num_classes": 2,
            "risk_weights": dict(RISK_WEIGHTS), "noise_sd": float(config.noise_sd),
            "prevalence": float(arrays["outcome"].mean())}
    return take(tr), take(va), info
