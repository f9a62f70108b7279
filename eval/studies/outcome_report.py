"""Surgical-outcome report on time-to-event cohorts: deep and traditional survival models side by side.

``python -m eval.studies.outcome_report --cohort rotterdam --external gbsg --out DIR`` develops every model on
one cohort and validates it on an independent one (Royston & Altman, BMC Med Res Methodol 2013);
``python -m eval.studies.outcome_report --cohort PATH --time COL --event COL [--covariates a,b] [--categorical c,d]
--out DIR`` runs repeated patient-level k-fold cross-validation on one cohort file (CSV/Parquet) instead.

A study (it fits models): cohorts from :mod:`zoo.outcome.cohorts`, models from the outcome home. Models (the
same covariates, splits and imputation for all; the one covariate encoder,
``data_pipelines.covariates.CovariateEncoder``, fitted on each training split): ``coxph`` (Cox PH), ``rsf``
(random survival forest), ``gbsa`` (gradient-boosted Cox survival; :class:`zoo.outcome.baselines.SurvivalBaseline`,
scikit-survival, imported when used), ``deep_cox`` and ``deep_hazard`` (the outcome net's Cox / logistic-hazard
heads on the training core, :mod:`zoo.outcome.survival`; 20 % of the development split picks their checkpoint;
each run is a work directory under ``DIR/models/`` that ``zoo.load_pretrained`` opens, with ``survival.json``
for its curves). The logistic regression of :mod:`zoo.outcome.baselines` on the binary outcome "event by the
middle horizon" stands beside ``deep_cox`` for the binary metrics (AUC, Brier, ECE, DeLong, net benefit).

Metrics (:mod:`scoring.survival`, conventions of ``sksurv.metrics``): Harrell's C (``harrell_c``), Uno's C
truncated at ``tau`` = the 90th percentile of the test times (``uno_c``), the IPCW integrated Brier score on
50 times between the 5th and 90th percentile of the test times (``ibs``), cumulative/dynamic AUC of
``1 - S(t | x)`` at each horizon (``auc_<t>``). Censoring weights come from the training split. 95 % CIs:
percentile bootstrap of the test patients with the models fixed (``eval.bootstrap.bootstrap_statistics``;
cross-validation: each fold's test set resampled within itself, the mean over folds of each replicate).
Outputs: ``DIR/report.md`` (tables, Kaplan-Meier curves by predicted risk tertile, calibration at the middle
horizon, subgroups by age band / menopause / grade, SHAP of the covariates) and ``DIR/report.json`` (``rows`` of
``{"model", "split", "metric", "value", "ci_low", "ci_high"}``, settings and seeds; strict JSON, ``null`` where a
value or a CI is undefined). Bad input: ``error: ...``, exit 2, nothing written.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time as _time

import numpy as np

from data_pipelines import splits
from data_pipelines.atomic import write_json, write_text
from data_pipelines.covariates import CovariateEncoder
from data_pipelines.info import DatasetInfo
from eval.bootstrap import bootstrap_statistics
from scoring import calibration as cal
from scoring import survival as S
from zoo.cli import command_parser, run_command
from zoo.explain import shap_importance_plot, shap_tabular
from zoo.outcome.baselines import SURVIVAL_BASELINES, SurvivalBaseline, logistic_regression
from zoo.outcome.cohorts import Cohort, bundled_cohorts, load_cohort, read_cohort
from zoo.outcome.survival import SurvivalModel, fit_deep_survival, survival_config

__all__ = ["MODELS", "Settings", "load_inputs", "run_report", "settings_from_args", "build_parser", "main"]

MODELS = SURVIVAL_BASELINES + ("deep_cox", "deep_hazard")
TRADITIONAL = SURVIVAL_BASELINES
BUNDLED_HORIZONS = (365.0, 1095.0, 1825.0)  # 1, 3, 5 years in days


@dataclasses.dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = MODELS
    seed: int = 0
    folds: int = 5
    repeats: int = 2
    n_boot: int = 200
    horizons: tuple[float, ...] = ()
    deep_steps: int = 400
    hazard_bins: int = 10
    rsf_trees: int = 100
    gbsa_trees: int = 100
    log1p: tuple[str, ...] = ()
    shap_rows: int = 40
    quick: bool = False
    progress: bool = True


# ------------------------------------------------------------------------------------------------ inputs

def _split_list(s: str | None) -> list[str] | None:
    return None if s is None else [x.strip() for x in s.split(",") if x.strip()]


def _open(name_or_path, args) -> Cohort:
    if name_or_path in bundled_cohorts():
        return load_cohort(name_or_path)
    if not os.path.exists(name_or_path):
        raise FileNotFoundError(f"--cohort/--external {name_or_path!r}: neither a bundled cohort "
                                f"{bundled_cohorts()} nor a file")
    if not args.time or not args.event:
        raise ValueError(f"{name_or_path}: a cohort file needs --time COL and --event COL")
    return read_cohort(name_or_path, time=args.time, event=args.event, covariates=_split_list(args.covariates),
                       categorical=_split_list(args.categorical))


def _select(cohort: Cohort, covariates, categorical) -> Cohort:
    """Restrict a bundled cohort to ``--covariates`` / ``--categorical`` when given."""
    cov = tuple(covariates) if covariates else cohort.covariates
    unknown = [c for c in cov if c not in cohort.covariates]
    if unknown:
        raise ValueError(f"--covariates: unknown covariate name(s) {unknown}; {cohort.name} has "
                         f"{list(cohort.covariates)}")
    cat = tuple(categorical) if categorical is not None else tuple(c for c in cohort.categorical if c in cov)
    bad = [c for c in cat if c not in cov]
    if bad:
        raise ValueError(f"--categorical: {bad} are not among the covariates {list(cov)}")
    return dataclasses.replace(cohort, frame=cohort.frame[list(cov) + ["time", "event"]], covariates=cov,
                               categorical=cat)


def load_inputs(args) -> tuple[Cohort, Cohort | None]:
    """The development cohort and the external one (or ``None``), checked (raises ``ValueError``)."""
    dev = _open(args.cohort, args)
    if args.cohort in bundled_cohorts():
        dev = _select(dev, _split_list(args.covariates), _split_list(args.categorical))
    ext = None
    if args.external:
        ext = _open(args.external, args)
        missing = [c for c in dev.covariates if c not in ext.frame.columns]
        if missing:
            raise ValueError(f"--external {args.external}: lacks the covariate(s) {missing} of {dev.name}")
        ext = dataclasses.replace(ext, frame=ext.frame[list(dev.covariates) + ["time", "event"]],
                                  covariates=dev.covariates, categorical=dev.categorical)
    return dev, ext


def _log1p(frame, cols):
    out = frame.copy()
    for c in cols:
        v = out[c].astype(float)
        if (v < 0).any():
            raise ValueError(f"--log1p: covariate {c!r} has negative values")
        out[c] = np.log1p(v)
    return out


def _features(train: Cohort, tests: dict, settings: Settings):
    """Encoder fitted on ``train``; ``(X_train, {name: X_test}, feature names)``; unseen levels raise."""
    bad = [c for c in settings.log1p if c not in train.covariates or c in train.categorical]
    if bad:
        raise ValueError(f"--log1p: {bad} are not numeric covariates of {train.name} ({list(train.covariates)})")
    enc = CovariateEncoder.for_cohort(train).fit(train)
    tf = (lambda c: _log1p(c.frame, settings.log1p)) if settings.log1p else (lambda c: c.frame)
    x_train = enc.transform(tf(train), "training")
    return x_train, {k: enc.transform(tf(c), k) for k, c in tests.items()}, enc


# ------------------------------------------------------------------------------------------------ models

class _Deep:
    def __init__(self, model: SurvivalModel, workdir: str):
        self.model, self.workdir = model, workdir

    def risk(self, x):
        return self.model.risk(x)

    def survival(self, x, times):
        return self.model.survival(x, times)


def _fit_deep(head, x, time, event, ids, feature_names, settings, seed, workdir, name):
    tr, va = splits.patient_split(ids, 0.2, seed=[seed, 5])
    cfg = survival_config(head, num_bins=settings.hazard_bins, steps=settings.deep_steps,
                          eval_every=max(settings.deep_steps // 8, 1), seed=seed)
    info = DatasetInfo(name, 1, (), (), 2, covariate_names=tuple(feature_names))

    def d(i):
        return {"covariates": x[i], "time": time[i], "event": event[i]}

    model = fit_deep_survival(cfg, d(tr), d(va), info, workdir, progress=settings.progress,
                              extra={"seed": seed, "cohort": name, "inner_validation": "20% of the development split"})
    return _Deep(model, workdir)


def _fit(name, x, time, event, ids, feature_names, settings, seed, workdir, cohort_name):
    if name in TRADITIONAL:
        return SurvivalBaseline(name, seed, rsf_trees=settings.rsf_trees, gbsa_trees=settings.gbsa_trees).fit(
            x, time, event)
    return _fit_deep("cox" if name == "deep_cox" else "hazard", x, time, event, ids, feature_names, settings, seed,
                     os.path.join(workdir, name), cohort_name)


# ------------------------------------------------------------------------------------------------ metrics

@dataclasses.dataclass
class _Prediction:
    """One model's predictions on one test split."""

    risk: np.ndarray  # [n]
    surv_grid: np.ndarray  # [n, G]
    surv_h: np.ndarray  # [n, H]


