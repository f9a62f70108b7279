"""Planning from a data set's fingerprint (nnU-Net v2's ``plan_and_preprocess``, simplified and stated).

``fingerprint(cases)`` summarises a data set (median spacing and shape, intensity statistics per channel over
the labelled foreground, class frequencies); ``make_plan(fingerprint, modality=...)`` turns it into a
:class:`Plan` (target spacing, 2D or 3D, patch and batch size, normalisation per channel, optional
preprocessing); ``preprocess_case`` applies a plan to one image, ``restore_case`` brings a prediction back to
the input's exact grid, ``preprocess_label`` puts a label map through the same geometry. The plan is stored
as JSON beside the checkpoints and read back at prediction, never re-derived (STYLE.md 16).

Geometry of a preprocessed case (``ctx`` records every step, so ``restore_case`` undoes it exactly):

1. volumes are reoriented to LPS (``geometry.reorient``: axis permutations and flips only, no interpolation),
   so the plan's ``spacing`` and ``patch_size`` are in LPS array order (for a file already in LPS/RAS-like
   axis order, which is nearly every scan, that is the file's own array order);
2. for a 2D plan of volumes the slice axis (``Plan.slice_axis``, the coarsest one) is moved last, so the
   2D slices are ``array[:, :, z]`` as everywhere else in the project;
3. ``crop="nonzero"``: the bounding box of the voxels that differ from the background (any channel differs
   from its own minimum: the zero padding of a raw scan, or the constant outside-the-brain value of the
   z-scored BraTS samples);
4. optional N4 bias-field correction (MR) and noise reduction (median or curvature flow), per channel,
   SimpleITK, on the native grid;
5. normalisation per channel (below);
6. resampling to the plan's spacing with ``sitk.Resample`` (linear for images, nearest for labels); voxel 0
   keeps its world position and each axis gets ``max(round(n * spacing_in / spacing_out), 1)`` voxels; a 2D
   plan never resamples along the slice axis; ``spacing=None`` (photos) never resamples.

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

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from typing import Iterable, Sequence

import numpy as np

from data_pipelines import geometry, readers

__all__ = ["Plan", "fingerprint", "make_plan", "preprocess_case", "restore_case", "preprocess_label",
           "body_mask", "read_cases", "SCHEMES", "DENOISERS", "CROPS", "MODALITIES", "ANISOTROPY",
           "DEFAULT_BUDGET", "main"]

SCHEMES = ("zscore_fg", "ct", "rgb", "zscore")
DENOISERS = (None, "median", "curvature_flow")
CROPS = (None, "nonzero")
MODALITIES = {"MR": "zscore_fg", "CT": "ct", "RGB": "rgb", "other": "zscore"}
ANISOTROPY = 3.0  # nnU-Net's threshold: coarsest / finest median spacing above this is anisotropic
#: Default voxel budget of one batch (batch size x patch voxels): nnU-Net's typical 3D patch 128^3 at batch 2,
#: and 12 slices of 256^2 in 2D.
DEFAULT_BUDGET = {3: 2 * 128 ** 3, 2: 12 * 256 ** 2}
_SAMPLES_PER_CASE = 10_000  # foreground voxels sampled per case for the intensity statistics (nnU-Net's number)


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
        """Write the plan as JSON atomically (a temporary file in the same folder, then ``os.replace``)."""
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".tmp-plan-", suffix=".json", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_dict(), f, indent=2, allow_nan=False)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

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


# --------------------------------------------------------------------------------------------- fingerprint

def _is_picture(meta: readers.ImageMeta) -> bool:
    return meta.format == "picture"


def _lps_perm(meta: readers.ImageMeta) -> list[int]:
    """Input axis of each LPS output axis (what ``geometry.reorient(..., "LPS")`` permutes)."""
    if meta.ndim != 3 or _is_picture(meta):
        return list(range(meta.ndim))
    d = meta.direction_matrix
    world = [int(np.argmax(np.abs(d[:, a]))) for a in range(3)]
    if sorted(world) != [0, 1, 2]:
        raise ValueError(f"{meta.path or 'image'}: oblique direction {d.tolist()} cannot be reoriented by axis flips")
    return [world.index(w) for w in range(3)]


def body_mask(image: np.ndarray) -> np.ndarray:
    """``[*S]`` bool: voxels where any channel differs from that channel's minimum (the background)."""
    flat = image.reshape(-1, image.shape[-1])
    return np.any(image != flat.min(axis=0), axis=-1)


