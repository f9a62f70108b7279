"""Per-voxel uncertainty of a segmentation: predictive entropy, and mutual information when the prediction is an
ensemble (of mirrored inputs, ``tta``, or of folds).

* entropy ``H[p] = -sum_k p_k log p_k`` of the (ensemble-mean) class probabilities ``[*S, K]``, in nats
  (``0 log 0 = 0``); high where the classes are close, at a lesion's border and where the model is unsure;
* mutual information (BALD; Houlsby et al. 2011, Gal et al. 2017): ``H[mean_m p_m] - mean_m H[p_m]`` over the
  members ``[M, *S, K]`` of an ensemble, the part of the entropy that comes from the members disagreeing
  (0 when they agree, whatever their entropy).

Both are at most ``log K``; the maps this module hands out are divided by ``log K``, so they lie in [0, 1]
whatever the number of classes (:func:`uncertainty_maps`). The probabilities come from the one prediction path
(``zoo.prediction.predict_case_proba``, on the input's grid, with the model's stored temperature
``zoo.calibration`` applied by the caller); ``python -m zoo.predict --uncertainty PATH`` writes the entropy map
beside the label map (and, with ``--tta``, the mutual-information map, :func:`mutual_information_path`).

For the page: :func:`entropy_map` gives the normalised entropy ``[*S]`` of one case on its input grid.
"""

from __future__ import annotations

import math
import os

import numpy as np

from data_pipelines import readers
from zoo.prediction import CaseProba, predict_case_proba
from zoo.pretrained import Pretrained

__all__ = ["entropy", "mutual_information", "uncertainty_maps", "entropy_map", "ensemble_case_proba",
           "mutual_information_path"]


def entropy(proba) -> np.ndarray:
    """Entropy in nats over the last axis of ``proba [..., K]`` (probabilities; ``0 log 0 = 0``)."""
    p = np.asarray(proba, np.float32)  # float32 throughout: a 3D ensemble's members are large
    if p.ndim < 1 or p.shape[-1] < 1:
        raise ValueError(f"proba must be [..., K] with K >= 1 classes; got shape {p.shape}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0):
        raise ValueError("proba must hold finite, non-negative probabilities")
    return -(p * np.log(np.maximum(p, np.finfo(np.float32).tiny))).sum(axis=-1)  # p = 0 adds 0 * log(tiny) = 0


def mutual_information(members) -> np.ndarray:
    """BALD mutual information ``H[mean_m p_m] - mean_m H[p_m]`` of ``members [M, ..., K]`` (nats, >= 0)."""
    m = np.asarray(members, np.float32)
    if m.ndim < 2 or m.shape[0] < 1:
        raise ValueError(f"members must be [M, ..., K] with M >= 1; got shape {m.shape}")
    mean_entropy = sum(entropy(member) for member in m) / len(m)  # one member at a time
    mi = entropy(m.mean(axis=0)) - mean_entropy
    return np.maximum(mi, 0.0).astype(np.float32)  # rounding can leave -1e-7 where the members agree


def uncertainty_maps(case: CaseProba) -> dict[str, np.ndarray]:
    """``{"entropy": [*S]}`` and, when ``case`` has two or more members, ``"mutual_information"``: each divided by
    ``log K`` (so in [0, 1]); ``K = 1`` gives zeros."""
    k = case.proba.shape[-1]
    scale = math.log(k) if k > 1 else 1.0
    out = {"entropy": np.clip(entropy(case.proba) / scale, 0.0, 1.0)}
    if case.members is not None and len(case.members) > 1:
        out["mutual_information"] = np.clip(mutual_information(case.members) / scale, 0.0, 1.0)
    return out


def entropy_map(pre: Pretrained, image: np.ndarray, meta: readers.ImageMeta, *, tta: bool = False,
                temperature: float | None = None, overlap: float = 0.5, batch_size: int = 4) -> np.ndarray:
    """The normalised predictive entropy ``[*S]`` in [0, 1] of ``image [*S, C]`` on its input grid (the page's
    overlay). ``temperature``: the model's stored one (``zoo.calibration.model_temperature``)."""
    case = predict_case_proba(pre, image, meta, tta=tta, overlap=overlap, batch_size=batch_size,
                              temperature=temperature)
    return uncertainty_maps(case)["entropy"]


def ensemble_case_proba(pres, image: np.ndarray, meta: readers.ImageMeta, *, temperatures=None,
                        **kwargs) -> CaseProba:
    """A fold ensemble's prediction: each model's probabilities on the input grid (``predict_case_proba`` with
    ``kwargs``; ``temperatures`` one per model or ``None``) are the members, their mean the probabilities."""
    pres = list(pres)
    if not pres:
        raise ValueError("ensemble_case_proba needs at least one model")
    temps = list(temperatures) if temperatures is not None else [None] * len(pres)
    if len(temps) != len(pres):
        raise ValueError(f"{len(pres)} models but {len(temps)} temperatures")
    stack = np.stack([predict_case_proba(p, image, meta, temperature=t, **kwargs).proba
                      for p, t in zip(pres, temps)])
    return CaseProba(stack.mean(axis=0), stack)


def mutual_information_path(path: str) -> str:
    """Where the mutual-information map goes beside the entropy map ``path``: ``unc.nii.gz`` -> ``unc_mi.nii.gz``."""
    folder, name = os.path.split(path)
    low = name.lower()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".png"):
        if low.endswith(suffix):
            return os.path.join(folder, name[:-len(suffix)] + "_mi" + name[-len(suffix):])
    raise ValueError(f"--uncertainty {path}: write the map as .nii.gz/.nii, .nrrd, .mha or .png")
