"""Load a trained model from a work directory (or its ``checkpoints`` / ``best`` folder).

No hub: weights come from local Orbax checkpoints written by the training core (``python -m zoo.train``,
``zoo.cv``, ``zoo.outcome``). The checkpoint's metadata (:func:`zoo.provenance.run_metadata`: config, task,
data contract) rebuilds the model with :func:`zoo.build.build_model`, is checked against what the caller
asks for and against the model's card; only the model's variables are read from the saved training state
(:func:`zoo.checkpoint.restore_variables`: no optimizer state, no model traced for shapes); it predicts through :class:`zoo.inference.Predictor`, so
segmentation, instance (Mask R-CNN) and outcome runs all load and predict the same way.
"""

from __future__ import annotations

import dataclasses
import functools
import os

import ml_collections
import numpy as np

from zoo import executables, store
from zoo.build import build_model
from zoo.checkpoint import restore_variables
from zoo.inference import Predictor
from zoo.registry import get_spec
from zoo.tasks import get_task

__all__ = ["Pretrained", "load_pretrained"]


@dataclasses.dataclass
class Pretrained:
    """A restored model: ``predict`` / ``predict_proba`` / ``iter_proba`` run it; ``meta`` holds config and data info."""

    model: object
    variables: dict
    meta: dict
    step: int

    @property
    def config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.meta["config"])

    @property
    def task(self) -> str:
        return self.meta.get("task", "segmentation")

    @functools.cached_property
    def predictor(self) -> Predictor:
        return Predictor(self.model, self.variables, get_task(self.task))

    def _checked(self, inputs):
        """``inputs`` checked against the checkpoint's data contract: images ``[N, *S, C]`` for image models,
        ``{"image", "covariates"}`` for models that take EHR covariates (``{"covariates"}`` alone when the
        contract has no image channels: tabular cohorts)."""
        contract = self.meta["data"]
        channels = tuple(contract.get("channel_names") or ())
        covariates = tuple(contract.get("covariate_names") or ())
        if covariates and not isinstance(inputs, dict):
            raise ValueError(f"this model takes {{'image': [N, *S, C], 'covariates': [N, {len(covariates)}]}} "
                             f"({', '.join(covariates)}); got an array of shape {np.shape(inputs)}")
        fields = dict(inputs) if isinstance(inputs, dict) else {"image": inputs}
        out = {}
        if channels:
            nd = contract["spatial_dims"]
            images = np.asarray(fields["image"], np.float32) if "image" in fields else None
            if images is None or images.ndim != nd + 2 or images.shape[-1] != len(channels):
                raise ValueError(f"expected images [B, *S, C] with {nd} spatial dims and C={len(channels)} "
                                 f"({', '.join(channels)}); got {None if images is None else images.shape}")
            out["image"] = images
        if covariates:
            cov = np.asarray(fields["covariates"], np.float32) if "covariates" in fields else None
            n = len(out["image"]) if "image" in out else (None if cov is None else len(cov))
            if cov is None or cov.shape != (n, len(covariates)):
                raise ValueError(f"expected covariates [{n}, {len(covariates)}] ({', '.join(covariates)}); "
                                 f"got {None if cov is None else cov.shape}")
            out["covariates"] = cov
            return out
        return out["image"]

    def predict(self, inputs, batch_size: int = 8) -> np.ndarray:
        """Label maps ``[N, *S]`` for images ``[N, *S, C]`` (segmentation, instance), or classes ``[N]``
        for an outcome model's ``{"image", "covariates"}``."""
        return self.predictor.predict(self._checked(inputs), batch_size)

    def predict_proba(self, inputs, batch_size: int = 8) -> np.ndarray:
        """Class probabilities: ``[N, *S, K]`` (softmax; one-hot for instance models) or ``[N, K]`` (outcome)."""
        return self.predictor.predict_proba(self._checked(inputs), batch_size)

    def iter_proba(self, inputs, batch_size: int = 8):
        """``(start, probabilities)`` per batch, for streaming evaluation of a whole split."""
        return self.predictor.iter_proba(self._checked(inputs), batch_size)


def _checkpoint_dir(path: str) -> str:
    path = store.resolve(path)
    sub = os.path.join(path, "checkpoints")
    return sub if os.path.isdir(sub) else path


def load_pretrained(path: str, step: int | None = None, *, in_channels: int | None = None,
                    num_classes: int | None = None, spatial_dims: int | None = None) -> Pretrained:
    """Restore the model saved in ``path`` (a model-store name, a work directory, its ``checkpoints/`` or
    ``best/``): ``step``, or the newest step that restores completely.

    The optional ``in_channels``/``num_classes``/``spatial_dims`` state what the caller expects;
    a mismatch with the checkpoint's contract raises ``ValueError``. A store entry's compiled programs
    (:mod:`zoo.executables`) go into the compilation cache first, when they were made for this host.
    """
    executables.install(store.resolve(path))
    ckdir = _checkpoint_dir(path)
    # Only the variables (no optimizer state kept, no model traced to learn their shapes); with no step asked
    # for, the newest step that restores completely (newer damaged ones are named).
    step, variables, meta = restore_variables(ckdir, step)
    if "config" not in meta or "data" not in meta:
        raise ValueError(f"checkpoint {ckdir} has no run metadata (config, data); it was not written by the "
                         f"zoo's training core")
    data = meta["data"]
    for name, want, have in (("in_channels", in_channels, len(data["channel_names"])),
                             ("num_classes", num_classes, data["num_classes"]),
                             ("spatial_dims", spatial_dims, data["spatial_dims"])):
        if want is not None and want != have:
            raise ValueError(f"checkpoint {ckdir} has {name}={have}, but {name}={want} was requested")
    config = ml_collections.ConfigDict(meta["config"])
    card = get_spec(config.model.name).card
    if card is not None and data["spatial_dims"] not in tuple(card.spatial_dims):
        raise ValueError(f"checkpoint {ckdir}: model {config.model.name!r} supports spatial_dims "
                         f"{tuple(card.spatial_dims)}, but the checkpoint has {data['spatial_dims']}")
    model = build_model(config, data)
    return Pretrained(model=model, variables=variables, meta=meta, step=int(step))