def _bbox_shape(mask: np.ndarray) -> list[int]:
    nz = [np.flatnonzero(np.any(mask, axis=tuple(b for b in range(mask.ndim) if b != a))) for a in range(mask.ndim)]
    return [int(v[-1] - v[0] + 1) if len(v) else int(n) for v, n in zip(nz, mask.shape)]


def fingerprint(cases: Iterable) -> dict:
    """Summary of a data set. ``cases``: ``(image [*S, C] float32, label [*S] int or None, meta)`` triples.

    Returns a JSON-able dict: ``num_cases``, ``spatial_dims``, ``num_channels``, ``pictures`` (all cases are
    2D pictures without geometry), per case ``spacings`` / ``shapes`` / ``cropped_shapes`` (LPS order, the
    crop = the body mask's bounding box), ``median_spacing`` / ``median_shape`` / ``median_cropped_shape``,
    ``intensity`` (per channel ``mean``, ``std``, ``min``, ``max``, ``median``, ``percentile_00_5``,
    ``percentile_99_5`` over up to 10,000 labelled voxels per case, seeded; the body mask when a case has no
    label or no labelled voxel), ``class_frequencies`` (fraction of all voxels per label value 0..K-1) and
    ``total_voxels``.
    """
    spacings, shapes, cropped, samples, counts, pictures = [], [], [], [], None, []
    nd = nch = None
    total = 0
    for i, case in enumerate(cases):
        image, label, meta = case
        image = np.asarray(image)
        if image.ndim != meta.ndim + 1:
            raise ValueError(f"case {i} ({meta.path or 'array'}): image {image.shape} is not [*S, C] with "
                             f"{meta.ndim} spatial axes")
        if nd is None:
            nd, nch = meta.ndim, image.shape[-1]
        elif meta.ndim != nd or image.shape[-1] != nch:
            raise ValueError(f"case {i} ({meta.path or 'array'}): {meta.ndim}D with {image.shape[-1]} channels, "
                             f"but the first case is {nd}D with {nch}")
        perm = _lps_perm(meta)
        pictures.append(_is_picture(meta))
        spacings.append([float(meta.spacing[p]) for p in perm])
        shapes.append([int(image.shape[p]) for p in perm])
        body = body_mask(image)
        bb = _bbox_shape(body)
        cropped.append([bb[p] for p in perm])
        total += int(body.size)
        fg = None
        if label is not None:
            label = np.asarray(label)
            if label.shape != image.shape[:-1]:
                raise ValueError(f"case {i}: label {label.shape} does not match image {image.shape[:-1]}")
            if label.size and label.min() < 0:
                raise ValueError(f"case {i}: negative label values {int(label.min())}")
            c = np.bincount(label.reshape(-1).astype(np.int64))
            counts = c if counts is None else np.pad(counts, (0, max(len(c) - len(counts), 0))) + \
                np.pad(c, (0, max(len(counts) - len(c), 0)))
            fg = label > 0
        if fg is None or not fg.any():
            fg = body if body.any() else np.ones(body.shape, bool)
        idx = np.flatnonzero(fg)
        rng = np.random.default_rng([len(idx), i])
        if len(idx) > _SAMPLES_PER_CASE:
            idx = np.sort(rng.choice(idx, _SAMPLES_PER_CASE, replace=False))
        samples.append(image.reshape(-1, nch)[idx].astype(np.float64))
    if nd is None:
        raise ValueError("fingerprint: no cases")
    vals = np.concatenate(samples)
    intensity = []
    for c in range(nch):
        v = vals[:, c]
        intensity.append({"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                          "max": float(v.max()), "median": float(np.median(v)),
                          "percentile_00_5": float(np.percentile(v, 0.5)),
                          "percentile_99_5": float(np.percentile(v, 99.5))})
    freqs = [] if counts is None else [float(x) for x in counts / counts.sum()]
    return {"num_cases": len(shapes), "spatial_dims": int(nd), "num_channels": int(nch),
            "pictures": bool(all(pictures)), "spacings": spacings, "shapes": shapes, "cropped_shapes": cropped,
            "median_spacing": [float(v) for v in np.median(np.asarray(spacings), axis=0)],
            "median_shape": [float(v) for v in np.median(np.asarray(shapes), axis=0)],
            "median_cropped_shape": [float(v) for v in np.median(np.asarray(cropped), axis=0)],
            "intensity": intensity, "class_frequencies": freqs, "total_voxels": int(total)}


