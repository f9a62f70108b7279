"""Patient-level k-fold cross-validation: ``python -m zoo.cv --config=NAME --folds=K [--ensemble] [--config.x=v]``.

The training split of ``config.data`` is divided into ``K`` folds by patient (every case of a
patient lands in the same fold, so no patient is in both training and validation). Fold ``i``
trains on the other ``K-1`` folds in ``<workdir>/fold<i>`` (its own checkpoints, best-by-Dice
checkpoint and metrics) and is validated on fold ``i``. The aggregate is the mean ± sample std
over folds. ``--ensemble`` averages the softmax of the folds' best checkpoints on the held-out
test split (the data set's validation split, which no fold saw) and reports its Dice.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

from data_pipelines.datasets import load_dataset
from scoring import dice_per_class_np
from zoo.cli import default_workdir, parse_run_args, resolve_config, run_cli, run_parser
from zoo.pretrained import load_pretrained
from data_pipelines.atomic import write_json
from zoo.training import kfold, prepare_run
from zoo.training.kfold import patient_folds, subset

__all__ = ["patient_folds", "subset", "cross_validate", "ensemble_predict", "format_cv_table", "main"]


def ensemble_predict(fold_dirs, images, batch_size: int = 8) -> np.ndarray:
    """Label maps from the mean class probabilities of each fold's best checkpoint (``<fold>/best``)."""
    probs = None
    for d in fold_dirs:
        p = load_pretrained(os.path.join(d, "best")).predict_proba(images, batch_size)
        probs = p if probs is None else probs + p
    return np.argmax(probs, axis=-1).astype(np.int32)


def cross_validate(config, workdir: str, folds: int, ensemble: bool = False, progress: bool = False) -> dict:
    """Run the ``folds`` trainings; returns per-fold results, the aggregate and (optionally) the ensemble."""
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
    with open(os.path.join(workdir, "cv.md"), "w", encoding="utf-8") as f:
        f.write(format_cv_table(out) + "\n")
    return out


def format_cv_table(result: dict) -> str:
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


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m zoo.cv", add_help=False)
    p.add_argument("--folds", default="5")
    p.add_argument("--ensemble", action="store_true")
    own, rest = p.parse_known_args(argv)
    known, overrides = parse_run_args(run_parser("python -m zoo.cv", __doc__.splitlines()[0]), rest)

    def run() -> int:
        try:
            folds = int(own.folds)
        except ValueError:
            raise ValueError(f"--folds must be an integer, got {own.folds!r}") from None
        config = resolve_config(known, overrides)
        workdir = default_workdir(known, config, prefix="cv-")
        print(f"workdir: {workdir}", flush=True)
        result = cross_validate(config, workdir, folds, ensemble=own.ensemble, progress=not known.no_progress)
        if result.get("preempted"):
            print(f"preempted during fold {result['fold']}; rerun the same command to resume", flush=True)
            return 143
        print(f"\n{folds}-fold patient-level cross-validation ({config.model.name}, {config.data.name}):")
        print(format_cv_table(result))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
