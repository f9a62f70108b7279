"""Calibration and conformal risk control of a segmentation model on held-out patients (the study behind
``python -m eval.studies.calibration``; :func:`run_study`).

For one data family (``isic``: PH2 dermoscopy, ``cxr``: chest X-ray lung fields, through the paper recipes
``paper_unet_<family>`` and ``data_pipelines.families``), patient-level K-fold cross-validation
(``zoo.training.kfold``; every image of a patient in one fold):

1. fold ``i`` trains a small 2D U-Net at low resolution for a fixed number of steps on the other folds' patients,
   less a validation part (a fifth of those patients) that picks the best checkpoint and fits the softmax
   temperature ``T`` (``scoring.calibration.fit_temperature`` on the validation images' log-probabilities at
   their native resolution, through the one prediction path ``zoo.prediction.predict_case_proba``); ``T`` is
   stored with the fold's model (``zoo.calibration.save_calibration``: ``calibration.json``, which also gets
   the fold's conformal record of step 3);
2. the fold's held-out patients are predicted at native resolution with and without ``T`` (applied to each
   window's logits); the pixel-level top-label ECE and the reliability diagram
   (``scoring.calibration.ReliabilityHistogram``, 15 equal-width bins) are measured before and after;
3. conformal risk control (``scoring.conformal``): for fold ``i``, the threshold ``t_hat`` on the calibrated
   foreground probability is fitted on the **other folds' held-out predictions** (each made by a model that
   never saw that case; ``n`` = their number, at least ``1/alpha - 1``) so that the expected fraction of
   missed lesion (foreground) pixels stays at or below ``alpha``; fold ``i``'s empirical miss fraction at
   ``t_hat`` (mean over its cases, and per case) is the check, beside the share of the image the set
   ``{p >= t_hat}`` flags and the miss fraction of the plain argmax mask.

The foreground is the recipe's (``data.mask_foreground``: lesion for ``isic``, lung for ``cxr``). Outputs in
``--out``: ``calibration_<family>.json`` / ``.md`` (per fold and mean ± sample std), ``reliability_<family>.png``,
``runs/<family>/fold<i>/`` (the fold models with their ``calibration.json``; never commit them: they are
trained on licensed data). ``quick``: 32x32 images, a 4-feature U-Net, few steps: the machinery, not the numbers.
"""

from __future__ import annotations

import os
import time

import numpy as np

from data_pipelines.atomic import atomic_path, write_json, write_text
from data_pipelines.datasets import load_dataset
from eval.studies.reference_table import family_cases, make_config, read_reference
from scoring import overlap
from scoring.calibration import ReliabilityHistogram, fit_temperature, temperature_nll
from scoring.conformal import conformal_threshold, min_calibration_cases, miss_fraction
from zoo.calibration import save_calibration
from zoo.configs import apply_overrides, paper
from zoo.prediction import predict_case_proba, read_case
from zoo.pretrained import load_pretrained
from zoo.training import kfold, train_and_evaluate

__all__ = ["FAMILIES", "run_study", "study_markdown", "write_outputs"]

FAMILIES = ("isic", "cxr")
N_BINS = 15
FIT_VOXELS = 200_000  # validation pixels the temperature is fitted on (a seeded random subset of all of them)


