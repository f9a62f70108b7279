"""The evaluation report's tables, plots and files, from evaluated checkpoints (``eval.checkpoints``).

* :func:`build_tables`: long-form rows ``model, dataset, split, structure, metric, estimate, ci_low, ci_high,
  n``: per structure (``mean`` = the case value) and metric with a percentile bootstrap 95% CI over cases;
  outcome runs one row per patient-level metric (``structure = "patient"``, patients resampled); voxel AUCs
  pooled over the split (no CI);
* :func:`markdown`: Table 1 in the study's layout (rows = models, one column per data set, cells
  ``Dice / Jaccard / Accuracy / Sensitivity / Specificity``), Table 2 with bootstrap 95% CIs for every
  metric, Table 3 per structure, Table 4 voxel AUCs, Table 5 patient-level outcome metrics;
* :func:`external_section`: internal vs external per-case Dice (``eval.error_analysis.external_validation``);
* :func:`write_report`: ``report.md``, ``report.csv``, ``report.json`` (strict JSON, ``null`` for NaN/Inf, the
  per-case values and pooled confusion matrices too), ``boxplot_<dataset>.png`` (per-case Dice per model) and
  ``overlay_<model>.png`` (best and worst case: image, target contour green, prediction contour red); every
  file written atomically (``data_pipelines.atomic``).
"""

from __future__ import annotations

import os

import numpy as np

import scoring as M
from data_pipelines.atomic import atomic_path, write_csv, write_json, write_text
from eval.bootstrap import bootstrap_ci
from eval.checkpoints import OUTCOME_METRICS, OUTCOME_STRUCTURE, STUDY_METRICS, ModelEval, OutcomeEval
from eval.error_analysis import external_validation

__all__ = ["build_tables", "markdown", "external_section", "write_report", "boxplots", "overlay"]


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
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100)
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- writing

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
    write_text(files["md"], markdown(rows, title, _task_notes(evals)) + ext_md)
    files["csv"] = os.path.join(out_dir, "report.csv")
    write_csv(files["csv"], rows)
    doc = {"rows": rows, "models": [_model_record(ev) for ev in evals], "external_validation": ext_recs}
    files["json"] = os.path.join(out_dir, "report.json")
    write_json(files["json"], doc, indent=1)
    files["png"] = boxplots(evals, out_dir)
    for ev in evals:
        if plot_inputs and ev.label in plot_inputs and not ev.external and isinstance(ev, ModelEval):
            arrays, predict = plot_inputs[ev.label]
            files["png"].append(overlay(ev, arrays, predict, out_dir))
    return {"rows": rows, "files": files}
