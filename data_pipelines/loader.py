"""grain input pipelines: deterministic, resumable, multi-worker, sharded per host.

``make_loader(source, batch_size, seed=...)`` returns a ``grain.DataLoader`` over any random-access
source (``len`` + ``[i]``): a TFDS ``data_source`` over array_record, ``PhantomSource``, or
``ArraysSource`` over the in-memory arrays of ``datasets.load_dataset``. Batches are dicts of numpy
arrays (``image [B, *S, C] float32``, ``label [B, *S] int32``, other array fields as stored; text
fields become ``str`` and are dropped from batches unless ``keep_text=True``).

Determinism and resumption: the order depends only on ``seed`` (and the shard); the iterator's
state is a small JSON document (``iterator_state`` / ``restore_iterator``). Into an Orbax checkpoint
it goes either as a string inside a JSON item (``zoo.checkpoint.CheckpointIO``'s ``meta``) or as its
own item: ``orbax_item_handler()`` for the manager and ``orbax_save_args(it)`` /
``orbax_restore_args(it)`` inside ``ocp.args.Composite``. Restoring continues with exactly the batch
that would have come next.

Sharding: by default each JAX process reads ``1 / jax.process_count()`` of every epoch
(``shard_index = jax.process_index()``), so multi-host training needs no other change.
"""

from __future__ import annotations

import functools
import json
from typing import Callable, Mapping

import grain.python as grain
import numpy as np

__all__ = ["ArraysSource", "batch_indices", "gather", "make_batch_dataset", "make_loader", "make_array_loader",
           "make_map_dataset", "iterator_state", "restore_iterator", "to_batch_dict", "BATCH_FIELDS",
           "orbax_item_handler", "orbax_save_args", "orbax_restore_args"]


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


class _ToBatchDict(grain.MapTransform):
    def __init__(self, keep_text: bool, transform: Callable | None):
        self.keep_text = keep_text
        self.transform = transform

    def map(self, record):
        out = to_batch_dict(record, self.keep_text)
        return self.transform(out) if self.transform is not None else out


def _shard(shard_index, shard_count, drop_remainder):
    if shard_index is None and shard_count is None:
        import jax

        shard_index, shard_count = jax.process_index(), jax.process_count()
    if shard_index is None or shard_count is None:
        raise ValueError("give both shard_index and shard_count, or neither (then JAX's process index/count)")
    if not 0 <= int(shard_index) < int(shard_count):
        raise ValueError(f"shard_index must be in [0, shard_count={shard_count}), got {shard_index}")
    return grain.ShardOptions(shard_index=int(shard_index), shard_count=int(shard_count),
                              drop_remainder=drop_remainder)


def make_loader(source, batch_size: int, *, seed: int = 0, shuffle: bool = True, num_epochs: int | None = None,
                worker_count: int = 0, shard_index: int | None = None, shard_count: int | None = None,
                drop_remainder: bool = True, transform: Callable | None = None, keep_text: bool = False,
                worker_buffer_size: int = 1, read_threads: int = 2, prefetch: int = 64) -> grain.DataLoader:
    """A ``grain.DataLoader`` yielding batch dicts; ``num_epochs=None`` repeats forever.

    ``worker_count`` > 0 decodes in that many worker processes (``transform`` must then be
    picklable); 0 runs in the calling process. ``transform(sample_dict) -> sample_dict`` runs per
    sample before batching (e.g. a numpy crop or normalisation). ``read_threads``/``prefetch``: grain's
    record-reading threads and buffer (grain's default of 16 threads thrashes a 2-core machine).
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(source)
    if n < 1:
        raise ValueError("source is empty")
    if int(worker_count) < 0:
        raise ValueError(f"worker_count must be >= 0, got {worker_count}")
    shard = _shard(shard_index, shard_count, drop_remainder)
    if n // shard.shard_count < (int(batch_size) if drop_remainder else 1):
        raise ValueError(f"{n} records over {shard.shard_count} shards give fewer than batch_size={batch_size} "
                         f"per shard")
    sampler = grain.IndexSampler(num_records=n, shard_options=shard, shuffle=shuffle, num_epochs=num_epochs,
                                 seed=int(seed))
    ops = [_ToBatchDict(keep_text, transform), grain.Batch(batch_size=int(batch_size), drop_remainder=drop_remainder)]
    if int(worker_count) > 0:
        _absl_flags_parsed()
    return grain.DataLoader(data_source=source, sampler=sampler, operations=ops, worker_count=int(worker_count),
                            worker_buffer_size=int(worker_buffer_size),
                            read_options=grain.ReadOptions(num_threads=int(read_threads),
                                                           prefetch_buffer_size=int(prefetch)))


def _absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app they are unparsed (defaults are fine)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


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
    batch conventions of :func:`to_batch_dict`. An :class:`ArraysSource` gathers with one fancy index."""
    idx = np.asarray(idx, np.int64)
    if isinstance(source, ArraysSource):
        out = {k: source.arrays[k][idx] for k in fields if k in source.arrays
               and isinstance(source.arrays[k], np.ndarray)}
    else:
        records = [to_batch_dict({k: v for k, v in source[int(i)].items() if k in fields}) for i in idx]
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


