"""Orbax checkpoints of a training run: atomic (written to a temporary directory, then renamed),
asynchronous, with the run's metadata (config, model name, dataset info, data-iterator position)
saved beside the state.

Layout: ``<workdir>/checkpoints/<step>/{state,meta}`` keeps the latest N steps;
``<workdir>/best/<step>/{state,meta}`` keeps the best N by validation Dice. They are two
managers on two directories, so neither one's retention policy can delete the other's steps.
A save interrupted half-way leaves only a ``<step>.orbax-checkpoint-tmp-*`` directory, which
Orbax never lists as a step (and cleans up on the next start).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["CheckpointIO", "restore_meta"]


class CheckpointIO:
    """Thin wrapper around ``ocp.CheckpointManager``.

    Keeps the latest ``max_to_keep`` steps, or with ``best_metric`` the ``max_to_keep`` steps with
    the highest value of that metric (pass it in ``save(..., metrics={name: value})``).
    """

    def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True,
                 best_metric: str | None = None):
        if int(max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        kw = {}
        if best_metric is not None:
            kw = dict(best_fn=lambda m: float(m[best_metric]), best_mode="max",
                      keep_checkpoints_without_metrics=False)
        options = ocp.CheckpointManagerOptions(max_to_keep=int(max_to_keep), create=True,
                                               enable_async_checkpointing=async_save, **kw)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None, force: bool = False) -> bool:
        return self.manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), metrics=metrics, force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def restore(self, step: int | None, target: Any):
        """Restore ``(state, meta)`` at ``step`` (latest when None) into the structure (and shardings) of
        ``target`` (arrays or ``jax.ShapeDtypeStruct``s)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out.state, out.meta

    @staticmethod
    def best_of(directory: str, metric: str) -> tuple[int | None, float | None]:
        """``(step, value)`` of the highest ``metric`` saved in ``directory`` (``(None, None)`` if none)."""
        best = (None, None)
        if not os.path.isdir(directory):
            return best
        for name in os.listdir(directory):
            path = os.path.join(directory, name, "metrics", "metrics")  # Orbax's JSON of save(metrics=)
            if not name.isdigit() or not os.path.exists(path):
                continue
            with open(path) as f:
                value = json.load(f).get(metric)
            if value is not None and (best[1] is None or value > best[1]):
                best = (int(name), float(value))
        return best

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def restore_meta(directory: str, step: int | None = None) -> tuple[int, dict]:
    """Read only the metadata (config, model, data info) of a checkpoint directory."""
    mngr = ocp.CheckpointManager(os.path.abspath(directory), item_names=("state", "meta"),
                                 options=ocp.CheckpointManagerOptions(read_only=True, create=False))
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    mngr.close()
    return step, meta