@dataclasses.dataclass
class _Split:
    """A train/test pair: the test outcomes, the IBS grid, the Uno tau and each model's predictions."""

    y_train: np.ndarray
    event: np.ndarray
    time: np.ndarray
    grid: np.ndarray
    tau: float
    horizons: np.ndarray
    preds: dict
    frame: object  # test rows of the cohort (for subgroups)


def _grid(test_time, train_time):
    lo = float(np.percentile(test_time, 5))
    hi = float(min(np.percentile(test_time, 90), train_time.max() * 0.999))
    if not hi > lo:
        raise ValueError("the test split's follow-up is too short for the integrated Brier score")
    return np.linspace(lo, hi, 50), hi


def _censoring_train(y_train, event, time):
    """Training split for the censoring weights; joined with the test split when the test follow-up is longer
    (the reverse Kaplan-Meier is undefined past the training's last time)."""
    if time.max() <= y_train["time"].max():
        return y_train
    return np.concatenate([y_train, S.surv_array(event, time)])


def _metrics(sp: _Split, pred: _Prediction, idx) -> dict:
    ev, t = sp.event[idx], sp.time[idx]
    out = {}
    if not ev.any():
        return out
    y_test = S.surv_array(ev, t)
    y_train = _censoring_train(sp.y_train, ev, t)
    for key, fn in (("harrell_c", lambda: S.concordance_index_censored(ev, t, pred.risk[idx])[0]),
                    ("uno_c", lambda: S.concordance_index_ipcw(y_train, y_test, pred.risk[idx], tau=sp.tau)[0]),
                    ("ibs", lambda: S.integrated_brier_score(y_train, y_test, pred.surv_grid[idx], sp.grid))):
        try:
            out[key] = float(fn())
        except ValueError:
            out[key] = float("nan")
    ok = (sp.horizons >= t.min()) & (sp.horizons < t.max())
    if ok.any():
        try:
            auc, _ = S.cumulative_dynamic_auc(y_train, y_test, 1.0 - pred.surv_h[idx][:, ok], sp.horizons[ok])
            for h, a in zip(sp.horizons[ok], auc):
                out[f"auc_{h:g}"] = float(a)
        except ValueError:
            pass
    return out


