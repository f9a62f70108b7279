"""Outcome models in the application: a binary outcome's risk or a time-to-event model's survival curve for one
patient's covariates (and a bundled phantom's image where the model takes one), with SHAP contributions of the
covariates (``zoo.explain.shap_tabular``) and an interval for every risk shown, saying how it was made
(``zoo.outcome.intervals``; :func:`fit_interval` at load time):

* binary outcome models: a 95 % bootstrap interval of the risk recalibrated on the model's held-out validation
  patients (200 isotonic calibration maps, each on a bootstrap resample), the validation split read again from
  the run's own data config when the server can (the phantom cohort is regenerated from its seed; a cohort whose
  files are absent here gives no interval, and the answer says so);
* Cox time-to-event models: the 95 % pointwise band of ``S(t | x)`` from the Breslow baseline's variance
  (``zoo.outcome.intervals.breslow_band``), and its value at the horizon for the risk;
* logistic-hazard models store no baseline to vary: no interval, said in the answer.

Each interval holds the network's weights fixed: it is the uncertainty of the calibration (binary) or of the
baseline hazard (Cox), not of the network, and the answer's note says so."""

from __future__ import annotations

import numpy as np

from data_pipelines import ehr
from data_pipelines.datasets import load_dataset
from zoo.app.services.served import ServedModel, phantom_sample
from zoo.explain import shap_tabular
from zoo.outcome.intervals import CalibrationBootstrap, breslow_band

__all__ = ["CURVE_POINTS", "SURVIVAL_BATCH", "SHAP_OFF", "INTERVAL_LEVEL", "INTERVAL_BOOTSTRAP", "fit_interval",
           "binary_interval",
           "default_covariates", "outcome_proba", "encode_fields",
           "survival_curve", "outcome"]


SHAP_OFF = "SHAP is not enabled on this server"
INTERVAL_LEVEL = 0.95
INTERVAL_BOOTSTRAP = 200
OUTCOME_BATCH = 32  # one compiled batch shape for every binary-outcome request


def fit_interval(m: ServedModel) -> tuple[object, str]:
    """What ``m``'s risk intervals are made from, built once when the model is loaded: ``(record, note)``.
    ``record``: a ``CalibrationBootstrap`` on the validation split (binary outcome models), ``"breslow"``
    (Cox models: the stored baseline) or ``None``, with ``note`` saying why there is none."""
    if m.survival is not None:
        if m.survival.head == "cox" and "breslow" in m.survival.meta:
            return "breslow", ""
        return None, ("no interval: a logistic-hazard model stores no baseline whose uncertainty could be "
                      "propagated (its hazards come from the network alone)")
    if m.task != "outcome":
        return None, ""
    data = m.pre.config.data
    try:
        _, val, _ = load_dataset(data)
        inputs = {"covariates": np.asarray(val["covariates"], np.float32)}
        if m.data.get("channel_names"):
            inputs["image"] = np.asarray(val["image"], np.float32)
        score = m.pre.predict_proba(inputs, batch_size=OUTCOME_BATCH)[:, 1]
        record = CalibrationBootstrap(score, val["outcome"], n_boot=INTERVAL_BOOTSTRAP, level=INTERVAL_LEVEL)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        return None, (f"no interval: the held-out patients of this model's data ({data.get('name', '?')}) "
                      f"cannot be used here ({e})")
    return record, ""


def _interval(m: ServedModel, lower: float, upper: float, how: str) -> dict:
    return {"lower": float(lower), "upper": float(upper), "level": INTERVAL_LEVEL, "method": how,
            "n_calibration": int(m.interval.n) if isinstance(m.interval, CalibrationBootstrap) else None}


