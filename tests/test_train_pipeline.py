"""The training core's data pipeline and its one prediction path, end to end:

* a TFDS array_record data set on disk trains exactly like the same records in memory;
* the grain iterator state saved in a checkpoint resumes on the batches the uninterrupted run sees;
* Mask R-CNN (instance) and outcome runs load with ``zoo.load_pretrained`` and report with ``eval.report``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_pipelines import loader
from data_pipelines.sources import open_sources
from eval import report
from zoo import load_pretrained
from zoo.checkpoint import restore_meta
from zoo.configs import apply_overrides, load_config
from zoo.sharding import batch_sharding, make_mesh
from zoo.training import train_and_evaluate
from zoo.training.data import TrainBatches

TINY = {"data.image_size": "(16,16)", "model.kwargs.features": "4", "model.kwargs.depth": "2",
        "train.batch_size": "4", "train.steps": "4", "train.schedule": "constant", "train.warmup_steps": "0",
        "train.log_every": "1", "train.eval_every": "2", "train.checkpoint_every": "2"}


def _train_losses(workdir) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    from data_pipelines.tfds_builders import PhantomsConfig, prepare

    root = tmp_path_factory.mktemp("tfds")
    return prepare("phantoms", str(root), config=PhantomsConfig(name="t16", shape=(16, 16), num_train=8,
                                                                  num_val=4)).data_dir


def test_tfds_array_record_trains_like_the_same_records_in_memory(tfds_dir, tmp_path):
    config = apply_overrides(load_config("smoke"), {**TINY, "data.name": "tfds", "data.data_dir": tfds_dir})
    train_src, val_src, info = open_sources(config.data)
    assert len(train_src) == 8 and info.class_names[0] == "background" and info.num_channels == 4
    on_disk = train_and_evaluate(config, str(tmp_path / "disk"), progress=False)  # the config's own source
    fields = ("image", "label", "instances")
    in_memory = (loader.gather(train_src, np.arange(len(train_src)), fields),
                 loader.gather(val_src, np.arange(len(val_src)), fields), info)
    from_arrays = train_and_evaluate(config, str(tmp_path / "memory"), progress=False, data=in_memory)
    disk, memory = _train_losses(tmp_path / "disk"), _train_losses(tmp_path / "memory")
    assert len(disk) == 4 and disk == memory  # bit for bit: the same batches in the same order
    assert on_disk["dice_per_class"] == from_arrays["dice_per_class"]
    # The checkpoint carries the grain iterator's position: 4 batches consumed.
    _, meta = restore_meta(str(tmp_path / "disk" / "checkpoints"))
    it = meta["data_iterator"]
    assert it["kind"] == "grain" and json.loads(it["state"])["next_index"] == 4
    # eval.report rebuilds the split from the same on-disk source the run trained on.
    assert report.main(["--workdir", str(tmp_path / "disk"), "--out", str(tmp_path / "rep"), "--n_boot", "20"]) == 0
    doc = json.loads((tmp_path / "rep" / "report.json").read_text(encoding="utf-8"))
    assert {r["dataset"] for r in doc["rows"]} == {info.name}


def test_saved_iterator_state_resumes_on_the_same_batches():
    config = apply_overrides(load_config("smoke"), {**TINY, "data.num_train": "10", "data.num_val": "2"})
    train, _, _ = open_sources(config.data)
    sh = batch_sharding(make_mesh((-1, 1), batch_size=4))
    straight = TrainBatches(train, 4, 3, sh)
    want = [np.asarray(straight.next()["image"]) for _ in range(6)]
    first = TrainBatches(train, 4, 3, sh)
    for _ in range(4):  # past the first epoch boundary (10 records, 2 batches per epoch)
        first.next()
    saved = json.loads(json.dumps(first.state()))  # as it goes through the checkpoint's JSON
    resumed = TrainBatches(train, 4, 3, sh)
    resumed.restore(saved, step=0)  # the saved state decides, not the step
    got = [np.asarray(resumed.next()["image"]) for _ in range(2)]
    for g, w in zip(got, want[4:]):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(want[0], want[4])  # a new epoch is a new permutation


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Mean of empty slice:RuntimeWarning")
def test_mask_rcnn_run_loads_and_reports(tmp_path):
    config = apply_overrides(load_config("mask_rcnn_phantoms"), {
        "data.image_size": "(32,32)", "data.num_train": "8", "data.num_val": "4", "model.kwargs.encoder_width": "8",
        "model.kwargs.fpn_channels": "16", "model.kwargs.box_head_dim": "32", "model.kwargs.roi_batch_per_image": "8",
        "model.kwargs.mask_head_convs": "1", "train.batch_size": "4", "train.steps": "2", "train.warmup_steps": "0",
        "train.log_every": "1", "train.eval_every": "2", "train.checkpoint_every": "2"})
    wd = str(tmp_path / "run")
    res = train_and_evaluate(config, wd, progress=False)
    assert res["task"] == "instance" and res["step"] == 2 and res["num_cases"] == 4
    pre = load_pretrained(wd)
    assert pre.task == "instance" and pre.step == 2
    _, val, _ = open_sources(config.data)
    images = loader.gather(val, np.arange(4), ("image",))["image"]
    labels = pre.predict(images, batch_size=4)  # the program validation compiled (one compile of the detector)
    assert labels.shape == (4, 32, 32) and labels.dtype == np.int32
    out = tmp_path / "report"
    assert report.main(["--workdir", wd, "--out", str(out), "--n_boot", "50"]) == 0
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    dice = [r for r in doc["rows"] if r["metric"] == "dice" and r["structure"] == "mean"]
    assert dice and 0.0 <= dice[0]["estimate"] <= 1.0


@pytest.mark.slow
@pytest.mark.standard_promotion
def test_outcome_run_loads_and_reports(tmp_path):
    from zoo.outcome.run import run_outcome

    config = apply_overrides(load_config("outcome_smoke"), {
        "data.image_size": "16,16", "data.num_patients": "80", "model.kwargs.encoder_kwargs.features": "4",
        "model.kwargs.encoder_kwargs.depth": "2", "model.kwargs.embed_dim": "8", "model.kwargs.head_hidden": "8",
        "model.kwargs.pool_levels": "2", "train.steps": "4", "train.eval_every": "2", "train.checkpoint_every": "2",
        "train.log_every": "2", "outcome.pretrain_unet_steps": "0", "outcome.variants": "('both',)",
        "outcome.baseline": "False"})
    res = run_outcome(config, str(tmp_path))
    net = res["models"]["outcome_net[both]"]
    pre = load_pretrained(str(tmp_path / "both"))
    assert pre.task == "outcome" and pre.step == 4
    _, val, info = open_sources(config.data)
    batch = loader.gather(val, np.arange(len(val)), ("image", "covariates", "outcome"))
    proba = pre.predict_proba({"image": batch["image"], "covariates": batch["covariates"]})
    assert proba.shape == (len(val), 2)
    np.testing.assert_allclose(proba.sum(-1), 1.0, rtol=1e-5)
    from scoring import outcome_metrics

    assert outcome_metrics(batch["outcome"], proba)["auc_roc"] == pytest.approx(net["auc_roc"], abs=1e-6)
    with pytest.raises(ValueError, match="covariates"):
        pre.predict(batch["image"])
    out = tmp_path / "report"
    assert report.main(["--workdir", str(tmp_path / "both"), "--out", str(out), "--n_boot", "50"]) == 0
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    auc = [r for r in doc["rows"] if r["metric"] == "auc_roc"]
    assert auc and auc[0]["estimate"] == pytest.approx(net["auc_roc"], abs=1e-6)
