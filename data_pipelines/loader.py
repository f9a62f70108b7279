"""grain input pipelines: deterministic, resumable, sharded per host.

``make_batch_dataset(source, batch_size, seed=...)`` is the one pipeline: a ``grain.MapDataset`` whose element
``b`` is batch ``b``, over any random-access source (``len`` + ``[i]``): a TFDS ``data_source`` over
array_record, ``PhantomSource``, a ``PatchSource`` or an :class:`ArraysSource` over the in-memory arrays of
``datasets.load_dataset`` (gathered with one fancy index per batch). Batch ``b`` holds the records
:func:`batch_indices` names (a seeded permutation per epoch), so the order depends only on ``seed``. Batches
are dicts of numpy arrays (``image [B, *S, C] float32``, ``label [B, *S] int32``, other fields as stored; text
fields such as ``patient_id`` only when ``fields`` names them).

Determinism and resumption: ``iter(ds.to_iter_dataset())`` gives the iterator; its state is a small JSON
document (``iterator_state`` / ``restore_iterator``). Into an Orbax checkpoint it goes either as a string
inside a JSON item (``zoo.checkpoint.CheckpointIO``'s ``meta``) or as its own item: ``orbax_item_handler()``
for the manager and ``orbax_save_args(it)`` / ``orbax_restore_args(it)`` inside ``ocp.args.Composite``.
Restoring continues with exactly the batch that would have come next.

Sharding: ``ids`` are the records this host reads (e.g. ``np.arange(process_index, n, process_count)``) and
``rows`` the rows of the global batch its devices hold (``zoo.training.data.TrainBatches``).
"""

from __future__ import annotations

import functools
import json
from typing import Mapping

import grain.python as grain
import numpy as np

__all__ = ["ArraysSource", "batch_indices", "gather", "make_batch_dataset", "iterator_state", "restore_iterator",
           "to_batch_dict", "BATCH_FIELDS", "orbax_item_handler", "orbax_save_args", "orbax_restore_args"]


class ArraysSource:
    """Random-access view of a dict of equal-length arrays/lists (``load_dataset`` output)."""

    def __init__(self, arrays: Mapping[str, object]):
        # tabular cohorts (EHR-only survival models) have covariates and no image
        first = "image" if "image" in arrays else "covariates"
        if first not in arrays:
            raise ValueError(f"arrays need an 'image' field (or 'covariates': a tabular cohort); got {sorted(arrays)}")
        n = len(arrays[first])
        for k, v in arrays.items():
            if len(v) != n:
                raise ValueError(f"arrays[{k!r}] has {len(v)} entries but {first!r} has {n}")
        self._arrays = dict(arrays)
        self._n = n

    def __len__(self) -> int:
        return self._n

    @property
    def arrays(self) -> dict:
        """The underlying fields (numpy arrays and lists such as ``patient_id``), not copied."""
        return self._arrays

    def __getitem__(self, i):
        return {k: v[int(i)] for k, v in self._arrays.items()}

    def __repr__(self):
        return f"ArraysSource(n={self._n}, fields={sorted(self._arrays)})"


def to_batch_dict(record: Mapping, keep_text: bool = False) -> dict:
    """One stored record -> numpy fields in the batch conventions (image float32, label int32)."""
    out = {}
    for k, v in record.items():
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        if isinstance(v, str):
            if keep_text:
                out[k] = v
            continue
        a = np.asarray(v)
        if k == "image":
            a = a.astype(np.float32) if a.dtype != np.uint8 else a.astype(np.float32) / 255.0
        elif k in ("label", "instances"):
            a = a.astype(np.int32)
        out[k] = a
    return out