def binary_interval(m: ServedModel, risk: float) -> tuple[dict | None, str]:
    """The interval of a binary outcome model's ``risk`` (``zoo.app.schemas.RiskInterval``) and its note."""
    rec = m.interval
    if not isinstance(rec, CalibrationBootstrap):
        return None, m.interval_note or "no interval: this model has no held-out calibration record"
    lo, hi = rec.interval([risk])
    note = (f"{100 * rec.level:g}% bootstrap interval ({len(rec.maps)} resamples) of the risk recalibrated on "
            f"{rec.n} held-out validation patients (isotonic calibration of the model's probability); the "
            f"network's weights are held fixed, so this is the calibration's uncertainty, not the network's")
    return _interval(m, lo[0], hi[0], "bootstrap ensemble of isotonic recalibrations on the validation split"), note


def default_covariates(m: ServedModel) -> np.ndarray:
    """The covariates a form starts from: the training means (time-to-event models), else zeros."""
    if m.survival is not None:  # the training split's means (the network's standardisation)
        return np.asarray(m.survival.mean, np.float32)
    return np.zeros(len(m.data["covariate_names"]), np.float32)


def outcome_proba(m: ServedModel, image, covariates: np.ndarray) -> np.ndarray:
    """Class probabilities ``[N, 2]`` of a binary outcome model for ``covariates [N, F]`` with one ``image``."""
    n = len(covariates)
    inputs = {"covariates": np.asarray(covariates, np.float32)}
    if m.data.get("channel_names"):
        inputs["image"] = np.repeat(np.asarray(image, np.float32)[None], n, axis=0)
    return m.pre.predict_proba(inputs, batch_size=OUTCOME_BATCH)


def encode_fields(m: ServedModel, fields: dict) -> np.ndarray:
    """Form fields -> covariates ``[F]``: ``age``, ``sex`` and 0/1 comorbidities for the EHR contract
    (``data_pipelines.ehr.encode_covariates``), else one number per covariate name."""
    names = tuple(m.data["covariate_names"])
    if names == ehr.COVARIATE_NAMES:
        missing = [k for k in ("age", "sex") if k not in fields]
        if missing:
            raise ValueError(f"EHR fields missing: {', '.join(missing)}")
        com = np.array([[float(bool(fields.get(c, 0))) for c in ehr.COMORBIDITIES]])
        return ehr.encode_covariates([float(fields["age"])], [str(fields["sex"])], com)[0]
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(f"covariate {missing[0]!r} missing; the model takes {', '.join(names)}")
    out = []
    for n in names:
        v = fields[n]
        try:
            if isinstance(v, str):
                raise ValueError
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(f"covariate {n!r} must be a number, got {v!r}") from None
        if not np.isfinite(out[-1]):
            raise ValueError(f"covariate {n!r} must be finite, got {v!r}")
    return np.array(out, np.float32)


CURVE_POINTS = 61
SURVIVAL_BATCH = 32  # one compiled batch shape for every survival request (SHAP batches included)


def _survival_support(sm) -> tuple[float, float]:
    """``(t_max, default horizon)``: the last training time of the baseline (Cox) or the last interval edge
    (logistic hazard); the horizon is the median training time (``extra.horizon`` when the model names one)."""
    if sm.head == "cox":
        t = np.asarray(sm.meta["breslow"]["times"], np.float64)
    else:
        t = np.asarray(sm.meta["edges"], np.float64)[1:]
    horizon = (sm.meta.get("extra") or {}).get("horizon")
    return float(t.max()), float(horizon if horizon is not None else np.median(t))


