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
``task`` / ``predictor`` that ``zoo.predict.predict_case`` uses).
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np

__all__ = ["MANIFEST", "ARTIFACT", "is_exported", "ExportedModel"]

MANIFEST = "exported.json"
ARTIFACT = "model.stablehlo"


def is_exported(path: str) -> bool:
    return os.path.isfile(os.path.join(path, MANIFEST)) and os.path.isfile(os.path.join(path, ARTIFACT))


class _Predictor:
    """The part of ``zoo.inference.Predictor`` that ``zoo.predict`` uses, on the exported function."""

    def __init__(self, model: "ExportedModel"):
        self.model = model

    def sliding_window_proba(self, images, roi_size, *, overlap: float = 0.5, batch_size: int = 4,
                             tta: bool = False) -> np.ndarray:
        import jax.numpy as jnp

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
            from kernels.sliding_window import sliding_window_inference  # only for images larger than a window

            return sliding_window_inference(self.model.call, jnp.asarray(x), roi, overlap, "gaussian", batch_size)

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
        import ml_collections  # only zoo.predict's path needs the config as a ConfigDict

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
