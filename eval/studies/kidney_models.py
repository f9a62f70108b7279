"""Outcomes after kidney-tumour surgery (KiTS23, issue 32): traditional, image-feature and deep models side by side.

The library of the command ``python -m eval.studies.kidney_outcomes``. A study (it fits models): the cohort from
:mod:`zoo.outcome.kits` (any folder in the KiTS layout: ``clinical.json`` + ``case_XXXXX/segmentation.nii.gz``),
the image-derived predictors and the kidney crops from :mod:`zoo.outcome.nephrometry`, every model fitted on the
development cases only (the one covariate encoder, :class:`data_pipelines.covariates.CovariateEncoder`, fitted on
each training split: medians / modes, one-hot levels).

For every outcome of ``kits.OUTCOMES`` (binary, or survival: overall survival after surgery):

* patients whose outcome is missing are dropped (counted); external patients whose procedure never occurs in
  development (``kits.unseen_categories``) are reported apart (count and their outcomes), not scored; outcomes
  whose ``validate_external`` is false (complications) are scored in development cross-validation only;
* models on the same patient-level folds (``data_pipelines.splits.patient_kfold``, stratified by the outcome /
  the event): ``clinical`` (logistic regression / Cox on the preoperative covariates), ``clinical+size``
  (+ radiographic size), ``clinical+renal`` (+ the automatic R.E.N.A.L. score: the traditional imaging model),
  ``gbm_image`` (gradient boosting: classifier / gradient-boosted Cox) and, for survival, ``rsf_image`` (random
  survival forest) on the clinical covariates + every image-derived feature, and ``deep_crop_ehr``: the outcome
  net (``zoo.models.outcome``) on the kidney crop (3D, one-hot kidney / tumour / cyst, average-pooled by
  ``crop_pool`` so the CPU can train it) fused with the covariates; the binary head (task ``outcome``) or the
  Cox head (:func:`zoo.outcome.survival.fit_deep_survival`), trained for ``deep_steps`` steps on the training
  core, 20 % of the training split choosing the checkpoint;
* metrics (binary: ``auc``, ``brier``, ``calibration_slope`` and ``calibration_intercept`` of the logistic
  recalibration ``logit P(y) = a + b logit(p)`` (slope: ``b``; intercept: ``a`` with ``b`` fixed at 1, the
  calibration-in-the-large); survival: Harrell's C, the IPCW Brier score at the horizon, the calibration slope
  (Cox regression of the outcome on ``log(-log S(h | x))``) and intercept (``logit`` of the Kaplan-Meier risk
  at ``h`` minus ``logit`` of the mean predicted risk)) with percentile bootstrap 95 % CIs
  (:func:`eval.bootstrap.bootstrap_statistics`; cross-validation: each fold's test patients resampled within
  the fold, the mean over folds of each replicate; models fixed);
* paired bootstrap deltas (the same resamples for both models) of ``deep_crop_ehr``, ``gbm_image`` and
  ``rsf_image`` against the best traditional model (the best of ``clinical``, ``clinical+size``,
  ``clinical+renal`` by the cross-validated AUC / C);
* decision curves (net benefit, :func:`scoring.calibration.net_benefit`; survival: event by the horizon among
  the patients whose status at the horizon is known), calibration plots, subgroups (procedure, age band, sex,
  tumour size band) and events per variable of every model;
* explanations of ``deep_crop_ehr`` for one binary outcome (``Settings.explain``; its external-validation fit,
  trained on the whole development set): Grad-CAM (:func:`zoo.explain.gradcam`, the encoder's deepest level) on
  a few external crops, and SHAP of the covariates (:func:`zoo.explain.shap_tabular`, each patient's crop
  embedding held fixed) averaged as mean |SHAP| over the external patients.

Outputs: ``report.json`` (``rows`` of ``{"outcome", "model", "split", "metric", "value", "ci_low", "ci_high",
"n", "events"}``, plus ``"feature"`` on the ``mean_abs_shap`` rows; strict JSON) and ``report.md`` with the plots
beside them.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time as _time
import types

import numpy as np

from data_pipelines import splits
from data_pipelines.atomic import write_json, write_text
from data_pipelines.covariates import CovariateEncoder
from data_pipelines.info import DatasetInfo
from eval.bootstrap import bootstrap_statistics
from scoring import calibration as cal
from scoring import survival as S
from scoring.ranking import auc_roc
from zoo.outcome import kits, nephrometry
from zoo.outcome.baselines import SurvivalBaseline, logistic_regression
from zoo.outcome.survival import fit_deep_survival, survival_config
from zoo.pretrained import load_pretrained
from zoo.training import train_and_evaluate

__all__ = ["Settings", "KidneyData", "TRADITIONAL", "IMAGE_MODELS", "DEEP", "SIZE_COLUMN", "RENAL_COLUMN",
           "load_kidney_data", "check_external", "run_kidney_report",
           "quick_settings", "model_columns", "development_levels", "align_levels", "markdown"]

TRADITIONAL = ("clinical", "clinical+size", "clinical+renal")
IMAGE_MODELS = ("gbm_image", "rsf_image")
DEEP = "deep_crop_ehr"
#: Recorded as preoperative by the cohort but derived from the pathology: KiTS's AUA risk group is benign for every
#: benign tumour, low risk only for pT1 and high risk only for pT3 (development: 25/25, 134/134 and 39/41), so a
#: model reading it reads the answer to ``aggressive_pathology``. Left out of every model here.
POSTOPERATIVE = ("aua_risk_score",)
SIZE_COLUMN = "radiographic_size"
RENAL_COLUMN = "renal_score"
THRESHOLDS = tuple(np.round(np.arange(0.05, 0.55, 0.05), 2).tolist())
CROP_CHANNELS = ("kidney", "tumour", "cyst")


@dataclasses.dataclass(frozen=True)
class Settings:
    seed: int = 0
    folds: int = 5
    n_boot: int = 200
    deep_steps: int = 300
    deep_batch: int = 16
    deep_survival_batch: int = 32
    deep_features: int = 8
    crop_mm: float = 2.5  # 48 voxels of 2.5 mm: 120 mm, a whole kidney
    crop_pool: int = 2
    workers: int = 2
    gbm_trees: int = 150
    rsf_trees: int = 200
    horizon: float = 730.0  # days: overall survival's horizon (2 years; the median follow-up is ~2 years)
    outcomes: tuple[str, ...] = ()  # empty: every outcome of kits.OUTCOMES
    learning_curve: tuple[str, ...] = ()  # outcomes whose learning curve (development CV) is measured
    curve_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)  # of each fold's training patients (1.0: the CV itself)
    deep: bool = True
    explain: str = ""  # outcome explained (binary): "" stay_gt3 when run, "none" nothing
    explain_cases: int = 4  # external patients with a Grad-CAM picture
    shap_patients: int = 50  # external patients whose covariates' SHAP values are averaged
    shap_background: int = 50  # development patients forming SHAP's reference population
    shap_evals: int = 0  # model evaluations per explained patient (0: 10 per feature)
    quick: bool = False
    progress: bool = True


def quick_settings(s: Settings) -> Settings:
    """The ``--quick`` machinery check: 2 folds, few resamples, few trees and deep steps."""
    return dataclasses.replace(s, folds=min(s.folds, 2), n_boot=min(s.n_boot, 20), deep_steps=min(s.deep_steps, 4),
                               gbm_trees=min(s.gbm_trees, 20), rsf_trees=min(s.rsf_trees, 20),
                               shap_patients=min(s.shap_patients, 8), shap_background=min(s.shap_background, 10),
                               shap_evals=s.shap_evals or 1, quick=True)


_T0 = _time.monotonic()


def _say(settings: Settings, msg: str) -> None:
    """A progress line on stderr, with the seconds since import (``settings.progress`` switches the per-case
    bars only)."""
    print(f"[kidney_outcomes {_time.monotonic() - _T0:7.1f} s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ inputs

@dataclasses.dataclass
class KidneyData:
    """One cohort folder: the cohort (``frame`` indexed by case id), its image features (same index) and crops
    ``[N, s, s, s, 3]`` float32 in ``frame`` order."""

    cohort: object  # zoo.outcome.kits.KitsCohort
    image: object  # pandas.DataFrame
    crops: np.ndarray

    @property
    def frame(self):
        return self.cohort.frame

    @property
    def ids(self) -> list:
        return [str(i) for i in self.cohort.frame.index]


def _pool(crops: np.ndarray, k: int) -> np.ndarray:
    if k <= 1:
        return crops
    n, *s, c = crops.shape
    if any(d % k for d in s):
        raise ValueError(f"crop_pool={k} does not divide the crop shape {tuple(s)}")
    shape = [n] + [x for d in s for x in (d // k, k)] + [c]
    return crops.reshape(shape).mean(axis=(2, 4, 6))


def load_kidney_data(folder: str, settings: Settings) -> KidneyData:
    """Read a KiTS-layout folder: cohort, image features and kidney crops (raises ``FileNotFoundError`` /
    ``ValueError`` naming the folder or case)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: not a folder (expected clinical.json + case_XXXXX/segmentation.nii.gz)")
    cohort = kits.read_kits_cohort(folder)
    ids = [str(i) for i in cohort.frame.index]
    paths = {cid: cohort.mask_path(cid) for cid in ids}
    _say(settings, f"{folder}: {len(ids)} cases; image features")
    image = nephrometry.features_for_cohort(paths, workers=settings.workers, progress=settings.progress)
    image.index = image.index.astype(str)
    missing = [c for c in ids if c not in image.index]
    if missing:
        raise ValueError(f"{folder}: no image features for case(s) {missing[:5]}")
    image = image.loc[ids]
    crops = np.zeros((0,), np.float32)
    if settings.deep:
        _say(settings, f"{folder}: kidney crops")
        crop_ids, arr = nephrometry.crops_for_cohort(paths, mm=settings.crop_mm, workers=settings.workers,
                                                     progress=settings.progress)
        pos = {str(c): i for i, c in enumerate(crop_ids)}
        lost = [c for c in ids if c not in pos]
        if lost:
            raise ValueError(f"{folder}: no kidney crop for case(s) {lost[:5]}")
        crops = _pool(np.asarray(arr, np.float32)[[pos[c] for c in ids]], settings.crop_pool).astype(np.float32)
    return KidneyData(cohort, image, crops)


