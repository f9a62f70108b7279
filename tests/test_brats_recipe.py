"""eval.studies.brats_recipe on tiny synthetic BraTS-like volumes: leave-one-patient-out runs and learning-curve
training sets, scoring per region with the function eval.evaluate uses, the per-slice and miss records, resume by
skipping finished runs, the table, and bad input named in one line."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from eval.studies import brats_recipe as study
from scoring import brats_region_metrics
from zoo.configs import load_config

SHAPE = (20, 18, 8)
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])


def _brats_folder(root, n: int = 3):
    """``n`` deepmedic-named cases: a constant background outside a box 'brain', a tumour blob (BraTS 2015
    labels 1, 2, 4) bright on FLAIR."""
    rng = np.random.default_rng(0)
    for p in range(n):
        case = root / f"brats_2013_pat{p:04d}_1"
        case.mkdir(parents=True)
        label = np.zeros(SHAPE, np.float32)
        label[5 + p:12 + p, 4:11, 2:6] = 2
        label[7 + p:10 + p, 6:9, 3:5] = 4
        label[8 + p, 7, 3] = 1
        brain = np.zeros(SHAPE, bool)
        brain[2:18, 2:16, 1:7] = True
        flair = np.where(brain, rng.normal(0, 0.3, SHAPE) + (label > 0) * 2.0, -3.0).astype(np.float32)
        t1c = np.where(brain, rng.normal(0, 0.3, SHAPE) + (label == 4) * 2.0, -2.5).astype(np.float32)
        for name, vol in (("Flair_subtrMeanDivStd", flair), ("T1c_subtrMeanDivStd", t1c), ("OTMultiClass", label)):
            nib.save(nib.Nifti1Image(vol, AFFINE), str(case / f"{name}.nii.gz"))
    return root


def test_training_sets_leave_one_out_and_the_curves():
    ps = ["a", "b", "c", "d"]
    full = study.training_sets(ps, curves=False)
    assert [(h, n) for h, n, _ in full] == [("a", 3), ("b", 3), ("c", 3), ("d", 3)]
    assert all(h not in tr and len(set(tr)) == 3 for h, _, tr in full)
    curves = study.training_sets(ps, curves=True)
    assert len(curves) == 12
    by = {(h, n): tr for h, n, tr in curves}
    assert by["a", 1] == ["b"] and by["a", 2] == ["b", "c"] and by["d", 1] == ["a"] and by["c", 2] == ["a", "d"]
    # every patient is in a one-patient training set exactly once
    assert sorted(tr[0] for (h, n), tr in by.items() if n == 1) == ps
    assert [(h, n) for h, n, _ in study.training_sets(ps, False, sizes=[2])] == [(p, 2) for p in ps]
    with pytest.raises(ValueError, match="--sizes"):
        study.training_sets(ps, False, sizes=[4])


def test_scoring_matches_the_region_metrics_and_records_the_misses():
    truth_raw = np.zeros((6, 6, 3), np.int32)
    truth_raw[1:5, 1:5, 0:2] = 2
    truth_raw[2:4, 2:4, 1] = 4
    image = np.zeros((6, 6, 3, 2), np.float32)
    image[..., 0] = 1.0
    image[0, 0, :, 0] = -3.0  # the constant background (the brain mask keeps the rest)
    image[1:5, 1:5, 0, 0] = 0.5  # the missed slice is faint
    image[1:5, 1:5, 1, 0] = 3.0
    pred = np.zeros((6, 6, 3), np.int32)
    pred[1:5, 1:5, 1] = 2
    pred[2:4, 2:4, 1] = 3
    proba = np.eye(4, dtype=np.float32)[pred]
    row = study.score_prediction(proba, image, truth_raw, "t", "none")
    ref = brats_region_metrics(pred, np.where(truth_raw == 4, 3, truth_raw), metrics=("dice",))
    assert row["dice_wt"] == pytest.approx(ref["WT"]["dice"]) == pytest.approx(2 * 16 / (16 + 32))
    assert row["dice_et"] == pytest.approx(1.0) and row["dice_tc"] == pytest.approx(ref["TC"]["dice"])
    assert row["slice_dice"] == [[0, 16, 0.0], [1, 16, 1.0]]
    m = row["misses"]
    assert m["missed"] == {1: 0, 2: 16, 3: 0} and m["found"][3] == 4
    assert m["flair_missed"] == pytest.approx(0.5) and m["flair_found"] == pytest.approx(3.0)


def test_recipes_are_brats_configs_with_variants():
    c = study.recipe_config("paper_unet_brats@model.kwargs.norm=batch@train.steps=7", "/d", quick=False)
    assert c.model.kwargs.norm == "batch" and c.train.steps == 7 and c.data.data_dir == "/d"
    c3 = study.recipe_config("brats3d", "/d", quick=False)
    assert c3.data.name == "brats" and c3.data.spatial_dims == 3 and len(c3.data.patch_size) == 3
    assert c3.model.name == load_config("paper_unet_brats").model.name
    assert tuple(study.recipe_config("brats3d", "/d", quick=True).data.patch_size) == (8, 8, 8)


def test_study_runs_resumes_and_tables(tmp_path, capsys):
    data = _brats_folder(tmp_path / "brats")
    out = tmp_path / "out"
    assert study.main(["--data_dir", str(data), "--out", str(out), "--quick", "--curves",
                       "--holdout", "brats_2013_pat0000_1"]) == 0
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [(r["n_train"], r["held_out"]) for r in res["runs"]] == [(1, "brats_2013_pat0000_1"),
                                                                   (2, "brats_2013_pat0000_1")]
    r2 = res["runs"][1]
    assert r2["train_patients"] == ["brats_2013_pat0001_1", "brats_2013_pat0002_1"] and r2["steps"] == 3
    assert all(0.0 <= r2[k] <= 1.0 for k in ("dice_wt", "dice_tc", "dice_et", "dice_wt_raw"))
    assert r2["cases"][0]["tumour_voxels"] > 0 and r2["cases"][0]["slice_dice"]
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "| paper_unet_brats (n=2) | 3 |" in table and "## Learning curve" in table
    assert "| paper_unet_brats | brats_2013_pat0000_1 |" in table
    done = out / "runs" / "paper_unet_brats" / "n2" / "brats_2013_pat0000_1" / "done.json"
    stamp = os.path.getmtime(done)
    capsys.readouterr()
    assert study.main(["--data_dir", str(data), "--out", str(out), "--quick", "--curves",
                       "--holdout", "brats_2013_pat0000_1"]) == 0
    assert "done before" in capsys.readouterr().out and os.path.getmtime(done) == stamp
    assert study.main(["--data_dir", str(data), "--out", str(out), "--quick", "--table_only"]) == 0
    assert not (out / "runs" / "paper_unet_brats" / "n2" / "brats_2013_pat0001_1").exists()  # nothing trained
    assert "| paper_unet_brats (n=2) | 3 |" in (out / "table.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("argv,match", [
    (["--recipes", "paper_unet_isic"], "not a BraTS recipe"),
    (["--recipes", "paper_unet_brats@steps"], "NAME[@field=value"),
    (["--recipes", "paper_nonet_brats"], "unknown"),
    (["--holdout", "nobody"], "unknown patients"),
    (["--steps", "0"], "--steps must be >= 1"),
    (["--sizes", "one"], "--sizes expects"),
    (["--postprocess", "blur"], "--postprocess"),
])
def test_bad_input_is_one_line(tmp_path, capsys, argv, match):
    data = _brats_folder(tmp_path / "brats", n=2)
    assert study.main(["--data_dir", str(data), "--out", str(tmp_path / "o"), "--quick"] + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and match in err[0]


def test_brain_zscore_normalisation_is_recorded_for_prediction(tmp_path):
    from data_pipelines.brats import load_brats
    from data_pipelines.families import get_family
    from data_pipelines.preprocessing import scale_intensity

    data = _brats_folder(tmp_path / "brats", n=2)
    c = study.recipe_config("paper_unet_brats@data.brats_intensity=zscore_fg@data.image_size=(20,18)", str(data),
                            quick=False)
    record = get_family("brats").intensity_scaling(c.data)
    assert record == {"kind": "zscore_fg"}
    assert load_config("paper_unet_brats").data.brats_intensity == "zscore_fg"  # the recipe's fix (docs/brats.md)
    train, val, _ = load_brats(c.data)
    img = np.concatenate([train["image"], val["image"]])
    assert np.all(img[:, 0, 0] == 0.0)  # the constant background is 0, whatever each case's value was
    raw = load_brats(study.recipe_config("paper_unet_brats@data.brats_intensity=none@data.image_size=(20,18)",
                                         str(data), False).data)[0]
    assert np.all(raw["image"][:, 0, 0, 0] == -3.0)
    vol = np.asarray(nib.load(str(data / "brats_2013_pat0000_1" / "Flair_subtrMeanDivStd.nii.gz")).dataobj)
    z = scale_intensity(vol[..., None], record)[..., 0]
    brain = vol != vol.min()
    assert abs(z[brain].mean()) < 1e-5 and z[brain].std() == pytest.approx(1.0, abs=1e-4) and not z[~brain].any()
    with pytest.raises(ValueError, match="brats_intensity"):
        get_family("brats").intensity_scaling(study.recipe_config(
            "paper_unet_brats@data.brats_intensity=minmax", str(data), False).data)


def test_the_3d_patch_recipe_trains_on_the_fold_and_predicts_the_whole_volume(tmp_path):
    data = _brats_folder(tmp_path / "brats")
    res = study.run_study(str(data), str(tmp_path / "out"), ["brats3d"], budget_min=None, steps=None, curves=False,
                          holdout=["brats_2013_pat0002_1"], tta=False, postprocess="none", quick=True,
                          log=lambda *a, **k: None)
    (run,) = res["runs"]
    assert run["train_patients"] == ["brats_2013_pat0000_1", "brats_2013_pat0001_1"] and run["steps"] == 3
    case = run["cases"][0]
    assert case["tumour_voxels"] == int((np.asarray(nib.load(str(
        data / "brats_2013_pat0002_1" / "OTMultiClass.nii.gz")).dataobj) > 0).sum())
    from zoo.pretrained import load_pretrained

    pre = load_pretrained(str(tmp_path / "out" / "runs" / "brats3d" / "n2" / "brats_2013_pat0002_1" / "model" / "best"))
    assert pre.meta["data"]["extra"]["plan"]["patch_size"] == [8, 8, 8]  # prediction slid 3D windows of the plan
