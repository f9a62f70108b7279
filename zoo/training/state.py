"""The training state and how it is initialised: one pytree of arrays, one init function for every task.

``make_init_fn(model, tx, input_shapes)`` is the only initialiser: ``input_shapes`` names the model's
inputs (``{"image": (B, *S, C)}``, plus ``"covariates": (B, F)`` for the outcome model), so segmentation,
instance and outcome models, the vmapped trials of ``zoo.hparam``, ``zoo.load_pretrained`` (abstractly,
via ``jax.eval_shape``) and the benchmarks all build the same ``TrainState``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

__all__ = ["TrainState", "INPUT_KEYS", "input_shapes_of", "make_init_fn", "jit_init", "create_train_state",
           "abstract_train_state", "RUN_ONCE_COMPILER_OPTIONS"]

#: Batch fields a model takes as positional inputs, in call order (``model.apply(v, image[, covariates])``).
INPUT_KEYS = ("image", "covariates")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything a resumed run needs, as one pytree of arrays."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-param collections, e.g. batch_stats
    rng: jax.Array  # raw key data (uint32[2]) so Orbax can save it

    @property
    def variables(self):
        return {"params": self.params, **self.model_state}


def input_shapes_of(batch: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{"image": shape, "covariates": shape}`` of the model inputs present in ``batch``."""
    return {k: tuple(batch[k].shape) for k in INPUT_KEYS if k in batch}


def make_init_fn(model, tx, input_shapes) -> Callable[[jax.Array], TrainState]:
    """``key -> TrainState`` for inputs of ``input_shapes`` (a dict as :func:`input_shapes_of` gives, or the
    image shape ``(B, *S, C)`` alone); pure, so it can be vmapped. Compile it with :func:`jit_init`."""
    if not isinstance(input_shapes, Mapping):
        input_shapes = {"image": tuple(input_shapes)}
    unknown = sorted(set(input_shapes) - set(INPUT_KEYS))
    if unknown or not input_shapes:
        raise ValueError(f"input_shapes needs some of {INPUT_KEYS}; got {sorted(input_shapes)}")
    # Positional inputs up to the last one present; an absent one in between is None (an EHR-only model).
    last = max(INPUT_KEYS.index(k) for k in input_shapes)

    def init(key):
        key, init_key = jax.random.split(key)
        samples = [jnp.zeros((1, *input_shapes[k][1:]), jnp.float32) if k in input_shapes else None
                   for k in INPUT_KEYS[:last + 1]]
        variables = dict(model.init({"params": init_key, "dropout": init_key}, *samples, train=False))
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          model_state=variables, rng=jax.random.key_data(key))

    return init


# XLA backend options for programs that run once (parameter initialisation). Level 0 skips LLVM's
# optimisation of the generated kernels: on XLA:CPU jit(init) of a U-Net then compiles in ~3 s instead of
# 13 s (2D) / 22 s (3D), and runs in < 1 s instead of ~0.1 s (docs/performance.md). The random bits are
# integer maths, so the initial values are the same up to float rounding of the initialisers.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_init(init_fn: Callable, **jit_kwargs) -> Callable:
    """``jax.jit`` for a program that runs once (``init_fn`` from :func:`make_init_fn`, or a vmapped one):
    on XLA:CPU it compiles with :data:`RUN_ONCE_COMPILER_OPTIONS`, elsewhere as plain ``jax.jit``."""
    if jax.default_backend() == "cpu":
        jit_kwargs.setdefault("compiler_options", RUN_ONCE_COMPILER_OPTIONS)
    return jax.jit(init_fn, **jit_kwargs)


def create_train_state(model, tx, sample, seed: int) -> TrainState:
    """Unsharded state on the default device (tests, notebooks, benchmarks). ``sample``: an image batch
    ``[B, *S, C]`` or a batch dict with the model's inputs."""
    shapes = input_shapes_of(sample) if isinstance(sample, Mapping) else tuple(sample.shape)
    return jit_init(make_init_fn(model, tx, shapes))(jax.random.key(seed))


def abstract_train_state(model, tx, input_shapes) -> TrainState:
    """The state's structure as ``jax.ShapeDtypeStruct``s (nothing is computed): a restore target."""
    return jax.eval_shape(make_init_fn(model, tx, input_shapes), jax.random.key(0))