def check_external(dev: KidneyData, ext: KidneyData) -> None:
    """The external folder must carry the development covariates and image features."""
    missing = [c for c in dev.cohort.covariates if c not in ext.frame.columns]
    missing += [c for c in dev.image.columns if c not in ext.image.columns]
    if missing:
        raise ValueError(f"external cohort {ext.cohort.name}: lacks {missing} of the development cohort")


# ------------------------------------------------------------------------------------------------ feature sets

def _numeric_image_columns(image) -> list[str]:
    from pandas.api.types import is_numeric_dtype

    return [c for c in image.columns if is_numeric_dtype(image[c])]


def model_columns(cohort, image, kind: str) -> dict:
    """``{model: (columns, categorical)}``: the covariates every model reads (see the module docstring)."""
    cov = [c for c in cohort.covariates if c != SIZE_COLUMN and c not in POSTOPERATIVE]
    cat = [c for c in cohort.categorical if c in cov]
    size = [SIZE_COLUMN] if SIZE_COLUMN in cohort.covariates or SIZE_COLUMN in cohort.frame.columns else []
    img = [c for c in _numeric_image_columns(image) if c not in cov]
    out = {"clinical": (cov, cat), "clinical+size": (cov + size, cat),
           "clinical+renal": (cov + [RENAL_COLUMN], cat), "gbm_image": (cov + size + img, cat)}
    if kind == "survival":
        out["rsf_image"] = (cov + size + img, cat)
    out[DEEP] = (cov, cat)
    return out


def _table(data: KidneyData):
    import pandas as pd

    extra = [c for c in data.image.columns if c not in data.frame.columns]
    return pd.concat([data.frame, data.image[extra]], axis=1)


def development_levels(table, categorical) -> dict:
    """Each categorical covariate's levels in the whole development set, most frequent first: declared to every
    fold's encoder, so a rare level absent from one training fold is a zero column there, not an error."""
    out = {}
    for c in categorical:
        counts = table[c].dropna().astype(str).value_counts()
        out[c] = tuple(sorted(counts.index, key=lambda lv: (-int(counts[lv]), lv)))
    return out


def align_levels(table, levels: dict):
    """``table`` with categorical values never seen in development set missing (imputed with the training mode
    like any missing value); returns ``(table, {column: {level: count}})``."""
    table = table.copy()
    changed = {}
    for c, lv in levels.items():
        v = table[c]
        bad = v.notna() & ~v.astype(str).isin(lv)
        if bad.any():
            changed[c] = {str(k): int(n) for k, n in v[bad].astype(str).value_counts().items()}
            table[c] = v.astype(object).where(~bad, None)
    return table, changed


# ------------------------------------------------------------------------------------------------ metrics

