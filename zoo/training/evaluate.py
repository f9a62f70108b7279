"""Validation during training, through the one prediction path (:class:`zoo.inference.Predictor`).

Segmentation and instance runs: Dice per class per case of the predicted label maps (``mean_dice`` over
the foreground classes picks the best checkpoint). Outcome runs: patient-level accuracy, precision,
recall, specificity, F1 and AUC-ROC of the predicted probabilities (``auc_roc`` picks the best). Survival runs:
Harrell's C of the predicted risk scores against ``time`` / ``event`` (``harrell_c`` picks the best).
"""

from __future__ import annotations

import warnings

import numpy as np

from data_pipelines import loader
from scoring import dice_per_class_np, outcome_metrics
from scoring.survival import concordance_index_censored

__all__ = ["evaluate", "iter_source", "format_dice_table", "format_outcome_table"]


def iter_source(source, batch_size: int, fields=loader.BATCH_FIELDS):
    """Consecutive chunks of ``batch_size`` records of ``source`` as batch dicts (the last one short)."""
    n = len(source)
    if n < 1:
        raise ValueError("the validation split has no cases")
    for start in range(0, n, int(batch_size)):
        yield loader.gather(source, np.arange(start, min(start + int(batch_size), n)), fields)


def _nanmean(a, axis=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(a, axis=axis)


def evaluate(predictor, source, num_classes: int, batch_size: int) -> dict:
    """Validation metrics of ``predictor`` on every record of ``source``."""
    if predictor.task.name == "outcome":
        y, proba = [], []
        for chunk in iter_source(source, batch_size, ("image", "covariates", "outcome")):
            y.append(chunk.pop("outcome"))
            proba.append(predictor.predict_proba(chunk))
        return outcome_metrics(np.concatenate(y), np.concatenate(proba).astype(np.float64))
    if predictor.task.name == "survival":
        return _survival_metrics(predictor, source, batch_size)
    per_case = []
    for chunk in iter_source(source, batch_size, ("image", "label")):
        for p, t in zip(predictor.predict(chunk["image"]), chunk["label"]):
            per_case.append(dice_per_class_np(p, t, num_classes))
    per_case = np.stack(per_case)
    per_class = _nanmean(per_case, axis=0)
    fg = per_class[1:] if num_classes > 1 else per_class
    return {"dice_per_class": [float(v) for v in per_class], "mean_dice": float(_nanmean(fg)),
            "per_case": per_case.tolist(), "num_cases": int(len(per_case))}


def _survival_metrics(predictor, source, batch_size: int) -> dict:
    time, event, risk = [], [], []
    for chunk in iter_source(source, batch_size, ("image", "covariates", "time", "event")):
        time.append(chunk.pop("time"))
        event.append(chunk.pop("event"))
        risk.append(predictor.predict(chunk))
    time, event, risk = np.concatenate(time), np.concatenate(event), np.concatenate(risk).astype(np.float64)
    c = concordance_index_censored(event.astype(bool), time, risk)[0] if event.any() else float("nan")
    return {"harrell_c": float(c), "n": int(len(time)), "events": int(event.sum())}


def format_dice_table(result: dict, class_names) -> str:
    lines = ["| class | Dice |", "|---|---:|"]
    for name, v in zip(class_names, result["dice_per_class"]):
        lines.append(f"| {name} | {v:.4f} |")
    lines.append(f"| **mean (foreground)** | **{result['mean_dice']:.4f}** |")
    return "\n".join(lines)


OUTCOME_COLUMNS = ("accuracy", "precision", "recall", "specificity", "auc_roc")


def format_outcome_table(models: dict) -> str:
    """``{name: outcome_metrics}`` as a markdown table."""
    lines = ["| model | " + " | ".join(OUTCOME_COLUMNS) + " |", "|---|" + "---:|" * len(OUTCOME_COLUMNS)]
    for name, m in models.items():
        lines.append(f"| {name} | " + " | ".join(f"{m.get(c, float('nan')):.3f}" for c in OUTCOME_COLUMNS) + " |")
    return "\n".join(lines)