def survival_curve(m: ServedModel, covariates: np.ndarray, image=None, horizon: float | None = None) -> dict:
    """The predicted survival curve ``S(t | x)`` of one patient on ``CURVE_POINTS`` times in ``[0, t_max]``
    (``t_max``: the end of the training follow-up the model's baseline covers), with ``S`` at ``horizon``
    and the median survival time (``None`` when the curve stays above 0.5). Fused image + EHR models: also the
    pointwise range of ``S`` over the mirrored images (a model-sensitivity band, not a confidence interval);
    EHR-only models give no such range. Cox models: also the pointwise interval of ``S`` from the Breslow
    baseline (``ci_lower`` / ``ci_upper``, ``horizon_ci``; see the module docstring)."""
    sm = m.survival
    t_max, default = _survival_support(sm)
    horizon = default if horizon is None else float(horizon)
    if not 0.0 < horizon <= t_max:
        unit = (sm.meta.get("extra") or {}).get("time_unit", "")
        raise ValueError(f"horizon must be in (0, {t_max:g}] {unit} (the training follow-up), got {horizon:g}")
    times = np.linspace(0.0, t_max, CURVE_POINTS)
    grid = np.unique(np.r_[times, horizon])
    cov = np.asarray(covariates, np.float64)[None]
    if image is None:
        images = [None]
    else:
        images = [image] + [np.flip(image, axis=a) for a in range(image.ndim - 1)]
    curves = np.stack([sm.survival(cov, grid, None if im is None else np.asarray(im, np.float32)[None],
                                   batch_size=SURVIVAL_BATCH)[0] for im in images])
    s = np.clip(curves[0], 0.0, 1.0)
    at = int(np.searchsorted(grid, horizon))
    below = np.nonzero(s <= 0.5)[0]
    keep = np.isin(grid, times)
    out = {"times": grid[keep].tolist(), "survival": s[keep].tolist(), "lower": None, "upper": None,
           "interval_note": "no interval: the model gives a point estimate of S(t) only",
           "horizon": horizon, "survival_at_horizon": float(s[at]),
           "median_time": float(grid[below[0]]) if len(below) else None,
           "time_unit": (sm.meta.get("extra") or {}).get("time_unit", ""), "head": sm.head}
    out.update(ci_lower=None, ci_upper=None, horizon_ci=None, ci_note=m.interval_note or "no interval")
    if m.interval == "breslow":
        first = None if image is None else np.asarray(image, np.float32)[None]
        eta = float(sm.risk(cov, first, batch_size=SURVIVAL_BATCH)[0])
        b = sm.meta["breslow"]
        lo, hi = breslow_band(b["times"], b["cum_hazard"], np.exp(eta), grid, INTERVAL_LEVEL)
        out.update(ci_lower=lo[keep].tolist(), ci_upper=hi[keep].tolist(), horizon_ci=[float(lo[at]), float(hi[at])],
                   ci_note=(f"{100 * INTERVAL_LEVEL:g}% pointwise interval of S(t) from the Breslow baseline's "
                            f"variance (Aalen, log scale; conservative with tied event times); the network's risk "
                            f"score is held fixed, so the network's own uncertainty is not in it"))
    if len(images) > 1:
        lo, hi = np.clip(curves.min(0), 0, 1), np.clip(curves.max(0), 0, 1)
        out.update(lower=lo[keep].tolist(), upper=hi[keep].tolist(),
                   interval_note="range of S(t) over the mirrored images (model sensitivity, not a confidence "
                                 "interval)", horizon_range=[float(lo[at]), float(hi[at])])
    return out


def _shap(predict_fn, background: np.ndarray, cov: np.ndarray, names: list) -> dict:
    """SHAP (permutation) of ``predict_fn`` at the one patient ``cov`` against ``background``."""
    expl = shap_tabular(predict_fn, background, cov[None], feature_names=names, max_evals=2 * len(names) + 1)
    return {"base_value": float(np.ravel(expl.base_values)[0]),
            "values": {n: float(v) for n, v in zip(names, np.asarray(expl.values)[0])}}