def _binary_metrics(y, p) -> dict:
    if y.min() == y.max():
        return {"brier": cal.brier_binary(y, p)}
    slope, intercept = cal.calibration_binary(y, p)
    return {"auc": auc_roc(p, y), "brier": cal.brier_binary(y, p), "calibration_slope": slope,
            "calibration_intercept": intercept}


def _survival_metrics(event, time, risk, surv_h, h, y_train) -> dict:
    out = {}
    if not event.any():
        return out
    try:
        out["harrell_c"] = float(S.concordance_index_censored(event.astype(bool), time, risk)[0])
    except ValueError:
        out["harrell_c"] = float("nan")
    if time.max() > h and time.min() <= h:
        try:
            yt = S.surv_array(event, time)
            ytr = y_train if time.max() <= y_train["time"].max() else np.concatenate([y_train, yt])
            out["brier"] = float(S.brier_score(ytr, yt, surv_h[:, None], [h])[1][0])
        except ValueError:
            out["brier"] = float("nan")
        s = np.clip(surv_h, 1e-6, 1 - 1e-6)
        out["calibration_slope"] = S.cox_calibration_slope(event, time, np.log(-np.log(s)))
        obs = 1.0 - S.kaplan_meier_at(event, time, h)
        out["calibration_intercept"] = (float(cal.logit(obs) - cal.logit(np.mean(1.0 - s))) if 0 < obs < 1
                                        else float("nan"))
    return out


MAIN_METRIC = {"binary": "auc", "survival": "harrell_c"}


# ------------------------------------------------------------------------------------------------ one fold

@dataclasses.dataclass
class _Fold:
    """One train/test pair of one outcome: the test outcomes and every model's test predictions."""

    tag: str
    test_ids: list
    y: np.ndarray  # binary: 0/1; survival: event
    time: np.ndarray | None
    y_train: np.ndarray | None  # survival: the training split (censoring weights)
    preds: dict  # model -> p (binary) | (risk, surv_h)


def _deep_binary(x_tr, crops_tr, y_tr, ids, names, settings: Settings, seed: int, workdir: str):
    """The outcome net (binary logit head, task ``outcome``) on crop + covariates; returns ``predict(x, crops)``."""
    tr, va = splits.patient_split(ids, 0.2, seed=[seed, 5], stratify=y_tr.tolist())
    enc = CovariateEncoder(tuple(names), standardise=True).fit(x_tr[tr])
    cfg = _deep_config(settings, seed, "outcome_net", "ce")
    info = DatasetInfo("kits", 1, CROP_CHANNELS, ("no", "yes"), 3, covariate_names=tuple(names))

    def d(i):
        return {"image": crops_tr[i], "covariates": enc.transform(x_tr[i]), "outcome": y_tr[i].astype(np.int32)}

    train_and_evaluate(cfg, workdir, progress=False, data=(d(tr), d(va), info))
    best = os.path.join(workdir, "best")
    model = load_pretrained(best if os.path.isdir(best) and os.listdir(best) else workdir)

    def predict(x, crops):
        p = model.predict_proba({"image": crops, "covariates": enc.transform(x)}, 32)
        return np.asarray(p, np.float64)[:, -1]

    return predict, model, enc


