"""Accumulate metrics over a data set batch by batch, without holding the predictions.

``SegmentationAccumulator.update(pred, target)`` turns each case into a few numbers at once
(one row per case × structure × metric) and adds its confusion matrix to a running total, so
memory is O(cases × structures × metrics) whatever the volume size. ``HistogramAUC`` keeps
per-class score histograms for voxel-wise AUC-ROC / AUPRC over a whole data set.
"""

from __future__ import annotations

import warnings

import numpy as np

import scoring as M

__all__ = ["SegmentationAccumulator", "HistogramAUC", "DEFAULT_METRICS"]

DEFAULT_METRICS = ("dice", "jaccard", "accuracy", "sensitivity", "specificity")


class SegmentationAccumulator:
    """Per-case, per-structure metrics of label maps, streamed.

    Args:
      num_classes: ``K``; label maps hold ``0..K-1``.
      metrics: names from :data:`scoring.METRICS`.
      structures: ``{name: labels}``; a structure's mask is ``isin(label_map, labels)``.
        Default: one structure per foreground class ``1..K-1`` (class 0 as foreground when K=1).
      spacing: voxel spacing for the surface metrics.
      tolerance: ``surface_dice`` tolerance; ``one_empty_distance``: distance metrics' value
        when exactly one mask is empty (``inf`` unless set, e.g. to the image diagonal).
    """

    def __init__(self, num_classes: int, metrics=DEFAULT_METRICS, structures: dict | None = None, *,
                 class_names=None, spacing=None, tolerance: float = 1.0,
                 one_empty_distance: float = float("inf")):
        if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        unknown = [m for m in metrics if m not in M.METRICS]
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; expected some of {sorted(M.METRICS)}")
        self.num_classes = int(num_classes)
        self.metrics = tuple(metrics)
        names = list(class_names) if class_names is not None else [f"class{k}" for k in range(num_classes)]
        if len(names) != num_classes:
            raise ValueError(f"class_names has {len(names)} names for num_classes={num_classes}")
        self.class_names = names
        if structures is None:
            ks = range(1, num_classes) if num_classes > 1 else range(1)
            structures = {names[k]: (k,) for k in ks}
        for name, labels in structures.items():
            bad = [lab for lab in labels if not 0 <= int(lab) < num_classes]
            if bad:
                raise ValueError(f"structure {name!r} has labels {bad} outside [0, {num_classes - 1}]")
        self.structures = {k: tuple(int(v) for v in labels) for k, labels in structures.items()}
        self.spacing = spacing
        self.tolerance = float(tolerance)
        self.one_empty_distance = float(one_empty_distance)
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        self.case_ids: list = []
        self._rows: list[np.ndarray] = []  # one [structures, metrics] array per case
        self._volumes: list[np.ndarray] = []  # [structures, 2]: target and prediction voxel counts

    def update(self, pred, target, case_ids=None) -> None:
        """Add a batch of label maps ``pred``/``target`` ``[B, *S]`` (or one case ``[*S]`` with ``case_ids=[id]``)."""
        pred, target = np.asarray(pred), np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
        if pred.ndim < 2:
            raise ValueError(f"expected label maps [B, *S]; got shape {pred.shape}")
        if case_ids is None:
            start = len(self.case_ids)
            case_ids = list(range(start, start + len(pred)))
        case_ids = list(case_ids)
        if len(case_ids) != len(pred):
            raise ValueError(f"case_ids has {len(case_ids)} entries for a batch of {len(pred)}")
        for cid, p, t in zip(case_ids, pred, target):
            self.confusion += M.confusion_matrix(p, t, self.num_classes)
            rows, vols = [], []
            for labels in self.structures.values():
                pm, tm = np.isin(p, labels), np.isin(t, labels)
                res = M.binary_metrics(pm, tm, self.metrics, spacing=self.spacing, tolerance=self.tolerance,
                                       one_empty_distance=self.one_empty_distance)
                rows.append([res[m] for m in self.metrics])
                vols.append([np.count_nonzero(tm), np.count_nonzero(pm)])
            self.case_ids.append(cid)
            self._rows.append(np.asarray(rows, np.float64))
            self._volumes.append(np.asarray(vols, np.int64))

    def __len__(self) -> int:
        return len(self.case_ids)

    @property
    def values(self) -> np.ndarray:
        """Per-case metrics ``[N, num_structures, num_metrics]``."""
        if not self._rows:
            return np.zeros((0, len(self.structures), len(self.metrics)))
        return np.stack(self._rows)

    @property
    def volumes(self) -> np.ndarray:
        """``[N, num_structures, 2]``: target and predicted voxel counts per case and structure."""
        if not self._volumes:
            return np.zeros((0, len(self.structures), 2), np.int64)
        return np.stack(self._volumes)

    def per_case(self, metric: str, structure: str | None = None) -> np.ndarray:
        """``[N]`` values of ``metric`` for ``structure`` (default: NaN-mean over structures)."""
        if metric not in self.metrics:
            raise ValueError(f"metric {metric!r} was not accumulated; have {self.metrics}")
        j = self.metrics.index(metric)
        if structure is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                return np.nanmean(self.values[:, :, j], axis=1) if len(self) else np.zeros(0)
        names = list(self.structures)
        if structure not in names:
            raise ValueError(f"unknown structure {structure!r}; have {names}")
        return self.values[:, names.index(structure), j]

    def summary(self) -> dict:
        """Case-mean (NaN-aware) per structure and metric, plus pooled (micro) confusion metrics."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            means = np.nanmean(self.values, axis=0) if len(self) else np.full(
                (len(self.structures), len(self.metrics)), np.nan)
        out = {"num_cases": len(self), "per_structure": {
            s: {m: float(means[i, j]) for j, m in enumerate(self.metrics)}
            for i, s in enumerate(self.structures)}}
        out["pooled_per_class"] = {self.class_names[k]: {m: float(v[k]) for m, v in
                                                         M.per_class_metrics(self.confusion).items()}
                                   for k in range(self.num_classes)}
        out["confusion_matrix"] = self.confusion.tolist()
        return out


class HistogramAUC:
    """Voxel-wise AUC-ROC and AUPRC over a data set from score histograms (one-vs-rest per class).

    Scores are binned to ``num_bins`` levels ``round(s * (num_bins - 1))``; scores in one bin
    count as tied, so the result is exact for scores on that grid and within one bin's
    resolution otherwise.
    """

    def __init__(self, num_classes: int, num_bins: int = 1001):
        if num_bins < 2:
            raise ValueError(f"num_bins must be >= 2, got {num_bins}")
        self.num_classes = int(num_classes)
        self.num_bins = int(num_bins)
        self.pos = np.zeros((num_classes, num_bins), np.int64)
        self.neg = np.zeros((num_classes, num_bins), np.int64)

    def update(self, probs, target) -> None:
        """``probs [B, *S, K]`` in [0, 1], ``target`` label maps ``[B, *S]``."""
        probs = np.asarray(probs, np.float64)
        target = np.asarray(target)
        if probs.shape[:-1] != target.shape or probs.shape[-1] != self.num_classes:
            raise ValueError(f"probs must be target.shape + (K={self.num_classes},); got probs {probs.shape}, "
                             f"target {target.shape}")
        if np.isnan(probs).any():
            raise ValueError("probs contains NaN")
        if probs.min() < 0 or probs.max() > 1:
            raise ValueError(f"probs outside [0, 1] (range [{probs.min()}, {probs.max()}])")
        bins = np.rint(probs * (self.num_bins - 1)).astype(np.int64)
        for k in range(self.num_classes):
            pos = target == k
            self.pos[k] += np.bincount(bins[..., k][pos], minlength=self.num_bins)
            self.neg[k] += np.bincount(bins[..., k][~pos], minlength=self.num_bins)

    def auc_roc(self) -> np.ndarray:
        """``[K]`` AUC-ROC per class (NaN when a class is absent or everywhere)."""
        out = np.full(self.num_classes, np.nan)
        for k in range(self.num_classes):
            p, n = self.pos[k].astype(np.float64), self.neg[k].astype(np.float64)
            if p.sum() and n.sum():
                below = np.cumsum(n) - n
                out[k] = np.sum(p * (below + 0.5 * n)) / (p.sum() * n.sum())
        return out

    def auprc(self) -> np.ndarray:
        """``[K]`` average precision per class (NaN when a class is absent)."""
        out = np.full(self.num_classes, np.nan)
        for k in range(self.num_classes):
            p, n = self.pos[k][::-1].astype(np.float64), self.neg[k][::-1].astype(np.float64)
            if not p.sum():
                continue
            tp, fp = np.cumsum(p), np.cumsum(n)
            used = (p + n) > 0
            prec = tp[used] / (tp[used] + fp[used])
            rec = tp[used] / p.sum()
            out[k] = np.sum(np.diff(np.r_[0.0, rec]) * prec)
        return out
