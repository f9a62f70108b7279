"""Patient-level k-fold cross-validation of a run config, and the fold ensemble (``python -m zoo.cv`` is its
command line).

The training split of ``config.data`` is divided into ``K`` folds by patient (every case of a
patient lands in the same fold, so no patient is in both training and validation; ``zoo.training.kfold``).
Fold ``i`` trains on the other ``K-1`` folds in ``<workdir>/fold<i>`` (its own checkpoints, best-by-Dice
checkpoint and metrics) and is validated on fold ``i``. The aggregate is the mean ± sample std
over folds. The ensemble averages the softmax of the folds' best checkpoints on the held-out
test split (the data set's validation split, which no fold saw) and reports its Dice.

The refit (``refit=True``; nnU-Net's and scikit-learn's ``refit`` after cross-validation) trains the same recipe
on every training patient for the folds' mean steps in ``<workdir>/refit`` (:func:`zoo.training.kfold.refit`: no
validation split, the last step is the model); ``store=NAME`` saves it into the model store with a card that
carries the cross-validated metrics it came from (:func:`cross_validation_record`, :func:`refit_card`). The
folds' models stay in ``<workdir>/fold<i>`` for the fold ensemble: a store entry holds one checkpoint.
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from data_pipelines.atomic import write_json, write_text
from data_pipelines.datasets import load_dataset
from scoring import dice_per_class_np
from zoo.pretrained import load_pretrained
from zoo.store import entry_path, save_pretrained
from zoo.training import kfold, prepare_run

__all__ = ["SPLITTER", "cross_validate", "ensemble_predict", "format_cv_table", "cross_validation_record",
           "refit_card"]

SPLITTER = "data_pipelines.splits.patient_kfold"  # the one k-fold splitter: every case of a patient in one fold


def ensemble_predict(fold_dirs, images, batch_size: int = 8) -> np.ndarray:
    """Label maps from the mean class probabilities of each fold's best checkpoint (``<fold>/best``)."""
    probs = None
    for d in fold_dirs:
        p = load_pretrained(os.path.join(d, "best")).predict_proba(images, batch_size)
        probs = p if probs is None else probs + p
    return np.argmax(probs, axis=-1).astype(np.int32)


def cross_validation_record(per_fold: list[dict], *, folds: int, seed: int, measured_on: str) -> dict:
    """A card's ``metrics.cross_validation``: ``per_fold`` (``[{"fold", "val_patients": [ids], "steps",
    "metrics": {name: value}}]``, the folds' recorded numbers) with their mean and sample std per metric (NaN
    ignored; std ``None`` for one fold), the number of folds (``folds_run`` may be fewer: a quick run), the
    splitter and its seed, and what the numbers were ``measured_on``."""
    if not per_fold:
        raise ValueError("no fold finished; there are no cross-validated metrics to record")
    names = list(dict.fromkeys(n for f in per_fold for n in f["metrics"]))
    mean, std = {}, {}
    for n in names:
        mean[n], std[n] = kfold.nan_stats([f["metrics"].get(n, float("nan")) for f in per_fold])
        if len(per_fold) < 2:
            std[n] = None  # one fold (a quick run) has no spread to state
    rows = [{"fold": int(f["fold"]), "val_patients": [str(p) for p in f["val_patients"]], "steps": int(f["steps"]),
             "metrics": {n: float(v) for n, v in f["metrics"].items()}} for f in per_fold]
    return {"folds": int(folds), "folds_run": len(rows), "level": "patient", "splitter": SPLITTER, "seed": int(seed),
            "measured_on": measured_on, "per_fold": rows, "mean": mean, "std": std}


