"""Evaluate trained checkpoints and write the study's tables: ``python -m eval.report --workdir DIR ...``.

For each work directory (a ``zoo.train`` or ``zoo.outcome`` run) the model is restored with
``zoo.load_pretrained``, its data set is rebuilt from the saved config and the chosen split is
predicted batch by batch through the run's one prediction path (``Pretrained.iter_proba``; nothing
but per-case numbers is kept). The report follows the run's task:

* ``segmentation``: per-case overlap and surface metrics, and voxel-wise AUC-ROC / AUPRC of the
  softmax probabilities;
* ``instance`` (Mask R-CNN): the same segmentation metrics of its **semantic label map** (each
  voxel the class of the instance mask covering it); **no voxel AUC**, because its probabilities
  are the one-hot of the predicted labels, so a "ranking" AUC would only restate sensitivity and
  specificity;
* ``outcome``: patient-level accuracy, precision, recall, specificity, F1 and AUC-ROC
  (``scoring.outcome_metrics``) with bootstrap 95% CIs over patients (Table 5).

Outputs in ``--out``:

* ``report.md``: Table 1 in the study's layout (rows = models, one column per data set,
  cells ``Dice / Jaccard / Accuracy / Sensitivity / Specificity``), Table 2 with bootstrap
  95% CIs for every metric, Table 3 per structure;
* ``report.csv``: long form ``model, dataset, structure, metric, estimate, ci_low, ci_high, n``;
* ``report.json``: the same plus every per-case value and the pooled confusion matrices;
* ``boxplot_<dataset>.png`` (per-case Dice per model) and ``overlay_<model>.png`` (best and
  worst case: image, target contour green, prediction contour red).

A case's value of a metric is the NaN-mean over its structures: the BraTS regions WT/TC/ET
for the brain data (labels 1 necrosis, 2 oedema, 3 enhancing), else the foreground classes.
Distances are in voxels (or ``--spacing``); a case with exactly one of prediction and target
empty gets the image diagonal as its distance so means stay finite.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys

import numpy as np

import scoring as M
from eval.analysis import external_validation
from eval.bootstrap import bootstrap_ci, bootstrap_statistics
from eval.cases import case_ids as _case_ids
from eval.cases import load_split, model_inputs, structures_for
from eval.streaming import HistogramAUC, SegmentationAccumulator

__all__ = ["ModelEval", "OutcomeEval", "evaluate_workdir", "evaluate_arrays", "evaluate_outcome_arrays",
           "build_tables", "write_report", "main", "STUDY_METRICS", "DEFAULT_METRICS", "OUTCOME_METRICS",
           "structures_for"]

STUDY_METRICS = ("dice", "jaccard", "accuracy", "sensitivity", "specificity")
DEFAULT_METRICS = STUDY_METRICS + ("precision", "volume_similarity", "hd95", "assd", "surface_dice")
#: Patient-level metrics of an outcome run, in report order (``specificity`` only for two classes).
OUTCOME_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "auc_roc")
#: ``structure`` of the long-form rows that hold patient-level outcome metrics.
OUTCOME_STRUCTURE = "patient"


@dataclasses.dataclass
class ModelEval:
    """What one checkpoint's evaluation on one split produced."""

    label: str
    model: str
    dataset: str
    split: str
    workdir: str
    acc: SegmentationAccumulator
    auc: HistogramAUC | None
    step: int = 0
    external: bool = False
    task: str = "segmentation"  # or "instance": metrics of the semantic label map

    def per_case(self, metric: str) -> np.ndarray:
        return self.acc.per_case(metric)