# ------------------------------------------------------------------------------------------------ planning

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


# ----------------------------------------------------------------------------------------- preprocessing

def _sitk_resample(array: np.ndarray, in_spacing, out_spacing, out_shape, nearest: bool) -> np.ndarray:
    """Resample the spatial axes of ``array [*S]`` or ``[*S, C]`` (channels one by one) between two grids
    that share voxel 0 and the axis directions; points past the last voxel take the nearest edge value."""
    import SimpleITK as sitk

    nd = len(in_spacing)
    if tuple(array.shape[:nd]) == tuple(out_shape) and np.allclose(in_spacing, out_spacing, rtol=0, atol=1e-9):
        return array
    if array.ndim > nd:
        return np.stack([_sitk_resample(array[..., c], in_spacing, out_spacing, out_shape, nearest)
                         for c in range(array.shape[-1])], axis=-1)
    dtype = array.dtype
    # SimpleITK's index order is the reverse of numpy's: give it the reversed axes.
    src = sitk.GetImageFromArray(np.ascontiguousarray(array.T.astype(np.float32 if not nearest else np.int32)))
    src.SetSpacing([float(s) for s in in_spacing])
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in out_shape])
    f.SetOutputSpacing([float(s) for s in out_spacing])
    f.SetOutputOrigin([0.0] * nd)
    f.SetOutputDirection(np.eye(nd).ravel().tolist())
    f.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    f.SetUseNearestNeighborExtrapolator(True)
    out = sitk.GetArrayFromImage(f.Execute(src)).T
    return np.ascontiguousarray(out.astype(dtype if nearest else np.float32))


def _n4(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """N4 bias-field correction of one channel (shifted to positive values, fitted on a 4x shrunk copy
    over ``mask``, the full-resolution field divided out, the shift put back)."""
    import SimpleITK as sitk

    shift = float(x.min()) - 1.0
    img = sitk.GetImageFromArray(np.ascontiguousarray((x - shift).T.astype(np.float32)))
    m = sitk.GetImageFromArray(np.ascontiguousarray(mask.T.astype(np.uint8)))
    shrink = [4 if s >= 32 else 1 for s in x.shape]
    small, small_m = sitk.Shrink(img, shrink), sitk.Shrink(m, shrink)
    f = sitk.N4BiasFieldCorrectionImageFilter()
    f.SetMaximumNumberOfIterations([20] * 3)
    f.Execute(small, small_m)
    log_bias = f.GetLogBiasFieldAsImage(img)
    out = sitk.GetArrayFromImage(img / sitk.Exp(log_bias)).T
    return out.astype(np.float32) + shift


def _denoise(x: np.ndarray, method: str) -> np.ndarray:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(x.T.astype(np.float32)))
    if method == "median":
        img = sitk.Median(img, [1] * x.ndim)
    else:  # curvature flow; a time step stable in 2D and 3D
        img = sitk.CurvatureFlow(img, timeStep=0.0625, numberOfIterations=5)
    return sitk.GetArrayFromImage(img).T.astype(np.float32)


def _normalise(x: np.ndarray, ch: dict, mask: np.ndarray) -> np.ndarray:
    scheme = ch["scheme"]
    if scheme == "zscore_fg":
        v = x[mask]
        mu, sd = (float(v.mean()), float(v.std())) if v.size > 1 else (ch["mean"], ch["std"])
        out = (x - mu) / max(sd, 1e-8)
        return np.where(mask, out, 0.0).astype(np.float32)
    if scheme == "ct":
        x = np.clip(x, ch["lower"], ch["upper"])
        return ((x - ch["mean"]) / max(ch["std"], 1e-8)).astype(np.float32)
    if scheme == "rgb":
        return ((x - ch["lower"]) / max(ch["upper"] - ch["lower"], 1e-8)).astype(np.float32)
    return ((x - ch["mean"]) / max(ch["std"], 1e-8)).astype(np.float32)


