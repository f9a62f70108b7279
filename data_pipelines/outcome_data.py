"""Surgical-outcome data sets built from the phantoms: preoperative image + EHR covariates + outcome.

Each synthetic patient has one phantom image (``data_pipelines.phantoms``; always with a tumour),
EHR covariates (age, sex, comorbidities) drawn with realistic correlations (comorbidities become
more likely with age), and a binary outcome (1 = adverse outcome, e.g. a 30-day complication).
The outcome depends on **both** the tumour's size, which only the image shows, and the
covariates, so a model that fuses the two beats either one alone:

    risk = w_size * size_z + w_age * age_z + sum_c w_c * comorbidity_c + w_female * female + bias
    outcome = 1[risk + noise > 0],  noise ~ N(0, noise_sd)

Each patient also has a censored **time to event** from a known proportional hazard (``HAZARD``): the
event time ``T`` is exponential with rate ``baseline * exp(log_hr_per_risk * risk)`` (the same latent risk,
so image and EHR both matter) and is censored at ``C ~ Uniform(0, censor_max)``: ``time = min(T, C)``,
``event = 1[T <= C]`` (years; separate random streams, so every other array is unchanged).

``size_z`` is the tumour's equivalent diameter (``fraction of the field of view ** (1/D)``, from the
phantom's label map) standardised over the cohort. Splits are by patient (one image per patient
here; the split is computed on patient ids so it stays patient-level if several images per
patient are added later).

The EHR generator, covariate encoding (``COVARIATE_NAMES``: age standardised with fixed constants
``(age - 62) / 12``, sex one-hot (F, M), comorbidities as 0/1 indicators; the one encoder,
``data_pipelines.covariates``, restored from those constants) and the risk model live in
``data_pipelines.ehr``. ``load_outcome_phantoms(cfg)`` is the ``load_dataset`` entry
(``data.name = "outcome_phantoms"``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data_pipelines import phantoms, splits
from data_pipelines.cases import check_image_size
from data_pipelines.covariates import check_covariates
from data_pipelines.ehr import (COMORBIDITIES, COVARIATE_NAMES, RISK_WEIGHTS, encode_covariates, risk_score,
                                synthetic_ehr)
from data_pipelines.info import DatasetInfo

__all__ = ["OutcomeDataConfig", "HAZARD", "event_times", "COVARIATE_NAMES", "COMORBIDITIES", "RISK_WEIGHTS",
           "make_outcome_dataset", "tumour_size", "load_outcome_phantoms"]


#: The synthetic cohort's hazard: rate ``baseline * exp(log_hr_per_risk * risk)`` per year, censoring uniform
#: on ``[0, censor_max]`` years.
HAZARD = {"baseline": 0.1, "log_hr_per_risk": 0.7, "censor_max": 15.0}


def event_times(risk: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(time [N] float32 years, event [N] int32)`` from the latent ``risk`` with ``HAZARD``."""
    risk = np.asarray(risk, np.float64)
    rate = HAZARD["baseline"] * np.exp(HAZARD["log_hr_per_risk"] * risk)
    t = np.random.default_rng([seed, 13]).exponential(1.0, risk.shape) / rate
    c = np.random.default_rng([seed, 17]).uniform(0.0, HAZARD["censor_max"], risk.shape)
    return np.minimum(t, c).astype(np.float32), (t <= c).astype(np.int32)


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


def tumour_size(label: np.ndarray) -> np.ndarray:
    """Equivalent diameter of the foreground ``(label > 0).mean() ** (1/D)`` per case; ``label [N, *S]``."""
    label = np.asarray(label)
    nd = label.ndim - 1
    frac = (label > 0).reshape(label.shape[0], -1).mean(axis=1)
    return (frac ** (1.0 / nd)).astype(np.float32)