def _rows(splits_: list[_Split], models, split_name: str, n_boot: int, seed: int) -> list[dict]:
    """Value (mean over splits) and percentile bootstrap 95 % CI per model and metric: each split's test patients
    resampled within the split, the same draws for every model; a metric is reported when every split has it."""
    rows = []
    sizes = [len(sp.time) for sp in splits_]
    for m in models:
        def statistic(idx, m=m):
            vals = [_metrics(sp, sp.preds[m], i) for sp, i in zip(splits_, idx)]
            return {k: float(np.mean([v[k] for v in vals])) for k in vals[0] if all(k in v for v in vals)}

        for k, ci in bootstrap_statistics(statistic, sizes, n_boot=n_boot, level=0.95, seed=seed).items():
            rows.append({"model": m, "split": split_name, "metric": k, "value": ci.estimate, "ci_low": ci.low,
                         "ci_high": ci.high})
    return rows


def _horizons(dev: Cohort, settings: Settings) -> np.ndarray:
    if settings.horizons:
        return np.asarray(sorted(settings.horizons), np.float64)
    if dev.time_unit == "days":  # the bundled cohorts: 1, 3 and 5 years
        return np.asarray(BUNDLED_HORIZONS)
    t = dev.time[dev.event == 1]
    return np.unique([float(f"{q:.3g}") for q in np.percentile(t, [25, 50, 75])])


