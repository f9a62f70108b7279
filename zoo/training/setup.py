"""One validation of a run's config that builds what the run needs, once, before any data is loaded.

``prepare_run(config)`` checks the mesh against the devices, batch and gradient accumulation, the model
name, dtype, optimiser, loss, augmentation spec and the logging/evaluation/checkpoint intervals, and
returns the objects it built (:class:`RunSetup`), so nothing is built twice and bad input stops with one
``ValueError`` before anything is read or compiled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from zoo import losses, optim, sharding
from zoo.build import parse_dtype
from zoo.outcome.tasks import OUTCOME_LOSSES, SURVIVAL_LOSSES
from zoo.registry import get_spec
from zoo.tasks import get_task
from zoo.training.step import make_augment_fn

__all__ = ["RunSetup", "prepare_run", "setup_mesh", "INTERVALS"]

#: Config fields that count steps between two events; each must be a positive integer.
INTERVALS = ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints")


@dataclasses.dataclass(frozen=True)
class RunSetup:
    """What a run builds from its config alone."""

    spec: Any  # zoo.registry.ModelSpec
    task: Any  # zoo.tasks task class
    mesh: Any  # jax.sharding.Mesh
    tx: Any  # optax.GradientTransformation
    schedule: Callable
    augment_fn: Callable | None


def setup_mesh(config):
    """The run's mesh, checked against devices, batch size and ``grad_accum`` (raises ``ValueError``)."""
    bs = int(config.train.batch_size)
    if bs < 1:
        raise ValueError(f"train.batch_size must be positive, got {bs}")
    mesh_cfg = config.get("mesh", None) or {}
    mesh = sharding.make_mesh(mesh_cfg.get("shape", (-1, 1)), batch_size=bs)
    accum = int(config.train.get("grad_accum", 1))
    per_shard = bs // mesh.shape["data"]
    if accum < 1 or per_shard % accum:
        raise ValueError(f"train.grad_accum={accum} must divide the per-device batch {per_shard} "
                         f"(batch {bs} over {mesh.shape['data']} data shards)")
    return mesh


def _check_numbers(train) -> None:
    for name in INTERVALS:
        if name in train:
            v = train[name]
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {v!r}")
    for name in ("learning_rate", "weight_decay", "grad_clip", "time_limit_s"):
        if name in train:
            v = train[name]
            if not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                raise ValueError(f"train.{name} must be a finite number, got {v!r}")
            if name != "learning_rate" and float(v) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {v!r}")


def prepare_run(config) -> RunSetup:
    """Validate ``config`` and build its mesh, optimiser and augmentation (raises ``ValueError``)."""
    spec = get_spec(config.model.name)
    task = get_task(spec.task)
    _check_numbers(config.train)
    parse_dtype(config.train.get("dtype", "float32"))
    mesh = setup_mesh(config)
    augment_fn = make_augment_fn(config)
    tx, schedule = optim.make_optimizer(config.train)
    if task.name == "segmentation":
        losses.get_loss(config.train.loss)
    else:
        allowed = {"outcome": OUTCOME_LOSSES, "survival": SURVIVAL_LOSSES}.get(task.name)
        if allowed is not None and config.train.loss not in allowed:
            raise ValueError(f"train.loss must be one of {allowed} for the {task.name} task, "
                             f"got {config.train.loss!r}")
    return RunSetup(spec=spec, task=task, mesh=mesh, tx=tx, schedule=schedule, augment_fn=augment_fn)
