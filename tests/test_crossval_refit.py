"""The refit after patient-level cross-validation (``zoo.cv --refit --store NAME``, ``zoo.crossval``): it trains on
every training patient, its store card carries the folds' recorded metrics (per fold, mean ± std, held-out
patients, splitter, seed), the store round-trips the card, ``python -m zoo.store_cli show`` and the application's
card fields print them, and a failed fold leaves no entry. Tiny phantoms (16^2, 2 steps per fold)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_pipelines.datasets import load_dataset
from zoo import crossval, cv, store_cli
from zoo.cards import cross_validation_lines, read_card
from zoo.configs import apply_overrides, load_config
from zoo.pretrained import load_pretrained
from zoo.store import list_pretrained, resolve
from zoo.training import kfold

TINY = {"data.image_size": "(16,16)", "data.num_train": "9", "data.num_val": "3", "model.kwargs.features": "4",
        "model.kwargs.depth": "2", "train.batch_size": "3", "train.steps": "2", "train.log_every": "1",
        "train.eval_every": "1000", "train.checkpoint_every": "1000", "train.warmup_steps": "0"}
ARGS = [f"--config.{k}={v}" for k, v in TINY.items()]


@pytest.fixture(scope="module")
def refit_run(tmp_path_factory):
    """``zoo.cv --folds=2 --refit --store tiny-refit`` once, the data each training saw recorded."""
    root = tmp_path_factory.mktemp("refit")
    seen = []
    real = kfold.train_and_evaluate

    def spy(config, workdir, **kw):
        seen.append((os.path.basename(workdir), list(kw["data"][0]["patient_id"]), int(config.train.steps)))
        return real(config, workdir, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ZOO_HOME", str(root / "store"))
        mp.setattr(kfold, "train_and_evaluate", spy)
        code = cv.main(["--config=smoke", "--folds=2", f"--workdir={root / 'wd'}", "--no_progress", *ARGS,
                        "--refit", "--store", "tiny-refit"])
        assert code == 0
        entries = {e.name: e for e in list_pretrained()}
        path = resolve("tiny-refit")
    return {"root": root, "seen": seen, "entry": entries["tiny-refit"], "path": path,
            "cv": json.loads((root / "wd" / "cv.json").read_text(encoding="utf-8"))}


def test_refit_trains_on_every_training_patient_for_the_folds_steps(refit_run):
    config = apply_overrides(load_config("smoke"), TINY)
    train, _, _ = load_dataset(config.data)
    everyone = sorted({str(p) for p in train["patient_id"]})
    seen = refit_run["seen"]
    assert [s[0] for s in seen] == ["fold0", "fold1", "refit"]
    for name, pids, _ in seen[:2]:  # each fold misses its held-out patients
        assert set(map(str, pids)) < set(everyone), name
    _, refit_pids, refit_steps = seen[2]
    assert sorted(map(str, refit_pids)) == everyone and len(refit_pids) == len(train["patient_id"])  # no patient missing
    assert refit_steps == 2 == refit_run["cv"]["refit"]["steps"]
    card = refit_run["entry"].card
    assert card["training"]["refit"] is True and card["training"]["patients"] == everyone
    assert "no validation split" in card["training"]["selection"] and card["step"] == 2
    # The folds stay in the work directory (the fold ensemble), the refit beside them.
    assert all((refit_run["root"] / "wd" / f"fold{i}" / "best").is_dir() for i in range(2))
    assert (refit_run["root"] / "wd" / "refit" / "checkpoints" / "2").is_dir()


def test_the_cards_cross_validated_numbers_are_the_folds_recorded_metrics(refit_run):
    folds = refit_run["cv"]["folds"]
    cvrec = refit_run["entry"].card["metrics"]["cross_validation"]
    assert cvrec["folds"] == cvrec["folds_run"] == 2 and cvrec["splitter"] == crossval.SPLITTER
    assert cvrec["seed"] == int(load_config("smoke").data.seed)
    held = [f["val_patients"] for f in cvrec["per_fold"]]
    assert sorted(p for h in held for p in h) == refit_run["entry"].card["training"]["patients"]  # each patient once
    for rec, fold in zip(cvrec["per_fold"], folds):
        assert rec["metrics"]["mean_dice"] == fold["mean_dice"] and rec["val_patients"] == fold["val_patient_ids"]
        assert rec["steps"] == fold["steps"] == 2
    agg = refit_run["cv"]["aggregate"]
    assert cvrec["mean"]["mean_dice"] == pytest.approx(agg["mean_dice"])
    assert cvrec["std"]["mean_dice"] == pytest.approx(agg["std_dice"])
    names = refit_run["cv"]["class_names"]
    for k, name in enumerate(names):
        assert cvrec["mean"][f"dice_{name}"] == pytest.approx(agg["dice_per_class_mean"][k], nan_ok=True)
    m = refit_run["entry"].card["metrics"]
    assert m["mean_dice"] == cvrec["mean"]["mean_dice"] and m["split"].startswith("cross-validation")


def test_the_store_round_trips_the_card_and_loads_the_refit(refit_run, monkeypatch):
    with open(os.path.join(refit_run["path"], "card.json"), encoding="utf-8") as f:
        on_disk = json.load(f)
    assert on_disk == refit_run["entry"].card
    monkeypatch.setenv("ZOO_HOME", str(refit_run["root"] / "store"))
    pre = load_pretrained("tiny-refit")
    assert pre.step == 2
    card = read_card(resolve("tiny-refit"), pre)
    assert card["metrics"]["cross_validation"] == on_disk["metrics"]["cross_validation"]
    assert card["training"] == on_disk["training"] and card["recipe"] == "smoke"
    assert card["data_licence"].startswith("synthetic")  # phantoms: the default licence line stays


def test_store_show_and_the_app_print_the_cross_validated_metrics(refit_run, capsys, monkeypatch):
    from zoo.app.services.served import ServedModel, card_fields

    monkeypatch.setenv("ZOO_HOME", str(refit_run["root"] / "store"))
    assert store_cli.main(["show", "tiny-refit"]) == 0
    out = capsys.readouterr().out
    mean = refit_run["cv"]["aggregate"]["mean_dice"]
    assert f"mean_dice {mean:.3f} ± " in out and "refit on all" in out and crossval.SPLITTER in out
    assert sum(line.startswith("fold ") for line in out.splitlines()) == 2
    assert store_cli.main(["show", "tiny-refti"]) == 2
    assert "did you mean 'tiny-refit'" in capsys.readouterr().err
    assert store_cli.main(["list"]) == 0 and "tiny-refit" in capsys.readouterr().out

    served = ServedModel("tiny-refit", load_pretrained("tiny-refit"), read_card(resolve("tiny-refit"), None))
    fields = {f["label"]: f["value"] for f in card_fields(served)}
    assert fields["cross-validation"] == "; ".join(cross_validation_lines(refit_run["entry"].card))
    assert f"{mean:.3f}" in fields["cross-validation"]


@pytest.mark.parametrize("argv,match", [
    (["--store", "x-y"], "--store needs --refit"),
    (["--refit", "--store", "Bad Name"], "store name 'Bad Name'"),
    (["--overwrite"], "--overwrite replaces a model store entry"),
])
def test_cli_flags_are_checked_before_anything_trains(argv, match, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "store"))
    assert cv.main(["--config=smoke", "--folds=3", f"--workdir={tmp_path / 'wd'}", "--no_progress", *ARGS,
                    *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0], err
    assert not (tmp_path / "wd" / "fold0").exists()


def test_a_failed_fold_leaves_no_store_entry(tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("ZOO_HOME", str(store))
    real, calls = kfold.train_and_evaluate, []

    def failing(config, workdir, **kw):
        calls.append(workdir)
        if os.path.basename(workdir) == "fold1":
            raise RuntimeError("fold 1 failed")
        return real(config, workdir, **kw)

    monkeypatch.setattr(kfold, "train_and_evaluate", failing)
    config = apply_overrides(load_config("smoke"), TINY)
    with pytest.raises(RuntimeError, match="fold 1 failed"):
        crossval.cross_validate(config, str(tmp_path / "wd"), 2, refit=True, store="tiny-refit")
    assert len(calls) == 2
    assert not store.exists() or os.listdir(store) == []  # no entry, no half-copied temporary folder
    assert not (tmp_path / "wd" / "cv.json").exists() and not (tmp_path / "wd" / "refit").exists()


def test_cross_validation_record_is_the_folds_mean_and_sample_std():
    per_fold = [{"fold": i, "val_patients": [f"p{i}"], "steps": 10, "metrics": {"dice": d, "dice_tc": t}}
                for i, (d, t) in enumerate([(0.8, 0.5), (0.6, float("nan")), (0.7, 0.7)])]
    rec = crossval.cross_validation_record(per_fold, folds=4, seed=3, measured_on="native")
    assert rec["folds"] == 4 and rec["folds_run"] == 3 and rec["seed"] == 3
    assert rec["mean"]["dice"] == pytest.approx(0.7) and rec["std"]["dice"] == pytest.approx(np.std([.8, .6, .7], ddof=1))
    assert rec["mean"]["dice_tc"] == pytest.approx(0.6)  # NaN (no such region in a case) ignored
    with pytest.raises(ValueError, match="no fold finished"):
        crossval.cross_validation_record([], folds=2, seed=0, measured_on="")
    assert kfold.refit_steps([10, 12, 0]) == 11
    with pytest.raises(ValueError, match="no fold trained"):
        kfold.refit_steps([])