def make_outcome_dataset(config: OutcomeDataConfig) -> tuple[dict, dict, dict]:
    """Generate the cohort and split it by patient.

    Returns ``(train, val, info)``. ``train``/``val`` hold ``image [N, *S, C]`` float32,
    ``label [N, *S]`` int32 (the tumour segmentation), ``covariates [N, F]`` float32,
    ``outcome [N]`` int32, ``tumour_size [N]`` float32 (equivalent diameter, image-derived),
    ``risk [N]`` float32 (the noiseless latent log-odds, for analysis only), ``time [N]`` float32 and
    ``event [N]`` int32 (censored time to event from ``HAZARD``, :func:`event_times`) and ``patient_id`` (list).
    ``info`` names the covariates and classes and records the risk and hazard models.
    """
    shape = tuple(int(s) for s in config.shape)
    pc = phantoms.PhantomConfig(kind=config.kind, shape=shape, channels=config.channels, p_empty=0.0,
                                seed=config.seed)
    arrays = phantoms.PhantomSource(pc, config.num_patients).arrays()
    arrays.pop("instances")
    age, sex, com = synthetic_ehr(np.random.default_rng([config.seed, 7]), config.num_patients)
    cov = encode_covariates(age, sex, com)
    size = tumour_size(arrays["label"])
    size_z = (size - size.mean()) / (size.std() + 1e-6)
    risk = risk_score(size_z, cov, com)
    noise = np.random.default_rng([config.seed, 11]).normal(0.0, float(config.noise_sd), config.num_patients)
    arrays.update(covariates=cov, outcome=(risk + noise > 0).astype(np.int32), tumour_size=size,
                  risk=risk.astype(np.float32))
    arrays["time"], arrays["event"] = event_times(risk, config.seed)
    tr, va = splits.patient_split(arrays["patient_id"], config.val_fraction, seed=[config.seed, 1],
                                  method="permute")

    def take(idx):
        return {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in arrays.items()}

    info = {"name": f"outcome_phantoms/{config.kind}", "spatial_dims": len(shape),
            "channel_names": phantoms.CHANNEL_NAMES[config.kind][:pc.num_channels],
            "covariate_names": COVARIATE_NAMES, "class_names": ("good", "adverse"), "num_classes": 2,
            "risk_weights": dict(RISK_WEIGHTS), "noise_sd": float(config.noise_sd),
            "prevalence": float(arrays["outcome"].mean()), "hazard": dict(HAZARD),
            "event_rate": float(arrays["event"].mean())}
    return take(tr), take(va), info


def load_outcome_phantoms(cfg) -> tuple[dict, dict, DatasetInfo]:
    """``(train, val, DatasetInfo)`` from an outcome config's ``data`` section (``kind``, ``spatial_dims``,
    ``image_size``, ``channels``, ``num_patients``, ``val_fraction``, ``noise_sd``, ``seed``).

    ``info.extra`` holds ``risk_weights``, ``noise_sd`` and ``prevalence``. Raises ``ValueError`` when
    ``image_size`` does not match ``spatial_dims``, covariates are not finite, or a split's outcome has
    a single class.
    """
    size = check_image_size(cfg)
    config = OutcomeDataConfig(kind=cfg.kind, shape=size, channels=int(cfg.get("channels", 0) or 0) or None,
                               num_patients=int(cfg.num_patients), val_fraction=float(cfg.val_fraction),
                               noise_sd=float(cfg.noise_sd), seed=int(cfg.seed))
    train, val, meta = make_outcome_dataset(config)
    for split, d in (("train", train), ("val", val)):
        check_covariates(d["covariates"], len(COVARIATE_NAMES), name=f"{split} covariates")
        if len(np.unique(d["outcome"])) < 2:
            raise ValueError(f"{split}: the outcome has a single class; use more data.num_patients")
    info = DatasetInfo(meta["name"], meta["num_classes"], tuple(meta["channel_names"]), tuple(meta["class_names"]),
                       meta["spatial_dims"], covariate_names=tuple(meta["covariate_names"]),
                       extra={k: meta[k] for k in ("risk_weights", "noise_sd", "prevalence")})
    return train, val, info
