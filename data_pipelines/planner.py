"""Plans from fingerprints (nnU-Net v2's ``ExperimentPlanner``, simplified and stated): :class:`Plan` and
:func:`make_plan`.

A :class:`Plan` says how a data set is brought to the network: target spacing, 2D or 3D, patch and batch size,
normalisation per channel and the optional preprocessing (:mod:`data_pipelines.preprocessing` applies it). It is
stored as JSON beside the checkpoints and read back at prediction, never re-derived (STYLE.md 16).

Normalisation schemes (``Plan.channels[c]["scheme"]``):

* ``zscore_fg`` (MR): each case is z-scored by its own mean/std over its body mask (the crop's mask);
  outside it the value is 0 (nnU-Net's ``ZScoreNormalization`` with the mask). The plan's ``mean``/``std``
  are the data set's foreground statistics, used only for a case without a body mask.
* ``ct`` (CT): clip to ``[lower, upper]`` (the 0.5 / 99.5 percentiles of the labelled voxels over the data
  set) then ``(x - mean) / std`` with the data set's labelled-voxel statistics (nnU-Net's
  ``CTNormalization``).
* ``rgb``: ``(x - lower) / (upper - lower)`` per channel, with ``lower = 0`` and ``upper = 255`` (or 1 for
  pictures already in [0, 1]).
* ``zscore``: ``(x - mean) / std`` with the data set's statistics.

Planning rules (``make_plan``; nnU-Net's, simplified):

* target spacing: the median spacing per axis; when the data set is anisotropic (the coarsest median spacing
  is more than ``ANISOTROPY`` = 3 times the finest) the coarse axis gets the 10th percentile of its spacings
  instead of the median (nnU-Net), and, unless ``spatial_dims`` is given, the plan is **2D**, with slices
  across the coarse axis; otherwise 3D (volumes) or 2D (pictures);
* patch size: the median shape at the target spacing (after the crop when ``crop="nonzero"``), each axis
  rounded up to a multiple of ``divisor`` (16: four poolings); while a patch of that size with a batch of 2
  exceeds ``memory_budget`` voxels, the axis that is longest in mm (ties: in voxels) shrinks by ``divisor``;
* batch size: ``memory_budget // patch voxels``, at least 2, at most what covers 5 % of the data set's voxels
  (nnU-Net's cap), but never below 2.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

from data_pipelines.atomic import write_json

__all__ = ["Plan", "make_plan", "SCHEMES", "DENOISERS", "CROPS", "MODALITIES", "ANISOTROPY", "DEFAULT_BUDGET"]

SCHEMES = ("zscore_fg", "ct", "rgb", "zscore")
DENOISERS = (None, "median", "curvature_flow")
CROPS = (None, "nonzero")
MODALITIES = {"MR": "zscore_fg", "CT": "ct", "RGB": "rgb", "other": "zscore"}
ANISOTROPY = 3.0  # nnU-Net's threshold: coarsest / finest median spacing above this is anisotropic
#: Default voxel budget of one batch (batch size x patch voxels): nnU-Net's typical 3D patch 128^3 at batch 2,
#: and 12 slices of 256^2 in 2D.
DEFAULT_BUDGET = {3: 2 * 128 ** 3, 2: 12 * 256 ** 2}


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a data set is brought to the network: geometry, patch, batch, normalisation, preprocessing.

    ``spacing`` is in LPS array order (see the module docstring), ``None`` for pictures (kept as they are).
    ``patch_size`` has ``spatial_dims`` entries (in-plane for a 2D plan of volumes). ``slice_axis``: for a 2D
    plan of volumes, the LPS array axis the slices are taken across (moved last by ``preprocess_case``);
    ``None`` otherwise.
    """

    spatial_dims: int
    spacing: tuple[float, ...] | None
    patch_size: tuple[int, ...]
    batch_size: int
    channels: tuple[dict, ...]
    preprocessing: dict
    slice_axis: int | None = None

    def __post_init__(self):
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"plan: spatial_dims must be 2 or 3, got {self.spatial_dims!r}")
        if len(self.patch_size) != self.spatial_dims or any(int(p) < 1 for p in self.patch_size):
            raise ValueError(f"plan: patch_size {self.patch_size} must be {self.spatial_dims} positive sizes")
        if self.spacing is not None and (len(self.spacing) not in (2, 3) or
                                         not all(np.isfinite(s) and s > 0 for s in self.spacing)):
            raise ValueError(f"plan: spacing must be None or 2-3 positive numbers, got {self.spacing}")
        if int(self.batch_size) < 1:
            raise ValueError(f"plan: batch_size must be positive, got {self.batch_size}")
        if not self.channels:
            raise ValueError("plan: channels is empty")
        for i, ch in enumerate(self.channels):
            scheme = ch.get("scheme")
            if scheme not in SCHEMES:
                raise ValueError(f"plan: channel {i} scheme {scheme!r} is not one of {SCHEMES}")
            need = {"zscore_fg": ("mean", "std"), "zscore": ("mean", "std"), "ct": ("mean", "std", "lower", "upper"),
                    "rgb": ("lower", "upper")}[scheme]
            missing = [k for k in need if not isinstance(ch.get(k), (int, float)) or not np.isfinite(ch[k])]
            if missing:
                raise ValueError(f"plan: channel {i} ({scheme}) needs finite {missing}, got {ch}")
        pre = self.preprocessing
        if pre.get("denoise") not in DENOISERS:
            raise ValueError(f"plan: preprocessing.denoise must be one of {DENOISERS}, got {pre.get('denoise')!r}")
        if pre.get("crop") not in CROPS:
            raise ValueError(f"plan: preprocessing.crop must be one of {CROPS}, got {pre.get('crop')!r}")
        if not isinstance(pre.get("n4", False), bool):
            raise ValueError(f"plan: preprocessing.n4 must be true or false, got {pre.get('n4')!r}")
        if self.slice_axis is not None:
            if self.spatial_dims != 2 or self.spacing is None or len(self.spacing) != 3 or \
                    self.slice_axis not in (0, 1, 2):
                raise ValueError(f"plan: slice_axis {self.slice_axis!r} needs a 2D plan of volumes (3 spacings)")

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    def to_dict(self) -> dict:
        return {"spatial_dims": int(self.spatial_dims),
                "spacing": None if self.spacing is None else [float(s) for s in self.spacing],
                "patch_size": [int(p) for p in self.patch_size], "batch_size": int(self.batch_size),
                "channels": [dict(c) for c in self.channels], "preprocessing": dict(self.preprocessing),
                "slice_axis": self.slice_axis}

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        if not isinstance(d, dict):
            raise ValueError(f"plan must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ("spatial_dims", "spacing", "patch_size", "batch_size", "channels", "preprocessing")
                   if k not in d]
        if missing:
            raise ValueError(f"plan: missing fields {missing}")
        try:
            return cls(spatial_dims=int(d["spatial_dims"]),
                       spacing=None if d["spacing"] is None else tuple(float(s) for s in d["spacing"]),
                       patch_size=tuple(int(p) for p in d["patch_size"]), batch_size=int(d["batch_size"]),
                       channels=tuple(dict(c) for c in d["channels"]),
                       preprocessing={"denoise": None, "n4": False, "crop": None, **dict(d["preprocessing"])},
                       slice_axis=None if d.get("slice_axis") is None else int(d["slice_axis"]))
        except (TypeError, AttributeError) as e:
            raise ValueError(f"plan: malformed field ({e})") from None

    def save(self, path) -> None:
        """Write the plan as strict JSON, atomically (``data_pipelines.atomic.write_json``)."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "Plan":
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"plan file {path} does not exist")
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a plan JSON file ({e})") from None
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


def _channel_norm(scheme: str, stats: dict, name: str) -> dict:
    if scheme == "rgb":
        upper = 1.0 if stats["max"] <= 1.0 else 255.0
        return {"name": name, "scheme": scheme, "lower": 0.0, "upper": upper}
    out = {"name": name, "scheme": scheme, "mean": stats["mean"], "std": max(stats["std"], 1e-8)}
    if scheme == "ct":
        out.update(lower=stats["percentile_00_5"], upper=stats["percentile_99_5"])
    return out


def make_plan(fingerprint: dict, *, modality: str = "MR", spatial_dims: int | None = None,
              memory_budget: int | None = None, divisor: int = 16, channel_names: Sequence[str] = (),
              denoise: str | None = None, n4: bool = False, crop: str | None = None) -> Plan:
    """A :class:`Plan` from a :func:`fingerprint` by the rules in the module docstring.

    ``modality``: ``MR`` (z-score over the foreground per case), ``CT`` (percentile clipping, then z-score
    with the data set's statistics), ``RGB`` (scaled to [0, 1]) or ``other`` (z-score with the data set's
    statistics). ``spatial_dims``: force 2D or 3D (``None``: the anisotropy rule). ``memory_budget``: voxels
    of one batch (default ``DEFAULT_BUDGET``). ``denoise`` / ``n4`` / ``crop``: the optional preprocessing.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    if denoise not in DENOISERS:
        raise ValueError(f"denoise must be one of {DENOISERS}, got {denoise!r}")
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    if n4 and modality != "MR":
        raise ValueError(f"n4 bias-field correction is for MR images, got modality={modality!r}")
    if int(divisor) < 1:
        raise ValueError(f"divisor must be positive, got {divisor}")
    nd_in = int(fingerprint["spatial_dims"])
    pictures = bool(fingerprint.get("pictures", False))
    spacings = np.asarray(fingerprint["spacings"], np.float64)
    median_spacing = np.median(spacings, axis=0)
    target = median_spacing.copy()
    aniso = nd_in == 3 and median_spacing.max() > ANISOTROPY * median_spacing.min()
    coarse = int(np.argmax(median_spacing))
    if aniso:
        target[coarse] = float(np.percentile(spacings[:, coarse], 10))
    if spatial_dims is None:
        spatial_dims = 2 if (nd_in == 2 or aniso) else 3
    spatial_dims = int(spatial_dims)
    if spatial_dims not in (2, 3) or spatial_dims > nd_in:
        raise ValueError(f"spatial_dims={spatial_dims} impossible for {nd_in}D data")
    slice_axis = None
    if spatial_dims == 2 and nd_in == 3:
        # the slices go across the coarsest axis; an isotropic data set is sliced axially (LPS axis 2)
        slice_axis = coarse if aniso else 2
    key = "cropped_shapes" if crop == "nonzero" else "shapes"
    shapes = np.asarray(fingerprint[key], np.float64)
    at_target = np.median(shapes * spacings / target[None, :], axis=0) if not pictures else np.median(shapes, 0)
    axes = [a for a in range(nd_in) if a != slice_axis]
    median_shape = at_target[axes]
    phys = target[axes] if not pictures else np.ones(len(axes))
    budget = int(memory_budget) if memory_budget is not None else DEFAULT_BUDGET[spatial_dims]
    if budget < 2:
        raise ValueError(f"memory_budget must be at least 2 voxels, got {budget}")
    d = int(divisor)
    patch = [max(d, int(np.ceil(s / d)) * d) for s in median_shape]
    while 2 * int(np.prod(patch)) > budget and any(p > d for p in patch):
        cand = [a for a in range(len(patch)) if patch[a] > d]
        a = max(cand, key=lambda a: (patch[a] * phys[a], patch[a]))
        patch[a] -= d
    while 2 * int(np.prod(patch)) > budget and any(p > 1 for p in patch):  # a budget below divisor^D
        a = int(np.argmax(patch))
        patch[a] = max(1, patch[a] // 2)
    voxels = int(np.prod(patch))
    batch = max(2, budget // voxels)
    total = float(np.prod(at_target)) * int(fingerprint["num_cases"])
    batch = max(2, min(batch, int(0.05 * total / voxels)))
    scheme = MODALITIES[modality]
    nch = int(fingerprint["num_channels"])
    names = list(channel_names) or [f"channel{c}" for c in range(nch)]
    if len(names) != nch:
        raise ValueError(f"{len(names)} channel names {names} for {nch} channels")
    channels = tuple(_channel_norm(scheme, fingerprint["intensity"][c], names[c]) for c in range(nch))
    spacing = None if pictures else tuple(float(s) for s in target)
    return Plan(spatial_dims=spatial_dims, spacing=spacing, patch_size=tuple(patch), batch_size=int(batch),
                channels=channels, preprocessing={"denoise": denoise, "n4": bool(n4), "crop": crop},
                slice_axis=slice_axis)
