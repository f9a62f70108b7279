"""A model from a run's config and its data contract: the one place that turns ``config.model`` +
``config.train.dtype`` + the data set's channels, classes (and covariates) into a Flax module.

Used by the trainer, ``zoo.load_pretrained`` (rebuilding a saved run), the outcome entry point, the
hyperparameter search and the benchmarks, so a checkpoint always reloads into the model that wrote it.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from zoo.registry import create_model

__all__ = ["DTYPES", "parse_dtype", "build_model"]

DTYPES = ("float32", "bfloat16", "float16")


def parse_dtype(name: str):
    """``"float32"`` -> ``None`` (the models' default), ``"bfloat16"`` / ``"float16"`` -> the jnp dtype."""
    if name not in DTYPES:
        raise ValueError(f"train.dtype must be {' | '.join(DTYPES)}, got {name!r}")
    return None if name == "float32" else getattr(jnp, name)


def _field(info, name: str, default: Any = None):
    return info.get(name, default) if isinstance(info, Mapping) else getattr(info, name, default)


def build_model(config, info, **overrides):
    """The model of ``config`` for data described by ``info`` (a ``DatasetInfo`` or its saved dict).

    Channels, classes and, for models that take EHR covariates, their number come from the data;
    ``config.model.kwargs`` and ``overrides`` give the rest.
    """
    kwargs = dict(config.model.kwargs.to_dict()) if "kwargs" in config.model else {}
    kwargs.update(overrides)
    dtype = parse_dtype(config.train.get("dtype", "float32"))
    if dtype is not None:
        kwargs["dtype"] = dtype
    covariates = tuple(_field(info, "covariate_names", ()) or ())
    if covariates:
        kwargs.setdefault("num_covariates", len(covariates))
    return create_model(config.model.name, spatial_dims=int(_field(info, "spatial_dims")),
                        in_channels=len(_field(info, "channel_names")), num_classes=int(_field(info, "num_classes")),
                        **kwargs)