def _overrides(image_size: int, steps: int, features: int, depth: int) -> dict:
    return {"data.image_size": f"{image_size},{image_size}", "model.kwargs.features": str(features),
            "model.kwargs.depth": str(depth), "augment.enabled": "False", "train.steps": str(steps),
            "train.warmup_steps": str(min(20, steps // 4)), "train.eval_every": str(steps),
            "train.checkpoint_every": str(steps), "train.log_every": str(max(1, steps // 4)),
            "train.batch_size": "8"}


def _truth(case: dict, foreground: str, shape) -> np.ndarray:
    truth = read_reference(case["truth"], shape)
    return (truth > 0 if foreground == "nonzero" else truth == 0).astype(np.int32)


def _predict(pre, case, foreground, temperature=None):
    image, meta, _ = read_case(case["input"], pre)
    proba = predict_case_proba(pre, image, meta, temperature=temperature).proba
    return proba, _truth(case, foreground, proba.shape[:-1])


def _fit_temperature_on(pre, cases, foreground, seed):
    """``(T, NLL at 1, NLL at T, n pixels)`` on the validation cases' native-resolution log-probabilities."""
    logs, labels = [], []
    for case in cases:
        proba, truth = _predict(pre, case, foreground)
        logs.append(np.log(np.clip(proba.reshape(-1, proba.shape[-1]), 1e-7, 1.0)))
        labels.append(truth.reshape(-1))
    z, y = np.concatenate(logs), np.concatenate(labels)
    if len(y) > FIT_VOXELS:
        keep = np.random.default_rng(seed).choice(len(y), FIT_VOXELS, replace=False)
        z, y = z[keep], y[keep]
    t = fit_temperature(z, y)
    return t, temperature_nll(z, y, 1.0), temperature_nll(z, y, t), int(len(y))


def _mean_std(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return {"mean": None, "std": None}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0}


def run_study(data_root: str, family: str, out: str, *, folds: int = 4, alpha: float = 0.1, steps: int = 150,
              image_size: int = 64, features: int = 8, depth: int = 3, quick: bool = False, seed: int = 0) -> dict:
    """Train, calibrate and check one family (see the module docstring); returns the result dict (also the
    JSON written by :func:`write_outputs`)."""
    if family not in FAMILIES:
        raise ValueError(f"--family {family!r}: the study runs on {', '.join(FAMILIES)} (2D pictures with masks)")
    folder = os.path.join(data_root, paper.FOLDERS[family])
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--data_dir {data_root}: no {paper.FOLDERS[family]}/ folder for family {family}")
    if int(folds) < 2:
        raise ValueError(f"--folds must be >= 2, got {folds}")
    if quick:
        steps, image_size, features, depth = min(steps, 6), 32, 4, 2
    config = apply_overrides(make_config("unet", family, folder, False),
                             _overrides(image_size, steps, features, depth))
    foreground = config.data.get("mask_foreground", "nonzero")
    tr, va, info = load_dataset(config.data)
    arrays = kfold.concat(tr, va)
    cases = family_cases(config)
    n_cases = sum(len(v) for v in cases.values())
    need = min_calibration_cases(alpha)
    if n_cases * (folds - 1) / folds < need:
        raise ValueError(f"family {family}: {n_cases} cases in {folds} folds leave about "
                         f"{n_cases * (folds - 1) // folds} calibration cases per fold; conformal risk control at "
                         f"alpha={alpha} needs {need}")
    split = kfold.patient_folds(arrays["patient_id"], int(folds), seed)
    before, after = ReliabilityHistogram(N_BINS), ReliabilityHistogram(N_BINS)
    fold_rows, held, records = [], [], []  # held: per fold, [(fg probability after T, truth, argmax mask, case id)]
    t_start = time.time()
    for i, (tr_idx, te_idx) in enumerate(split):
        t0 = time.time()
        inner = kfold.patient_folds([arrays["patient_id"][j] for j in tr_idx], 5, seed)[0]
        fit_idx, val_idx = np.asarray(tr_idx)[inner[0]], np.asarray(tr_idx)[inner[1]]
        fold_dir = os.path.join(out, "runs", family, f"fold{i}")
        res = train_and_evaluate(config, fold_dir, progress=False,
                                 data=(kfold.subset(arrays, fit_idx), kfold.subset(arrays, val_idx), info))
        pre = load_pretrained(os.path.join(fold_dir, "best"))
        val_pids = sorted({arrays["patient_id"][j] for j in val_idx})
        test_pids = sorted({arrays["patient_id"][j] for j in te_idx})
        val_cases = [c for p in val_pids for c in cases.get(p, [])]
        t, nll1, nll_t, n_fit = _fit_temperature_on(pre, val_cases, foreground, seed + i)
        fb, fa = ReliabilityHistogram(N_BINS), ReliabilityHistogram(N_BINS)
        rows, dice = [], []
        for case in (c for p in test_pids for c in cases.get(p, [])):
            p1, truth = _predict(pre, case, foreground)
            pt, _ = _predict(pre, case, foreground, t)
            for h, p in ((fb, p1), (before, p1), (fa, pt), (after, pt)):
                h.update(p, truth)
            mask = p1.argmax(-1) > 0
            dice.append(float(overlap.dice(mask, truth.astype(bool))))
            rows.append((1.0 - pt[..., 0], truth.astype(bool), mask, case["id"]))
        held.append(rows)
        records.append((fold_dir, {"validation_cases": [c["id"] for c in val_cases], "validation_pixels": n_fit,
                                   "nll_before": nll1, "nll_after": nll_t, "family": family}))
        fold_rows.append({"fold": i, "train_cases": len(fit_idx), "validation_cases": len(val_cases),
                          "test_cases": len(rows), "steps": int(res.get("step", steps)), "temperature": t,
                          "val_nll_before": nll1, "val_nll_after": nll_t, "ece_before": fb.ece, "ece_after": fa.ece,
                          "dice": float(np.mean(dice)) if dice else None, "seconds": round(time.time() - t0, 1)})
    for i, row in enumerate(fold_rows):  # conformal: calibrate on the other folds' held-out predictions
        cal = [r for j, rs in enumerate(held) if j != i for r in rs]
        t_hat = conformal_threshold([r[0] for r in cal], [r[1] for r in cal], alpha)
        misses = [miss_fraction(r[0], r[1], t_hat) for r in held[i]]
        argmax_miss = [miss_fraction(r[2].astype(np.float64), r[1], 0.5) for r in held[i]]
        flagged = [float((r[0] >= t_hat).mean()) for r in held[i]]
        row.update(conformal_threshold=t_hat, calibration_cases=len(cal),
                   miss_rate=float(np.mean(misses)) if misses else None,
                   miss_rate_argmax=float(np.mean(argmax_miss)) if argmax_miss else None,
                   flagged_fraction=float(np.mean(flagged)) if flagged else None,
                   cases_over_alpha=int(sum(m > alpha for m in misses)))
        fold_dir, fields = records[i]
        save_calibration(fold_dir, row["temperature"], **fields, conformal={
            "alpha": float(alpha), "threshold": t_hat, "n": len(cal), "score": "foreground probability after T",
            "fitted_on": "the other folds' held-out predictions", "held_out_miss_rate": row["miss_rate"]})
    summary = {k: _mean_std([r[k] for r in fold_rows]) for k in
               ("temperature", "ece_before", "ece_after", "dice", "conformal_threshold", "miss_rate",
                "miss_rate_argmax", "flagged_fraction")}
    pooled_cases = sum(len(h) for h in held)
    pooled_miss = float(np.mean([miss_fraction(r[0], r[1], f["conformal_threshold"])
                                 for f, rs in zip(fold_rows, held) for r in rs])) if pooled_cases else None
    return {"family": family, "data_dir": folder, "folds": int(folds), "alpha": float(alpha), "quick": bool(quick),
            "cases": n_cases, "patients": len(cases),
            "model": {"name": "unet", "image_size": image_size, "features": features, "depth": depth,
                      "steps": steps, "augmentation": False},
            "ece_bins": N_BINS, "ece_before_pooled": before.ece, "ece_after_pooled": after.ece,
            "reliability_before": before.curve(), "reliability_after": after.curve(),
            "miss_rate_pooled": pooled_miss, "folds_detail": fold_rows, "summary": summary,
            "seconds": round(time.time() - t_start, 1)}


def _f(x, d=3) -> str:
    return "–" if x is None else f"{x:.{d}f}"


def study_markdown(result: dict) -> str:
    """The result as a markdown report (per fold, then mean ± sample std over folds)."""
    s, a = result["summary"], result["alpha"]
    lines = [f"# Calibration and conformal risk control: {result['family']}",
             "",
             f"Data: `{result['data_dir']}` ({result['cases']} cases, {result['patients']} patients), "
             f"{result['folds']} patient-level folds; model: U-Net {result['model']['image_size']}² "
             f"({result['model']['features']} features, depth {result['model']['depth']}, "
             f"{result['model']['steps']} steps, no augmentation)"
             f"{' — QUICK: numbers mean nothing' if result['quick'] else ''}.",
             f"ECE: pixel-level top-label, {result['ece_bins']} bins, held-out fold at native resolution. Conformal "
             f"threshold at alpha = {a} fitted on the other folds' held-out predictions.",
             "",
             "| fold | T | ECE before | ECE after | Dice | t̂ | n cal | miss rate | argmax miss | flagged "
             "| cases > α |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["folds_detail"]:
        lines.append(f"| {r['fold']} | {_f(r['temperature'], 2)} | {_f(r['ece_before'], 4)} "
                     f"| {_f(r['ece_after'], 4)} | {_f(r['dice'])} | {_f(r['conformal_threshold'])} "
                     f"| {r['calibration_cases']} "
                     f"| {_f(r['miss_rate'])} | {_f(r['miss_rate_argmax'])} | {_f(r['flagged_fraction'])} "
                     f"| {r['cases_over_alpha']}/{r['test_cases']} |")

    def ms(k, d=3):
        return f"{_f(s[k]['mean'], d)} ± {_f(s[k]['std'], d)}"

    lines += ["", f"Mean ± std over folds: T {ms('temperature', 2)}; ECE {ms('ece_before', 4)} → "
                  f"{ms('ece_after', 4)} (pooled pixels: {_f(result['ece_before_pooled'], 4)} → "
                  f"{_f(result['ece_after_pooled'], 4)}); miss rate at t̂ {ms('miss_rate')} "
                  f"(all held-out cases: {_f(result['miss_rate_pooled'])}; target ≤ {a}); argmax mask misses "
                  f"{ms('miss_rate_argmax')}; the set flags {ms('flagged_fraction')} of the image.", ""]
    return "\n".join(lines)


def _reliability_png(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="perfect")
    for key, name in (("reliability_before", "before"), ("reliability_after", "after T")):
        c = result[key]
        ece = result["ece_before_pooled" if name == "before" else "ece_after_pooled"]
        ax.plot(c["confidence"], c["accuracy"], marker="o", ms=3, label=f"{name} (ECE {_f(ece, 4)})")
    ax.set_xlabel("confidence (max p)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"{result['family']}: held-out pixels, {result['folds']} folds")
    ax.legend(loc="upper left", fontsize=8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_outputs(result: dict, out: str) -> list[str]:
    """``calibration_<family>.json`` / ``.md`` and ``reliability_<family>.png`` in ``out``; returns their paths."""
    fam = result["family"]
    paths = [os.path.join(out, f"calibration_{fam}.json"), os.path.join(out, f"calibration_{fam}.md"),
             os.path.join(out, f"reliability_{fam}.png")]
    write_json(paths[0], result)
    write_text(paths[1], study_markdown(result))
    _reliability_png(result, paths[2])
    return paths
