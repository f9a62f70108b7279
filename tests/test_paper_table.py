"""``python -m eval.studies.paper_table --quick`` on the real samples (skips without ../shared/data) and the
paper recipes.

The quick table is two models (cnn, unet) x two families (isic, cxr), fold 0 of 3, 8 steps at 32^2, no
augmentation, and one ablation (loss): it checks the machinery (k-fold by patient, held-out originals through
zoo.prediction at native resolution, the study's layout, the store), not the numbers.
"""

from __future__ import annotations

import json

import pytest

from eval.studies import paper_table
from eval.studies import reference_table as table
from zoo.configs import apply_overrides, load_config
from zoo.configs import paper


@pytest.mark.parametrize("name", [f"paper_{n}" for n in paper.names()])
def test_every_paper_recipe_loads_with_the_study_training(name):
    c = load_config(name)
    arch, family = paper.parse(name[len("paper_"):])
    assert c.model.name == arch
    assert c.data.name == {"brats": "brats", "isic": "isic", "lung": "luna16", "cxr": "folder"}[family]
    assert c.augment.enabled and set(c.augment.spec) == {"rotate", "flip", "scale", "translate", "elastic"}
    assert c.train.optimizer == "adam"
    assert c.train.loss == ("mask_rcnn" if arch == "mask_rcnn" else "dice_ce")
    if family == "brats":
        assert c.data.modalities == "FLAIR,T1c" and c.data.spatial_dims == 2
    apply_overrides(c, {"train.steps": "3"})  # overridable like any recipe


@pytest.mark.parametrize("name,match", [
    ("paper_mask_rcnn_brats", "unknown config"),   # Mask R-CNN only where instances exist
    ("paper_unet_luna", "unknown config"),
    ("paper_", "unknown config"),
])
def test_unknown_paper_recipes_are_named(name, match):
    with pytest.raises(ValueError, match=match):
        load_config(name)


