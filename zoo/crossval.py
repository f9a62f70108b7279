"""Patient-level k-fold cross-validation of a run config, and the fold ensemble (``python -m zoo.cv`` is its
command line).

The training split of ``config.data`` is divided into ``K`` folds by patient (every case of a
patient lands in the same fold, so no patient is in both training and validation; ``zoo.training.kfold``).
Fold ``i`` trains on the other ``K-1`` folds in ``<workdir>/fold<i>`` (its own checkpoints, best-by-Dice
checkpoint and metrics) and is validated on fold ``i``. The aggregate is the mean ± sample std
over folds. The ensemble averages the softmax of the folds' best checkpoints on the held-out
test split (the data set's validation split, which no fold saw) and reports its Dice.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from data_pipelines.atomic import write_json, write_text
from data_pipelines.datasets import load_dataset
from scoring import dice_per_class_np
from zoo.pretrained import load_pretrained
from zoo.training import kfold, prepare_run

__all__ = ["cross_validate", "ensemble_predict", "format_cv_table"]


def ensemble_predict(fold_dirs, images, batch_size: int = 8) -> np.ndarray:
    """Label maps from the mean class probabilities of each fold's best checkpoint (``<fold>/best``)."""
    probs = None
    for d in fold_dirs:
        p = load_pretrained(os.path.join(d, "best")).predict_proba(images, batch_size)
        probs = p if probs is None else probs + p
    return np.argmax(probs, axis=-1).astype(np.int32)


def cross_validate(config, workdir: str, folds: int, ensemble: bool = False, progress: bool = False) -> dict:
    """Run the ``folds`` trainings; returns per-fold results, the aggregate and (optionally) the ensemble,
    written to ``<workdir>/cv.json`` and ``cv.md``."""
    setup = prepare_run(config)
    train, test, info = load_dataset(config.data)
    out = kfold.run_folds(config, workdir, train, info, folds, progress=progress, setup=setup)
    if out.get("preempted"):
        return out
    out.pop("splits", None)
    if ensemble:
        pred = ensemble_predict([r["workdir"] for r in out["folds"]], test["image"], int(config.train.batch_size))
        per_case = np.stack([dice_per_class_np(p, t, info.num_classes) for p, t in zip(pred, test["label"])])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_class = np.nanmean(per_case, axis=0)
        fg = per_class[1:] if info.num_classes > 1 else per_class
        out["ensemble"] = {"num_cases": int(len(pred)), "dice_per_class": list(map(float, per_class)),
                           "mean_dice": float(np.nanmean(fg))}
    write_json(os.path.join(workdir, "cv.json"), out)
    write_text(os.path.join(workdir, "cv.md"), format_cv_table(out) + "\n")
    return out


def format_cv_table(result: dict) -> str:
    """The per-fold Dice table (Markdown), the mean ± std row and, when present, the ensemble's row."""
    names = result["class_names"]
    head = "| fold | patients train/val | " + " | ".join(names) + " | mean Dice (fg) |"
    lines = [head, "|---|---|" + "---:|" * (len(names) + 1)]
    for r in result["folds"]:
        lines.append(f"| {r['fold']} | {r['train_patients']}/{r['val_patients']} | "
                     + " | ".join(f"{v:.4f}" for v in r["dice_per_class"]) + f" | {r['mean_dice']:.4f} |")
    a = result["aggregate"]
    lines.append("| **mean ± std** | | " + " | ".join(
        f"{m:.4f} ± {s:.4f}" for m, s in zip(a["dice_per_class_mean"], a["dice_per_class_std"]))
        + f" | **{a['mean_dice']:.4f} ± {a['std_dice']:.4f}** |")
    if "ensemble" in result:
        e = result["ensemble"]
        lines.append(f"| ensemble (test, {e['num_cases']} cases) | | "
                     + " | ".join(f"{v:.4f}" for v in e["dice_per_class"]) + f" | {e['mean_dice']:.4f} |")
    return "\n".join(lines)