def _survival_outcome(m: ServedModel, fields: dict, sample: int, shap: bool, horizon) -> dict:
    cov = encode_fields(m, fields)
    image = phantom_sample(m, sample)[0] if m.data.get("channel_names") else None
    curve = survival_curve(m, cov, image, horizon)
    h = curve["horizon"]
    risk = 1.0 - curve["survival_at_horizon"]
    names = list(m.data["covariate_names"])
    values, note = None, SHAP_OFF
    if shap:
        sm = m.survival
        extra = sm.meta.get("extra") or {}
        if extra.get("background"):
            background = np.asarray(extra["background"], np.float32)
            where = f"{len(background)} training patients"
        else:
            rng = np.random.default_rng(0)
            background = (sm.mean + sm.sd * rng.normal(0, 1, (32, len(cov)))).astype(np.float32)
            where = "32 patients drawn from the training means and SDs"
        im = None if image is None else np.asarray(image, np.float32)

        def event_probability(X):
            X = np.asarray(X, np.float64)
            ims = None if im is None else np.repeat(im[None], len(X), axis=0)
            return 1.0 - sm.survival(X, [h], ims, batch_size=SURVIVAL_BATCH)[:, 0]

        values = _shap(event_probability, background, cov, names)
        note = f"SHAP (permutation) of the event probability by t = {h:g} against {where}"
    unit = curve["time_unit"]
    return {"model": m.name, "kind": "survival", "risk": float(risk),
            "risk_range": None if curve.get("horizon_range") is None else
            [1.0 - curve["horizon_range"][1], 1.0 - curve["horizon_range"][0]],
            "risk_range_note": (f"event probability by t = {h:g} {unit}: 1 - S(t); "
                                + curve["interval_note"]),
            "interval": None if curve["horizon_ci"] is None else _interval(
                m, 1.0 - curve["horizon_ci"][1], 1.0 - curve["horizon_ci"][0],
                "Breslow baseline variance (Aalen), propagated to 1 - S(horizon)"),
            "interval_note": f"event probability by t = {h:g} {unit}: " + curve["ci_note"],
            "covariates": {n: float(v) for n, v in zip(names, cov)}, "shap": values, "shap_note": note,
            "sample": int(sample), "survival": curve}


def outcome(m: ServedModel, fields: dict, sample: int = 0, shap: bool = False, horizon: float | None = None) -> dict:
    """Risk of the adverse outcome for ``fields`` with phantom ``sample``'s image: the risk, its spread over
    the mirrored images (test-time augmentation; a model-sensitivity range, not a confidence interval), its
    interval (:func:`binary_interval`) and with ``shap`` the SHAP contribution of each covariate (against a
    synthetic EHR background). Time-to-event models: the survival curve (:func:`survival_curve`), the risk is the
    event probability by ``horizon``, its interval from the curve's band."""
    if m.survival is not None:
        return _survival_outcome(m, fields, sample, shap, horizon)
    if m.task != "outcome":
        raise ValueError(f"model {m.name!r} is a {m.task} model; /api/outcome takes outcome models")
    cov = encode_fields(m, fields)
    image, _, _ = phantom_sample(m, sample)
    risk = float(outcome_proba(m, image, cov[None])[0, 1])
    flips = [image] + [np.flip(image, axis=a) for a in range(image.ndim - 1)]
    spread = [float(outcome_proba(m, f, cov[None])[0, 1]) for f in flips]
    names = list(m.data["covariate_names"])
    values, note = None, SHAP_OFF
    if shap:
        rng = np.random.default_rng(0)
        if tuple(names) == ehr.COVARIATE_NAMES:
            age, sex, com = ehr.synthetic_ehr(rng, 32)
            background = ehr.encode_covariates(age, sex, com)
        else:
            background = np.repeat(cov[None], 32, axis=0) + rng.normal(0, 1, (32, len(cov))).astype(np.float32)
        values = _shap(lambda X: outcome_proba(m, image, np.asarray(X, np.float32))[:, 1], background, cov, names)
        note = "SHAP (permutation) against 32 synthetic EHR patients, same image"
    interval, interval_note = binary_interval(m, risk)
    return {"model": m.name, "kind": "probability", "risk": risk, "risk_range": [min(spread), max(spread)],
            "risk_range_note": "spread of the risk over the mirrored images (not a confidence interval)",
            "interval": interval, "interval_note": interval_note,
            "covariates": {n: float(v) for n, v in zip(names, cov)}, "shap": values, "shap_note": note,
            "sample": int(sample), "survival": None}
