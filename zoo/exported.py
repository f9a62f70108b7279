"""Run a model exported by ``python -m zoo.export`` without the model code.

A folder written by ``zoo.export`` holds ``model.stablehlo`` (``jax.export`` serialization of the inference
function: probabilities for a batch of any size; the weights are constants inside), ``exported.json`` (the
input shapes with ``null`` for the symbolic batch, the task and the data contract), ``card.json`` and
``plan.json``. This module imports only jax, numpy and the standard library, so it can be copied next to the
export (``zoo.export`` does, as ``load_exported.py``) and used where medzoo is not installed::

    from load_exported import ExportedModel
    m = ExportedModel.load("export/unet")
    proba = m.predict_proba(images)          # [N, *S, C] -> [N, *S, K]

``zoo.serve`` serves such a folder like a store entry (``ExportedModel`` has the ``meta`` / ``config`` /
``task`` / ``predictor`` that ``zoo.prediction.predict_case`` uses).

Images larger than the exported window run through this module's own window loop (:func:`blend_windows`, numpy
on the host around the exported function). It is a deliberate twin of ``kernels.sliding_window`` (the same window
starts, the same Gaussian blending, so the two agree to float32 rounding): the copy keeps this file free of
medzoo, and it stays until the export that carries its preprocessing (the clinical-integration issue) replaces it.
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np

__all__ = ["MANIFEST", "ARTIFACT", "is_exported", "ExportedModel", "blend_windows"]

MANIFEST = "exported.json"
ARTIFACT = "model.stablehlo"


def is_exported(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST)) and os.path.isfile(os.path.join(path, ARTIFACT))


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


def blend_windows(call, images, roi, overlap: float = 0.5, batch_size: int = 4) -> np.ndarray:
    """``call([batch_size, *roi, C]) -> [batch_size, *roi, K]`` over Gaussian-weighted windows of ``images
    [B, *S, C]`` (zero-padded symmetrically up to ``roi`` where smaller) -> ``[B, *S, K]`` float32.

    jax + numpy only, on purpose: the twin of ``kernels.sliding_window.sliding_window_inference`` for an export
    that must run without medzoo (see the module docstring). Every call has ``batch_size`` windows (the last
    group padded with zeros), so the exported function compiles once."""
    images = np.asarray(images, np.float32)
    roi = tuple(int(r) for r in roi)
    if not 0.0 <= float(overlap) < 1.0:
        raise ValueError(f"overlap must be in [0, 1); got {overlap!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    spatial = images.shape[1:-1]
    pads = [(max(r - n, 0) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(spatial, roi)]
    x = np.pad(images, [(0, 0), *pads, (0, 0)])
    weights = _gaussian_weights(roi)
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


class _Predictor:
    """The part of ``zoo.inference.Predictor`` that ``zoo.prediction`` uses, on the exported function."""

    def __init__(self, model: "ExportedModel"):
        self.model = model

    def sliding_window_proba(self, images, roi_size, *, overlap: float = 0.5, batch_size: int = 4,
                             tta: bool = False) -> np.ndarray:
        images = np.asarray(images, np.float32)
        roi = tuple(int(r) for r in roi_size)
        nd = images.ndim - 2
        fixed = tuple(self.model.input_shapes["image"][1:-1])
        if roi != fixed:
            raise ValueError(f"this export takes windows {fixed}, not {roi}")
        flips = [()] + [c for r in range(1, nd + 1) for c in itertools.combinations(range(1, nd + 1), r)] \
            if tta else [()]

        def once(x):
            if x.shape[1:-1] == fixed:
                return self.model.call(x)
            return blend_windows(self.model.call, x, roi, overlap, batch_size)

        out = 0.0
        for axes in flips:
            x = np.flip(images, axes) if axes else images
            p = np.asarray(once(x), np.float32)
            out = out + (np.flip(p, axes) if axes else p)
        return (out / len(flips)).astype(np.float32)


class ExportedModel:
    """An exported inference function with its contract: ``predict_proba`` / ``predict`` on numpy arrays."""

    def __init__(self, exported, manifest: dict, card: dict, folder: str):
        self.exported, self.manifest, self.card, self.folder = exported, manifest, card, folder
        self.meta = {"config": manifest["config"], "data": manifest["data"], "task": manifest["task"]}
        self.input_shapes = {k: tuple(v) for k, v in manifest["inputs"].items()}
        self.predictor = _Predictor(self)

    @classmethod
    def load(cls, folder: str) -> "ExportedModel":
        from jax import export

        if not is_exported(folder):
            raise FileNotFoundError(f"{folder}: no {ARTIFACT} + {MANIFEST} (write one with python -m zoo.export)")
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
        card = {}
        if os.path.isfile(os.path.join(folder, "card.json")):
            with open(os.path.join(folder, "card.json"), encoding="utf-8") as f:
                card = json.load(f)
        with open(os.path.join(folder, ARTIFACT), "rb") as f:
            exported = export.deserialize(bytearray(f.read()))
        return cls(exported, manifest, card, folder)

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