def make_array_loader(arrays: Mapping[str, object], batch_size: int, *, seed: int = 0, shuffle: bool = True,
                      num_epochs: int | None = None, shard_index: int | None = None, shard_count: int | None = None,
                      drop_remainder: bool = True, keep_text: bool = False, prefetch_threads: int = 0):
    """A grain ``IterDataset`` over in-memory arrays that gathers whole batches with one fancy index.

    The same determinism (a seeded permutation per epoch), per-host sharding and JSON-resumable
    state as ``make_loader``, without grain's per-record (and per-record shuffle) overhead, so it
    keeps up with any train step. ``iter(...)`` gives the iterator; ``num_epochs=None`` repeats.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_epochs is not None and int(num_epochs) < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    src = ArraysSource(arrays)
    shard = _shard(shard_index, shard_count, drop_remainder)
    ids = np.arange(shard.shard_index, len(src), shard.shard_count, dtype=np.int64)
    if len(ids) < (int(batch_size) if drop_remainder else 1):
        raise ValueError(f"{len(src)} records over {shard.shard_count} shards give fewer than "
                         f"batch_size={batch_size} per shard")
    fields = tuple(k for k, v in src.arrays.items() if isinstance(v, np.ndarray) or keep_text)
    if keep_text:
        src = ArraysSource({k: (v if isinstance(v, np.ndarray) else np.asarray(v)) for k, v in src.arrays.items()})
    ds = make_batch_dataset(src, int(batch_size), seed=int(seed), shuffle=shuffle, num_epochs=num_epochs, ids=ids,
                            drop_remainder=drop_remainder, fields=fields)
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=int(prefetch_threads),
                                                prefetch_buffer_size=max(int(prefetch_threads), 1)))


def make_map_dataset(source, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                     shard_index: int | None = None, shard_count: int | None = None,
                     drop_remainder: bool = True, keep_text: bool = False) -> grain.MapDataset:
    """The same pipeline as a ``grain.MapDataset`` (one epoch, random access by batch index)."""
    shard = _shard(shard_index, shard_count, drop_remainder)
    ds = grain.MapDataset.source(source)
    ds = ds[shard.shard_index::shard.shard_count]
    if shuffle:
        ds = ds.shuffle(seed=int(seed))
    ds = ds.map(lambda r: to_batch_dict(r, keep_text))
    return ds.batch(int(batch_size), drop_remainder=drop_remainder)


def iterator_state(iterator) -> str:
    """The iterator's position as a JSON string (grain ``DataLoader`` or ``IterDataset`` iterators)."""
    state = iterator.get_state()
    if isinstance(state, bytes):
        state = state.decode("utf-8")
    if isinstance(state, str):
        json.loads(state)  # fail here, not at restore time, if it is not JSON
        return state
    return json.dumps(state)


def restore_iterator(loader, state: str):
    """A new iterator of ``loader`` positioned at ``state`` (from ``iterator_state``)."""
    if not isinstance(state, str):
        raise ValueError(f"state must be the JSON string from iterator_state, got {type(state).__name__}")
    try:
        parsed = json.loads(state)
    except json.JSONDecodeError as e:
        raise ValueError(f"state is not valid JSON ({e})") from e
    it = iter(loader)
    if isinstance(loader, grain.DataLoader):
        it.set_state(state.encode("utf-8"))
    else:
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
