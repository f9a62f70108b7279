"""data_pipelines.families: a data family registered in this file alone trains (with and without a plan), plans
and predicts through the library; a run without a plan keeps predicting with the scaling it recorded when the
family's default scaling changes afterwards; the registry refuses surprises; the built-in families."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from PIL import Image

from data_pipelines import geometry, readers
from data_pipelines.families import (CaseFiles, DataFamily, get_family, list_families, record_preprocessing,
                                     register_family, unregister_family)
from data_pipelines.info import DatasetInfo
from data_pipelines.preprocessing import scale_intensity
from zoo.configs import apply_overrides, load_config
from zoo.pretrained import load_pretrained
from zoo.prediction import intensity_scaling, predict_case, read_case, scaling_record
from zoo.training import train_and_evaluate

NAME = "toy_squares"
SIZE = (24, 24)
TINY = {"data.name": NAME, "data.spatial_dims": "2", "data.image_size": "(16,16)", "data.channels": "0",
        "data.val_fraction": "0.25", "model.kwargs.features": "4", "model.kwargs.depth": "2",
        "train.batch_size": "4", "train.steps": "2", "train.warmup_steps": "0", "train.log_every": "1",
        "train.eval_every": "2", "train.checkpoint_every": "2", "augment.enabled": "False"}


# ------------------------------------------------------------------------------------ the toy family

def _write_cases(folder, n: int = 8) -> list[CaseFiles]:
    """8-bit grey pictures of a bright square on a dark background, and their masks, as PNG files."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        label = np.zeros(SIZE, np.uint8)
        r, c = rng.integers(2, 12, size=2)
        label[r:r + 9, c:c + 9] = 1
        image = np.clip(40 + 150 * label + rng.normal(0, 10, SIZE), 0, 255).astype(np.uint8)
        img_path, lab_path = folder / f"case{i}.png", folder / f"case{i}_mask.png"
        Image.fromarray(image).save(img_path)
        Image.fromarray(label * 255).save(lab_path)
        out.append(CaseFiles(f"patient{i}", f"case{i}", str(img_path), str(lab_path)))
    return out


def _toy_family(folder) -> DataFamily:
    files = _write_cases(folder)

    def find_cases(cfg):
        return files

    def read_cases(cfg):
        cases = []
        for f in find_cases(cfg):
            image, meta = readers.read_image(f.input)
            label, _ = readers.read_label(f.truth)
            cases.append({"patient_id": f.patient_id, "image": image.astype(np.float32),
                          "label": (label > 0).astype(np.int32), "meta": meta})
        return cases, ("grey",), ("background", "square")

    def load(cfg):
        cases, channels, classes = read_cases(cfg)
        record = get_family(NAME).intensity_scaling(cfg)  # the loader applies the family's default scaling
        size = tuple(int(s) for s in cfg.image_size)
        image = np.stack([geometry.resize(scale_intensity(readers.read_image(f.input)[0], record), size)
                          for f in find_cases(cfg)])
        label = np.stack([geometry.resize(c["label"], size, is_label=True) for c in cases])
        pids = [c["patient_id"] for c in cases]
        arrays = {"image": image.astype(np.float32), "label": label.astype(np.int32), "patient_id": pids}
        take = (lambda idx: {k: ([v[i] for i in idx] if isinstance(v, list) else v[idx]) for k, v in arrays.items()})
        return take(np.arange(6)), take(np.arange(6, 8)), DatasetInfo(NAME, 2, channels, classes, 2)

    return DataFamily(NAME, load=load, read_cases=read_cases, find_cases=find_cases,
                      scaling={"kind": "unit_range"}, modality="other", needs_data_dir=False,
                      summary="toy squares (tests)")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    family = register_family(_toy_family(tmp_path_factory.mktemp("toy_cases")))
    yield family
    unregister_family(NAME)


@pytest.fixture(scope="module")
def plain_run(toy, tmp_path_factory):
    wd = tmp_path_factory.mktemp("toy_plain") / "run"
    train_and_evaluate(apply_overrides(load_config("smoke"), TINY), str(wd), progress=False)
    return wd


# ------------------------------------------------------------------------------------------------ tests

def test_a_family_registered_in_the_test_trains_plans_and_predicts(toy, plain_run, tmp_path):
    assert NAME in [f.name for f in list_families()]
    case = toy.case_files(None)[-1]  # a validation case
    # without a plan: the run recorded its loader's scaling, prediction applies it on the input's grid
    pre = load_pretrained(str(plain_run))
    assert pre.meta["data"]["extra"]["intensity_scaling"] == {"kind": "unit_range"}
    image, meta, files = read_case(case.input, pre)
    labels = predict_case(pre, image, meta)
    assert labels.shape == SIZE and labels.dtype == np.int32 and files == [case.input]
    # with a plan made from the family's fingerprint (its default modality "other": z-score)
    wd = tmp_path / "planned"
    config = apply_overrides(load_config("smoke"), {**TINY, "data.patch_size": "(16,16)",
                                                    "data.samples_per_epoch": "8", "data.val_samples": "2"})
    train_and_evaluate(config, str(wd), progress=False)
    planned = load_pretrained(str(wd))
    plan = planned.meta["data"]["extra"]["plan"]
    assert plan["patch_size"] == [16, 16] and plan["spacing"] is None
    assert [c["scheme"] for c in plan["channels"]] == ["zscore"]
    assert "intensity_scaling" not in planned.meta["data"]["extra"]  # the plan is the record
    labels = predict_case(planned, *read_case(case.input, planned)[:2])
    assert labels.shape == SIZE and set(np.unique(labels)) <= {0, 1}


