"""Orbax checkpoints of a training run: atomic (written to a temporary directory, then renamed),
asynchronous, with the run's metadata (config, model name, dataset info) saved beside the state.

Layout: ``<workdir>/checkpoints/<step>/{state,meta}``.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["CheckpointIO", "restore_meta"]


class CheckpointIO:
    """Thin wrapper around ``ocp.CheckpointManager`` keeping the latest ``max_to_keep`` steps."""

    def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True):
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None, force: bool = False) -> bool:
        return self.manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), metrics=metrics, force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def restore(self, step: int | None, target: Any):
        """Restore ``(state, meta)`` at ``step`` (latest when None) into the structure of ``target``."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return out.state, out.meta

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
