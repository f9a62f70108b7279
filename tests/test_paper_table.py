"""``python -m eval.paper_table --quick`` on the real samples (skips without ../shared/data) and the paper recipes.

The quick table is two models (cnn, unet) x two families (isic, cxr), fold 0 of 3, 8 steps at 32^2, no
augmentation, and one ablation (loss): it checks the machinery (k-fold by patient, held-out originals through
zoo.predict at native resolution, the study's layout, the store), not the numbers.
"""

from __future__ import annotations

import json

import pytest

from eval import paper_table
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
    result = json.loads((out / "table.json").read_text())
    assert result["families"] == ["isic", "cxr"]
    md = (out / "table.md").read_text()
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
            assert set(cell["cv"]) == set(paper_table.METRICS)
            # Every model beats the all-background prediction (Dice 0 on every case with foreground).
            assert cell["cv"]["dice"]["mean"] > result["baseline"][family] == 0.0, (model, family, cell["cv"])
    # The loss ablation is paired on the same held-out cases.
    rows = [r for r in result["ablations"] if r["metric"] == "dice"]
    assert rows and rows[0]["ablation"] == "loss" and rows[0]["n"] == result["results"]["unet"]["isic"]["n_cases"]
    # Store entries with their data licence (outside the project: $ZOO_HOME).
    card = json.loads((store / "unet-isic" / "card.json").read_text())
    assert "PH2" in card["data_licence"] and card["recipe"] == "paper_unet_isic"
    assert (store / "cnn-cxr" / "card.json").is_file()