def test_a_run_without_a_plan_keeps_its_scaling_when_the_family_default_changes(toy, plain_run, monkeypatch):
    pre = load_pretrained(str(plain_run))
    image, meta, _ = read_case(toy.case_files(None)[0].input, pre)
    before_input, before = intensity_scaling(image, pre), predict_case(pre, image, meta)
    changed = dataclasses.replace(toy, scaling={"kind": "none"})
    register_family(changed, replace=True)
    try:
        # a new run would now train on raw pixel values ...
        assert not np.allclose(scale_intensity(image, changed.intensity_scaling(None)), before_input)
        # ... the old run predicts exactly as before, from its own record
        assert scaling_record(load_pretrained(str(plain_run))) == {"kind": "unit_range"}
        again = load_pretrained(str(plain_run))
        np.testing.assert_array_equal(intensity_scaling(image, again), before_input)
        np.testing.assert_array_equal(predict_case(again, image, meta), before)
    finally:
        register_family(toy, replace=True)


def test_registry_refuses_duplicates_and_names_close_matches(toy):
    with pytest.raises(ValueError, match="already registered"):
        register_family(toy)
    with pytest.raises(ValueError, match=r"unknown dataset 'toy_square'.*did you mean 'toy_squares'"):
        get_family("toy_square")
    with pytest.raises(ValueError, match="needs load"):
        DataFamily("empty")
    with pytest.raises(ValueError, match="intensity scaling"):
        DataFamily("bad", load=lambda cfg: None, scaling={"kind": "sqrt"})


@pytest.mark.parametrize("name,record", [
    ("phantoms", {"kind": "none"}), ("brats", {"kind": "none"}), ("isic", {"kind": "unit_range"}),
    ("folder", {"kind": "unit_range"}), ("luna16", {"kind": "hu_window", "window": [-1000.0, 400.0]})])
def test_builtin_families_record_their_loaders_scaling(name, record):
    cfg = apply_overrides(load_config("smoke"), {"data.name": name}).data
    info = record_preprocessing(DatasetInfo(name, 2, ("x",), ("a", "b"), 2), cfg)
    assert info.extra["intensity_scaling"] == record
    planned = DatasetInfo(name, 2, ("x",), ("a", "b"), 2, extra={"plan": {"patch_size": [8, 8]}})
    assert record_preprocessing(planned, cfg) is planned  # a plan is its own record


def test_tabular_family_needs_only_a_loader():
    tab = DataFamily("toy_table", load=lambda cfg: ({"covariates": np.zeros((2, 3), np.float32)},) * 2 + (None,),
                     needs_data_dir=False)
    assert not tab.has_cases and tab.intensity_scaling(None) == {"kind": "none"}
    with pytest.raises(ValueError, match="no full-resolution cases"):
        tab.all_cases(None)
    with pytest.raises(ValueError, match="does not list"):
        tab.case_files(None)


def test_bundled_cohorts_are_tabular_families_the_trainer_refuses_by_name():
    from data_pipelines.datasets import load_dataset
    from zoo.outcome.cohorts import bundled_cohorts, load_cohort

    assert set(bundled_cohorts()) == {"rotterdam", "gbsg"}
    fam = get_family("gbsg")
    assert fam.cohort is not None and fam.load is None and not fam.has_cases
    assert len(load_cohort("gbsg")) == len(fam.cohort(None)) == 686
    with pytest.raises(ValueError, match="tabular cohort.*outcome_report"):
        load_dataset(apply_overrides(load_config("smoke"), {"data.name": "gbsg"}).data)


def test_importing_zoo_registers_the_outcome_homes_families():
    # data_pipelines may not import zoo: the zoo package registers its tabular families, so a fresh process that
    # only imported zoo knows them by name
    import subprocess
    import sys

    code = ("import zoo; from data_pipelines.families import get_family; "
            "print(*(get_family(n).name for n in ('rotterdam', 'gbsg', 'kits')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["rotterdam", "gbsg", "kits"]


def test_brats_family_scores_its_subregions():
    # BraTS labels as read from a file (1 necrosis, 2 oedema, 4 enhancing); the prediction in training labels 0..3
    truth = np.zeros((6, 6, 2), np.int16)
    truth[1:3, 1:3] = 1
    truth[3:5, 3:5] = 4
    truth[0, 5] = 2
    pred = np.zeros((6, 6, 2), np.int32)
    pred[1:3, 1:3] = 1  # necrosis right, enhancing missed: core half right
    dice = get_family("brats").region_dice(pred, truth, "seg.nii.gz")
    assert set(dice) == {"TC", "ET"}
    assert dice["TC"] == pytest.approx(2 * 8 / (8 + 16)) and dice["ET"] == 0.0
    assert get_family("isic").region_dice is None


@pytest.mark.parametrize("name,window,record", [
    ("isic", None, {"kind": "unit_range"}), ("folder", None, {"kind": "unit_range"}),
    ("luna16", None, {"kind": "hu_window", "window": [-1000.0, 400.0]}),
    ("luna16", (-500.0, 500.0), {"kind": "hu_window", "window": [-500.0, 500.0]}),
    ("brats", None, {"kind": "none"}), ("phantoms", None, {"kind": "none"})])
def test_runs_trained_before_the_record_predict_with_the_old_rule(name, window, record):
    import types

    config = apply_overrides(load_config("smoke"), {"data.name": name})
    config.data.hu_window = window
    old_run = types.SimpleNamespace(config=config, meta={"data": {"extra": {}}})
    assert scaling_record(old_run) == record
