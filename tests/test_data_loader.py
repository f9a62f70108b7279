"""The grain pipeline (``make_batch_dataset``): batch conventions, determinism, JSON-resumable state, per-host
shards, Orbax checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipelines import loader, phantoms


def _arrays(n=20):
    src = phantoms.PhantomSource(phantoms.PhantomConfig(kind="brain", shape=(12, 12)), n)
    arrays = src.arrays()
    arrays["outcome"] = np.arange(n, dtype=np.int32)  # a per-sample tag to track order
    return arrays


def _take(it, n):
    return [next(it) for _ in range(n)]


def _iter(ds):
    return iter(ds.to_iter_dataset())


@pytest.mark.parametrize("as_records", [False, True])
def test_batches_follow_conventions(as_records):
    arrays = _arrays()
    src = loader.ArraysSource(arrays)
    if as_records:  # a record source (like TFDS or the phantoms): gathered record by record
        src = phantoms.PhantomSource(phantoms.PhantomConfig(kind="brain", shape=(12, 12)), 20)
    b = loader.make_batch_dataset(src, 4, seed=0)[0]
    assert b["image"].shape == (4, 12, 12, 4) and b["image"].dtype == np.float32
    assert b["label"].shape == (4, 12, 12) and b["label"].dtype == np.int32
    assert "patient_id" not in b  # text stays on the host unless the fields name it
    b2 = loader.make_batch_dataset(src, 4, seed=0, fields=loader.BATCH_FIELDS + ("patient_id",))[0]
    assert len(b2["patient_id"]) == 4 and str(b2["patient_id"][0]).startswith("phantom-brain")


def test_deterministic_by_seed_and_epochs_cover_all():
    src = loader.ArraysSource(_arrays())
    a = [b["outcome"].tolist() for b in _take(_iter(loader.make_batch_dataset(src, 5, seed=3)), 8)]
    b = [b["outcome"].tolist() for b in _take(_iter(loader.make_batch_dataset(src, 5, seed=3)), 8)]
    c = [b["outcome"].tolist() for b in _take(_iter(loader.make_batch_dataset(src, 5, seed=4)), 8)]
    assert a == b and a != c
    assert sorted(sum(a[:4], [])) == list(range(20))  # the first epoch is a permutation
    assert sum(a[:4], []) != sum(a[4:8], [])  # each epoch reshuffles


def test_resume_from_json_state_continues_exactly():
    src = loader.ArraysSource(_arrays())
    ds = loader.make_batch_dataset(src, 3, seed=1).to_iter_dataset()
    it = iter(ds)
    _take(it, 5)
    state = loader.iterator_state(it)
    assert isinstance(json.loads(state), dict)
    expected = [b["outcome"].tolist() for b in _take(it, 4)]
    it2 = loader.restore_iterator(loader.make_batch_dataset(src, 3, seed=1).to_iter_dataset(), state)
    assert [b["outcome"].tolist() for b in _take(it2, 4)] == expected
    with pytest.raises(ValueError, match="not valid JSON"):
        loader.restore_iterator(ds, "{oops")


def test_one_epoch_state_round_trip():
    ds = loader.make_batch_dataset(loader.ArraysSource(_arrays()), 4, seed=2, num_epochs=1)
    assert len(ds) == 5
    it = iter(ds.to_iter_dataset())
    next(it)
    state = loader.iterator_state(it)
    nxt = next(it)["outcome"].tolist()
    it2 = loader.restore_iterator(ds.to_iter_dataset(), state)
    assert next(it2)["outcome"].tolist() == nxt


def test_host_shards_are_disjoint_and_cover():
    src = loader.ArraysSource(_arrays())
    seen = []
    for host in range(2):
        ds = loader.make_batch_dataset(src, 5, seed=0, num_epochs=1, ids=np.arange(host, 20, 2))
        seen.append(sorted(sum([b["outcome"].tolist() for b in ds], [])))
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(20))
    # By default every record (one process here: everything).
    default = loader.make_batch_dataset(src, 5, seed=0, num_epochs=1)
    assert sorted(sum([b["outcome"].tolist() for b in default], [])) == list(range(20))


@pytest.mark.parametrize("kwargs,msg", [({"batch_size": 0}, "batch_size must be >= 1"),
                                        ({"batch_size": 2, "ids": []}, "source is empty"),
                                        ({"batch_size": 2, "num_epochs": 0}, "num_epochs")])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        loader.make_batch_dataset(loader.ArraysSource(_arrays()), **kwargs)


def test_arrays_source_checks_lengths():
    with pytest.raises(ValueError, match=r"arrays\['label'\] has 3 entries but 'image' has 4"):
        loader.ArraysSource({"image": np.zeros((4, 2, 2, 1)), "label": np.zeros((3, 2, 2))})


def test_iterator_state_in_an_orbax_checkpoint(tmp_path):
    import orbax.checkpoint as ocp

    src = loader.ArraysSource(_arrays(12))
    ds = loader.make_batch_dataset(src, 3, seed=0).to_iter_dataset()
    it = iter(ds)
    _take(it, 2)
    mngr = ocp.CheckpointManager(str(tmp_path), item_names=("data", "meta"),
                                 item_handlers={"data": loader.orbax_item_handler(), "meta": ocp.JsonCheckpointHandler()})
    mngr.save(2, args=ocp.args.Composite(data=loader.orbax_save_args(it),
                                         meta=ocp.args.JsonSave({"data_iterator": loader.iterator_state(it)})))
    mngr.wait_until_finished()
    expected = next(it)["outcome"].tolist()
    it2 = iter(ds)
    mngr.restore(2, args=ocp.args.Composite(data=loader.orbax_restore_args(it2)))
    assert next(it2)["outcome"].tolist() == expected
    meta = mngr.restore(2, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    it3 = loader.restore_iterator(ds, meta["data_iterator"])
    assert next(it3)["outcome"].tolist() == expected
    mngr.close()


def test_array_batches_resume_and_shard():
    src = loader.ArraysSource(_arrays(10))
    it = _iter(loader.make_batch_dataset(src, 4, seed=1))
    first = [next(it)["outcome"].tolist() for _ in range(5)]
    flat = sum(first, [])
    # drop_remainder: an epoch is 2 full batches of distinct samples; each epoch reshuffles.
    assert len(set(flat[:8])) == 8 and len(set(flat[8:16])) == 8 and flat[:8] != flat[8:16]
    whole = [b["outcome"].tolist() for b in loader.make_batch_dataset(src, 5, seed=1, num_epochs=2)]
    assert len(whole) == 4 and sorted(sum(whole[:2], [])) == list(range(10))
    state = loader.iterator_state(it)
    nxt = next(it)
    assert nxt["image"].dtype == np.float32 and nxt["label"].dtype == np.int32 and "patient_id" not in nxt
    again = loader.restore_iterator(loader.make_batch_dataset(src, 4, seed=1).to_iter_dataset(), state)
    assert next(again)["outcome"].tolist() == nxt["outcome"].tolist()
    halves = [sum((b["outcome"].tolist() for b in loader.make_batch_dataset(
        src, 5, seed=0, num_epochs=1, ids=np.arange(h, 10, 2))), []) for h in range(2)]
    assert sorted(halves[0] + halves[1]) == list(range(10)) and not set(halves[0]) & set(halves[1])