def test_an_earlier_tables_folder_is_refused_not_resumed(tmp_path, capsys):
    (tmp_path / "out" / "runs" / "unet_isic" / "fold0").mkdir(parents=True)
    (tmp_path / "isic_like").mkdir()
    assert paper_table.main(["--data_root", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "earlier table's runs/" in err[0]
    assert (tmp_path / "out" / "runs" / "unet_isic" / "fold0").is_dir()  # nothing removed


@pytest.mark.parametrize("argv,match", [
    (["--data_root", "/nonexistent/data", "--out", "OUT"], "is not a directory"),
    (["--data_root", ".", "--out", "OUT", "--folds", "1"], "--folds must be >= 2"),
    (["--data_root", ".", "--out", "OUT", "--models", "resnet"], "unknown model 'resnet'"),
    (["--data_root", ".", "--out", "OUT", "--families", "luna"], "unknown family 'luna'"),
    (["--data_root", ".", "--out", "OUT", "--families", "isic"], "none of the families' folders"),
])
def test_bad_arguments_exit_2_with_one_line(argv, match, tmp_path, capsys):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    if "." in argv:
        argv[argv.index(".")] = str(tmp_path)
    assert paper_table.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and match in err[0], err


def test_quick_table_beats_all_background_and_fills_the_study_layout(shared_data, tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("ZOO_HOME", str(store))
    out = tmp_path / "table"
    assert paper_table.main(["--data_root", str(shared_data), "--out", str(out), "--quick"]) == 0
    for name in ("table.md", "table.json", "cases.csv", "plots/dice_isic.svg", "plots/dice_cxr.svg"):
        assert (out / name).is_file(), name
    result = json.loads((out / "table.json").read_text(encoding="utf-8"))
    assert result["families"] == ["isic", "cxr"]
    md = (out / "table.md").read_text(encoding="utf-8")
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert header == "| model | isic | cxr |"
    for model in ("unet", "cnn"):  # the study's rows, in the study's order (U-Net first)
        assert f"| {model} | " in md
    assert md.index("| unet | ") < md.index("| cnn | ")
    assert "study: 0.88 / 0.78 / 0.93 / 0.90 / 0.91" in md  # the study's U-Net on ISIC beside ours
    for model in ("unet", "cnn"):
        for family in ("isic", "cxr"):
            cell = result["results"][model][family]
            assert cell["n_cases"] > 0 and cell["folds"][0]["val_patients"]
            assert set(cell["cv"]) == set(table.METRICS)
            # Every model beats the all-background prediction (Dice 0 on every case with foreground).
            assert cell["cv"]["dice"]["mean"] > result["baseline"][family] == 0.0, (model, family, cell["cv"])
    # The loss ablation is paired on the same held-out cases.
    rows = [r for r in result["ablations"] if r["metric"] == "dice"]
    assert rows and rows[0]["ablation"] == "loss" and rows[0]["n"] == result["results"]["unet"]["isic"]["n_cases"]
    # Store entries with their data licence (outside the project: $ZOO_HOME).
    card = json.loads((store / "unet-isic" / "card.json").read_text(encoding="utf-8"))
    assert "PH2" in card["data_licence"] and card["recipe"] == "paper_unet_isic"
    # ... refit on every patient, with the table's fold metrics on the card.
    fold0 = result["results"]["unet"]["isic"]["folds"][0]
    assert card["training"]["refit"] is True and len(card["training"]["patients"]) == 40
    assert card["metrics"]["cross_validation"]["per_fold"][0]["metrics"]["dice"] == fold0["dice"]
    assert (store / "cnn-cxr" / "card.json").is_file()


def test_budget_reserves_by_weight_and_moves_what_a_fold_leaves_to_the_others():
    b = table.Budget(1000.0)
    b.add("unet_isic", 1.0, 2)
    b.add("cnn_cxr", 0.25, 2)
    assert b.reservation("unet_isic") == pytest.approx(800.0) and b.reservation("cnn_cxr") == pytest.approx(200.0)
    assert b.fold_seconds("unet_isic") == pytest.approx(400.0, rel=1e-3)
    res, limit = b.train_limit("unet_isic")
    assert limit == pytest.approx(res - b.overhead["first"])  # the fold trains for its share less its overhead
    # A fold that used 600 s instead of 400: the 600 s it took come out of everyone's share pro rata.
    b.t0 -= 600.0
    b.record("unet_isic", 600.0, 550.0, steps=100, arch="unet")
    assert b.fold_seconds("unet_isic") == pytest.approx(400.0 * 0.5 / 0.75, rel=1e-3)
    assert b.fold_seconds("cnn_cxr") == pytest.approx(400.0 * 0.125 / 0.75, rel=1e-3)
    assert b.overhead["first"] == pytest.approx(0.5 * 30.0 + 0.5 * 50.0)
    assert b.speed == pytest.approx(550.0 / 99 / table.SEC_PER_STEP["unet"])
    fixed = table.Budget(60.0, steps=7)
    fixed.add("r", 1.0, 2)
    assert fixed.nominal_steps("r", "unet", 1000) == 7


def test_ranked_models_of_a_family_get_equal_steps_and_brats_the_most():
    b = table.Budget(3600.0)
    for arch in table.CORE:
        for f in ("brats", "isic"):
            b.add(f"{arch}_{f}", table.run_weight(arch, f), 2, arch, group=f)
    b.add("mask_rcnn_isic", 0.5, 2, "mask_rcnn")
    n = {a: b.nominal_steps(f"{a}_brats", a, 10_000) for a in table.CORE}
    assert len(set(n.values())) == 1 and n["unet"] > 20  # one step count for the group, fixed at its start
    b.t0 -= 600.0  # time passes: the group keeps its steps, a run outside any group sees the time left
    assert b.nominal_steps("segnet_brats", "segnet", 10_000) == n["segnet"]
    assert b.nominal_steps("mask_rcnn_isic", "mask_rcnn", 10_000) < 10_000
    steps = {(a, f): b.reservation(f"{a}_{f}") / table.SEC_PER_STEP[a]
             for a in table.CORE for f in ("brats", "isic")}
    for f in ("brats", "isic"):
        assert max(steps[a, f] for a in table.CORE) == pytest.approx(min(steps[a, f] for a in table.CORE))
    assert steps["unet", "brats"] > steps["unet", "isic"]
    # Slower models get more time, not fewer steps.
    sps = table.SEC_PER_STEP
    slow, fast = max(table.CORE, key=sps.get), min(table.CORE, key=sps.get)
    assert b.reservation(f"{slow}_brats") > b.reservation(f"{fast}_brats")


def test_default_runs_rank_four_models_everywhere_and_the_extras_on_isic():
    pairs = table.default_pairs(["brats", "isic", "lung", "cxr"])
    for f in ("brats", "isic", "lung", "cxr"):
        assert {a for a, g in pairs if g == f} >= {"cnn", "fcn", "unet", "segnet"}
    assert {a for a, g in pairs if g == "isic"} == set(paper.ARCHS)
    assert {a for a, g in pairs if g != "isic"} == {"cnn", "fcn", "unet", "segnet"}
    assert ("mask_rcnn", "brats") not in table.default_pairs(["brats"], ["mask_rcnn", "unet"])


def test_postprocessing_keeps_the_largest_component_and_drops_voxels_outside_the_brain():
    import numpy as np

    image = np.zeros((6, 6, 3, 1), np.float32) - 3.0  # background at the volume's minimum
    image[1:5, 1:5] = 1.0
    pred = np.zeros((6, 6, 3), bool)
    pred[1:3, 1:3] = True   # 12 voxels inside the brain
    pred[4, 4, 0] = True    # 1 voxel inside, apart
    pred[0, 5, :] = True    # outside the brain, a line of 3
    assert table.postprocess_mask(pred, image, "none").sum() == 16
    assert table.postprocess_mask(pred, image, "lcc").sum() == 12
    assert table.postprocess_mask(pred, image, "brain").sum() == 13
    assert table.postprocess_mask(pred, image, "brain_lcc").sum() == 12
    with pytest.raises(ValueError, match="postprocess"):
        table.postprocess_mask(pred, image, "crf")


def test_training_by_time_stops_at_the_limit_and_saves_that_step(tmp_path):
    from zoo.training import train_and_evaluate

    c = apply_overrides(load_config("smoke"), {"train.steps": "100000", "train.time_limit_s": "0.5",
                                               "train.eval_every": "100000", "train.checkpoint_every": "100000",
                                               "train.tensorboard": "False"})
    res = train_and_evaluate(c, str(tmp_path / "run"), progress=False)
    assert res["stopped_by_time"] and 1 < res["step"] < 100000 and res["timed_seconds"] >= 0.5
    assert (tmp_path / "run" / "best").is_dir() and res["num_cases"] > 0  # the last step was evaluated and saved
    with pytest.raises(ValueError, match="time_limit_s"):
        train_and_evaluate(apply_overrides(load_config("smoke"), {"train.time_limit_s": "-1.0"}), str(tmp_path / "x"))


def test_brats_cells_carry_the_subregions_into_the_table():
    folds = [{"fold": i, **{m: 0.8 + 0.01 * i for m in table.METRICS}, "dice_tc": 0.5 + 0.1 * i,
              "dice_et": 0.4} for i in range(2)]
    cv = table._cell(folds)
    assert cv["dice_tc"]["mean"] == pytest.approx(0.55) and cv["dice_et"]["std"] == pytest.approx(0.0)
    isic = table._cell([{m: 0.9 for m in table.METRICS}])
    assert "dice_tc" not in isic  # only where the rows have sub-regions
    result = {"families": ["brats", "isic"], "models": ["unet"], "quick": False, "budget_minutes": 60,
              "wall_minutes": 1.0, "postprocess": {"brats": "brain_lcc"}, "baseline": {"brats": 0.0, "isic": 0.0},
              "skipped_families": [], "ablations": [], "ablations_skipped": [], "runs": [],
              "results": {"unet": {"brats": {"cv": cv, "folds": folds, "k": 2, "n_cases": 4},
                                   "isic": {"cv": isic, "folds": folds[:1], "k": 2, "n_cases": 2}}}}
    md = table.table_markdown(result)
    assert "## BraTS sub-regions" in md and "| unet | brats | 0.81 ± 0.01 | 0.55 ± 0.07 | 0.40 ± 0.00 |" in md
    assert "| unet | isic |" not in md.split("## BraTS sub-regions")[1].split("##")[0]
    assert table._region_keys([{"dice": 1.0}, {"dice_tc": 0.2, "dice_et": 0.1}]) == ("dice_tc", "dice_et")
