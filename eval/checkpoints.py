"""Evaluate a trained run's checkpoint on a split of its data, through the store and the prediction path.

:func:`evaluate_workdir` restores a work directory (a ``zoo.train`` or ``zoo.outcome`` run) with
``zoo.load_pretrained``, rebuilds the chosen split from the saved config (``eval.cases.load_split``) and
predicts it batch by batch through the run's one prediction path (``Pretrained.iter_proba``; nothing but
per-case numbers is kept). The evaluation follows the run's task:

* ``segmentation``: per-case overlap and surface metrics, and voxel-wise AUC-ROC / AUPRC of the
  softmax probabilities (:class:`ModelEval`);
* ``instance`` (Mask R-CNN): the same segmentation metrics of its **semantic label map** (each
  voxel the class of the instance mask covering it); **no voxel AUC**, because its probabilities
  are the one-hot of the predicted labels, so a "ranking" AUC would only restate sensitivity and
  specificity;
* ``outcome``: the patients' class probabilities (:class:`OutcomeEval`), with patient-level metrics
  (``scoring.outcome_metrics``) and bootstrap 95% CIs over patients.

A case's value of a metric is the NaN-mean over its structures: the BraTS regions WT/TC/ET
for the brain data (labels 1 necrosis, 2 oedema, 3 enhancing), else the foreground classes.
Distances are in voxels (or ``spacing``); a case with exactly one of prediction and target
empty gets the image diagonal as its distance so means stay finite. ``eval.tables`` turns the
evaluations into the report's tables and files.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

import scoring as M
from eval.bootstrap import bootstrap_statistics
from eval.cases import case_ids, load_split, model_inputs, structures_for
from eval.streaming import HistogramAUC, SegmentationAccumulator

__all__ = ["ModelEval", "OutcomeEval", "evaluate_workdir", "evaluate_arrays", "evaluate_outcome_arrays",
           "STUDY_METRICS", "DEFAULT_METRICS", "OUTCOME_METRICS", "OUTCOME_STRUCTURE"]

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
    sp = M.check_spacing(spacing, len(shape))
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
        acc.update(proba.argmax(-1), target, case_ids(arrays, start, n))
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
    return y, proba, case_ids(arrays, 0, len(y))


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