def _deep_config(settings: Settings, seed: int, model_name: str, loss: str, batch: int | None = None):
    enc = {"features": settings.deep_features, "depth": 3, "norm": "none"}
    cfg = survival_config("cox", "both", steps=settings.deep_steps, batch_size=batch or settings.deep_batch,
                          encoder_kwargs=enc, eval_every=max(settings.deep_steps // 4, 1), seed=seed)
    with cfg.unlocked():
        cfg.model.name = model_name
        cfg.train.loss = loss
        if model_name == "outcome_net":
            del cfg["survival"]
    return cfg


def _deep_survival(x_tr, crops_tr, time, event, ids, names, settings: Settings, seed: int, workdir: str):
    tr, va = splits.patient_split(ids, 0.2, seed=[seed, 5], stratify=event.tolist())
    # the Cox loss compares the patients of a batch: at ~14 % deaths a batch of 16 holds two events, of 32 four
    cfg = _deep_config(settings, seed, "outcome_net_survival", "cox", batch=settings.deep_survival_batch)
    info = DatasetInfo("kits", 1, CROP_CHANNELS, (), 3, covariate_names=tuple(names))

    def d(i):
        return {"image": crops_tr[i], "covariates": x_tr[i], "time": time[i], "event": event[i]}

    model = fit_deep_survival(cfg, d(tr), d(va), info, workdir, progress=False)
    return model


def _gbm_classifier(x, y, settings: Settings, seed: int):
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(n_estimators=settings.gbm_trees, learning_rate=0.05, max_depth=2,
                                      subsample=0.8, random_state=seed).fit(x, y)


def _fit_fold(kind, cols, levels, table_tr, table_te, y_tr, t_tr, t_te, crops_tr, crops_te, settings, seed, tag,
              workdir, kept: dict | None = None) -> dict:
    """Every model fitted on the training rows and predicted on the test rows: ``{model: prediction}``; ``kept``
    (binary) receives the deep model: ``{"model", "encoder" (the net's), "x_train", "x_test", "names"}``."""
    preds = {}
    h = settings.horizon
    for m, (columns, categorical) in cols.items():
        if m == DEEP and not settings.deep:
            continue
        # standardised on the training rows: the Cox model's ridge penalty then weighs every covariate alike
        enc = CovariateEncoder(columns, categorical, levels={c: levels[c] for c in categorical},
                               standardise=True).fit(table_tr)
        x_tr, x_te = enc.transform(table_tr, "training"), enc.transform(table_te, tag)
        t1 = _time.time()
        if kind == "binary":
            if m in TRADITIONAL:
                p = logistic_regression(x_tr, y_tr, seed).predict_proba(x_te)[:, 1]
            elif m == "gbm_image":
                p = _gbm_classifier(x_tr, y_tr, settings, seed).predict_proba(x_te)[:, 1]
            else:
                ids = [str(i) for i in table_tr.index]
                fn, net, net_enc = _deep_binary(x_tr, crops_tr, y_tr, ids, enc.feature_names, settings, seed,
                                                os.path.join(workdir, m))
                p = fn(x_te, crops_te)
                if kept is not None:
                    kept.update(model=net, encoder=net_enc, x_train=x_tr, x_test=x_te,
                                names=list(enc.feature_names))
            preds[m] = np.asarray(p, np.float64)
        else:
            if m in TRADITIONAL or m in IMAGE_MODELS:
                name = {"gbm_image": "gbsa", "rsf_image": "rsf"}.get(m, "coxph")
                est = SurvivalBaseline(name, seed, rsf_trees=settings.rsf_trees, gbsa_trees=settings.gbm_trees)
                if name == "coxph":  # a ridge penalty: ~40 covariates against tens of deaths
                    est.est.set_params(alpha=1.0)
                est.fit(x_tr, t_tr, y_tr)
                preds[m] = (est.risk(x_te), est.survival(x_te, [h])[:, 0])
            else:
                ids = [str(i) for i in table_tr.index]
                model = _deep_survival(x_tr, crops_tr, t_tr, y_tr, ids, enc.feature_names, settings, seed,
                                       os.path.join(workdir, m))
                preds[m] = (model.risk(x_te, crops_te), model.survival(x_te, [h], crops_te)[:, 0])
        _say(settings, f"  {tag} {m}: {_time.time() - t1:.1f} s")
    return preds


# ------------------------------------------------------------------------------------------------ explanations

def _held_embedding_function(net, crop):
    """``f(covariates [N, F_net]) -> p(yes) [N]`` of the outcome net with one patient's crop fixed: the image
    embedding (``image_proj``'s output) is computed once and replayed, the encoder skipped."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp

    model, variables = net.model, net.variables
    held = {}

    def capture(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and "/".join(context.module.scope.path) == "image_proj":
            held["emb"] = out
        return out

    def replay(next_fun, args, kwargs, context):
        path = "/".join(context.module.scope.path)
        if context.method_name == "__call__" and path == "encoder":
            return [jnp.zeros((args[0].shape[0],) + (1,) * (args[0].ndim - 1))] * 16  # unused: image_proj replays
        if context.method_name == "__call__" and path == "image_proj":
            return jnp.broadcast_to(held["emb"], (args[0].shape[0], held["emb"].shape[-1]))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(capture):
        model.apply(variables, jnp.asarray(crop[None]), jnp.zeros((1, model.num_covariates)), train=False)
    chunk = 256

    @jax.jit
    def probs(cov):
        with nn.intercept_methods(replay):
            logits = model.apply(variables, jnp.zeros((chunk,) + crop.shape), cov, train=False)
        # one logit (sigmoid) or K classes (softmax): p of the last ("yes")
        return jax.nn.sigmoid(logits[:, 0]) if logits.shape[-1] == 1 else jax.nn.softmax(logits, -1)[:, -1]

    def f(cov):
        cov = np.asarray(cov, np.float32)
        out = []
        for i in range(0, len(cov), chunk):
            part = cov[i:i + chunk]
            pad = np.concatenate([part, np.repeat(part[-1:], chunk - len(part), 0)]) if len(part) < chunk else part
            out.append(np.asarray(probs(pad))[:len(part)])
        return np.concatenate(out).astype(np.float64)

    return f


def _explain_deep(name, kept, crops, case_ids, settings: Settings, out) -> tuple[dict, list[dict]]:
    """Grad-CAM of the deep model (trained on the whole development set) on the first ``explain_cases`` external
    crops (the mid-axial slice of the tumour channel), and the mean |SHAP| of each covariate over the first
    ``shap_patients`` external patients, each with its own crop held fixed (the covariates branch)."""
    import jax

    from zoo import explain

    net, enc = kept["model"], kept["encoder"]
    k = min(settings.explain_cases, len(crops))
    inputs = {"covariates": enc.transform(kept["x_test"][:k]).astype(np.float32)}
    # the encoder's deepest level (the U-Net encoder's blocks are enc0, enc1, ...)
    layer = [n for n in explain.layer_names(net.model, net.variables, crops[:k], inputs)
             if n.startswith("encoder/enc") and n.count("/") == 1][-1]
    n_logits = jax.eval_shape(lambda x, c: net.model.apply(net.variables, x, c, train=False), crops[:1],
                              inputs["covariates"][:1]).shape[-1]
    cams = explain.gradcam(net.model, net.variables, crops[:k], layer=layer, target_class=n_logits - 1,
                           inputs=inputs)
    pictures = []
    for i in range(k):
        path = f"gradcam_{name}_{case_ids[i]}.png"
        explain.gradcam_overlay(crops[i], cams[i], os.path.join(out, path), channel=CROP_CHANNELS.index("tumour"),
                                index=crops.shape[1] // 2, title=f"{case_ids[i]}: {DEEP} Grad-CAM ({name})",
                                mask=crops[i][..., CROP_CHANNELS.index("kidney")] > 0.5)
        pictures.append(path)
    rng = np.random.default_rng(settings.seed)
    x_tr, x_te, names = kept["x_train"], kept["x_test"], kept["names"]
    bg = x_tr[rng.choice(len(x_tr), min(settings.shap_background, len(x_tr)), replace=False)]
    n = min(settings.shap_patients, len(x_te))
    evals = max(settings.shap_evals or 10 * len(names), 2 * len(names) + 1)
    values = []
    for i in range(n):
        f = _held_embedding_function(net, crops[i])
        e = explain.shap_tabular(lambda z, f=f: f(enc.transform(z)), bg, x_te[i:i + 1], feature_names=names,
                                 max_background=len(bg), max_evals=evals, seed=settings.seed + i)
        values.append(np.asarray(e.values)[0])
    values = np.asarray(values)
    mean_abs = np.abs(values).mean(0)
    plot = f"shap_{name}_{DEEP}.png"
    # the plot reads an explanation's ``values`` and ``feature_names``
    explain.shap_importance_plot(types.SimpleNamespace(values=values, feature_names=names), os.path.join(out, plot),
                                 title=f"{name}: {DEEP}, mean |SHAP| on p(yes), external (n = {n})")
    rows = [{"outcome": name, "model": DEEP, "split": "external", "metric": "mean_abs_shap", "value": float(v),
             "ci_low": None, "ci_high": None, "n": n, "events": None, "feature": f} for f, v in zip(names, mean_abs)]
    info = {"model": DEEP, "trained_on": "the whole development set (the external-validation fit)",
            "gradcam_layer": layer, "gradcam_target": "logit of yes", "gradcam_cases": list(case_ids[:k]),
            "gradcam_plots": pictures, "shap_patients": n, "shap_background": len(bg), "shap_evals": evals,
            "shap_plot": plot, "shap_top": [names[j] for j in np.argsort(-mean_abs)[:5]]}
    return info, rows


# ------------------------------------------------------------------------------------------------ one outcome

def _outcome_values(frame, spec):
    cols = list(spec["columns"])
    if spec["kind"] == "survival":
        tcol, ecol = cols
        return frame[tcol].to_numpy(np.float64), frame[ecol].to_numpy(np.float64)
    return None, frame[cols[0]].to_numpy(np.float64)


def _select(data: KidneyData, spec, exclude=()):
    """Row positions with the outcome known (and not excluded), the number dropped as missing."""
    t, y = _outcome_values(data.frame, spec)
    ok = np.isfinite(y) if t is None else np.isfinite(y) & np.isfinite(t) & (t > 0)
    ex = np.isin(np.asarray(data.ids), list(exclude))
    return np.flatnonzero(ok & ~ex), int((~ok & ~ex).sum())


def _statistic(folds: list[_Fold], kind: str, models, reference: str | None, h: float):
    main = MAIN_METRIC[kind]

    def metrics(f: _Fold, m, idx):
        if kind == "binary":
            return _binary_metrics(f.y[idx], f.preds[m][idx])
        risk, sh = f.preds[m]
        return _survival_metrics(f.y[idx], f.time[idx], risk[idx], sh[idx], h, f.y_train)

    def statistic(idx):
        out = {}
        per = {m: [metrics(f, m, i) for f, i in zip(folds, idx)] for m in models}
        for m, vals in per.items():
            for k in vals[0]:
                v = [x.get(k, float("nan")) for x in vals]
                out[f"{m}|{k}"] = float(np.mean(v))
        if reference is not None:
            for m in models:
                if m not in TRADITIONAL and f"{m}|{main}" in out and f"{reference}|{main}" in out:
                    out[f"{m}|delta_{main}"] = out[f"{m}|{main}"] - out[f"{reference}|{main}"]
        return out

    return statistic


def _rows(outcome, split, folds, kind, models, reference, settings) -> list[dict]:
    if kind == "binary":
        ok = all(0 < f.y.sum() < len(f.y) for f in folds)
    else:
        ok = all(f.y.sum() > 0 for f in folds)
    if not ok:
        return []
    stat = _statistic(folds, kind, models, reference, settings.horizon)
    cis = bootstrap_statistics(stat, [len(f.y) for f in folds], n_boot=settings.n_boot, level=0.95,
                               seed=settings.seed)
    n = int(sum(len(f.y) for f in folds))
    events = int(sum(f.y.sum() for f in folds))
    rows = []
    for key, ci in cis.items():
        m, metric = key.split("|")
        row = {"outcome": outcome, "model": m, "split": split, "metric": metric, "value": ci.estimate,
               "ci_low": ci.low, "ci_high": ci.high, "n": n, "events": events}
        if metric.startswith("delta_"):
            row["reference"] = reference
        rows.append(row)
    return rows


def _pooled(folds: list[_Fold], m, kind):
    if kind == "binary":
        return np.concatenate([f.preds[m] for f in folds])
    return np.concatenate([f.preds[m][0] for f in folds]), np.concatenate([f.preds[m][1] for f in folds])


def _decision_and_calibration(folds, kind, models, h) -> dict:
    """Net benefit over ``THRESHOLDS`` and calibration groups per model on the pooled test predictions."""
    y = np.concatenate([f.y for f in folds])
    out = {"net_benefit": {}, "calibration": {}}
    if kind == "binary":
        yb, keep = y, np.ones(len(y), bool)
    else:
        t = np.concatenate([f.time for f in folds])
        keep = (t > h) | (y == 1)
        yb = ((t <= h) & (y == 1)).astype(np.float64)[keep]
    if len(yb) == 0:
        return out
    for m in models:
        pm = _pooled(folds, m, kind)
        p = pm if kind == "binary" else 1.0 - pm[1]
        out["net_benefit"][m] = cal.net_benefit(yb, np.clip(p[keep], 0, 1), list(THRESHOLDS))
        if kind == "binary":
            prob_true, prob_pred = cal.calibration_curve(y, np.clip(p, 0, 1), 5)
            out["calibration"][m] = {"predicted": prob_pred.tolist(), "observed": prob_true.tolist()}
        else:
            c = S.calibration_at_horizon(y, t, pm[1], h, n_groups=5)
            out["calibration"][m] = {"predicted": c["predicted"], "observed": c["observed"], "ici": c["ici"]}
    return out


def _labels(column) -> np.ndarray:
    return np.asarray([str(x) if x is not None and x == x else "missing" for x in column], dtype=object)


def _bands(frame) -> list[tuple[str, str, np.ndarray]]:
    """Subgroup definitions (procedure, age band, sex, tumour size band) from whichever columns the cohort has."""
    defs = []

    def first(*names):
        return next((c for c in names if c in frame.columns), None)

    proc = first("procedure", "surgical_procedure")
    if proc:
        v = _labels(frame[proc])
        defs += [("procedure", lv, v == lv) for lv in sorted(set(v))]
    age = first("age", "age_at_nephrectomy")
    if age:
        a = frame[age].astype(float).to_numpy()
        defs += [("age", "<50", a < 50), ("age", "50-65", (a >= 50) & (a <= 65)), ("age", ">65", a > 65)]
    sex = first("sex", "gender")
    if sex:
        v = _labels(frame[sex])
        defs += [("sex", lv, v == lv) for lv in sorted(set(v))]
    size = first(SIZE_COLUMN)
    if size:
        s = frame[size].astype(float).to_numpy()  # cm: T1a <= 4, T1b 4-7, T2 > 7
        defs += [("tumour size", "<=4 cm", s <= 4), ("tumour size", "4-7 cm", (s > 4) & (s <= 7)),
                 ("tumour size", ">7 cm", s > 7)]
    return defs


def _subgroups(folds, frame, kind, models) -> list[dict]:
    y = np.concatenate([f.y for f in folds])
    t = None if kind == "binary" else np.concatenate([f.time for f in folds])
    out = []
    for col, level, mask in _bands(frame):
        row = {"subgroup": col, "level": level, "n": int(mask.sum()), "events": int(y[mask].sum())}
        for m in models:
            pm = _pooled(folds, m, kind)
            v = float("nan")
            try:
                if kind == "binary" and 0 < y[mask].sum() < mask.sum():
                    v = auc_roc(pm[mask], y[mask])
                elif kind == "survival" and y[mask].sum() > 0:
                    v = float(S.concordance_index_censored(y[mask].astype(bool), t[mask], pm[0][mask])[0])
            except ValueError:
                pass
            row[m] = v
        out.append(row)
    return out


def _plots(outcome, split, dc, kind, h, out) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    if dc["net_benefit"]:
        fig, ax = plt.subplots(figsize=(5, 3.6))
        any_nb = next(iter(dc["net_benefit"].values()))
        for m, nb in dc["net_benefit"].items():
            ax.plot(nb["threshold"], nb["model"], label=m)
        ax.plot(any_nb["threshold"], any_nb["treat_all"], "k--", lw=0.8, label="treat all")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xlabel("threshold probability")
        ax.set_ylabel("net benefit")
        ax.set_title(f"{outcome} ({split})" + ("" if kind == "binary" else f": death by {h:g} days"), fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        paths["decision_curve"] = f"decision_{outcome}_{split}.png"
        fig.savefig(os.path.join(out, paths["decision_curve"]), dpi=90)
        plt.close(fig)
    if dc["calibration"]:
        fig, ax = plt.subplots(figsize=(4, 4))
        for m, c in dc["calibration"].items():
            ax.plot(c["predicted"], c["observed"], "o-", ms=3, label=m)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("predicted risk")
        ax.set_ylabel("observed" + ("" if kind == "binary" else " (Kaplan-Meier)"))
        ax.set_title(f"{outcome} ({split})", fontsize=9)
        ax.legend(fontsize=6)
        fig.tight_layout()
        paths["calibration"] = f"calibration_{outcome}_{split}.png"
        fig.savefig(os.path.join(out, paths["calibration"]), dpi=90)
        plt.close(fig)
    return paths


def _outcome_summary(frame, spec) -> dict:
    t, y = _outcome_values(frame, spec)
    known = np.isfinite(y)
    out = {"n": int(len(y)), "known": int(known.sum()), "events": int(np.nansum(y))}
    if t is not None:
        out["deaths"] = out.pop("events")
    return out


def _learning_curve(name, kind, cv, folds_cv, pos, est, reference, cols, levels, table, y_all, t_all, crops,
                    settings: Settings, out) -> dict:
    """The cross-validated AUC / C of the best traditional model, ``gbm_image`` and the deep model trained on
    ``curve_fractions`` of each fold's training patients (a seeded subsample stratified by the outcome; the test
    patients unchanged) and on all of them (the cross-validation itself)."""
    main = MAIN_METRIC[kind]
    models = [m for m in (reference, "gbm_image", DEEP) if m in cols and (m != DEEP or settings.deep)]
    curve = {"fractions": [], "n_train": [], "events_train": [], **{m: [] for m in models}}
    for frac in sorted(settings.curve_fractions):
        folds = []
        n_tr = ev_tr = 0
        for k, (f, whole) in enumerate(zip(folds_cv, cv)):
            tr_all = pos[f.train]
            keep, _ = splits.patient_split([str(i) for i in tr_all], 1.0 - float(frac), seed=[settings.seed, k, 7],
                                           stratify=y_all[tr_all].astype(int).tolist())
            tr = tr_all[np.sort(keep)]
            n_tr, ev_tr = n_tr + len(tr), ev_tr + int(y_all[tr].sum())
            te = pos[f.val]
            tag = f"{name} fold {k} at {frac:g} of its training patients"
            preds = _fit_fold(kind, {m: cols[m] for m in models}, levels, table.iloc[tr], table.iloc[te], y_all[tr],
                              None if t_all is None else t_all[tr], None if t_all is None else t_all[te],
                              crops[tr] if settings.deep else None, crops[te] if settings.deep else None,
                              settings, settings.seed + k, tag,
                              os.path.join(out, "models", name, f"curve{frac:g}", f"fold{k}"))
            folds.append(dataclasses.replace(whole, preds=preds,
                                             y_train=None if t_all is None else S.surv_array(y_all[tr], t_all[tr])))
        vals = _statistic(folds, kind, models, None, settings.horizon)([np.arange(len(f.y)) for f in folds])
        curve["fractions"].append(float(frac))
        curve["n_train"].append(n_tr / len(folds))
        curve["events_train"].append(ev_tr / len(folds))
        for m in models:
            curve[m].append(vals.get(f"{m}|{main}", float("nan")))
    n_full = float(np.mean([len(f.train) for f in folds_cv]))
    curve["fractions"].append(1.0)
    curve["n_train"].append(n_full)
    curve["events_train"].append(float(np.mean([y_all[pos[f.train]].sum() for f in folds_cv])))
    for m in models:
        curve[m].append(est.get(f"{m}|{main}", float("nan")))
    curve["metric"] = main
    curve["plot"] = _plot_curve(name, curve, models, out)
    return curve


def _plot_curve(name, curve, models, out) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for m in models:
        ax.plot(curve["n_train"], curve[m], "o-", label=m)
    ax.set_xlabel("training patients per fold")
    ax.set_ylabel(f"cross-validated {curve['metric']}")
    ax.set_title(f"{name}: learning curve", fontsize=9)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = f"learning_curve_{name}.png"
    fig.savefig(os.path.join(out, path), dpi=90)
    plt.close(fig)
    return path


def _run_outcome(name, spec, dev: KidneyData, ext: KidneyData | None, unseen, settings: Settings, out) -> dict:
    """Fit, evaluate and summarise one outcome (see the module docstring)."""
    kind = spec["kind"]
    cols = model_columns(dev.cohort, dev.image, kind)
    models = [m for m in cols if m != DEEP or settings.deep]
    table_dev = _table(dev)
    levels = development_levels(table_dev, dev.cohort.categorical)
    pos, dropped = _select(dev, spec)
    t_all, y_all = _outcome_values(dev.frame, spec)
    y, t = y_all[pos], (None if t_all is None else t_all[pos])
    ids = [dev.ids[i] for i in pos]
    res = {"outcome": name, "kind": kind, "columns": list(spec["columns"]), "n_development": len(pos),
           "dropped_missing_development": dropped, "events_development": int(y.sum()),
           "validate_external": bool(spec.get("validate_external", True))}
    res["events_per_variable"] = {m: {"features": int(len(CovariateEncoder(c, k, levels={x: levels[x] for x in k})
                                                          .fit(table_dev.iloc[pos])
                                                          .feature_names)) + (1 if m == DEEP else 0)}
                                  for m, (c, k) in cols.items() if m in models}
    minority = int(min(y.sum(), len(y) - y.sum())) if kind == "binary" else int(y.sum())
    for m, v in res["events_per_variable"].items():
        v["epv"] = minority / max(v["features"], 1)
    if DEEP in res["events_per_variable"]:
        res["events_per_variable"][DEEP]["note"] = ("covariate features + the crop encoder (counted as 1; its "
                                                    "parameters are many more)")
    if kind == "binary" and min(y.sum(), len(y) - y.sum()) < settings.folds:
        res["skipped"] = f"fewer than {settings.folds} patients in the smaller class ({minority})"
        return res
    # development cross-validation: the same patient-level folds for every model
    folds_cv = splits.patient_kfold(ids, settings.folds, seed=settings.seed, stratify=y.astype(int).tolist())
    cv = []
    for k, f in enumerate(folds_cv):
        tr, te = pos[f.train], pos[f.val]
        tag = f"{name} fold {k}"
        _say(settings, f"{tag}: {len(tr)} train / {len(te)} test")
        preds = _fit_fold(kind, cols, levels, table_dev.iloc[tr], table_dev.iloc[te], y_all[tr],
                          None if t_all is None else t_all[tr], None if t_all is None else t_all[te],
                          dev.crops[tr] if settings.deep else None, dev.crops[te] if settings.deep else None,
                          settings, settings.seed + k, tag, os.path.join(out, "models", name, f"fold{k}"))
        cv.append(_Fold(f"fold{k}", [dev.ids[i] for i in te], y_all[te],
                        None if t_all is None else t_all[te],
                        None if t_all is None else S.surv_array(y_all[tr], t_all[tr]), preds))
    main = MAIN_METRIC[kind]
    est = _statistic(cv, kind, models, None, settings.horizon)([np.arange(len(f.y)) for f in cv])
    trad = {m: est.get(f"{m}|{main}", float("nan")) for m in TRADITIONAL}
    trad = {m: v for m, v in trad.items() if np.isfinite(v)}
    reference = max(trad, key=trad.get) if trad else None
    res["best_traditional"] = reference
    res["rows"] = _rows(name, "cv", cv, kind, models, reference, settings)
    if name in settings.learning_curve and reference is not None:
        res["learning_curve"] = _learning_curve(name, kind, cv, folds_cv, pos, est, reference, cols, levels,
                                                table_dev, y_all, t_all, dev.crops, settings, out)
    frame_cv = table_dev.loc[[i for f in cv for i in f.test_ids]]
    dc = _decision_and_calibration(cv, kind, models, settings.horizon)
    res["cv"] = {**dc, "subgroups": _subgroups(cv, frame_cv, kind, models),
                 "plots": _plots(name, "cv", dc, kind, settings.horizon, out)}
    # external validation: every model refitted on the whole development set
    if ext is not None and res["validate_external"]:
        table_ext, res["external_levels_set_missing"] = align_levels(_table(ext), levels)
        epos, edropped = _select(ext, spec, exclude=unseen)
        ut, uy = _outcome_values(ext.frame.loc[[u for u in unseen if u in ext.frame.index]], spec)
        res["external_unseen_procedure"] = {"n": len(unseen), "case_ids": list(unseen),
                                            "outcome_known": int(np.isfinite(uy).sum()),
                                            "events": int(np.nansum(uy))}
        et_all, ey_all = _outcome_values(ext.frame, spec)
        res.update(n_external=len(epos), dropped_missing_external=edropped,
                   events_external=int(ey_all[epos].sum()))
        _say(settings, f"{name} external: {len(pos)} development / {len(epos)} external")
        kept = {} if name == settings.explain and settings.deep else None
        preds = _fit_fold(kind, cols, levels, table_dev.iloc[pos], table_ext.iloc[epos], y, t,
                          None if et_all is None else et_all[epos],
                          dev.crops[pos] if settings.deep else None, ext.crops[epos] if settings.deep else None,
                          settings, settings.seed, f"{name} external", os.path.join(out, "models", name, "external"),
                          kept=kept)
        fe = _Fold("external", [ext.ids[i] for i in epos], ey_all[epos], None if et_all is None else et_all[epos],
                   None if t is None else S.surv_array(y, t), preds)
        res["rows"] += _rows(name, "external", [fe], kind, models, reference, settings)
        if kept:
            t1 = _time.time()
            res["explain"], shap_rows = _explain_deep(name, kept, ext.crops[epos], [ext.ids[i] for i in epos],
                                                      settings, out)
            res["rows"] += shap_rows
            _say(settings, f"{name} external: Grad-CAM and SHAP of {DEEP}: {_time.time() - t1:.1f} s")
        dc = _decision_and_calibration([fe], kind, models, settings.horizon)
        res["external"] = {**dc, "subgroups": _subgroups([fe], table_ext.iloc[epos], kind, models),
                           "plots": _plots(name, "external", dc, kind, settings.horizon, out)}
    elif ext is not None:
        res["external_note"] = "not validated externally (kits.OUTCOMES: validate_external is false)"
    return res


# ------------------------------------------------------------------------------------------------ report

def run_kidney_report(dev: KidneyData, ext: KidneyData | None, settings: Settings, out: str) -> dict:
    """Every outcome, every model; writes ``report.json``, ``report.md`` and the plots into ``out``."""
    t0 = _time.time()
    os.makedirs(out, exist_ok=True)
    names = settings.outcomes or tuple(kits.OUTCOMES)
    for flag, given in (("--outcomes", names), ("--learning_curve", settings.learning_curve)):
        unknown = [n for n in given if n not in kits.OUTCOMES]
        if unknown:
            raise ValueError(f"{flag}: unknown {unknown}; expected some of {list(kits.OUTCOMES)}")
    explained = settings.explain or ("stay_gt3" if "stay_gt3" in names else "none")
    if explained != "none" and (explained not in names or kits.OUTCOMES[explained]["kind"] != "binary"):
        raise ValueError(f"--explain: {explained!r} is not a binary outcome of this run "
                         f"({[n for n in names if kits.OUTCOMES[n]['kind'] == 'binary']}, or none)")
    settings = dataclasses.replace(settings, explain=explained)
    unseen = [str(u) for u in kits.unseen_categories(dev.cohort, ext.cohort)] if ext is not None else []
    outcomes = []
    for name in names:
        _say(settings, f"outcome {name}")
        outcomes.append(_run_outcome(name, kits.OUTCOMES[name], dev, ext, unseen, settings, out))
    rows = [r for o in outcomes for r in o.pop("rows", [])]
    result = {"development": dev.cohort.name, "external": None if ext is None else ext.cohort.name,
              "n_development": len(dev.ids), "n_external": None if ext is None else len(ext.ids),
              "unseen_procedure_external": unseen,
              "covariates": list(dev.cohort.covariates), "categorical": list(dev.cohort.categorical),
              "excluded_covariates": {c: "derived from the pathology (see POSTOPERATIVE)" for c in POSTOPERATIVE
                                      if c in dev.cohort.covariates},
              "image_features": _numeric_image_columns(dev.image),
              "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(settings).items()},
              "outcomes": outcomes, "rows": rows, "total_seconds": round(_time.time() - t0, 1)}
    write_json(os.path.join(out, "report.json"), result)
    write_text(os.path.join(out, "report.md"), markdown(result))
    return result


def _fmt(r) -> str:
    def f(v):
        return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"

    return f"{f(r['value'])} [{f(r['ci_low'])}, {f(r['ci_high'])}]"


def markdown(res: dict) -> str:
    s = res["settings"]
    lines = ["# Outcomes after kidney-tumour surgery: models side by side", "",
             f"Developed on **{res['development']}** ({res['n_development']} patients; {s['folds']}-fold patient-level "
             f"cross-validation, the same folds for every model)" +
             (f", validated on **{res['external']}** ({res['n_external']} patients; "
              f"{len(res['unseen_procedure_external'])} of a procedure never seen in development reported apart)"
              if res["external"] else "") + ".",
             f"95 % CIs: percentile bootstrap ({s['n_boot']} resamples of the test patients, models fixed); deltas "
             "are paired (the same resamples) against the best traditional model by the cross-validated AUC / C. "
             f"Survival horizon {s['horizon']:g} days. Deep model: {s['deep_steps']} steps, crop pooled by "
             f"{s['crop_pool']}. Seed {s['seed']}." + (" **--quick**: a machinery check, not a result." if s["quick"]
                                                        else ""),
             "", "Left out of every model: " + (", ".join(f"`{c}` ({why})" for c, why in
                                                   res["excluded_covariates"].items()) or "nothing") +
             f". Image-derived features (gbm/rsf): {', '.join(res['image_features'])}.", ""]
    by = {}
    for r in res["rows"]:
        by.setdefault(r["outcome"], []).append(r)
    for o in res["outcomes"]:
        name = o["outcome"]
        lines += [f"## {name} ({o['kind']})", "",
                  f"Development: {o['n_development']} patients ({o['dropped_missing_development']} dropped: outcome "
                  f"missing), {o['events_development']} events. " +
                  (f"External: {o['n_external']} patients ({o['dropped_missing_external']} dropped: outcome missing), "
                   f"{o['events_external']} events; {o['external_unseen_procedure']['n']} of an unseen procedure not "
                   f"scored (outcome known for {o['external_unseen_procedure']['outcome_known']}, "
                   f"{o['external_unseen_procedure']['events']} events). " if "n_external" in o else "") +
                  o.get("external_note", "") + (f" Skipped: {o['skipped']}." if "skipped" in o else ""), ""]
        rows = by.get(name, [])
        metrics = [m for m in ("auc", "harrell_c", "brier", "calibration_slope", "calibration_intercept")
                   if any(r["metric"] == m for r in rows)]
        for split in ("cv", "external"):
            rs = [r for r in rows if r["split"] == split]
            if not rs:
                continue
            idx = {(r["model"], r["metric"]): r for r in rs}
            models = list(dict.fromkeys(r["model"] for r in rs))
            lines += [f"**{'development cross-validation' if split == 'cv' else 'external validation'}** "
                      f"(n = {rs[0]['n']}, events = {rs[0]['events']})", "",
                      "| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
            for m in models:
                lines.append(f"| {m} | " + " | ".join(_fmt(idx[(m, k)]) if (m, k) in idx else "-"
                                                      for k in metrics) + " |")
            deltas = [r for r in rs if r["metric"].startswith("delta_")]
            if deltas:
                lines += ["", "| model vs " + str(deltas[0].get("reference")) + " | delta | 95 % CI |", "|---|---:|---|"]
                for r in deltas:
                    lines.append(f"| {r['model']} ({r['metric']}) | {r['value']:+.3f} | "
                                 f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] |" if r["ci_low"] is not None and
                                 math.isfinite(r["ci_low"]) else f"| {r['model']} ({r['metric']}) | - | - |")
            lines.append("")
            part = o.get(split) or {}
            for key, title in (("decision_curve", "decision curve"), ("calibration", "calibration")):
                if key in part.get("plots", {}):
                    lines.append(f"![{title}]({part['plots'][key]})")
            if part.get("subgroups"):
                models_sg = [m for m in models if m in part["subgroups"][0]]
                lines += ["", "| subgroup | level | n | events | " + " | ".join(models_sg) + " |",
                          "|---|---|---:|---:|" + "---:|" * len(models_sg)]
                for g in part["subgroups"]:
                    lines.append(f"| {g['subgroup']} | {g['level']} | {g['n']} | {g['events']} | " + " | ".join(
                        "-" if not math.isfinite(g[m]) else f"{g[m]:.2f}" for m in models_sg) + " |")
            lines.append("")
        lc = o.get("learning_curve")
        if lc:
            models_lc = [m for m in lc if isinstance(lc[m], list) and m not in ("fractions", "n_train",
                                                                               "events_train")]
            lines += [f"Learning curve (development CV {lc['metric']} by training patients per fold):", "",
                      "| training patients (events) | " + " | ".join(models_lc) + " |",
                      "|---|" + "---:|" * len(models_lc)]
            for i, n in enumerate(lc["n_train"]):
                lines.append(f"| {n:.0f} ({lc['events_train'][i]:.0f}) | " + " | ".join(
                    "-" if lc[m][i] is None or not math.isfinite(lc[m][i]) else f"{lc[m][i]:.3f}"
                    for m in models_lc) + " |")
            lines += ["", f"![learning curve]({lc['plot']})", ""]
        ex = o.get("explain")
        if ex:
            shap = sorted((r for r in by.get(name, []) if r["metric"] == "mean_abs_shap"), key=lambda r: -r["value"])
            lines += [f"**Explanations of {ex['model']}** (trained on {ex['trained_on']}; external patients). "
                      f"Grad-CAM of the {ex['gradcam_target']} at `{ex['gradcam_layer']}` on the kidney crop "
                      f"(mid-axial slice of the tumour channel; kidney outline in white): "
                      + ", ".join(ex["gradcam_cases"]) + ".", "",
                      " ".join(f"![Grad-CAM {c}]({p})" for c, p in zip(ex["gradcam_cases"], ex["gradcam_plots"])), "",
                      f"SHAP of the covariates (the crop held fixed per patient; p(yes); permutation explainer, "
                      f"{ex['shap_background']} development patients as reference, {ex['shap_evals']} evaluations "
                      f"per patient): mean |SHAP| over {ex['shap_patients']} external patients, top 10:", "",
                      "| covariate | mean abs SHAP |", "|---|---:|"]
            lines += [f"| {r['feature']} | {r['value']:.4f} |" for r in shap[:10]]
            lines += ["", f"![SHAP]({ex['shap_plot']})", ""]
        epv = o.get("events_per_variable") or {}
        if epv:
            lines += ["Events per variable (development, smaller class / encoded features): " + "; ".join(
                f"{m} {v['epv']:.1f} ({v['features']})" for m, v in epv.items()) + ".", ""]
    lines += [f"Total {res['total_seconds']} s."]
    return "\n".join(lines) + "\n"