def _orientation(meta: readers.ImageMeta, shape) -> tuple[list[int], list[bool], readers.ImageMeta]:
    """``(perm, flips, lps_meta)``: LPS axis ``a`` is input axis ``perm[a]``, reversed where ``flips[a]``."""
    if meta.ndim != 3 or _is_picture(meta):
        return list(range(meta.ndim)), [False] * meta.ndim, meta
    perm = _lps_perm(meta)
    _, lps = geometry.reorient(np.zeros(tuple(shape[:3]) + (1,), np.uint8), meta, "LPS")
    d_in, d_out = meta.direction_matrix, lps.direction_matrix
    flips = [bool(np.dot(d_out[:, a], d_in[:, perm[a]]) < 0) for a in range(3)]
    return perm, flips, lps


def _forward_axes(array: np.ndarray, perm, flips, slice_axis, nd: int) -> np.ndarray:
    """Input array axes -> LPS (permute, flip), then the slice axis last (2D plans of volumes)."""
    out = np.transpose(array, tuple(perm) + tuple(range(nd, array.ndim)))
    for a, f in enumerate(flips):
        if f:
            out = np.flip(out, axis=a)
    if slice_axis is not None:
        out = np.moveaxis(out, slice_axis, nd - 1)
    return out


def _backward_axes(array: np.ndarray, perm, flips, slice_axis, nd: int) -> np.ndarray:
    out = array
    if slice_axis is not None:
        out = np.moveaxis(out, nd - 1, slice_axis)
    for a, f in enumerate(flips):
        if f:
            out = np.flip(out, axis=a)
    inv = np.argsort(perm)
    return np.ascontiguousarray(np.transpose(out, tuple(int(i) for i in inv) + tuple(range(nd, array.ndim))))


def preprocess_case(image: np.ndarray, meta: readers.ImageMeta, plan: Plan) -> tuple[np.ndarray, dict]:
    """``image [*S, C]`` in its file geometry -> ``(array [*S', C] float32, ctx)`` by ``plan`` (module docstring).

    ``ctx`` (JSON-able) holds what :func:`restore_case` / :func:`preprocess_label` need: the input shape and
    geometry, the axis permutation/flips, the crop box, the native and the planned spacing and shapes.
    """
    image = np.asarray(image)
    nd = meta.ndim
    if image.ndim != nd + 1:
        raise ValueError(f"{meta.path or 'image'}: expected [*S, C] with {nd} spatial axes, got {image.shape}")
    if image.shape[-1] != plan.num_channels:
        raise ValueError(f"{meta.path or 'image'}: {image.shape[-1]} channels, the plan expects "
                         f"{plan.num_channels} ({[c.get('name') for c in plan.channels]})")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{meta.path or 'image'}: image contains NaN or Inf")
    if plan.spacing is not None and len(plan.spacing) != nd:
        raise ValueError(f"{meta.path or 'image'}: {nd}D image, the plan's spacing {plan.spacing} is "
                         f"{len(plan.spacing)}D")
    if plan.spatial_dims == 3 and nd != 3:
        raise ValueError(f"{meta.path or 'image'}: a 3D plan needs a volume, got a {nd}D image")
    perm, flips, lps = _orientation(meta, image.shape)
    slice_axis = plan.slice_axis if nd == 3 and plan.spatial_dims == 2 else None
    x = _forward_axes(image.astype(np.float32, copy=False), perm, flips, slice_axis, nd)
    spacing = [float(lps.spacing[a]) for a in range(nd)]
    target = None if plan.spacing is None else [float(s) for s in plan.spacing]
    if slice_axis is not None:
        spacing.append(spacing.pop(slice_axis))
        target.append(target.pop(slice_axis))
        target[-1] = spacing[-1]  # 2D plans never resample across slices
    oriented_shape = list(x.shape[:nd])
    mask = body_mask(x)
    if plan.preprocessing.get("crop") == "nonzero" and mask.any():
        box = [[int(v.min()), int(v.max()) + 1] for v in
               (np.flatnonzero(np.any(mask, axis=tuple(b for b in range(nd) if b != a))) for a in range(nd))]
    else:
        box = [[0, n] for n in oriented_shape]
    sl = tuple(slice(lo, hi) for lo, hi in box)
    x, mask = np.ascontiguousarray(x[sl]), mask[sl]
    cropped_shape = list(x.shape[:nd])
    chans = []
    for c, ch in enumerate(plan.channels):
        xc = x[..., c]
        if plan.preprocessing.get("n4"):
            xc = _n4(xc, mask if mask.any() else np.ones_like(mask))
        if plan.preprocessing.get("denoise"):
            xc = _denoise(xc, plan.preprocessing["denoise"])
        chans.append(_normalise(xc, ch, mask))
    x = np.stack(chans, axis=-1)
    if target is None:
        out_shape = cropped_shape
    else:
        out_shape = [max(int(round(cropped_shape[a] * spacing[a] / target[a])), 1) for a in range(nd)]
        x = _sitk_resample(x, spacing, target, out_shape, nearest=False)
    ctx = {"input_shape": [int(s) for s in image.shape[:nd]], "perm": [int(p) for p in perm],
           "flips": [bool(f) for f in flips], "slice_axis": slice_axis, "oriented_shape": oriented_shape,
           "crop": box, "cropped_shape": cropped_shape, "spacing_in": spacing,
           "spacing_out": spacing if target is None else target, "shape_out": [int(s) for s in out_shape],
           "meta": {"spacing": list(meta.spacing), "origin": list(meta.origin),
                    "direction": [list(r) for r in meta.direction], "path": meta.path, "format": meta.format}}
    return np.ascontiguousarray(x, dtype=np.float32), ctx