@dataclasses.dataclass
class OutcomeEval:
    """An outcome run's patient-level predictions on one split (``proba [N, K]``, ``y_true [N]``)."""

    label: str
    model: str
    dataset: str
    split: str
    workdir: str
    y_true: np.ndarray
    proba: np.ndarray
    case_ids: list
    step: int = 0
    external: bool = False
    task: str = "outcome"

    def metrics(self) -> dict:
        """``scoring.outcome_metrics`` of all patients."""
        return M.outcome_metrics(self.y_true, self.proba)

    def confidence_intervals(self, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
        """``{metric: CI}`` for :data:`OUTCOME_METRICS`, patients resampled (percentile bootstrap)."""
        def stat(idx):
            m = M.outcome_metrics(self.y_true[idx], self.proba[idx])
            return {k: float(m[k]) for k in OUTCOME_METRICS if k in m}

        return bootstrap_statistics(stat, len(self.y_true), n_boot=n_boot, level=level, seed=seed)

    def per_case(self, metric: str = "correct") -> np.ndarray:
        """``[N]`` 1.0 where the predicted class is right (the only per-patient quantity)."""
        if metric != "correct":
            raise ValueError(f"outcome runs have per-patient 'correct' only, not {metric!r}")
        return (self.proba.argmax(1) == self.y_true).astype(np.float64)


def evaluate_arrays(iter_proba, arrays: dict, num_classes: int, class_names, *, metrics=DEFAULT_METRICS,
                    batch_size: int = 8, spacing=None, with_auc: bool = True,
                    structures: dict | None = None) -> tuple[SegmentationAccumulator, HistogramAUC | None]:
    """Stream ``arrays['image']`` through ``iter_proba`` and accumulate per-case metrics (and voxel AUC).

    ``iter_proba(images, batch_size=...)`` yields ``(start, proba [B, *S, K])`` per batch (a
    ``Pretrained.iter_proba``); a case's label map is the argmax of its probabilities.
    """
    images, labels = arrays["image"], arrays["label"]
    if len(images) != len(labels):
        raise ValueError(f"arrays: {len(images)} images but {len(labels)} label maps")
    if len(images) == 0:
        raise ValueError("arrays: the split has no cases")
    shape = labels.shape[1:]
    from scoring import check_spacing

    sp = check_spacing(spacing, len(shape))
    diagonal = float(np.sqrt(sum((n * s) ** 2 for n, s in zip(shape, sp))))
    if structures is None:
        structures = structures_for(class_names)
    acc = SegmentationAccumulator(num_classes, metrics, structures, class_names=class_names, spacing=spacing,
                                  one_empty_distance=diagonal)
    auc = HistogramAUC(num_classes) if with_auc else None
    for start, proba in iter_proba(images, batch_size=batch_size):
        proba = np.asarray(proba)
        n = len(proba)
        target = labels[start:start + n]
        acc.update(proba.argmax(-1), target, _case_ids(arrays, start, n))
        if auc is not None:
            auc.update(np.clip(proba, 0.0, 1.0), target)
    return acc, auc


def evaluate_outcome_arrays(iter_proba, arrays: dict, *, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, list]:
    """``(y_true [N], proba [N, K], case_ids)`` of an outcome split streamed through ``iter_proba``.

    ``arrays`` holds ``image``, ``covariates`` and ``outcome`` (``[N]`` class per patient).
    """
    inputs = model_inputs(arrays, "outcome")
    y = np.asarray(arrays["outcome"]).astype(np.int64).reshape(-1)
    if len(y) == 0:
        raise ValueError("arrays: the split has no patients")
    if len(arrays["image"]) != len(y) or len(arrays["covariates"]) != len(y):
        raise ValueError(f"arrays: {len(arrays['image'])} images, {len(arrays['covariates'])} covariate rows "
                         f"and {len(y)} outcomes must pair up")
    proba = np.zeros((len(y), 0), np.float32)
    for start, p in iter_proba(inputs, batch_size=batch_size):
        p = np.asarray(p, np.float32)
        if p.ndim != 2:
            raise ValueError(f"outcome probabilities must be [B, K], got shape {p.shape}")
        if proba.shape[1] == 0:
            proba = np.zeros((len(y), p.shape[1]), np.float32)
        proba[start:start + len(p)] = p
    return y, proba, _case_ids(arrays, 0, len(y))


def evaluate_workdir(workdir: str, split: str = "val", *, metrics=DEFAULT_METRICS, batch_size: int = 8,
                     spacing=None, label: str | None = None, data_overrides: dict | None = None,
                     with_auc: bool = True, keep_arrays: bool = False, structures: str = "auto"):
    """Restore ``workdir``'s checkpoint and evaluate it on ``split``; returns ``(eval, arrays, pretrained)``.

    The evaluation follows the run's task (``pre.task``): a :class:`ModelEval` for segmentation
    and instance runs (instance: the semantic label map, no voxel AUC), an :class:`OutcomeEval`
    for outcome runs. ``data_overrides`` (``{"seed": "7", ...}``, fields of the config's ``data``
    section) selects another data set, e.g. an external validation split. ``structures``: ``auto``
    (BraTS regions for brain label maps, else foreground classes), ``classes`` or ``regions``.
    """
    if structures not in ("auto", "classes", "regions"):
        raise ValueError(f"structures must be auto, classes or regions, got {structures!r}")
    from zoo import load_pretrained

    pre = load_pretrained(workdir)
    config = pre.config
    arrays, info = load_split(config, split, data_overrides)
    name = os.path.basename(os.path.normpath(workdir))
    if pre.task == "outcome":
        y, proba, ids = evaluate_outcome_arrays(pre.iter_proba, arrays, batch_size=batch_size)
        ev = OutcomeEval(label=label or f"{pre.meta['model']} ({name})", model=pre.meta["model"],
                         dataset=info.name, split=split, workdir=os.path.abspath(workdir), y_true=y,
                         proba=proba, case_ids=ids, step=pre.step)
        return ev, (arrays if keep_arrays else None), pre
    if pre.task not in ("segmentation", "instance"):
        raise ValueError(f"{workdir}: cannot report a run of task {pre.task!r}")
    with_auc = with_auc and pre.task == "segmentation"  # instance probabilities are one-hot labels
    if structures == "regions" and info.num_classes != 4:
        raise ValueError(f"structures=regions needs BraTS label maps (4 classes); {info.name} has {info.num_classes}")
    struct = {"auto": None, "regions": dict(M.BRATS_REGIONS),
              "classes": {info.class_names[k]: (k,) for k in range(1, info.num_classes)} or None}[structures]
    acc, auc = evaluate_arrays(pre.iter_proba, arrays, info.num_classes, info.class_names, metrics=metrics,
                               batch_size=batch_size, spacing=spacing, with_auc=with_auc, structures=struct)
    label = label or f"{pre.meta['model']} ({name})"
    ev = ModelEval(label=label, model=pre.meta["model"], dataset=info.name, split=split,
                   workdir=os.path.abspath(workdir), acc=acc, auc=auc, step=pre.step, task=pre.task)
    return ev, (arrays if keep_arrays else None), pre


# --------------------------------------------------------------------------- tables

def _outcome_rows(ev: OutcomeEval, n_boot: int, seed: int) -> list[dict]:
    cis = ev.confidence_intervals(n_boot=n_boot, seed=seed)
    return [{"model": ev.label, "dataset": ev.dataset, "split": ev.split, "structure": OUTCOME_STRUCTURE,
             "metric": m, "estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high, "n": ci.n}
            for m, ci in cis.items()]


def build_tables(evals: list, *, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Long-form rows: one per model × data set × structure (``mean`` = the case value) × metric.

    Outcome runs give one row per patient-level metric with ``structure = "patient"``.
    """
    rows = []
    for ev in evals:
        if isinstance(ev, OutcomeEval):
            rows += _outcome_rows(ev, n_boot, seed)
            continue
        structs = ["mean"] + list(ev.acc.structures)
        for s in structs:
            for m in ev.acc.metrics:
                vals = ev.acc.per_case(m, None if s == "mean" else s)
                ci = bootstrap_ci(vals, n_boot=n_boot, seed=seed)
                rows.append({"model": ev.label, "dataset": ev.dataset, "split": ev.split, "structure": s,
                             "metric": m, "estimate": ci.estimate, "ci_low": ci.low, "ci_high": ci.high,
                             "n": ci.n})
        if ev.auc is not None:
            fg = range(1, ev.acc.num_classes) if ev.acc.num_classes > 1 else range(1)
            for name, vals in (("auc_roc", ev.auc.auc_roc()), ("auprc", ev.auc.auprc())):
                for k in fg:  # pooled over voxels of the split: no case bootstrap
                    rows.append({"model": ev.label, "dataset": ev.dataset, "split": ev.split,
                                 "structure": f"voxel:{ev.acc.class_names[k]}", "metric": name,
                                 "estimate": float(vals[k]), "ci_low": float("nan"), "ci_high": float("nan"),
                                 "n": int(ev.auc.pos[k].sum() + ev.auc.neg[k].sum())})
    return rows


def _f(v: float, digits: int = 3) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _lookup(rows, model, dataset, structure, metric):
    for r in rows:
        if (r["model"], r["dataset"], r["structure"], r["metric"]) == (model, dataset, structure, metric):
            return r
    return None


def markdown(rows: list[dict], title: str = "Evaluation report", notes=()) -> str:
    """The report's tables: segmentation (Tables 1-4) and patient-level outcome (Table 5) as present."""
    split = rows[0]["split"] if rows else "val"
    out = [f"# {title}", "", f"Split: `{split}`. Case values are NaN-means over structures; 95% CIs are "
           "percentile bootstraps over cases.", ""]
    out += [f"{n}" for n in notes] + ([""] if notes else [])
    seg = [r for r in rows if r["structure"] != OUTCOME_STRUCTURE]
    if seg:
        out += _segmentation_markdown(seg)
    outcome = [r for r in rows if r["structure"] == OUTCOME_STRUCTURE]
    if outcome:
        out += _outcome_markdown(outcome)
    return "\n".join(out) + "\n"


def _outcome_markdown(rows: list[dict]) -> list[str]:
    models = list(dict.fromkeys(r["model"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    metrics = [m for m in OUTCOME_METRICS if any(r["metric"] == m for r in rows)]
    out = ["", "## Table 5: patient-level outcome metrics with bootstrap 95% CI (patients resampled)", "",
           "| model | data set | n | " + " | ".join(metrics) + " |", "|---|---|---:|" + "---|" * len(metrics)]
    for mdl in models:
        for ds in datasets:
            rs = [_lookup(rows, mdl, ds, OUTCOME_STRUCTURE, m) for m in metrics]
            if not any(rs):
                continue
            n = max(r["n"] for r in rs if r)
            cells = [f"{_f(r['estimate'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]" if r else "–" for r in rs]
            out.append(f"| {mdl} | {ds} | {n} | " + " | ".join(cells) + " |")
    return out


def _segmentation_markdown(rows: list[dict]) -> list[str]:
    models = list(dict.fromkeys(r["model"] for r in rows))
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    out = ["## Table 1: Dice / Jaccard / Accuracy / Sensitivity / Specificity (study layout)", "",
           "| model | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for mdl in models:
        cells = []
        for ds in datasets:
            vals = [_lookup(rows, mdl, ds, "mean", m) for m in STUDY_METRICS]
            cells.append(" / ".join(_f(v["estimate"]) if v else "–" for v in vals))
        out.append(f"| {mdl} | " + " | ".join(cells) + " |")
    metrics = list(dict.fromkeys(r["metric"] for r in rows if r["structure"] == "mean"))
    out += ["", "## Table 2: every metric with bootstrap 95% CI", "",
            "| model | data set | n | " + " | ".join(metrics) + " |", "|---|---|---:|" + "---|" * len(metrics)]
    for mdl in models:
        for ds in datasets:
            rs = [_lookup(rows, mdl, ds, "mean", m) for m in metrics]
            if not any(rs):
                continue
            n = max(r["n"] for r in rs if r)
            cells = [f"{_f(r['estimate'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]" if r else "–" for r in rs]
            out.append(f"| {mdl} | {ds} | {n} | " + " | ".join(cells) + " |")
    out += ["", "## Table 3: per structure (mean over cases where defined)", "",
            "| model | data set | structure | n | " + " | ".join(metrics) + " |",
            "|---|---|---|---:|" + "---|" * len(metrics)]
    for mdl in models:
        for ds in datasets:
            structs = [s for s in dict.fromkeys(r["structure"] for r in rows if r["model"] == mdl
                                                and r["dataset"] == ds) if s != "mean"
                       and not s.startswith("voxel:")]
            for s in structs:
                rs = [_lookup(rows, mdl, ds, s, m) for m in metrics]
                n = max((r["n"] for r in rs if r), default=0)
                out.append(f"| {mdl} | {ds} | {s} | {n} | " + " | ".join(_f(r["estimate"]) if r else "–"
                                                                     for r in rs) + " |")
    auc_rows = [r for r in rows if r["structure"].startswith("voxel:")]
    if auc_rows:
        out += ["", "## Table 4: voxel-wise AUC-ROC / AUPRC (pooled over the split)", "",
                "| model | data set | class | AUC-ROC | AUPRC |", "|---|---|---|---:|---:|"]
        for mdl in models:
            for ds in datasets:
                classes = list(dict.fromkeys(r["structure"] for r in auc_rows if r["model"] == mdl
                                             and r["dataset"] == ds))
                for c in classes:
                    a = _lookup(rows, mdl, ds, c, "auc_roc")
                    p = _lookup(rows, mdl, ds, c, "auprc")
                    out.append(f"| {mdl} | {ds} | {c[6:]} | {_f(a['estimate'])} | {_f(p['estimate'])} |")
    return out


# --------------------------------------------------------------------------- plots

def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("_")


def boxplots(evals: list[ModelEval], out_dir: str, metric: str = "dice") -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    evals = [ev for ev in evals if isinstance(ev, ModelEval)]
    for ds in dict.fromkeys(ev.dataset for ev in evals):
        group = [ev for ev in evals if ev.dataset == ds]
        data = [ev.per_case(metric)[np.isfinite(ev.per_case(metric))] for ev in group]
        fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(group), 3.6))
        ax.boxplot(data, showmeans=True)
        ax.set_xticks(range(1, len(group) + 1), [ev.label for ev in group], rotation=15, fontsize=7)
        ax.set_ylabel(f"per-case {metric}")
        ax.set_title(f"{ds} ({group[0].split})")
        ax.set_ylim(-0.02, 1.02) if metric in M.CONFUSION_METRICS else None
        fig.tight_layout()
        path = os.path.join(out_dir, f"boxplot_{_safe(ds)}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _slice2d(a: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """2D view of a spatial array: itself, or the axial slice with the most target foreground."""
    if a.ndim == 2:
        return a
    k = int(np.argmax(fg.reshape(fg.shape[0], -1).sum(1)))
    return a[k]


def overlay(ev: ModelEval, arrays: dict, predict, out_dir: str, metric: str = "dice", k: int = 1) -> str:
    """Best and worst ``k`` cases by ``metric``: image channel 0 with target (green) and prediction (red).

    ``predict``: ``images [B, *S, C] -> label maps [B, *S]`` (a ``Pretrained.predict``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = ev.per_case(metric)
    order = np.argsort(np.where(np.isfinite(vals), vals, np.inf))
    finite = order[np.isfinite(vals[order])]
    picks = [("worst", int(i)) for i in finite[:k]] + [("best", int(i)) for i in finite[::-1][:k]]
    fig, axes = plt.subplots(1, max(len(picks), 1), figsize=(3.2 * max(len(picks), 1), 3.4), squeeze=False)
    for ax, (tag, i) in zip(axes[0], picks):
        img = arrays["image"][i:i + 1]
        pred = np.asarray(predict(img))[0]
        tgt = arrays["label"][i]
        fg_t, fg_p = tgt > 0, pred > 0
        ax.imshow(_slice2d(img[0, ..., 0], fg_t), cmap="gray")
        for mask, color in ((fg_t, "lime"), (fg_p, "red")):
            m2 = _slice2d(mask, fg_t).astype(float)
            if m2.any() and not m2.all():
                ax.contour(m2, levels=[0.5], colors=color, linewidths=1.0)
        ax.set_title(f"{tag}: case {ev.acc.case_ids[i]}\n{metric}={vals[i]:.3f}", fontsize=8)
        ax.axis("off")
    for ax in axes[0][len(picks):]:
        ax.axis("off")
    fig.suptitle(f"{ev.label} on {ev.dataset} (green target, red prediction)", fontsize=8)
    fig.tight_layout()
    path = os.path.join(out_dir, f"overlay_{_safe(ev.label)}.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- writing

def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _nan_to_none(x):
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def external_section(pairs, *, n_boot: int = 2000, seed: int = 0, min_n: int = 10) -> tuple[str, list]:
    """Markdown and records comparing each model's internal and external per-case Dice."""
    recs = []
    lines = ["", "## External validation (per-case Dice, external - internal)", "",
             "| model | internal [95% CI] | external [95% CI] | delta [95% CI] | flag |", "|---|---|---|---|---|"]
    for internal, external in pairs:
        r = external_validation(internal.per_case("dice"), external.per_case("dice"), min_n=min_n,
                                n_boot=n_boot, seed=seed)
        recs.append({"model": internal.label, "external_dataset": external.dataset, **r})
        cell = [f"{_f(d['estimate'])} [{_f(d['low'])}, {_f(d['high'])}]" for d in
                (r["internal"], r["external"], r["delta"])]
        flag = f"small (n < {min_n})" if r["small"] else ""
        lines.append(f"| {internal.label} | " + " | ".join(cell) + f" | {flag} |")
    return "\n".join(lines) + "\n", recs


def _task_notes(evals) -> list[str]:
    notes = []
    inst = [ev.label for ev in evals if getattr(ev, "task", "") == "instance"]
    if inst:
        notes.append(f"Instance runs ({', '.join(dict.fromkeys(inst))}): segmentation metrics of the semantic "
                     "label map (each voxel the class of its instance mask); no voxel AUC, as their "
                     "probabilities are the one-hot of the predicted labels.")
    if any(isinstance(ev, OutcomeEval) for ev in evals):
        notes.append("Outcome runs: patient-level metrics of the predicted class (argmax of the class "
                     "probabilities; class 1 is the positive outcome), AUC-ROC of the class-1 probability; "
                     "CIs resample patients.")
    return notes


def _model_record(ev) -> dict:
    if isinstance(ev, OutcomeEval):
        return {"label": ev.label, "model": ev.model, "task": ev.task, "dataset": ev.dataset, "split": ev.split,
                "workdir": ev.workdir, "step": ev.step, "case_ids": [str(c) for c in ev.case_ids],
                "y_true": ev.y_true.tolist(), "proba": ev.proba.tolist(), "summary": ev.metrics()}
    return {"label": ev.label, "model": ev.model, "task": ev.task, "dataset": ev.dataset, "split": ev.split,
            "workdir": ev.workdir, "step": ev.step, "metrics": list(ev.acc.metrics),
            "structures": {k: list(v) for k, v in ev.acc.structures.items()},
            "case_ids": [str(c) for c in ev.acc.case_ids],
            "per_case": ev.acc.values.tolist(), "volumes": ev.acc.volumes.tolist(),
            "summary": ev.acc.summary()}


def write_report(evals: list, out_dir: str, *, n_boot: int = 2000, seed: int = 0,
                 plot_inputs: dict | None = None, title: str = "Evaluation report",
                 external_pairs=None) -> dict:
    """Write ``report.md``/``.csv``/``.json`` and the plots; returns ``{"rows", "files"}``.

    ``evals``: :class:`ModelEval` (segmentation, instance) and :class:`OutcomeEval` records.
    ``plot_inputs``: ``{label: (arrays, predict)}`` for the best/worst overlays (``predict``:
    images → label maps, e.g. ``Pretrained.predict``); ``external_pairs``: ``[(internal ModelEval,
    external ModelEval)]`` for the external-validation table (segmentation runs).
    """
    os.makedirs(out_dir, exist_ok=True)
    rows = build_tables(evals, n_boot=n_boot, seed=seed)
    if not rows:
        raise ValueError("nothing to report: no evaluated models")
    external_pairs = [(a, b) for a, b in external_pairs or () if isinstance(a, ModelEval)
                      and isinstance(b, ModelEval)]
    ext_md, ext_recs = external_section(external_pairs, n_boot=n_boot, seed=seed) if external_pairs else ("", [])
    files = {}
    files["md"] = os.path.join(out_dir, "report.md")
    with open(files["md"], "w", encoding="utf-8") as f:
        f.write(markdown(rows, title, _task_notes(evals)) + ext_md)
    files["csv"] = os.path.join(out_dir, "report.csv")
    with open(files["csv"], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    doc = {"rows": rows, "models": [], "external_validation": ext_recs}
    for ev in evals:
        doc["models"].append(_model_record(ev))
    files["json"] = os.path.join(out_dir, "report.json")
    with open(files["json"], "w", encoding="utf-8") as f:
        json.dump(_nan_to_none(doc), f, indent=1, default=_json_default)
    files["png"] = boxplots(evals, out_dir)
    for ev in evals:
        if plot_inputs and ev.label in plot_inputs and not ev.external and isinstance(ev, ModelEval):
            arrays, predict = plot_inputs[ev.label]
            files["png"].append(overlay(ev, arrays, predict, out_dir))
    return {"rows": rows, "files": files}


def _parse_kv(items) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"--external expects FIELD=VALUE (a data config field), got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.report", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", action="append", required=True, help="a zoo.train work directory (repeatable)")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--out", default="", help="output folder (default: <first workdir>/report)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric names")
    p.add_argument("--spacing", default="", help="voxel spacing, e.g. 1,1 or 1.0,0.5,0.5 (default 1 per axis)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_auc", action="store_true", help="skip voxel-wise AUC-ROC / AUPRC")
    p.add_argument("--structures", default="auto", choices=("auto", "classes", "regions"),
                   help="auto: BraTS regions WT/TC/ET for brain label maps, else foreground classes")
    p.add_argument("--external", action="append", default=None,
                   help="FIELD=VALUE override of the data config for an external split (repeatable); "
                        "each model is then also evaluated there")
    args = p.parse_args(argv)
    try:
        metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
        unknown = [m for m in metrics if m not in M.METRICS]
        if unknown:
            raise ValueError(f"--metrics: unknown {unknown}; expected some of {sorted(M.METRICS)}")
        spacing = tuple(float(s) for s in args.spacing.split(",")) if args.spacing else None
        if args.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
        external = _parse_kv(args.external)
        out = args.out or os.path.join(args.workdir[0], "report")
        evals, plot_inputs, pairs, seen = [], {}, [], set()
        for wd in args.workdir:
            ev, arrays, pre = evaluate_workdir(wd, args.split, metrics=metrics, batch_size=args.batch_size,
                                               spacing=spacing, with_auc=not args.no_auc, keep_arrays=True,
                                               structures=args.structures)
            if ev.label in seen:  # two work directories with the same name
                ev.label = f"{ev.label} #{len(evals) + 1}"
            seen.add(ev.label)
            evals.append(ev)
            if isinstance(ev, ModelEval):
                plot_inputs[ev.label] = (arrays, pre.predict)
            if external:
                ex, ex_arrays, _ = evaluate_workdir(wd, args.split, metrics=metrics, batch_size=args.batch_size,
                                                    spacing=spacing, with_auc=not args.no_auc,
                                                    data_overrides=external, keep_arrays=False,
                                                    structures=args.structures)
                ex.dataset = f"{ex.dataset} [external: {', '.join(f'{k}={v}' for k, v in external.items())}]"
                ex.label, ex.external = ev.label, True
                evals.append(ex)
                pairs.append((ev, ex))
            if isinstance(ev, OutcomeEval):
                m = ev.metrics()
                print(f"evaluated {ev.label}: {len(ev.y_true)} patients, accuracy {m['accuracy']:.4f}, "
                      f"AUC-ROC {m['auc_roc']:.4f}", flush=True)
            else:
                print(f"evaluated {ev.label}: {len(ev.acc)} cases, mean Dice "
                      f"{np.nanmean(ev.per_case('dice')) if 'dice' in metrics else float('nan'):.4f}", flush=True)
        res = write_report(evals, out, n_boot=args.n_boot, seed=args.seed, plot_inputs=plot_inputs,
                           external_pairs=pairs)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(open(res["files"]["md"], encoding="utf-8").read())
    print(f"wrote {res['files']['md']}, {res['files']['csv']}, {res['files']['json']} and "
          f"{len(res['files']['png'])} PNG file(s) in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
