"""Load a trained model from a ``zoo.train`` work directory (or its ``checkpoints`` folder).

No hub: weights come from local Orbax checkpoints written by ``python -m zoo.train``; the
checkpoint's metadata (config, data set channels and classes) rebuilds the model and is
checked against what the caller asks for.
"""

from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from zoo import optim
from zoo.checkpoint import CheckpointIO, restore_meta
from zoo.registry import create_model

__all__ = ["Pretrained", "load_pretrained"]


@dataclasses.dataclass
class Pretrained:
    """A restored model: ``model.apply(variables, x)`` gives logits; ``meta`` holds config and data info."""

    model: object
    variables: dict
    meta: dict
    step: int

    @property
    def config(self) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(self.meta["config"])

    def predict(self, images) -> np.ndarray:
        """Label maps ``[B, *S]`` for ``images [B, *S, C]``."""
        images = np.asarray(images, np.float32)
        contract = self.meta["data"]
        nd, ch = contract["spatial_dims"], len(contract["channel_names"])
        if images.ndim != nd + 2 or images.shape[-1] != ch:
            raise ValueError(f"expected images [B, *S, C] with {nd} spatial dims and C={ch} "
                             f"({', '.join(contract['channel_names'])}); got {images.shape}")
        logits = self.model.apply(self.variables, jnp.asarray(images), train=False)
        return np.asarray(jnp.argmax(logits, -1))


def _checkpoint_dir(path: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint or work directory: {path}")
    sub = os.path.join(path, "checkpoints")
    return sub if os.path.isdir(sub) else path


def load_pretrained(path: str, step: int | None = None, *, in_channels: int | None = None,
                    num_classes: int | None = None, spatial_dims: int | None = None) -> Pretrained:
    """Restore the model saved in ``path`` (a work directory or its ``checkpoints/``).

    The optional ``in_channels``/``num_classes``/``spatial_dims`` state what the caller expects;
    a mismatch with the checkpoint's contract raises ``ValueError``.
    """
    from zoo.train import TrainState  # the state's structure; no training code runs

    ckdir = _checkpoint_dir(path)
    step, meta = restore_meta(ckdir, step)
    data = meta["data"]
    for name, want, have in (("in_channels", in_channels, len(data["channel_names"])),
                             ("num_classes", num_classes, data["num_classes"]),
                             ("spatial_dims", spatial_dims, data["spatial_dims"])):
        if want is not None and want != have:
            raise ValueError(f"checkpoint {ckdir} has {name}={have}, but {name}={want} was requested")
    config = ml_collections.ConfigDict(meta["config"])
    kwargs = dict(config.model.get("kwargs", {}))
    dtype = config.train.get("dtype", "float32")
    if dtype != "float32":
        kwargs["dtype"] = getattr(jnp, dtype)
    model = create_model(config.model.name, spatial_dims=data["spatial_dims"],
                         in_channels=len(data["channel_names"]), num_classes=data["num_classes"], **kwargs)
    tx, _ = optim.make_optimizer(config.train)
    size = tuple(config.data.image_size)
    sample = jnp.zeros((1, *size, len(data["channel_names"])), jnp.float32)
    variables = dict(jax.eval_shape(lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                                       sample, train=False)))
    params = variables.pop("params")
    target = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=params,
                        opt_state=jax.eval_shape(tx.init, params), model_state=variables,
                        rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
    io = CheckpointIO(ckdir, async_save=False)
    try:
        state, _ = io.restore(step, target)
    finally:
        io.close()
    return Pretrained(model=model, variables=state.variables, meta=meta, step=int(step))
