"""Patient-level k-fold cross-validation, the library part (``zoo.cv`` is its command line;
``eval.studies.reference_table`` uses it too).

:func:`run_folds` trains fold ``i`` on the other ``K-1`` folds' cases in ``<workdir>/fold<i>`` and validates it
on fold ``i``; every case of a patient lands in the same fold. The aggregate is the mean ± sample std over folds.
:func:`refit` then trains the same recipe on every case (all folds' patients), as scikit-learn's ``refit`` after
``cross_validate`` does: the model a store entry holds, its folds' numbers being the estimate of its accuracy.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from data_pipelines import splits
from zoo.training.loop import train_and_evaluate
from zoo.training.setup import prepare_run

__all__ = ["patient_folds", "subset", "concat", "nan_stats", "run_folds", "refit_steps", "refit"]


def patient_folds(patient_ids, k: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` pairs ``(train_idx, val_idx)`` of case indices: ``splits.patient_kfold`` (the one splitter) with
    its errors worded for ``--folds``."""
    return [tuple(f) for f in splits.patient_kfold(list(patient_ids), k, seed=seed, name="folds")]


def subset(arrays: dict, idx) -> dict:
    """Rows ``idx`` of every array (lists such as ``patient_id`` too)."""
    return {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in arrays.items()}


def concat(a: dict, b: dict) -> dict:
    """The rows of ``a`` then those of ``b`` (the keys both have)."""
    out = {}
    for k in a:
        if k not in b:
            continue
        out[k] = list(a[k]) + list(b[k]) if isinstance(a[k], list) else np.concatenate([a[k], b[k]])
    return out


def nan_stats(values):
    """``(mean, sample std)`` over axis 0, ignoring NaN (std 0 for a single value)."""
    v = np.asarray(values, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(v, axis=0)) if v.ndim == 1 else np.nanmean(v, axis=0)
        std = (float(np.nanstd(v, axis=0, ddof=1)) if v.ndim == 1 else np.nanstd(v, axis=0, ddof=1)) \
            if len(v) > 1 else 0.0 * mean
    return mean, std


def run_folds(config, workdir: str, arrays: dict, info, folds: int, *, progress: bool = False,
              setup=None, on_fold=None) -> dict:
    """Train the ``folds`` folds of ``arrays`` (which must carry ``patient_id``).

    Returns ``{"folds": [...], "aggregate": {...}, "class_names": [...], "splits": [(train_idx, val_idx)]}``
    or ``{"preempted": True, "fold": i, "folds": rows}`` when a fold was stopped by SIGTERM.
    ``on_fold(i, fold_dir, train_idx, val_idx, result)`` is called after each fold.
    """
    if "patient_id" not in arrays:
        raise ValueError(f"data set {config.data.name!r} has no patient_id; patient-level folds need one")
    setup = setup or prepare_run(config)
    fold_idx = patient_folds(arrays["patient_id"], folds, int(config.data.seed))
    os.makedirs(workdir, exist_ok=True)
    rows = []
    pids = arrays["patient_id"]
    for i, (tr, va) in enumerate(fold_idx):
        fold_dir = os.path.join(workdir, f"fold{i}")
        res = train_and_evaluate(config, fold_dir, progress=progress, setup=setup,
                                 data=(subset(arrays, tr), subset(arrays, va), info))
        if res.get("preempted"):  # SIGTERM: this fold saved a checkpoint; rerunning resumes it
            return {"preempted": True, "fold": i, "folds": rows}
        rows.append({"fold": i, "train_cases": int(len(tr)), "val_cases": int(len(va)),
                     "train_patients": len(set(pids[j] for j in tr)),
                     "val_patients": len(set(pids[j] for j in va)),
                     "val_patient_ids": sorted({str(pids[j]) for j in va}), "steps": int(res.get("step", 0)),
                     "best_step": res.get("best_step"),
                     "mean_dice": res["mean_dice"], "dice_per_class": res["dice_per_class"],
                     "best_mean_dice": res.get("best_mean_dice"), "workdir": fold_dir})
        if on_fold is not None:
            on_fold(i, fold_dir, tr, va, res)
    mean, std = nan_stats([r["mean_dice"] for r in rows])
    pc_mean, pc_std = nan_stats([r["dice_per_class"] for r in rows])
    return {"folds": rows, "class_names": list(info.class_names),
            "splits": [(list(map(int, tr)), list(map(int, va))) for tr, va in fold_idx],
            "aggregate": {"mean_dice": mean, "std_dice": std, "dice_per_class_mean": list(map(float, pc_mean)),
                          "dice_per_class_std": list(map(float, pc_std))}}


def refit_steps(fold_steps) -> int:
    """The refit's steps: the mean of the steps the folds trained (rounded; equal to each fold's when all ran the
    recipe to the end, as nnU-Net's and scikit-learn's refits train the recipe as cross-validated)."""
    steps = [int(s) for s in fold_steps if s]
    if not steps:
        raise ValueError("no fold trained a step; nothing to refit")
    return max(1, int(round(float(np.mean(steps)))))


def refit(config, workdir: str, arrays: dict, info, steps: int, *, progress: bool = False) -> dict:
    """Train ``config`` for ``steps`` on every case of ``arrays`` (all the folds' patients) in ``workdir``.

    There is no validation split to select a step on: the schedule is ``steps`` long, the one evaluation is at
    the last step, on the training cases themselves (an in-sample fit, never an accuracy estimate), so the saved
    model is the last step. Returns :func:`train_and_evaluate`'s result plus ``patients`` (the ids trained on)
    and ``cases``; ``preempted`` as there (a rerun resumes).
    """
    if "patient_id" not in arrays:
        raise ValueError(f"data set {config.data.name!r} has no patient_id; a refit after patient-level folds needs one")
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"refit steps must be >= 1, got {steps}")
    c = config.copy_and_resolve_references()
    c.train.steps = steps
    c.train.eval_every = steps
    c.train.checkpoint_every = steps
    c.train.log_every = max(1, min(int(c.train.log_every), steps))
    if "time_limit_s" in c.train:
        c.train.time_limit_s = 0.0  # the steps, not a clock, say how long (the folds' mean)
    res = train_and_evaluate(c, workdir, progress=progress, data=(arrays, arrays, info))
    return {**res, "patients": sorted({str(p) for p in arrays["patient_id"]}), "cases": int(len(arrays["patient_id"]))}