def preprocess_label(label: np.ndarray, meta: readers.ImageMeta, plan: Plan, ctx: dict) -> np.ndarray:
    """``label [*S]`` on the image's grid -> ``[*S']`` int32 through ``ctx``'s geometry (nearest neighbour)."""
    label = np.asarray(label)
    nd = meta.ndim
    if list(label.shape) != list(ctx["input_shape"]):
        raise ValueError(f"{meta.path or 'label'}: label shape {label.shape} does not match the image "
                         f"{tuple(ctx['input_shape'])}")
    y = _forward_axes(label.astype(np.int32), ctx["perm"], ctx["flips"], ctx["slice_axis"], nd)
    y = y[tuple(slice(lo, hi) for lo, hi in ctx["crop"])]
    y = _sitk_resample(y, ctx["spacing_in"], ctx["spacing_out"], ctx["shape_out"], nearest=True)
    return np.ascontiguousarray(y, dtype=np.int32)


def restore_case(array: np.ndarray, ctx: dict, *, order: int = 0) -> np.ndarray:
    """``[*S', ...]`` on the preprocessed grid -> the input's exact shape and grid (undo resampling, crop,
    slice-axis move and reorientation).

    ``order=0``: a label map ``[*S']`` (nearest neighbour; outside the crop: 0). ``order=1``: probabilities
    ``[*S', K]`` (linear; outside the crop: class 0 has probability 1, the others 0).
    """
    array = np.asarray(array)
    nd = len(ctx["input_shape"])
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (labels) or 1 (probabilities), got {order}")
    if list(array.shape[:nd]) != list(ctx["shape_out"]) or array.ndim != nd + order:
        want = tuple(ctx["shape_out"]) + ((("K",)) if order else ())
        raise ValueError(f"restore_case: expected an array of shape {want}, got {array.shape}")
    y = _sitk_resample(array, ctx["spacing_out"], ctx["spacing_in"], ctx["cropped_shape"], nearest=order == 0)
    full_shape = tuple(ctx["oriented_shape"]) + tuple(array.shape[nd:])
    out = np.zeros(full_shape, y.dtype)
    if order == 1 and y.shape[-1]:
        out[..., 0] = 1
    out[tuple(slice(lo, hi) for lo, hi in ctx["crop"])] = y
    return _backward_axes(out, ctx["perm"], ctx["flips"], ctx["slice_axis"], nd)


# ------------------------------------------------------------------------------------- reading data sets

DATASET_MODALITY = {"brats": "MR", "isic": "RGB", "luna16": "CT", "folder": "other"}


