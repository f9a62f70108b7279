"""The reference study's table on the real samples: ``python -m eval.paper_table --data_root ../shared/data
--out DIR [--quick] [--budget_minutes 60] [--folds K] [--models cnn,unet] [--families isic,brats] [--steps N]
[--ablations skips,loss | none] [--no_store]``.

For every model x family (recipes ``zoo/configs/paper.py``: ``--config=paper_<arch>_<family>``) it runs
patient-level k-fold cross-validation (``zoo.training.kfold``; every case of a patient in one fold, the train and
validation splits of the loader pooled first). Each fold's best checkpoint then predicts the **original files**
of its held-out patients through the one prediction path (``zoo.predict.predict_case``: the loader's scaling,
the model's input size, probabilities resized back to the native grid; BraTS and CT volumes slice by slice over
the whole volume), and ``scoring`` measures Dice, Jaccard, accuracy, sensitivity and specificity of the
foreground (BraTS: the whole tumour, labels > 0) per case at native resolution. A cell is the mean ± sample std
over folds of the fold's mean per-case value, next to the study's number (``REFERENCE_STUDY.md``).

The ablations (``eval.ablate.ABLATIONS``: skips, attention, augmentation, normalisation, loss) run on the U-Net
recipe of one family (isic by default) with the same folds and are reported as paired per-case deltas with
bootstrap 95% CIs (``eval.bootstrap``). Fold 0's model of every pair goes into the model store (``$ZOO_HOME``)
as ``<arch>-<family>`` (``unet-isic``, ``unet-brats2d``, ``cnn-lung-ct``, ...) with the data's licence in its
card; the store is outside the project, and these checkpoints must never be committed.

Budget: ``--budget_minutes`` (60) is shared by all runs; each fold's step count is set from the time the runs
so far took per step and per fold (at least 20, at most the recipe's), unless ``--steps`` fixes it.
``--quick``: tiny sizes (32^2, 4-8 features), one of two folds, 8 steps, two models (cnn, unet) on two families
(isic, cxr), one ablation (loss): it checks the machinery in CI; its numbers mean nothing.

Outputs in ``--out``: ``table.md`` / ``table.json`` (the table, the study's numbers, the ablations, the runs and
their steps/time), ``cases.csv`` (every held-out case), ``plots/dice_<family>.svg`` (per-case Dice per model),
``runs/`` (the work directories). Bad input ends with ``error: ...`` and exit 2.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings

import numpy as np

from data_pipelines import readers
from data_pipelines.brats import find_brats_cases
from data_pipelines.ct import find_ct_cases
from data_pipelines.datasets import load_dataset
from data_pipelines.image_folders import find_image_mask_pairs, read_metadata_csv
from eval.ablate import ABLATIONS, plan as ablation_plan
from eval.bootstrap import bootstrap_ci, paired_delta_ci
from scoring import overlap
from zoo.configs import apply_overrides, load_config
from zoo.configs import paper
from zoo.predict import predict_case, read_case
from zoo.pretrained import load_pretrained
from zoo.provenance import write_json
from zoo.store import save_pretrained
from zoo.training import kfold, train_and_evaluate

__all__ = ["STUDY", "METRICS", "family_cases", "score_case", "run_table", "table_markdown", "main"]

METRICS = ("dice", "jaccard", "accuracy", "sensitivity", "specificity")
STUDY_ROWS = ("unet", "segnet", "mask_rcnn", "fcn", "cnn")
# REFERENCE_STUDY.md: {model: {family: {metric: value}}}; the study's LUNA column is our lung (CT) family.
_U = dict(zip(METRICS, (.85, .75, .92, .88, .90)))
STUDY = {
    "unet": {"brats": _U, "isic": dict(zip(METRICS, (.88, .78, .93, .90, .91))),
             "lung": dict(zip(METRICS, (.87, .77, .92, .89, .91)))},
    "segnet": {"brats": {"dice": .82}, "isic": {"dice": .84}, "lung": {"dice": .85}},
    "mask_rcnn": {"brats": {"dice": .80}, "isic": {"dice": .83}, "lung": {"dice": .82}},
    "fcn": {"brats": {"dice": .78}, "isic": {"dice": .81}, "lung": {"dice": .80}},
    "cnn": {"brats": {"dice": .75}, "isic": {"dice": .78}, "lung": {"dice": .76}},
}
STORE_FAMILY = {"brats": "brats2d", "isic": "isic", "lung": "lung-ct", "cxr": "cxr"}
LICENCES = {
    "brats": "CC BY-NC-SA 3.0 CH (BraTS 2015 via deepmedic; non-commercial, share-alike, attribution; cite BraTS)",
    "isic": "PH2 database: research/benchmarking only, redistribution terms unknown (cite Mendonca et al. 2013)",
    "lung": "pyradiomics 3.0.1 test data (package BSD-3-Clause, no separate data licence, source unknown): "
            "research/evaluation only (cite van Griethuysen et al. 2017)",
    "cxr": "non-commercial, share-alike, research/evaluation only (images mostly CC BY-NC-SA via ieee8023 "
           "covid-chestxray-dataset; masks CC BY 4.0, GeneralBlockchain)",
}
QUICK = {"data.image_size": "32,32", "model.kwargs.features": "4", "train.batch_size": "4",
         "train.warmup_steps": "1", "train.log_every": "4", "augment.enabled": "False"}
QUICK_KW = {"unet": {"model.kwargs.depth": "2"}, "attention_unet": {"model.kwargs.depth": "2"},
            "cnn": {"model.kwargs.depth": "2"}, "segnet": {"model.kwargs.depth": "2"}}


def store_name(arch: str, family: str) -> str:
    return f"{arch.replace('_', '-')}-{STORE_FAMILY[family]}"


# ------------------------------------------------------------------------------------------------ cases

def family_cases(config) -> dict[str, list[dict]]:
    """{patient_id: [{"id", "input", "truth"}]}: the original files of each patient (``input`` goes to
    ``zoo.predict.read_case``; ``truth`` is a label file)."""
    d = config.data
    out: dict[str, list[dict]] = {}
    if d.name == "brats":
        for c in find_brats_cases(d.data_dir):
            folder = os.path.dirname(c.files["label"])
            out.setdefault(c.patient_id, []).append({"id": c.patient_id, "input": folder, "truth": c.files["label"]})
    elif d.name == "luna16":
        for c in find_ct_cases(d.data_dir):
            if c["label"]:
                out.setdefault(c["patient_id"], []).append({"id": c["patient_id"], "input": c["image"],
                                                            "truth": c["label"]})
    elif d.name in ("isic", "folder"):
        meta = read_metadata_csv(d.data_dir)
        col = d.get("patient_column", "patientid")
        for i, ip, mp in find_image_mask_pairs(d.data_dir, allow_unpaired=bool(d.get("allow_unpaired", False))):
            pid = str(meta.get(i, {}).get(col) or i)
            out.setdefault(pid, []).append({"id": i, "input": ip, "truth": mp})
    else:
        raise ValueError(f"paper table: no original-file index for data.name={d.name!r}")
    return out


def score_case(pre, case: dict, foreground: str = "nonzero") -> dict:
    """Foreground metrics of one original case predicted at its native resolution."""
    image, meta, _ = read_case(case["input"], pre)
    pred = predict_case(pre, image, meta)
    truth, _ = readers.read_label(case["truth"])
    truth = np.asarray(truth)
    if truth.ndim == pred.ndim + 1 and truth.shape[-1] == 1:
        truth = truth[..., 0]
    if truth.shape != pred.shape:
        raise ValueError(f"{case['truth']}: label shape {truth.shape} differs from the prediction {pred.shape}")
    t = truth > 0 if foreground == "nonzero" else truth == 0
    p = pred > 0
    row = {"case": case["id"], "voxels": int(t.size), "fg_voxels": int(t.sum()), "pred_voxels": int(p.sum())}
    for m in METRICS:
        row[m] = float(getattr(overlap, m)(p, t))
    return row


# ------------------------------------------------------------------------------------------------ runs

class Budget:
    """Steps per fold from the time left: ``(left / folds left - overhead) / seconds per step``."""

    def __init__(self, seconds: float, folds_total: int, steps: int | None, lo: int = 20):
        self.t0 = time.time()
        self.seconds = seconds
        self.left = folds_total
        self.fixed = steps
        self.lo = lo
        self.sec_per_step, self.overhead = 0.6, 45.0

    def steps(self, recipe_steps: int) -> int:
        if self.fixed is not None:
            return int(self.fixed)
        left = self.seconds - (time.time() - self.t0)
        per_fold = left / max(self.left, 1)
        return int(np.clip((per_fold - self.overhead) / self.sec_per_step, self.lo, recipe_steps))

    def record(self, steps: int, train_seconds: float, total_seconds: float):
        self.left -= 1
        if steps > 0 and train_seconds > 0:
            self.sec_per_step = 0.5 * self.sec_per_step + 0.5 * train_seconds / steps
        self.overhead = 0.5 * self.overhead + 0.5 * max(total_seconds - steps * self.sec_per_step, 5.0)


def _train_seconds(fold_dir: str) -> float:
    """Training time from ``metrics.jsonl`` (the last ``elapsed_s``)."""
    path = os.path.join(fold_dir, "metrics.jsonl")
    last = 0.0
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    last = float(json.loads(line).get("elapsed_s", last))
                except (ValueError, TypeError):
                    pass
    return last


def make_config(arch: str, family: str, data_dir: str, quick: bool, overrides: dict | None = None):
    c = load_config(f"paper_{arch}_{family}")
    over = {"data.data_dir": data_dir}
    if quick:
        over.update(QUICK)
        over.update(QUICK_KW.get(arch, {}))
    over.update(overrides or {})
    return apply_overrides(c, over)


def run_cv(config, workdir: str, arrays, info, cases, k: int, budget: Budget, *, fold_limit: int | None):
    """k-fold on ``arrays``, one fold at a time (steps from the budget), each fold scored on its held-out
    patients' original files. Returns ``(fold summaries, per-case rows)``."""
    folds = kfold.patient_folds(arrays["patient_id"], k, int(config.data.seed))
    rows, summaries = [], []
    fg = config.data.get("mask_foreground", "nonzero")
    recipe_steps = int(config.train.steps)
    for i, (tr, va) in enumerate(folds[:fold_limit]):
        steps = budget.steps(recipe_steps)
        c = apply_overrides(config.copy_and_resolve_references(),
                            {"train.steps": str(steps), "train.eval_every": str(steps),
                             "train.checkpoint_every": str(steps)})
        fold_dir = os.path.join(workdir, f"fold{i}")
        t0 = time.time()
        res = train_and_evaluate(
            c, fold_dir, progress=False, data=(kfold.subset(arrays, tr), kfold.subset(arrays, va), info))
        pre = load_pretrained(os.path.join(fold_dir, "best"))
        held = sorted(set(arrays["patient_id"][j] for j in va))
        fold_rows = []
        for pid in held:
            for case in cases.get(pid, []):
                r = score_case(pre, case, fg)
                r.update(fold=i, patient_id=pid)
                fold_rows.append(r)
        total = time.time() - t0
        budget.record(steps, _train_seconds(fold_dir), total)
        means = {m: _nanmean([r[m] for r in fold_rows]) for m in METRICS}
        summaries.append({"fold": i, "steps": steps, "seconds": round(total, 1), "workdir": fold_dir,
                          "val_patients": held, "train_patients": len(set(arrays["patient_id"][j] for j in tr)),
                          "val_mean_dice_resized": res.get("mean_dice"), **means})
        rows += fold_rows
    return summaries, rows