@functools.lru_cache(maxsize=8)
def _permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_indices(n: int, step: int, batch_size: int, seed: int, *, shuffle: bool = True,
                  drop_remainder: bool = True) -> np.ndarray:
    """Record indices of batch ``step`` over ``n`` records: a seeded permutation per epoch, a pure function of
    its inputs (so batch ``s`` of a resumed run is batch ``s`` of the uninterrupted one).

    With ``drop_remainder`` an epoch has ``max(n // batch_size, 1)`` full batches (fewer records than
    ``batch_size`` repeat to fill one); otherwise the last batch of an epoch may be short.
    """
    n, batch_size, step = int(n), int(batch_size), int(step)
    if n < 1 or batch_size < 1 or step < 0:
        raise ValueError(f"batch_indices needs n >= 1, batch_size >= 1, step >= 0; got {n}, {batch_size}, {step}")
    per_epoch = max(n // batch_size, 1) if drop_remainder else -(-n // batch_size)
    epoch, i = divmod(step, per_epoch)
    order = _permutation(n, int(seed), epoch) if shuffle else np.arange(n)
    idx = order[i * batch_size:(i + 1) * batch_size]
    return np.resize(idx, batch_size) if drop_remainder else idx


#: Numeric batch fields the trainer and the prediction path read from a record.
BATCH_FIELDS = ("image", "label", "instances", "covariates", "outcome", "time", "event", "time_bin")


def gather(source, idx, fields: tuple[str, ...] = BATCH_FIELDS) -> dict:
    """Records ``idx`` of ``source`` stacked into a batch dict (the ``fields`` the records have), in the
    batch conventions of :func:`to_batch_dict` (text fields as lists or string arrays, only when ``fields``
    names them). An :class:`ArraysSource` gathers with one fancy index."""
    idx = np.asarray(idx, np.int64)
    if isinstance(source, ArraysSource):
        arrays = source.arrays
        out = {k: arrays[k][idx] if isinstance(arrays[k], np.ndarray) else [arrays[k][int(i)] for i in idx]
               for k in fields if k in arrays and (isinstance(arrays[k], np.ndarray) or k not in BATCH_FIELDS)}
    else:
        records = [to_batch_dict({k: v for k, v in source[int(i)].items() if k in fields}, keep_text=True)
                   for i in idx]
        out = {k: np.stack([r[k] for r in records]) for k in fields if k in records[0]}
    for k in ("label", "instances", "outcome", "event", "time_bin"):
        if k in out:
            out[k] = out[k].astype(np.int32, copy=False)
    for k in ("image", "covariates", "time"):
        if k in out:
            out[k] = out[k].astype(np.float32, copy=False)
    return out


def make_batch_dataset(source, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                       num_epochs: int | None = None, ids: np.ndarray | None = None, rows=None,
                       drop_remainder: bool = True, fields: tuple[str, ...] = BATCH_FIELDS) -> grain.MapDataset:
    """A ``grain.MapDataset`` whose element ``b`` is batch ``b``: records ``ids[batch_indices(len(ids), b)]``
    (``ids``: the records this shard reads, default all), of which only positions ``rows`` are gathered (the
    rows of the global batch this process's devices hold; default all). Random access by batch number, so a
    grain iterator over it resumes at any step from its small JSON state."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(source)
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, np.int64)
    if len(ids) < 1:
        raise ValueError("source is empty")
    if num_epochs is not None and int(num_epochs) < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    per_epoch = max(len(ids) // int(batch_size), 1) if drop_remainder else -(-len(ids) // int(batch_size))
    total = per_epoch * (int(num_epochs) if num_epochs is not None else 2 ** 40)

    def batch(b):
        ix = ids[batch_indices(len(ids), b, batch_size, seed, shuffle=shuffle, drop_remainder=drop_remainder)]
        return gather(source, ix if rows is None else ix[rows], fields)

    return grain.MapDataset.range(total).map(batch)


def iterator_state(iterator) -> str:
    """The position of an iterator of a grain ``IterDataset`` (``iter(ds.to_iter_dataset())``) as a JSON
    string."""
    return json.dumps(iterator.get_state())


def restore_iterator(loader, state: str):
    """A new iterator of ``loader`` (a grain ``IterDataset``) positioned at ``state`` (from
    ``iterator_state``)."""
    if not isinstance(state, str):
        raise ValueError(f"state must be the JSON string from iterator_state, got {type(state).__name__}")
    try:
        parsed = json.loads(state)
    except json.JSONDecodeError as e:
        raise ValueError(f"state is not valid JSON ({e})") from e
    it = iter(loader)
    it.set_state(parsed)
    return it


def orbax_item_handler():
    """Handler for a data-iterator item of an ``ocp.CheckpointManager`` (one JSON file per process)."""
    return grain.PyGrainCheckpointHandler()


def orbax_save_args(iterator):
    """``ocp.args.Composite(..., data=orbax_save_args(it))`` saves the iterator position."""
    return grain.PyGrainCheckpointSave(iterator)


def orbax_restore_args(iterator):
    """``ocp.args.Composite(..., data=orbax_restore_args(it))`` moves ``it`` (a fresh iterator of the
    same loader) to the saved position."""
    return grain.PyGrainCheckpointRestore(iterator)
