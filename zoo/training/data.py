"""Batches for the trainer: a grain iterator over a record source, laid out on the mesh.

Batch ``s`` holds the records ``batch_indices(len(source), s, batch_size, data.seed)``
(:mod:`data_pipelines.loader`), whatever the source: in-memory arrays, a folder of real cases or a TFDS
array_record data set on disk, so the same data give the same batches from any of them. Each process
gathers only the rows of the global batch its own devices hold (per-host loading) and
``jax.make_array_from_process_local_data`` assembles the global ``jax.Array``s. The grain iterator's
state (a small JSON document) is saved in every checkpoint, so a resumed run continues on the batches
the uninterrupted run would have seen.
"""

from __future__ import annotations

import jax
import numpy as np

import grain.python as grain
from data_pipelines import loader

__all__ = ["TrainBatches", "local_rows"]

_TRAIN_FIELDS = ("image", "label", "instances", "covariates", "outcome", "time", "event", "time_bin")


def local_rows(data_sharding, batch_size: int) -> np.ndarray | None:
    """Rows of a ``[batch_size, ...]`` batch that this process's devices hold (``None``: all of them)."""
    if jax.process_count() == 1:
        return None
    idx = data_sharding.addressable_devices_indices_map((batch_size,))
    rows = sorted({r for sl in idx.values() for r in range(*sl[0].indices(batch_size))})
    return np.asarray(rows, np.int64)


class TrainBatches:
    """``next()`` -> the global batch of the current step (dict of ``jax.Array``s sharded on ``data``)."""

    def __init__(self, source, batch_size: int, seed: int, data_sharding):
        self.batch_size, self.seed, self.sharding = int(batch_size), int(seed), data_sharding
        self.rows = local_rows(data_sharding, self.batch_size)
        record = source[0]
        self.fields = tuple(k for k in _TRAIN_FIELDS if k in record)
        dataset = loader.make_batch_dataset(source, self.batch_size, seed=self.seed, rows=self.rows,
                                            fields=self.fields)
        self._iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=1))
        self._it = iter(self._iter_dataset)

    def state(self) -> dict:
        """The iterator position as JSON-able data (goes into the checkpoint's metadata)."""
        return {"kind": "grain", "seed": self.seed, "batch_size": self.batch_size,
                "state": loader.iterator_state(self._it)}

    def restore(self, saved: dict | None, step: int) -> None:
        """Continue from a checkpoint's saved iterator state (``step``: the restored step, used for
        checkpoints written before the state was saved)."""
        if saved and saved.get("kind") == "grain":
            self._it = loader.restore_iterator(self._iter_dataset, saved["state"])
        else:
            self._it = iter(self._iter_dataset)
            if step:
                state = self._it.get_state()
                self._it.set_state(dict(state, next_index=int(step)))

    def next(self) -> dict:
        local = next(self._it)
        return {k: jax.make_array_from_process_local_data(self.sharding, v, (self.batch_size, *v.shape[1:]))
                for k, v in local.items()}

    def peek(self) -> dict:
        """The current step's local batch (numpy) without advancing (shapes for ahead-of-time compiles)."""
        state = self._it.get_state()
        batch = next(self._it)
        self._it.set_state(state)
        return batch