def _nanmean(v) -> float:
    v = np.asarray(v, np.float64)
    if not v.size or np.all(np.isnan(v)):
        return float("nan")
    return float(np.nanmean(v))


def _cell(summaries) -> dict:
    out = {}
    for m in METRICS:
        mean, std = kfold.nan_stats([s[m] for s in summaries])
        out[m] = {"mean": float(mean), "std": float(std)}
    return out


def run_table(data_root: str, out: str, *, archs, families, folds: int, budget_minutes: float, quick: bool,
              steps: int | None, ablations, ablation_family: str, store: bool, log=print) -> dict:
    if not os.path.isdir(data_root):
        raise ValueError(f"--data_root {data_root!r} is not a directory")
    for a in archs:
        if a not in paper.ARCHS:
            raise ValueError(f"--models: unknown model {a!r}; expected some of {paper.ARCHS}")
    for f in families:
        if f not in paper.FAMILIES:
            raise ValueError(f"--families: unknown family {f!r}; expected some of {paper.FAMILIES}")
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ValueError(f"--ablations: unknown {unknown}; expected some of {list(ABLATIONS)} or 'none'")
    os.makedirs(out, exist_ok=True)
    fold_limit = 1 if quick else None
    present, skipped = [], []
    for f in families:
        if os.path.isdir(os.path.join(data_root, paper.FOLDERS[f])):
            present.append(f)
        else:
            skipped.append({"family": f, "why": f"{os.path.join(data_root, paper.FOLDERS[f])} is missing"})
    if not present:
        raise ValueError(f"--data_root {data_root!r}: none of the families' folders "
                         f"({', '.join(paper.FOLDERS[f] for f in families)}) is there")
    pairs = [(a, f) for f in present for a in archs if a != "mask_rcnn" or f in paper.INSTANCE_FAMILIES]
    abl_runs, abl_pairs, abl_skipped = {}, [], []
    if ablations and ablation_family in present:
        base = make_config("unet", ablation_family, os.path.join(data_root, paper.FOLDERS[ablation_family]), quick)
        abl_runs, abl_pairs, abl_skipped = ablation_plan(list(ablations), base_config=base)
    elif ablations:
        abl_skipped = [(a, f"family {ablation_family!r} is not in the table") for a in ablations]

    data_cache, k_of = {}, {}

    def family_data(f, config):
        key = (f, tuple(config.data.image_size))
        if key not in data_cache:
            tr, va, info = load_dataset(config.data)
            arrays = kfold.concat(tr, va)
            n_pat = len(set(arrays["patient_id"]))
            k_of[f] = max(2, min(folds, n_pat))
            if n_pat < 2:
                raise ValueError(f"family {f}: {n_pat} patient(s); k-fold needs 2")
            data_cache[key] = (arrays, info, family_cases(config))
        return data_cache[key]

    n_runs = len(pairs) + sum(1 for r in abl_runs.values() if r)  # the recipe run of the ablations is the table's
    per_run_folds = 1 if quick else max(2, folds)
    budget = Budget(budget_minutes * 60.0, n_runs * per_run_folds, steps)
    results, all_rows, runs_info = {}, [], []
    t_start = time.time()
    for arch, f in pairs:
        config = make_config(arch, f, os.path.join(data_root, paper.FOLDERS[f]), quick)
        arrays, info, cases = family_data(f, config)
        wd = os.path.join(out, "runs", f"{arch}_{f}")
        log(f"[paper_table] {arch} on {f}: {k_of[f]}-fold CV, {len(set(arrays['patient_id']))} patients, "
            f"{len(arrays['image'])} training images", flush=True)
        summ, rows = run_cv(config, wd, arrays, info, cases, k_of[f], budget, fold_limit=fold_limit)
        for r in rows:
            r.update(model=arch, family=f)
        all_rows += rows
        results.setdefault(arch, {})[f] = {"folds": summ, "cv": _cell(summ), "k": k_of[f],
                                          "n_cases": len(rows)}
        runs_info.append({"model": arch, "family": f, "steps": [s["steps"] for s in summ],
                          "seconds": sum(s["seconds"] for s in summ)})
        log(f"[paper_table]   Dice {results[arch][f]['cv']['dice']['mean']:.3f} ± "
            f"{results[arch][f]['cv']['dice']['std']:.3f} ({len(rows)} held-out cases)", flush=True)
        if store and summ:
            entry = save_pretrained(summ[0]["workdir"], store_name(arch, f), overwrite=True, card={
                "data_licence": LICENCES[f], "recipe": f"paper_{arch}_{f}",
                "training": f"fold 0 of {k_of[f]}-fold patient-level CV ({summ[0]['steps']} steps); "
                            f"held-out patients {summ[0]['val_patients']}",
                "heldout_native_metrics": {m: summ[0][m] for m in METRICS},
                "intended_use": "research/evaluation only; never redistribute (data licence)"})
            results[arch][f]["store"] = entry.name

    ablation_rows = []
    if abl_pairs:
        f = ablation_family
        evals = {}
        for name, over in abl_runs.items():
            if not over and "unet" in results and f in results["unet"]:
                evals[name] = [r for r in all_rows if r["model"] == "unet" and r["family"] == f]
                continue
            config = make_config("unet", f, os.path.join(data_root, paper.FOLDERS[f]), quick, over)
            arrays, info, cases = family_data(f, config)
            log(f"[paper_table] ablation run {name} on {f}", flush=True)
            summ, rows = run_cv(config, os.path.join(out, "ablations", name), arrays, info, cases, k_of[f], budget,
                                fold_limit=fold_limit)
            evals[name] = rows
            runs_info.append({"model": f"unet[{name}]", "family": f, "steps": [s["steps"] for s in summ],
                              "seconds": sum(s["seconds"] for s in summ)})
        ablation_rows = compare_runs(evals, abl_pairs)
    result = {"families": present, "skipped_families": skipped, "models": list(archs), "folds": folds,
              "quick": quick, "budget_minutes": budget_minutes, "wall_minutes": round((time.time() - t_start) / 60, 2),
              "results": results, "study": STUDY, "ablations": ablation_rows,
              "ablations_skipped": [list(s) for s in abl_skipped], "ablation_family": ablation_family,
              "runs": runs_info, "baseline": baseline(all_rows)}
    write_outputs(out, result, all_rows)
    return result