def refit_card(cv: dict, fit: dict, primary: str, fold_dirs=()) -> dict:
    """The card fields of a refit store entry (``zoo.store.save_pretrained``'s ``card``): ``training`` (``refit:
    true``, the patients and steps it trained, no step selection) and ``metrics`` (``primary``'s cross-validated
    mean, the split it came from, and ``cross_validation``: ``cv`` from :func:`cross_validation_record`). ``fit``:
    :func:`zoo.training.kfold.refit`'s result."""
    k, n = cv["folds"], cv["folds_run"]
    folds_said = f"{k} patient-level folds" if n == k else f"{n} of {k} patient-level folds"
    return {
        "training": {"refit": True, "patients": list(fit["patients"]), "cases": int(fit["cases"]),
                     "steps": int(fit["step"]), "fold_steps": [f["steps"] for f in cv["per_fold"]],
                     "selection": "none: refit on every training patient with no validation split; the model is "
                                  "its last step, trained for the folds' mean steps",
                     "fit_on_training_cases": {primary: fit.get(primary) if primary in fit else fit.get("mean_dice"),
                                               "note": "in-sample (the refit's own training cases): not an "
                                                       "accuracy estimate"},
                     "fold_workdirs": [os.path.abspath(d) for d in fold_dirs]},
        "metrics": {primary: cv["mean"][primary],
                    "split": f"cross-validation: mean over {folds_said}' held-out patients ("
                             + (f"± {cv['std'][primary]:.3f} std" if cv["std"][primary] is not None else "one fold: "
                                "no std") + ") before the refit; the refit itself has no held-out data",
                    "cross_validation": cv},
    }


def cross_validate(config, workdir: str, folds: int, ensemble: bool = False, progress: bool = False, *,
                   refit: bool = False, store: str | None = None, store_root: str | None = None,
                   overwrite: bool = False, card: dict | None = None) -> dict:
    """Run the ``folds`` trainings; returns per-fold results, the aggregate and (optionally) the ensemble,
    written to ``<workdir>/cv.json`` and ``cv.md``. ``refit``: then train on every training patient
    (``<workdir>/refit``) and record ``cross_validation``; ``store``: save the refit as that model-store entry
    (in ``store_root``, default ``$ZOO_HOME``) with ``card`` added to :func:`refit_card`'s fields. The entry's
    name is checked before anything trains; a failed fold or refit saves nothing."""
    if store is not None and not refit:
        raise ValueError("--store needs --refit: a store entry of cross-validation is the model refit on every "
                         "training patient (the folds stay in the work directory for --ensemble)")
    if store is not None:
        entry_path(store, store_root, overwrite)
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
    fit = None
    if refit:
        fit = kfold.refit(config, os.path.join(workdir, "refit"), train, info,
                          kfold.refit_steps([r["steps"] for r in out["folds"]]), progress=progress)
        if fit.get("preempted"):
            return {"preempted": True, "fold": "refit", "folds": out["folds"]}
        names = out["class_names"]
        per_fold = [{"fold": r["fold"], "val_patients": r["val_patient_ids"], "steps": r["steps"],
                     "metrics": {"mean_dice": r["mean_dice"],
                                 **{f"dice_{c}": v for c, v in zip(names, r["dice_per_class"])}}}
                    for r in out["folds"]]
        out["cross_validation"] = cross_validation_record(
            per_fold, folds=folds, seed=int(config.data.seed),
            measured_on="each fold's validation cases as the loader prepares them (resized to data.image_size); "
                        "mean_dice: the foreground classes' mean")
        out["refit"] = {"workdir": os.path.join(workdir, "refit"), "steps": int(fit["step"]),
                        "patients": fit["patients"], "cases": fit["cases"],
                        "fit_on_training_cases": {"mean_dice": fit.get("mean_dice")}}
    if store is not None:
        entry = save_pretrained(out["refit"]["workdir"], store, step=int(fit["step"]), root=store_root,
                                overwrite=overwrite,
                                card={**(card or {}), **refit_card(out["cross_validation"], fit, "mean_dice",
                                                                   [r["workdir"] for r in out["folds"]])})
        out["store"] = {"name": entry.name, "path": entry.path}
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
    if "refit" in result:
        r = result["refit"]
        lines.append(f"\nRefit on all {len(r['patients'])} training patients ({r['cases']} cases, {r['steps']} steps, "
                     f"no validation split) in {r['workdir']}"
                     + (f"; model store entry {result['store']['name']!r}" if "store" in result else ""))
    return "\n".join(lines)
