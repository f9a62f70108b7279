"""Run a model exported by ``python -m zoo.export`` with jax, numpy and the standard library alone.

This file imports nothing of medzoo (nor scipy, SimpleITK, flax): ``zoo.export`` copies it into every export
folder (as ``load_exported.py`` for a bare network, as ``medzoo_runtime.py`` for an export that carries its
preprocessing), where it runs without the project installed.

**A bare network** (``python -m zoo.export --model NAME --out DIR``): ``model.stablehlo`` (``jax.export`` of the
inference function, probabilities for a batch of any size, the weights as constants) and ``exported.json`` (input
shapes with ``null`` for the symbolic batch, task, data contract)::

    from load_exported import ExportedModel
    m = ExportedModel.load("export/unet")
    proba = m.predict_proba(images)          # [N, *S, C] -> [N, *S, K]

``zoo.serve`` serves such a folder like a store entry (``ExportedModel`` has the ``meta`` / ``config`` / ``task``
/ ``predictor`` that ``zoo.prediction.predict_case`` uses).

**An export with its preprocessing** (``python -m zoo.export NAME --with-preprocessing --out DIR``): the image as
read from disk (``[*S, C]``, its spacing in mm and, for volumes, its direction matrix) in, the label map on the
input's grid out, by what ``zoo.prediction.predict_case`` does for that model, as ``preprocessing.json`` records
it (:class:`PreprocessedModel`)::

    import medzoo_runtime
    m = medzoo_runtime.load("export/unet-brats")
    labels = m.predict(image, spacing=(1.0, 1.0, 3.0), direction=direction, tta=False)   # [*S] int32

    python medzoo_runtime.py export/unet-brats case.npy --spacing 1 1 3 --out labels.npy [--tta]

* with a plan (``"mode": "plan"``): reorientation to LPS (axis permutations and flips; ``direction`` columns are
  the LPS world directions of the array axes, identity when omitted), the slice axis moved last for a 2D plan
  of volumes, the crop to the body mask's bounding box (``crop: "nonzero"``), the normalisation per channel,
  linear resampling to the plan's spacing (voxel 0 fixed, ``max(round(n * s_in / s_out), 1)`` voxels, edge values
  held: SimpleITK's ``Resample`` with a nearest-neighbour extrapolator, which training used), Gaussian-weighted
  sliding windows of the plan's patch, optional mirroring, then the probabilities resampled back linearly,
  class 0 outside the crop, the axes put back, argmax;
* without a plan (``"mode": "resize"``): the run's intensity scaling, volumes reoriented to LPS, each image
  (or each axial slice, for a 2D model on a volume) resized to the training size (``jax.image.resize``, linear,
  antialiased), the network, the probabilities resized back, argmax, the axes put back.

The windows (:func:`blend_windows`) are numpy on the host around the exported function: a deliberate twin of
``kernels.sliding_window`` (the same window starts, the same Gaussian, so the two agree to float32 rounding),
kept here because this file must run without medzoo.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys

import numpy as np

__all__ = ["MANIFEST", "ARTIFACT", "PREPROCESSING", "FORMAT", "FORMAT_VERSION", "is_exported", "blend_windows",
           "mirrorings", "tempered", "ExportedModel", "PreprocessedModel", "load", "lps_axes", "resample_linear",
           "scale_intensity", "normalise_channels", "plan_forward", "plan_back", "run_cli"]

MANIFEST = "exported.json"
ARTIFACT = "model.stablehlo"
PREPROCESSING = "preprocessing.json"
FORMAT = "medzoo-export-with-preprocessing"
FORMAT_VERSION = 1


def is_exported(path: str) -> bool:
    """Whether ``path`` holds a bare network export (``exported.json`` + ``model.stablehlo``)."""
    return os.path.isfile(os.path.join(path, MANIFEST)) and os.path.isfile(os.path.join(path, ARTIFACT))


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _deserialize(path: str):
    from jax import export

    with open(path, "rb") as f:
        return export.deserialize(bytearray(f.read()))


# ------------------------------------------------------------------------------------------------ windows

def _window_boxes(spatial, roi, overlap: float) -> list:
    """Window slices covering ``spatial`` (each axis >= its roi): starts step by ``roi * (1 - overlap)``, the last
    window flush with the far edge (``kernels.sliding_window.window_starts``, in its order)."""
    per_axis = []
    for n, r in zip(spatial, roi):
        step = max(int(r * (1.0 - overlap)), 1)
        per_axis.append(sorted({min(i * step, n - r) for i in range(-(-max(n - r, 0) // step) + 1)}))
    return [tuple(slice(a, a + r) for a, r in zip(starts, roi)) for starts in itertools.product(*per_axis)]


def _gaussian_weights(roi, sigma_scale: float = 0.125) -> np.ndarray:
    """Blending weights ``[*roi]`` (max 1, floor 1e-6; ``kernels.sliding_window.importance_map``)."""
    w = np.ones((), np.float64)
    for r in roi:
        w = np.multiply.outer(w, np.exp(-0.5 * ((np.arange(r) - (r - 1) / 2.0) / (sigma_scale * r)) ** 2))
    return np.maximum(w / w.max(), 1e-6).astype(np.float32)


def blend_windows(call, images, roi, overlap: float = 0.5, batch_size: int = 4,
                  sigma_scale: float = 0.125) -> np.ndarray:
    """``call([batch_size, *roi, C]) -> [batch_size, *roi, K]`` over Gaussian-weighted windows of ``images
    [B, *S, C]`` (zero-padded symmetrically up to ``roi`` where smaller) -> ``[B, *S, K]`` float32.

    The twin of ``kernels.sliding_window.sliding_window_inference`` (module docstring). Every call has
    ``batch_size`` windows (the last group padded with zeros), so the exported function compiles once."""
    images = np.asarray(images, np.float32)
    roi = tuple(int(r) for r in roi)
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    spatial = images.shape[1:-1]
    pads = [(max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(spatial, roi)]
    x = np.pad(images, [(0, 0), *pads, (0, 0)])
    weights = _gaussian_weights(roi, sigma_scale)
    boxes = _window_boxes(x.shape[1:-1], roi, overlap)
    norm = np.zeros(x.shape[1:-1], np.float64)
    for box in boxes:
        norm[box] += weights
    jobs = [(b, box) for b in range(len(x)) for box in boxes]
    acc = None
    for g in range(0, len(jobs), batch_size):
        group = jobs[g:g + batch_size]
        stack = np.zeros((batch_size, *roi, x.shape[-1]), np.float32)
        for i, (b, box) in enumerate(group):
            stack[i] = x[(b, *box)]
        pred = np.asarray(call(stack), np.float32)
        if acc is None:
            acc = np.zeros((*x.shape[:-1], pred.shape[-1]), np.float32)
        for p, (b, box) in zip(pred, group):
            acc[(b, *box)] += p * weights[..., None]
    out = acc * (1.0 / norm).astype(np.float32)[None, ..., None]
    return out[(slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial)), slice(None))]


def mirrorings(spatial_dims: int) -> list:
    """The mirrorings of test-time augmentation: ``()`` (none) then every non-empty set of spatial axes of
    ``[B, *S, C]`` (``zoo.inference.flip_axes``, in its order)."""
    axes = range(1, spatial_dims + 1)
    return [()] + [c for r in range(1, spatial_dims + 1) for c in itertools.combinations(axes, r)]


def _mirrored(proba_of, images, tta: bool, members: bool = False) -> np.ndarray:
    """``proba_of(images)`` averaged over the mirrorings (each mirrored back), or once without ``tta``;
    ``members``: the copies themselves, ``[M, B, *S, K]`` (the unmirrored one first)."""
    copies = []
    for axes in (mirrorings(images.ndim - 2) if tta else [()]):
        p = np.asarray(proba_of(np.flip(images, axes) if axes else images), np.float32)
        copies.append(np.flip(p, axes) if axes else p)
    if members:
        return np.stack(copies)
    total = copies[0]
    for p in copies[1:]:
        total = total + p
    return (total / len(copies)).astype(np.float32)


def tempered(proba: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(logits / temperature)`` from ``proba = softmax(logits)`` (``[..., K]``; the log-probabilities
    are the logits up to a per-voxel constant, which the softmax cancels): ``zoo.inference.tempered`` in numpy."""
    logp = np.log(np.maximum(np.asarray(proba, np.float32), np.finfo(np.float32).tiny)) / np.float32(temperature)
    e = np.exp(logp - logp.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ a bare network

class _Predictor:
    """The part of ``zoo.inference.Predictor`` that ``zoo.prediction`` uses, on the exported function."""

    def __init__(self, model: "ExportedModel"):
        self.model = model

    def sliding_window_proba(self, images, roi_size, *, overlap: float = 0.5, batch_size: int = 4,
                             tta: bool = False, temperature: float | None = None,
                             members: bool = False) -> np.ndarray:
        """``zoo.inference.Predictor.sliding_window_proba`` on the exported function (``temperature`` applied to
        each window's probabilities by :func:`tempered`)."""
        images = np.asarray(images, np.float32)
        roi = tuple(int(r) for r in roi_size)
        fixed = tuple(self.model.input_shapes["image"][1:-1])
        if roi != fixed:
            raise ValueError(f"this export takes windows {fixed}, not {roi}")
        if temperature is not None and not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")

        def call(x):
            p = self.model.call(x)
            return p if temperature is None else tempered(p, temperature)

        def once(x):
            if x.shape[1:-1] == fixed:
                return call(x)
            return blend_windows(call, x, roi, overlap, batch_size)

        return _mirrored(once, images, tta, members)


class ExportedModel:
    """An exported inference function with its contract: ``predict_proba`` / ``predict`` on numpy arrays."""

    def __init__(self, exported, manifest: dict, card: dict, folder: str):
        self.exported, self.manifest, self.card, self.folder = exported, manifest, card, folder
        self.meta = {"config": manifest["config"], "data": manifest["data"], "task": manifest["task"]}
        self.input_shapes = {k: tuple(v) for k, v in manifest["inputs"].items()}
        self.predictor = _Predictor(self)

    @classmethod
    def load(cls, folder: str) -> "ExportedModel":
        if not is_exported(folder):
            raise FileNotFoundError(f"{folder}: no {ARTIFACT} + {MANIFEST} (write one with python -m zoo.export)")
        card_path = os.path.join(folder, "card.json")
        card = _read_json(card_path) if os.path.isfile(card_path) else {}
        return cls(_deserialize(os.path.join(folder, ARTIFACT)), _read_json(os.path.join(folder, MANIFEST)), card,
                   folder)

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def config(self):
        import ml_collections  # only zoo.prediction's path needs the config as a ConfigDict

        return ml_collections.ConfigDict(self.meta["config"])

    def call(self, inputs):
        """The exported function on one batch (jax arrays in, jax array out; traceable)."""
        return self.exported.call(inputs)

    def _checked(self, inputs):
        if isinstance(inputs, dict):
            out = {k: np.asarray(inputs[k], np.float32) for k in self.input_shapes}
            shapes = {k: v.shape for k, v in out.items()}
        else:
            out = np.asarray(inputs, np.float32)
            shapes = {"image": out.shape}
        for k, want in self.input_shapes.items():
            have = shapes.get(k)
            if have is None or len(have) != len(want) or any(w is not None and w != h for w, h in zip(want, have)):
                raise ValueError(f"input {k!r}: expected shape {['N' if w is None else w for w in want]}, got {have}")
        return out

    def predict_proba(self, inputs, batch_size: int = 8) -> np.ndarray:
        x = self._checked(inputs)
        return np.asarray(self.call(x), np.float32)

    def predict(self, inputs, batch_size: int = 8) -> np.ndarray:
        return self.predict_proba(inputs, batch_size).argmax(-1).astype(np.int32)


# ------------------------------------------------------------------------------------------------ geometry

def lps_axes(direction) -> tuple[list[int], list[bool]]:
    """``(perm, flips)`` for a volume whose array axis ``a`` points along column ``a`` of ``direction`` (LPS
    world): LPS axis ``w`` is array axis ``perm[w]``, reversed where ``flips[w]``. Oblique directions (two axes
    nearest one world axis) raise ``ValueError``."""
    d = np.asarray(direction, np.float64)
    if d.shape != (3, 3) or not np.all(np.isfinite(d)):
        raise ValueError(f"direction must be a finite 3x3 matrix (columns: the array axes), got {d.tolist()}")
    nearest = [int(np.argmax(np.abs(d[:, a]))) for a in range(3)]
    if sorted(nearest) != [0, 1, 2]:
        raise ValueError(f"oblique direction {d.tolist()} cannot be reoriented by axis flips")
    perm = [nearest.index(w) for w in range(3)]
    return perm, [bool(d[w, perm[w]] < 0) for w in range(3)]


def _to_canonical(array: np.ndarray, perm, flips, slice_axis, nd: int) -> np.ndarray:
    """Input axes -> LPS (permute, then flip), then the slice axis last (a 2D plan of volumes)."""
    out = np.transpose(array, tuple(perm) + tuple(range(nd, array.ndim)))
    flipped = tuple(a for a, f in enumerate(flips) if f)
    out = np.flip(out, flipped) if flipped else out
    return np.moveaxis(out, slice_axis, nd - 1) if slice_axis is not None else out


def _from_canonical(array: np.ndarray, perm, flips, slice_axis, nd: int) -> np.ndarray:
    """The inverse of :func:`_to_canonical`."""
    out = np.moveaxis(array, nd - 1, slice_axis) if slice_axis is not None else array
    flipped = tuple(a for a, f in enumerate(flips) if f)
    out = np.flip(out, flipped) if flipped else out
    back = [int(i) for i in np.argsort(perm)]
    return np.ascontiguousarray(np.transpose(out, tuple(back) + tuple(range(nd, array.ndim))))


def resample_linear(array: np.ndarray, spacing_in, spacing_out, shape_out) -> np.ndarray:
    """Resample the leading ``len(spacing_in)`` axes of ``array`` from one grid to another that shares voxel 0
    and the axis directions, as SimpleITK's linear ``Resample`` with its nearest-neighbour extrapolator (what
    training used): output voxel ``i`` samples the input at continuous index ``i * s_out / s_in``; linearly (the
    edge value held up to half a voxel past the last one) where every axis's index is below ``n - 0.5`` (ITK's
    buffer), else the nearest voxel in every axis (ITK's extrapolator rounds the whole point). Separable linear
    passes in float64, the extrapolated points gathered after; float32 out."""
    nd = len(spacing_in)
    if tuple(array.shape[:nd]) == tuple(shape_out) and np.allclose(spacing_in, spacing_out, rtol=0, atol=1e-9):
        return np.asarray(array, np.float32)
    out = np.asarray(array, np.float64)
    nearest, outside = [], np.zeros(tuple(int(m) for m in shape_out), bool)
    for a in range(nd):
        n, m = array.shape[a], int(shape_out[a])
        index = np.arange(m, dtype=np.float64) * (float(spacing_out[a]) / float(spacing_in[a]))
        pos = np.clip(index, 0.0, n - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        frac = (pos - lo).reshape((m,) + (1,) * (out.ndim - a - 1))
        out = np.take(out, lo, axis=a) * (1.0 - frac) + np.take(out, hi, axis=a) * frac
        nearest.append(np.minimum(np.floor(index + 0.5).astype(np.int64), n - 1))
        past = index >= n - 0.5
        outside |= past.reshape((m,) + (1,) * (nd - a - 1))
    if outside.any():
        out[outside] = np.asarray(array, np.float64)[np.ix_(*nearest)][outside]
    return np.ascontiguousarray(out, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ intensities

def scale_intensity(image: np.ndarray, record: dict) -> np.ndarray:
    """A run's intensity-scaling record (``none``, ``unit_range``: integer pictures over their dtype's maximum,
    ``hu_window``: HU clipped to the window and mapped to [0, 1]) applied to ``image``, float32."""
    kind = record.get("kind")
    image = np.asarray(image)
    if kind == "unit_range" and np.issubdtype(image.dtype, np.integer):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    if kind == "hu_window":
        center = (float(record["window"][0]) + float(record["window"][1])) / 2.0
        width = float(record["window"][1]) - float(record["window"][0])
        lo, hi = center - width / 2.0, center + width / 2.0
        return ((np.clip(image.astype(np.float32), lo, hi) - lo) / width).astype(np.float32)
    if kind in ("none", "unit_range"):
        return image.astype(np.float32)
    raise ValueError(f"intensity scaling {record!r}: unknown kind")


def normalise_channels(x: np.ndarray, channels: list, mask: np.ndarray) -> np.ndarray:
    """Each channel of ``x [*S, C]`` by its plan entry (``zscore_fg``: z-scored over ``mask``, 0 outside it;
    ``ct``: clipped, then the data set's z-score; ``rgb``: ``lower``..``upper`` to [0, 1]; ``zscore``)."""
    out = []
    for c, ch in enumerate(channels):
        v = x[..., c]
        scheme = ch["scheme"]
        if scheme == "rgb":
            out.append(((v - ch["lower"]) / max(ch["upper"] - ch["lower"], 1e-8)).astype(np.float32))
            continue
        mean, std = ch["mean"], ch["std"]
        if scheme == "zscore_fg":
            inside = v[mask]
            if inside.size > 1:
                mean, std = float(inside.mean()), float(inside.std())
            out.append(np.where(mask, (v - mean) / max(std, 1e-8), 0.0).astype(np.float32))
            continue
        if scheme == "ct":
            v = np.clip(v, ch["lower"], ch["upper"])
        out.append(((v - mean) / max(std, 1e-8)).astype(np.float32))
    return np.stack(out, axis=-1)


def _resize(x: np.ndarray, shape) -> np.ndarray:
    """Spatial axes of ``x [*S, C]`` resized to ``shape`` (the leading ones; pixel centres aligned, linear,
    antialiased: ``jax.image.resize``, the twin of the loaders' ``data_pipelines.geometry.resize``)."""
    import jax

    shape = tuple(int(s) for s in shape)
    if tuple(x.shape[:len(shape)]) == shape:
        return x
    target = shape + tuple(x.shape[len(shape):])
    return np.asarray(jax.image.resize(np.asarray(x, np.float32), target, "linear", antialias=True), np.float32)


# ------------------------------------------------------------------------------------------------ a plan, both ways

def plan_forward(image: np.ndarray, spacing, perm, flips, plan: dict) -> tuple[np.ndarray, dict]:
    """``image [*S, C]`` (``spacing`` mm per array axis; ``perm``/``flips`` from :func:`lps_axes`, identity for
    2D) -> ``(x [*S', C] float32, grid)`` by a plan record (``preprocessing.json``'s ``plan``): LPS axes, the slice
    axis last, the crop, the normalisation, the plan's spacing (``data_pipelines.preprocessing.preprocess_case``'s
    steps; ``grid`` is what :func:`plan_back` needs)."""
    nd = image.ndim - 1
    if plan["spatial_dims"] == 3 and nd != 3:
        raise ValueError(f"a 3D plan needs a volume, got a {nd}D image")
    if plan["spacing"] is not None and len(plan["spacing"]) != nd:
        raise ValueError(f"{nd}D image, the plan's spacing {plan['spacing']} is {len(plan['spacing'])}D")
    slice_axis = plan["slice_axis"] if nd == 3 and plan["spatial_dims"] == 2 else None
    x = _to_canonical(np.asarray(image).astype(np.float32, copy=False), perm, flips, slice_axis, nd)
    s_in = [float(spacing[p]) for p in perm]
    s_out = None if plan["spacing"] is None else [float(s) for s in plan["spacing"]]
    if slice_axis is not None:
        s_in.append(s_in.pop(slice_axis))
        s_out.append(s_out.pop(slice_axis))
        s_out[-1] = s_in[-1]  # a 2D plan never resamples across slices
    mask = np.any(x != x.reshape(-1, x.shape[-1]).min(axis=0), axis=-1)  # differs from the background
    box = [(0, n) for n in x.shape[:nd]]
    if plan["crop"] == "nonzero" and mask.any():
        box = []
        for a in range(nd):
            hit = np.flatnonzero(mask.any(axis=tuple(b for b in range(nd) if b != a)))
            box.append((int(hit[0]), int(hit[-1]) + 1))
    crop = tuple(slice(lo, hi) for lo, hi in box)
    x = normalise_channels(np.ascontiguousarray(x[crop]), plan["channels"], mask[crop])
    cropped = list(x.shape[:nd])
    if s_out is None:
        s_out = s_in
    else:
        x = resample_linear(x, s_in, s_out, [max(int(round(cropped[a] * s_in[a] / s_out[a])), 1)
                                             for a in range(nd)])
    grid = {"perm": list(perm), "flips": list(flips), "slice_axis": slice_axis, "oriented_shape": list(mask.shape),
            "crop": [list(b) for b in box], "cropped_shape": cropped, "spacing_in": s_in, "spacing_out": s_out}
    return x, grid


def plan_back(proba: np.ndarray, grid: dict) -> np.ndarray:
    """Probabilities ``[*S', K]`` on the plan's grid -> the input's grid (:func:`plan_forward` undone: linear
    resampling to the cropped grid, class 0 outside the crop, the axes put back)."""
    nd = len(grid["cropped_shape"])
    back = resample_linear(proba, grid["spacing_out"], grid["spacing_in"], grid["cropped_shape"])
    full = np.zeros(tuple(grid["oriented_shape"]) + back.shape[nd:], np.float32)
    full[..., 0] = 1.0
    full[tuple(slice(lo, hi) for lo, hi in grid["crop"])] = back
    return _from_canonical(full, grid["perm"], grid["flips"], grid["slice_axis"], nd)


# ------------------------------------------------------------------------------------------------ with preprocessing

class PreprocessedModel:
    """An export that carries its preprocessing: :meth:`predict` takes the image as read from disk."""

    def __init__(self, spec: dict, exported, folder: str):
        self.spec, self.exported, self.folder = spec, exported, folder
        self.window = tuple(int(w) for w in spec["network"]["window"])
        self.model_dims = int(spec["network"]["spatial_dims"])
        self.channel_names = list(spec["channels"])
        self.class_names = list(spec["class_names"])

    @classmethod
    def load(cls, folder: str) -> "PreprocessedModel":
        path = os.path.join(folder, PREPROCESSING)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder}: no {PREPROCESSING} (write one with python -m zoo.export NAME "
                                    f"--with-preprocessing --out {folder})")
        spec = _read_json(path)
        if spec.get("format") != FORMAT or int(spec.get("version", 0)) > FORMAT_VERSION:
            raise ValueError(f"{path}: not a {FORMAT} file of version <= {FORMAT_VERSION} "
                             f"(format {spec.get('format')!r}, version {spec.get('version')!r})")
        program = os.path.join(folder, spec["network"]["file"])
        if not os.path.isfile(program):
            raise FileNotFoundError(f"{folder}: the network {spec['network']['file']} is missing")
        return cls(spec, _deserialize(program), folder)

    def _network(self, windows):
        return self.exported.call(np.asarray(windows, np.float32))

    def _windows(self, x: np.ndarray, tta: bool, overlap, batch_size) -> np.ndarray:
        """Probabilities ``[*S, K]`` of ``x [*S, C]``: whole, or slice by slice along the last spatial axis (a 2D
        model on a volume)."""
        w = self.spec["windows"]
        overlap = w["overlap"] if overlap is None else float(overlap)
        batch_size = w["batch_size"] if batch_size is None else int(batch_size)

        def proba_of(images):
            return blend_windows(self._network, images, self.window, overlap, batch_size, w["sigma_scale"])

        if x.ndim - 1 == self.model_dims:
            return _mirrored(proba_of, x[None], tta)[0]
        if x.ndim - 1 == 3 and self.model_dims == 2:
            return np.moveaxis(_mirrored(proba_of, np.moveaxis(x, 2, 0), tta), 0, 2)
        raise ValueError(f"a {self.model_dims}D model cannot predict a {x.ndim - 1}D image")

    def _checked(self, image, spacing, direction):
        image = np.asarray(image)
        nd = image.ndim - 1
        if nd not in (2, 3):
            raise ValueError(f"image must be [*S, C] with 2 or 3 spatial axes, got shape {image.shape}")
        if nd == 2 and image.shape[-1] == 4 and len(self.channel_names) == 3:
            image = image[..., :3]  # an RGBA picture: the loaders (and zoo.predict) drop the alpha channel
        if image.shape[-1] != len(self.channel_names):
            raise ValueError(f"image has {image.shape[-1]} channel(s); the model takes {len(self.channel_names)} "
                             f"({', '.join(self.channel_names)}) as the last axis")
        if not np.all(np.isfinite(image)):
            raise ValueError("image contains NaN or Inf")
        if spacing is None:
            if self.spec["mode"] == "plan" and self.spec["plan"]["spacing"] is not None:
                raise ValueError(f"this model resamples to the plan's spacing {self.spec['plan']['spacing']} mm: "
                                 f"give the image's spacing (mm per array axis)")
            spacing = (1.0,) * nd  # unused: pictures and resized inputs are never resampled by spacing
        spacing = tuple(float(s) for s in np.asarray(spacing, np.float64).reshape(-1))
        if len(spacing) != nd or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be {nd} positive numbers (mm per array axis), got {spacing}")
        if nd == 3:
            perm, flips = lps_axes(np.eye(3) if direction is None else direction)
        else:
            perm, flips = [0, 1], [False, False]
        return image, spacing, perm, flips

    def predict_proba(self, image, spacing=None, direction=None, *, tta: bool = False, overlap: float | None = None,
                      batch_size: int | None = None) -> np.ndarray:
        """Probabilities ``[*S, K]`` on the grid of ``image [*S, C]`` (as read from disk; ``spacing`` in mm per
        array axis, ``direction`` the 3x3 LPS direction of a volume's axes, identity when omitted)."""
        image, spacing, perm, flips = self._checked(image, spacing, direction)
        if self.spec["mode"] == "plan":
            return self._with_plan(image, spacing, perm, flips, tta, overlap, batch_size)
        return self._with_resize(image, perm, flips, tta, overlap, batch_size)

    def predict(self, image, spacing=None, direction=None, *, tta: bool = False, overlap: float | None = None,
                batch_size: int | None = None) -> np.ndarray:
        """Label map ``[*S]`` int32 on the input's grid (see :meth:`predict_proba`)."""
        return self.predict_proba(image, spacing, direction, tta=tta, overlap=overlap,
                                  batch_size=batch_size).argmax(-1).astype(np.int32)

    def _with_plan(self, image, spacing, perm, flips, tta, overlap, batch_size):
        x, grid = plan_forward(image, spacing, perm, flips, self.spec["plan"])
        return plan_back(self._windows(x, tta, overlap, batch_size), grid)

    def _with_resize(self, image, perm, flips, tta, overlap, batch_size):
        nd = image.ndim - 1
        size = self.window
        x = scale_intensity(image, self.spec["resize"]["intensity_scaling"])
        if nd == 3:  # the loaders train on LPS volumes (axial slices x[:, :, z])
            x = _to_canonical(x, perm, flips, None, nd)
        if not (nd == self.model_dims or (nd == 3 and self.model_dims == 2)):
            raise ValueError(f"a {self.model_dims}D model cannot predict a {nd}D image")
        # the whole image, or (a 2D model on a volume) each axial slice, at the training size and back
        proba = _resize(self._windows(_resize(x, size), tta, overlap, batch_size), x.shape[:len(size)])
        return _from_canonical(proba, perm, flips, None, nd) if nd == 3 else proba


def load(folder: str) -> PreprocessedModel:
    """The export with preprocessing in ``folder`` (``python -m zoo.export NAME --with-preprocessing``)."""
    return PreprocessedModel.load(folder)


# ------------------------------------------------------------------------------------------------ command line

def run_cli(argv=None) -> int:
    """``python medzoo_runtime.py FOLDER IMAGE.npy --spacing ... [--direction 9 numbers] [--tta] [--overlap F]
    [--batch_size N] --out LABELS.npy``: one line ``error: ...`` and exit 2 on bad input."""
    p = argparse.ArgumentParser(prog="python medzoo_runtime.py",
                                description="Segment an image array with an export that carries its preprocessing.")
    p.add_argument("folder", help="the export folder (python -m zoo.export NAME --with-preprocessing)")
    p.add_argument("image", help=".npy file holding the image [*S, C] as read from disk")
    p.add_argument("--spacing", type=float, nargs="+", help="mm per array axis (needed where the plan resamples)")
    p.add_argument("--direction", type=float, nargs=9, help="3x3 LPS direction, row by row (volumes; default identity)")
    p.add_argument("--tta", action="store_true", help="average over every mirroring of the spatial axes")
    p.add_argument("--overlap", type=float, default=None, help="window overlap (default: preprocessing.json's)")
    p.add_argument("--batch_size", type=int, default=None, help="windows per call (default: preprocessing.json's)")
    p.add_argument("--out", required=True, help=".npy file to write the label map [*S] (int32) to")
    args = p.parse_args(argv)
    try:
        model = load(args.folder)
        if not os.path.isfile(args.image):
            raise FileNotFoundError(f"{args.image}: no such file")
        image = np.load(args.image, allow_pickle=False)
        direction = None if args.direction is None else np.asarray(args.direction).reshape(3, 3)
        labels = model.predict(image, args.spacing, direction, tta=args.tta, overlap=args.overlap,
                               batch_size=args.batch_size)
        tmp = f"{args.out}.{os.getpid()}.tmp.npy"  # written whole, then renamed into place (no half-written output)
        try:
            np.save(tmp, labels)
            os.replace(tmp, args.out)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    except (ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (labels {list(labels.shape)}, classes {sorted(int(v) for v in np.unique(labels))})")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli())