def baseline(rows) -> dict:
    """The all-background prediction's mean Dice per family (0 on every case with foreground; NaN when empty)."""
    out = {}
    for r in rows:
        out.setdefault(r["family"], []).append(0.0 if r["fg_voxels"] > 0 else float("nan"))
    return {f: _nanmean(v) for f, v in out.items()}


def compare_runs(evals: dict, pairs, metrics=("dice", "jaccard", "sensitivity", "specificity"), n_boot=2000):
    """Paired per-case deltas ``treatment - reference`` (same held-out cases) with bootstrap CIs."""
    out = []
    for ab, ref, treat in pairs:
        a = {r["case"]: r for r in evals.get(ref, [])}
        b = {r["case"]: r for r in evals.get(treat, [])}
        ids = sorted(set(a) & set(b))
        if not ids:
            out.append({"ablation": ab.name, "reference": ref, "treatment": treat, "error": "no shared cases"})
            continue
        for m in metrics:
            va = np.array([a[i][m] for i in ids])
            vb = np.array([b[i][m] for i in ids])
            d = paired_delta_ci(va, vb, n_boot=n_boot)
            ra = bootstrap_ci(va, n_boot=n_boot)
            rel = 100.0 * d.estimate / ra.estimate if ra.estimate and np.isfinite(ra.estimate) else float("nan")
            out.append({"ablation": ab.name, "description": ab.description, "reference": ref, "treatment": treat,
                        "metric": m, "reference_mean": ra.estimate, "treatment_mean": _nanmean(vb),
                        "delta": d.estimate, "delta_ci_low": d.low, "delta_ci_high": d.high, "n": len(ids),
                        "relative_delta_pct": rel, "study_range_pct": list(ab.study_range)})
    return out


