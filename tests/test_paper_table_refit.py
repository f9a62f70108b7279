"""The paper table's store entries are refits on every patient with the cross-validated metrics on their cards
(``python -m eval.studies.paper_table --store refit``, the default), on 16 phantom pictures laid out as the chest
X-ray folder (``cxr/``): one model, fold 0 of 2, 2 steps at 32^2. A refit that fails leaves no entry."""

from __future__ import annotations

import json
import os

import pytest
from test_calibration_study import phantom_root  # noqa: F401 (the fixture: 16 phantom pictures in cxr/)

from eval.studies import paper_table
from zoo.training import kfold

ARGV = ["--quick", "--families", "cxr", "--models", "cnn", "--ablations", "none", "--steps", "2"]


def test_store_entries_are_refits_carrying_the_tables_fold_metrics(phantom_root, tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    monkeypatch.setenv("ZOO_HOME", str(store))
    out = tmp_path / "table"
    seen = []
    real = kfold.train_and_evaluate

    def spy(config, workdir, **kw):  # the refit's training data (the folds train through reference_table)
        seen.append((workdir, sorted(map(str, kw["data"][0]["patient_id"]))))
        return real(config, workdir, **kw)

    monkeypatch.setattr(kfold, "train_and_evaluate", spy)
    assert paper_table.main(["--data_root", str(phantom_root), "--out", str(out), *ARGV]) == 0
    printed = capsys.readouterr().out
    table = json.loads((out / "table.json").read_text(encoding="utf-8"))
    cell = table["results"]["cnn"]["cxr"]
    card = json.loads((store / "cnn-cxr" / "card.json").read_text(encoding="utf-8"))
    # Refit on every patient of the family (16 pictures, one patient each), for the folds' steps.
    assert len(seen) == 1 and seen[0][0] == str(out / "runs" / "cnn_cxr" / "refit")
    assert len(seen[0][1]) == 16 and card["training"]["patients"] == seen[0][1]
    assert card["training"]["refit"] is True and card["training"]["steps"] == card["step"] == cell["folds"][0]["steps"]
    # The card's cross-validated numbers are the table's fold metrics.
    cv = card["metrics"]["cross_validation"]
    assert cv["folds"] == cell["k"] == 2 and cv["folds_run"] == 1  # --quick: fold 0 only, and the card says so
    fold = cv["per_fold"][0]
    assert fold["val_patients"] == cell["folds"][0]["val_patients"]
    for m in ("dice", "jaccard", "accuracy", "sensitivity", "specificity"):
        assert fold["metrics"][m] == cell["folds"][0][m] and cv["mean"][m] == pytest.approx(cell["cv"][m]["mean"])
    assert card["metrics"]["dice"] == cv["mean"]["dice"] and "1 of 2 patient-level folds" in card["metrics"]["split"]
    assert cv["std"]["dice"] is None and "one fold: no std" in card["metrics"]["split"]  # one fold has no spread
    assert card["recipe"] == "paper_cnn_cxr" and "non-commercial" in card["data_licence"]
    listed = json.loads((out / "store.json").read_text(encoding="utf-8"))["entries"]
    assert [e["name"] for e in listed] == ["cnn-cxr"] and listed[0]["patients"] == 16
    assert "- cnn-cxr: 16 patients" in printed
    assert (out / "runs" / "cnn_cxr" / "fold0" / "best").is_dir()  # the fold stays for the ensemble


def test_a_failed_refit_leaves_no_entry_and_flags_conflict(phantom_root, tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    monkeypatch.setenv("ZOO_HOME", str(store))

    def failing(config, workdir, **kw):
        raise RuntimeError("refit failed")

    monkeypatch.setattr(kfold, "train_and_evaluate", failing)
    with pytest.raises(RuntimeError, match="refit failed"):
        paper_table.main(["--data_root", str(phantom_root), "--out", str(tmp_path / "t"), *ARGV])
    assert not store.exists() or os.listdir(store) == []  # no entry, no half-copied folder
    assert not (tmp_path / "t" / "store.json").exists()
    assert paper_table.main(["--data_root", str(phantom_root), "--out", str(tmp_path / "u"), "--no_store",
                             "--store", "fold0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--no_store and --store fold0" in err[0]