def read_cases(name: str, data_dir: str, *, modalities=None, mask_foreground: str = "nonzero",
               allow_unpaired: bool = False):
    """``(cases, channel_names, class_names)`` of a real data set at full resolution: ``cases`` is a list of
    ``{"patient_id", "image" [*S, C] float32, "label" [*S] int32, "meta"}``: the intensities as
    ``readers.read_image`` gives them (raw pixel values, HU, the BraTS samples' values), so a plan made from
    them applies unchanged to a file read at prediction; volumes in LPS as the sources read them."""
    if not data_dir or not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} does not exist or is not a directory")
    if name == "brats":
        from data_pipelines import brats

        found = brats.find_brats_cases(data_dir)
        mods = brats._modalities(modalities) or brats.available_modalities(found)
        if not mods:
            raise ValueError(f"{data_dir}: no modality is present in every BraTS case")
        out = []
        for c in found:
            image, label, meta, _ = brats.read_brats_case(c, mods)
            out.append({"patient_id": c.patient_id, "image": image, "label": label, "meta": meta})
        return out, tuple(mods), brats.BRATS_CLASS_NAMES
    if name in ("isic", "folder"):
        from data_pipelines import image_folders

        fg = mask_foreground if name == "folder" else "nonzero"
        pairs = image_folders.find_image_mask_pairs(data_dir, allow_unpaired=allow_unpaired)
        out = []
        for pid, ip, mp in pairs:
            _, lab = image_folders.read_pair(ip, mp, fg)  # its checks and foreground rule
            # the pixel values as read_image gives them (what zoo.predict passes to preprocess_case); the
            # RGB plan scales them (0..255 -> 0..1); an alpha channel is dropped as read_pair does
            img, meta = readers.read_image(ip)
            img = np.ascontiguousarray(img[..., :3] if img.shape[-1] == 4 else img, dtype=np.float32)
            out.append({"patient_id": pid, "image": img, "label": lab, "meta": meta})
        nch = {c["image"].shape[-1] for c in out}
        if len(nch) != 1:
            raise ValueError(f"{data_dir}: images differ in channel count {sorted(nch)}")
        names = ("R", "G", "B") if nch == {3} else ("gray",) if nch == {1} else tuple(f"channel{i}" for i in
                                                                                  range(nch.pop()))
        classes = ("skin", "lesion") if name == "isic" else ("background", "foreground")
        return out, names, classes
    if name == "luna16":
        from data_pipelines import ct

        out = []
        for c in ct.find_ct_cases(data_dir):
            hu, lab, _, meta = ct.read_ct_case(c)
            out.append({"patient_id": c["patient_id"], "image": hu[..., None], "label": lab, "meta": meta})
        return out, ("CT",), ("background", "nodule")
    raise ValueError(f"dataset {name!r}: expected one of {sorted(DATASET_MODALITY)}")


def main(argv=None) -> int:
    """``python -m data_pipelines.planning --data_dir DIR --dataset NAME [--out plan.json]``: print the
    fingerprint and the plan as JSON; errors print ``error: ...`` and exit 2."""
    p = argparse.ArgumentParser(prog="python -m data_pipelines.planning", description=main.__doc__)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--dataset", required=True, choices=sorted(DATASET_MODALITY))
    p.add_argument("--out", default="", help="write the plan here (JSON)")
    p.add_argument("--modality", default="", help="MR | CT | RGB | other (default: the data set's)")
    p.add_argument("--spatial_dims", type=int, default=None)
    p.add_argument("--memory_budget", type=int, default=None, help="voxels of one batch")
    p.add_argument("--modalities", default=None, help="brats: channels, e.g. FLAIR,T1c")
    p.add_argument("--denoise", default=None, choices=["median", "curvature_flow"])
    p.add_argument("--n4", action="store_true")
    p.add_argument("--crop", default=None, choices=["nonzero"])
    args = p.parse_args(argv)
    try:
        cases, names, _ = read_cases(args.dataset, args.data_dir, modalities=args.modalities)
        fp = fingerprint((c["image"], c["label"], c["meta"]) for c in cases)
        plan = make_plan(fp, modality=args.modality or DATASET_MODALITY[args.dataset],
                         spatial_dims=args.spatial_dims, memory_budget=args.memory_budget, channel_names=names,
                         denoise=args.denoise, n4=args.n4, crop=args.crop)
        summary = {k: v for k, v in fp.items() if k not in ("spacings", "shapes", "cropped_shapes")}
        print(json.dumps({"fingerprint": summary, "plan": plan.to_dict()}, indent=2, allow_nan=False))
        if args.out:
            plan.save(args.out)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