# ------------------------------------------------------------------------------------------------ output

def _fmt(cell, m):
    v = cell.get(m) if cell else None
    if not v or not np.isfinite(v["mean"]):
        return "n/a"
    return f"{v['mean']:.2f} ± {v['std']:.2f}"


def table_markdown(result: dict) -> str:
    fams = result["families"]
    models = [m for m in STUDY_ROWS if m in result["models"]] + [m for m in result["models"] if m not in STUDY_ROWS]
    lines = ["# The study's table on the real samples" + (" (--quick: machinery check, numbers mean nothing)"
                                                           if result["quick"] else ""), "",
             "Cells: Dice / Jaccard / accuracy / sensitivity / specificity of the foreground per held-out case at "
             "native resolution (zoo.predict), mean ± std over patient-level CV folds; `study:` the reference "
             "study's numbers (REFERENCE_STUDY.md; its LUNA column is our lung CT family). "
             f"Budget {result['budget_minutes']} min, wall {result['wall_minutes']} min.", "",
             "| model | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for m in models:
        cells = []
        for f in fams:
            r = result["results"].get(m, {}).get(f)
            ours = " / ".join(_fmt(r["cv"], k) for k in METRICS) if r else "-"
            st = STUDY.get(m, {}).get(f)
            study = " / ".join(f"{st[k]:.2f}" for k in METRICS if k in st) if st else ""
            ran = f"{len(r['folds'])} of {r['k']} folds" if r and len(r["folds"]) < r["k"] else f"k={r['k']}" \
                if r else ""
            cells.append(ours + (f" ({ran}, {r['n_cases']} cases)" if r else "")
                         + (f"<br>study: {study}" if study else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "All-background baseline Dice: " + ", ".join(
        f"{f} {v:.2f}" for f, v in result["baseline"].items()), ""]
    for s in result["skipped_families"]:
        lines.append(f"- skipped family {s['family']}: {s['why']}")
    if result["ablations"] or result["ablations_skipped"]:
        lines += ["", f"## Ablations (U-Net on {result['ablation_family']}; paired per-case delta, bootstrap 95% CI)",
                  "", "| ablation | metric | reference | treatment | delta [95% CI] | relative | study says |",
                  "|---|---|---:|---:|---|---:|---|"]
        for r in result["ablations"]:
            if "error" in r:
                lines.append(f"| {r['ablation']} | - | - | - | {r['error']} | - | - |")
                continue
            lo, hi = r["study_range_pct"]
            lines.append(f"| {r['ablation']} | {r['metric']} | {r['reference_mean']:.3f} | {r['treatment_mean']:.3f} "
                         f"| {r['delta']:+.3f} [{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}] | "
                         f"{r['relative_delta_pct']:+.1f}% | {lo:+g}..{hi:+g}% |")
        for name, why in result["ablations_skipped"]:
            lines.append(f"| {name} | - | - | - | skipped: {why} | - | - |")
    lines += ["", "## Runs", "", "| model | family | steps per fold | seconds |", "|---|---|---|---:|"]
    for r in result["runs"]:
        lines.append(f"| {r['model']} | {r['family']} | {', '.join(map(str, r['steps']))} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _svg_strip(rows, family, models, path):
    w, h, pad = 120 + 90 * len(models), 260, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="11"><text x="{pad}" y="16">per-case Dice, {family} (held-out patients)</text>']
    for t in (0.0, 0.5, 1.0):
        y = h - pad - t * (h - 2 * pad)
        parts.append(f'<line x1="{pad}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ccc"/>'
                     f'<text x="5" y="{y + 4:.1f}">{t:.1f}</text>')
    for j, m in enumerate(models):
        x0 = pad + 30 + 90 * j
        vals = [r["dice"] for r in rows if r["model"] == m and np.isfinite(r["dice"])]
        for n, v in enumerate(vals):
            y = h - pad - v * (h - 2 * pad)
            parts.append(f'<circle cx="{x0 + (n % 7) * 4 - 12}" cy="{y:.1f}" r="2.5" fill="#1f77b4" '
                         f'fill-opacity="0.7"/>')
        if vals:
            y = h - pad - float(np.mean(vals)) * (h - 2 * pad)
            parts.append(f'<line x1="{x0 - 20}" x2="{x0 + 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d62728"/>')
        parts.append(f'<text x="{x0 - 20}" y="{h - 15}">{m}</text>')
    parts.append("</svg>")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(parts))


def write_outputs(out: str, result: dict, rows) -> None:
    write_json(os.path.join(out, "table.json"), result)
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as fh:
        fh.write(table_markdown(result))
    if rows:
        keys = ["family", "model", "fold", "patient_id", "case", *METRICS, "fg_voxels", "pred_voxels", "voxels"]
        with open(os.path.join(out, "cases.csv"), "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    for f in result["families"]:
        _svg_strip(rows, f, result["models"], os.path.join(out, "plots", f"dice_{f}.svg"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.paper_table", description=__doc__.splitlines()[0])
    p.add_argument("--data_root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budget_minutes", type=float, default=60.0)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--models", default="")
    p.add_argument("--families", default="")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--ablations", default="")
    p.add_argument("--ablation_family", default="isic")
    p.add_argument("--no_store", action="store_true")
    args = p.parse_args(argv)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    archs = split(args.models) or (["cnn", "unet"] if args.quick else list(STUDY_ROWS))
    families = split(args.families) or (["isic", "cxr"] if args.quick else list(paper.FAMILIES))
    abl = [] if args.ablations == "none" else split(args.ablations) or (["loss"] if args.quick else list(ABLATIONS))
    steps = args.steps if args.steps is not None else (8 if args.quick else None)
    try:
        if args.folds < 2:
            raise ValueError(f"--folds must be >= 2, got {args.folds}")
        if args.budget_minutes <= 0 or not np.isfinite(args.budget_minutes):
            raise ValueError(f"--budget_minutes must be positive, got {args.budget_minutes}")
        if steps is not None and steps < 1:
            raise ValueError(f"--steps must be >= 1, got {steps}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = run_table(args.data_root, os.path.abspath(args.out), archs=archs, families=families,
                               folds=args.folds, budget_minutes=args.budget_minutes, quick=args.quick, steps=steps,
                               ablations=abl, ablation_family=args.ablation_family, store=not args.no_store)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(table_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