# ------------------------------------------------------------------------------------------------ run

def _prepare(dev: Cohort, ext: Cohort | None, settings: Settings):
    """Every split's rows and features, built (and checked) before anything is fitted or written."""
    plans = []
    if ext is not None:
        x_tr, x_te, enc = _features(dev, {"external": ext}, settings)
        plans.append(("external", dev, ext, x_tr, x_te["external"], enc, "external"))
    else:
        if settings.folds < 2 or settings.repeats < 1:
            raise ValueError(f"--folds must be >= 2 and --repeats >= 1, got {settings.folds} and {settings.repeats}")
        for r in range(settings.repeats):
            folds = splits.patient_kfold(dev.patient_ids, settings.folds, seed=settings.seed + r,
                                         stratify=dev.event.tolist())
            for k, f in enumerate(folds):
                tr, te = dev.subset(f.train), dev.subset(f.val)
                x_tr, x_te, enc = _features(tr, {f"fold r{r}k{k}": te}, settings)
                plans.append((f"r{r}k{k}", tr, te, x_tr, x_te[f"fold r{r}k{k}"], enc, "cv"))
    horizons = _horizons(dev, settings)
    for _, tr, te, *_ in plans:
        S.check_survival(te.event, te.time, f"{te.name} test split")
        S.check_survival(tr.event, tr.time, f"{tr.name} training split")
    if not any(((horizons >= te.time.min()) & (horizons < te.time.max())).any() for _, _, te, *_ in plans):
        raise ValueError(f"no horizon {horizons.tolist()} lies inside the test follow-up")
    return plans, horizons


def run_report(dev: Cohort, ext: Cohort | None, settings: Settings, out: str) -> dict:
    """Fit every model on every split, evaluate, write ``report.md`` / ``report.json`` and plots into ``out``."""
    from tqdm.auto import tqdm

    plans, horizons = _prepare(dev, ext, settings)
    os.makedirs(out, exist_ok=True)
    t0 = _time.time()
    split_objs, fitted, timings = [], {}, {m: 0.0 for m in settings.models}
    bar = tqdm(total=len(plans) * len(settings.models), desc="fit models", disable=not settings.progress)
    for pi, (tag, tr, te, x_tr, x_te, enc, kind) in enumerate(plans):
        seed = settings.seed + pi
        grid, tau = _grid(te.time, tr.time)
        sp = _Split(S.surv_array(tr.event, tr.time), te.event.astype(bool), te.time, grid, tau, horizons, {},
                    te.frame)
        for m in settings.models:
            bar.set_postfix(split=tag, model=m)
            t1 = _time.time()
            wd = os.path.join(out, "models") if kind == "external" else os.path.join(out, "models", tag)
            model = _fit(m, x_tr, tr.time, tr.event, tr.patient_ids, enc.feature_names, settings, seed, wd, tr.name)
            sp.preds[m] = _Prediction(model.risk(x_te), model.survival(x_te, grid), model.survival(x_te, horizons))
            timings[m] += _time.time() - t1
            if pi == 0:
                fitted[m] = model
            bar.update(1)
        split_objs.append(sp)
    bar.close()
    split_name = "external" if ext is not None else "cv"
    rows = _rows(split_objs, settings.models, split_name, settings.n_boot, settings.seed)
    first = plans[0]
    extras = _extras(split_objs, first, fitted, settings, out)
    result = {
        "cohort": dev.name, "external": None if ext is None else ext.name, "split": split_name,
        "n_development": len(dev), "events_development": int(dev.event.sum()),
        "n_external": None if ext is None else len(ext),
        "events_external": None if ext is None else int(ext.event.sum()),
        "covariates": list(dev.covariates), "categorical": list(dev.categorical),
        "features": list(first[5].feature_names), "encoder": first[5].to_dict(), "time_unit": dev.time_unit,
        "horizons": horizons.tolist(), "ibs_grid": [split_objs[0].grid[0], split_objs[0].grid[-1]],
        "uno_tau": split_objs[0].tau,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(settings).items()},
        "seeds": {"base": settings.seed, "per_split": {p[0]: settings.seed + i for i, p in enumerate(plans)}},
        "deep_workdirs": {m: fitted[m].workdir for m in fitted if isinstance(fitted[m], _Deep)},
        "fit_seconds": {m: round(v, 1) for m, v in timings.items()}, "total_seconds": round(_time.time() - t0, 1),
        "rows": rows, **extras}
    write_json(os.path.join(out, "report.json"), result)
    write_text(os.path.join(out, "report.md"), _markdown(result))
    return result


# ------------------------------------------------------------------------------------------------ extras

def _pooled(split_objs, models, attr):
    return {m: np.concatenate([getattr(sp.preds[m], attr) for sp in split_objs]) for m in models}


def _extras(split_objs, first_plan, fitted, settings, out) -> dict:
    """KM by risk tertile, calibration, subgroups, binary view, SHAP (on the external split or repeat 0's folds)."""
    import pandas as pd

    models = settings.models
    sps = split_objs[:1] if len(split_objs) == 1 else split_objs[:settings.folds]
    event = np.concatenate([sp.event for sp in sps])
    time = np.concatenate([sp.time for sp in sps])
    frame = pd.concat([sp.frame for sp in sps])
    horizons = sps[0].horizons
    ok = (horizons >= time.min()) & (horizons < time.max())
    h_idx = int(np.flatnonzero(ok)[len(np.flatnonzero(ok)) // 2])
    h = float(horizons[h_idx])
    # risk groups by tertile within each split, pooled
    groups = {m: np.concatenate([np.digitize(sp.preds[m].risk, np.percentile(sp.preds[m].risk, [100 / 3, 200 / 3]))
                                 for sp in sps]) for m in models}
    risk = _pooled(sps, models, "risk")
    surv_h = {m: np.concatenate([sp.preds[m].surv_h[:, h_idx] for sp in sps]) for m in models}
    km = {m: {str(g): dict(zip(("time", "survival"), (a.tolist() for a in S.kaplan_meier(event[groups[m] == g],
                                                                                        time[groups[m] == g]))))
              for g in range(3) if (groups[m] == g).any()} for m in models}
    calib = {m: S.calibration_at_horizon(event, time, surv_h[m], h, n_groups=5) for m in models}
    plots = {"km": _plot_km(km, os.path.join(out, "km_risk_groups.png")),
             "calibration": _plot_calibration(calib, h, os.path.join(out, "calibration.png"))}
    subgroups = _subgroups(frame, event, time, risk, models)
    binary = _binary(first_plan, split_objs[0], fitted, h_idx, h)
    shap = _shap(first_plan, fitted, settings, out)
    return {"km_risk_groups": km, "calibration": calib, "calibration_horizon": h, "subgroups": subgroups,
            "binary": binary, "shap": shap, "plots": {**plots, **({"shap": shap["plot"]} if shap else {})}}


def _subgroups(frame, event, time, risk, models) -> list[dict]:
    out = []
    defs = []
    if "age" in frame.columns:
        age = frame["age"].astype(float).to_numpy()
        defs += [("age", "<50", age < 50), ("age", "50-65", (age >= 50) & (age <= 65)), ("age", ">65", age > 65)]
    for col in ("meno", "grade"):
        if col in frame.columns:
            v = frame[col].to_numpy()
            defs += [(col, str(lv), v == lv) for lv in sorted(set(v.tolist()), key=str)]
    for col, level, mask in defs:
        row = {"subgroup": col, "level": level, "n": int(mask.sum()), "events": int(event[mask].sum())}
        for m in models:
            try:
                row[m] = float(S.concordance_index_censored(event[mask], time[mask], risk[m][mask])[0])
            except ValueError:
                row[m] = float("nan")
        out.append(row)
    return out


def _binary(plan, sp, fitted, h_idx, h) -> dict:
    """Event by ``h`` as a binary outcome (patients censored before ``h`` left out): logistic regression on the
    covariates vs ``deep_cox``'s (else the first model's) ``1 - S(h)``."""
    _, tr, te, x_tr, x_te, _, _ = plan
    known_tr = (tr.time > h) | (tr.event == 1)
    known_te = (te.time > h) | (te.event == 1)
    y_tr = ((tr.time <= h) & (tr.event == 1))[known_tr].astype(int)
    y_te = ((te.time <= h) & (te.event == 1))[known_te].astype(int)
    if len(np.unique(y_tr)) < 2 or len(np.unique(y_te)) < 2:
        return {}
    lr = logistic_regression(x_tr[known_tr], y_tr)
    p_lr = lr.predict_proba(x_te[known_te])[:, 1]
    ref = "deep_cox" if "deep_cox" in sp.preds else next(iter(sp.preds))
    p_ref = 1.0 - sp.preds[ref].surv_h[known_te, h_idx]
    out = {"horizon": h, "n": int(known_te.sum()), "events": int(y_te.sum()), "reference": ref, "models": {}}
    for name, p in (("logreg", p_lr), (ref, p_ref)):
        out["models"][name] = {"brier": cal.brier_binary(y_te, p), "ece": cal.expected_calibration_error(y_te, p),
                               "calibration_curve": [a.tolist() for a in cal.calibration_curve(y_te, p, 5)]}
    out["delong"] = cal.delong_test(y_te, p_lr, p_ref)
    out["net_benefit"] = {name: cal.net_benefit(y_te, p, [0.1, 0.2, 0.3, 0.4, 0.5])
                          for name, p in (("logreg", p_lr), (ref, p_ref))}
    return out


def _shap(plan, fitted, settings, out) -> dict:
    name = "deep_cox" if "deep_cox" in fitted else ("coxph" if "coxph" in fitted else None)
    if name is None or settings.shap_rows < 1:
        return {}
    _, _, _, x_tr, x_te, enc, _ = plan
    rng = np.random.default_rng(settings.seed)
    bg = x_tr[rng.choice(len(x_tr), min(50, len(x_tr)), replace=False)]
    rows = x_te[rng.choice(len(x_te), min(settings.shap_rows, len(x_te)), replace=False)]
    expl = shap_tabular(fitted[name].risk, bg, rows, feature_names=list(enc.feature_names), max_background=50,
                        seed=settings.seed)
    vals = np.abs(np.asarray(expl.values)).mean(0)
    path = shap_importance_plot(expl, os.path.join(out, "shap.png"), title=f"{name}: mean |SHAP| of the risk score")
    return {"model": name, "rows": int(len(rows)), "mean_abs": dict(zip(enc.feature_names, vals.tolist())),
            "plot": os.path.basename(path)}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_km(km, path) -> str:
    plt = _plt()
    fig, axes = plt.subplots(1, len(km), figsize=(3.2 * len(km), 3), squeeze=False)
    for ax, (m, curves) in zip(axes[0], km.items()):
        for g, c in curves.items():
            ax.step(np.r_[0, c["time"]], np.r_[1, c["survival"]], where="post",
                    label=("low", "middle", "high")[int(g)])
        ax.set_title(m, fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlabel("time")
    axes[0][0].set_ylabel("Kaplan-Meier S(t)")
    axes[0][0].legend(fontsize=7, title="predicted risk", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.path.basename(path)


def _plot_calibration(calib, h, path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4, 4))
    for m, c in calib.items():
        ax.plot(c["predicted"], c["observed"], "o-", label=m)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel(f"predicted P(event by t={h:g})")
    ax.set_ylabel("observed (Kaplan-Meier)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return os.path.basename(path)


# ------------------------------------------------------------------------------------------------ markdown

def _fmt(r):
    return f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"


def _markdown(res: dict) -> str:
    rows = res["rows"]
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["model"], r["metric"]): r for r in rows}
    where = (f"developed on **{res['cohort']}** ({res['n_development']} patients, {res['events_development']} events), "
             f"validated on **{res['external']}** ({res['n_external']} patients, {res['events_external']} events)"
             if res["external"] else
             f"{res['settings']['repeats']} x {res['settings']['folds']}-fold patient-level cross-validation on "
             f"**{res['cohort']}** ({res['n_development']} patients, {res['events_development']} events)")
    lines = ["# Outcome report: time-to-event models", "", f"Models {where}. Covariates: "
             f"{', '.join(res['features'])} (imputation: {res['encoder']['imputation']}, fitted on the training "
             f"split). Time unit: {res['time_unit'] or 'as in the file'}. Seed {res['seeds']['base']}.", "",
             f"Metrics with percentile bootstrap 95 % CIs ({res['settings']['n_boot']} resamples of the test "
             f"patients, models fixed). Uno's C truncated at tau = {res['uno_tau']:g}; IBS over "
             f"[{res['ibs_grid'][0]:g}, {res['ibs_grid'][1]:g}]; auc_t: cumulative/dynamic AUC of 1 - S(t).", "",
             "| model | " + " | ".join(metrics) + " |", "|---|" + "---:|" * len(metrics)]
    for m in models:
        lines.append(f"| {m} | " + " | ".join(_fmt(by[(m, k)]) if (m, k) in by else "-" for k in metrics) + " |")
    lines += ["", "## Kaplan-Meier curves by predicted risk tertile", "", f"![KM]({res['plots']['km']})", "",
              f"## Calibration at t = {res['calibration_horizon']:g}", "",
              f"![calibration]({res['plots']['calibration']})",
              "", "| model | ICI (mean abs. observed - predicted) | predicted by group | observed by group |",
              "|---|---:|---|---|"]
    for m, c in res["calibration"].items():
        lines.append(f"| {m} | {c['ici']:.3f} | {', '.join(f'{v:.2f}' for v in c['predicted'])} | "
                     f"{', '.join(f'{v:.2f}' for v in c['observed'])} |")
    if res["subgroups"]:
        lines += ["", "## Subgroups (Harrell's C)", "",
                  "| subgroup | level | n | events | " + " | ".join(models) + " |",
                  "|---|---|---:|---:|" + "---:|" * len(models)]
        for s in res["subgroups"]:
            lines.append(f"| {s['subgroup']} | {s['level']} | {s['n']} | {s['events']} | "
                         + " | ".join(f"{s[m]:.3f}" for m in models) + " |")
    b = res.get("binary") or {}
    if b:
        lines += ["", f"## Binary outcome: event by t = {b['horizon']:g} ({b['n']} patients known, "
                      f"{b['events']} events)",
                  "", "| model | Brier | ECE |", "|---|---:|---:|"]
        for m, v in b["models"].items():
            lines.append(f"| {m} | {v['brier']:.3f} | {v['ece']:.3f} |")
        d = b["delong"]
        lines += ["", f"DeLong: AUC logreg {d['auc_a']:.3f} vs {b['reference']} {d['auc_b']:.3f}, "
                  f"difference {d['delta']:+.3f} (SE {d['se']:.3f}), p = {d['p_value']:.3g}.", "",
                  "Net benefit at thresholds " + ", ".join(f"{t:g}" for t in b["net_benefit"]["logreg"]["threshold"])
                  + ": " + "; ".join(f"{m} " + ", ".join(f"{v:.3f}" for v in nb["model"])
                                     for m, nb in b["net_benefit"].items())
                  + "; treat all " + ", ".join(f"{v:.3f}" for v in b["net_benefit"]["logreg"]["treat_all"]) + "."]
    if res.get("shap"):
        sh = res["shap"]
        lines += ["", f"## SHAP summary ({sh['model']}, {sh['rows']} test patients)", "", f"![SHAP]({sh['plot']})", "",
                  "| feature | mean abs SHAP |", "|---|---:|"]
        for k, v in sorted(sh["mean_abs"].items(), key=lambda kv: -kv[1]):
            lines.append(f"| {k} | {v:.3f} |")
    if res["deep_workdirs"]:
        lines += ["", "Deep models (load with `zoo.load_pretrained`; curves with "
                      "`zoo.outcome.survival.SurvivalModel.load`): "
                  + ", ".join(f"{m}: `{p}`" for m, p in res["deep_workdirs"].items()) + "."]
    lines += ["", f"Fit seconds: {res['fit_seconds']}; total {res['total_seconds']} s."]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ CLI

def build_parser():
    """The command line (``zoo.cli.command_parser``)."""
    p = command_parser("python -m eval.studies.outcome_report", __doc__, out="output folder", out_required=True)
    p.add_argument("--cohort", required=True, help=f"bundled cohort {bundled_cohorts()} or a CSV/Parquet file")
    p.add_argument("--external", default="", help="external validation cohort (bundled name or file); "
                                                  "without it: repeated k-fold cross-validation")
    p.add_argument("--time", default="", help="time column (cohort files)")
    p.add_argument("--event", default="", help="event column, 0/1 (cohort files)")
    p.add_argument("--covariates", default=None, help="comma-separated covariates (default: all other columns)")
    p.add_argument("--categorical", default=None, help="comma-separated categorical covariates")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--n_boot", type=int, default=200)
    p.add_argument("--horizons", default="", help="comma-separated times for auc_<t> (default: 1, 3, 5 years for "
                                                  "the bundled cohorts, else event-time quartiles)")
    p.add_argument("--deep_steps", type=int, default=400)
    p.add_argument("--log1p", default="", help="numeric covariates to log1p-transform, for every model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny settings for tests (few trees/steps/resamples)")
    p.add_argument("--no_progress", action="store_true")
    return p


def settings_from_args(args) -> Settings:
    models = tuple(_split_list(args.models) or ())
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise ValueError(f"--models: unknown {bad}; expected some of {MODELS}")
    try:
        horizons = tuple(float(h) for h in _split_list(args.horizons) or ())
    except ValueError as e:
        raise ValueError(f"--horizons must be numbers, got {args.horizons!r}") from e
    for name in ("n_boot", "deep_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    s = Settings(models=models, seed=args.seed, folds=args.folds, repeats=args.repeats, n_boot=args.n_boot,
                 horizons=horizons, deep_steps=args.deep_steps, log1p=tuple(_split_list(args.log1p) or ()),
                 quick=args.quick, progress=not args.no_progress)
    if args.quick:
        s = dataclasses.replace(s, n_boot=min(s.n_boot, 20), deep_steps=min(s.deep_steps, 40), rsf_trees=10,
                                gbsa_trees=20, folds=min(s.folds, 3), repeats=1, shap_rows=5, hazard_bins=5)
    return s


def main(argv=None) -> int:
    def body(args) -> int:
        settings = settings_from_args(args)
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out {args.out}: exists and is not a folder")
        dev, ext = load_inputs(args)
        _prepare(dev, ext, settings)  # every split's features: bad input fails before anything is written
        if set(settings.models) & set(TRADITIONAL):
            SurvivalBaseline("coxph")  # scikit-survival importable
        res = run_report(dev, ext, settings, args.out)
        for r in res["rows"]:
            if r["metric"] in ("harrell_c", "uno_c"):
                print(f"{r['model']:12s} {r['split']:8s} {r['metric']:9s} {_fmt(r)}")
        print(f"report: {os.path.join(args.out, 'report.md')}")
        return 0

    return run_command(build_parser(), sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
    sys.exit(main())
