"""data_pipelines.patches.PatchSource (determinism, shapes, padding, the exact foreground-oversampling count)
and patch training through open_sources and the training core on a small 3D phantom set."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from data_pipelines import planner
from data_pipelines.patches import PatchSource, is_foreground_index
from data_pipelines.sources import open_sources
from zoo.configs import apply_overrides, load_config
from zoo.training import train_and_evaluate


def _cases(shapes=((20, 20, 20), (10, 30, 12), (8, 8, 8)), channels=2):
    rng = np.random.default_rng(0)
    out = []
    for k, s in enumerate(shapes):
        lab = np.zeros(s, np.int32)
        lab[(slice(1, 3), slice(2, 4), slice(1, 3))[:len(s)]] = 1  # a small lesion near a corner: oversampled patches must find it
        lab[tuple(n - 2 for n in s)] = 2
        out.append({"image": rng.normal(size=tuple(s) + (channels,)).astype(np.float32) + 5.0, "label": lab,
                    "instances": (lab > 0).astype(np.int32), "patient_id": f"case{k}"})
    return out


def test_records_are_a_pure_function_of_seed_and_index():
    a = PatchSource(_cases(), (16, 16, 16), samples_per_epoch=12, seed=3)
    b = PatchSource(_cases(), (16, 16, 16), samples_per_epoch=12, seed=3)
    c = PatchSource(_cases(), (16, 16, 16), samples_per_epoch=12, seed=4)
    for i in (11, 0, 5, 0):  # any order
        ra, rb = a[i], b[i]
        assert set(ra) == set(rb)
        for k in ("image", "label", "corner"):
            np.testing.assert_array_equal(ra[k], rb[k])
    assert any(not np.array_equal(a[i]["image"], c[i]["image"]) for i in range(12))
    with pytest.raises(IndexError):
        a[12]


@pytest.mark.parametrize("shapes,patch", [
    (((20, 20, 20), (10, 30, 12), (8, 8, 8)), (16, 16, 16)),  # mixed sizes, some smaller than the patch
    (((20, 20, 20), (10, 30, 12)), (8, 12)),  # 2D patches of volumes (slices across the last axis)
    (((30, 20), (6, 40)), (16, 16)),  # 2D cases
])
def test_patch_shape_is_always_patch_size(shapes, patch):
    src = PatchSource(_cases(shapes), patch, samples_per_epoch=10, seed=0)
    for i in range(len(src)):
        r = src[i]
        assert r["image"].shape == tuple(patch) + (2,) and r["image"].dtype == np.float32
        assert r["label"].shape == tuple(patch) and r["label"].dtype == np.int32
        assert r["instances"].shape == tuple(patch)
        assert r["patient_id"] == f"case{i % len(shapes)}"


def test_a_third_of_the_records_are_centred_on_foreground_exactly():
    cases = _cases()
    src = PatchSource(cases, (16, 16, 16), samples_per_epoch=30, seed=1)
    fg = [i for i in range(30) if src[i]["foreground"]]
    # 10 rounds of 3 cases; rounds 2, 5, 8 are foreground-centred for every case: 9 of 30
    assert fg == [i for i in range(30) if (i // 3) in (2, 5, 8)]
    assert fg == [i for i in range(30) if is_foreground_index(i, 3, 1 / 3)]
    assert all((src[i]["label"] > 0).any() for i in fg)
    # the random ones of the big case rarely see its corner lesion; the oversampled ones always do
    never = PatchSource(cases, (16, 16, 16), samples_per_epoch=30, seed=1, oversample_foreground=0.0)
    assert not any(never[i]["foreground"] for i in range(30))
    always = PatchSource(cases, (4, 4, 4), samples_per_epoch=30, seed=1, oversample_foreground=1.0)
    assert all(always[i]["foreground"] and (always[i]["label"] > 0).any() for i in range(30))


def test_small_cases_are_padded_symmetrically():
    case = _cases(((8, 8, 8),))[0]
    src = PatchSource([case], (16, 12, 8), samples_per_epoch=4, seed=0, pad_value=-7.0)
    for i in range(4):
        r = src[i]
        np.testing.assert_array_equal(r["corner"], [-4, -2, 0])  # centred: the whole case inside
        np.testing.assert_array_equal(r["image"][4:12, 2:10, :], case["image"])
        np.testing.assert_array_equal(r["label"][4:12, 2:10, :], case["label"])
        assert np.all(r["image"][:4] == -7.0) and np.all(r["label"][:4] == 0)


@pytest.mark.parametrize("kw,match", [
    ({"patch_size": (16, 16, 16, 16)}, "patch_size"),
    ({"patch_size": (0, 16, 16)}, "patch_size"),
    ({"samples_per_epoch": 0}, "samples_per_epoch"),
    ({"oversample_foreground": 1.5}, "oversample_foreground"),
])
def test_bad_arguments_raise(kw, match):
    args = {"patch_size": (16, 16, 16), "samples_per_epoch": 4, **kw}
    with pytest.raises(ValueError, match=match):
        PatchSource(_cases(), args.pop("patch_size"), **args)


TINY3D = {"data.spatial_dims": "3", "data.image_size": "(24,24,24)", "data.patch_size": "(16,16,16)",
          "data.num_train": "4", "data.num_val": "2", "data.samples_per_epoch": "8",
          "model.kwargs.features": "4", "model.kwargs.depth": "2", "train.batch_size": "2", "train.steps": "3",
          "train.schedule": "constant", "train.warmup_steps": "0", "train.log_every": "1", "train.eval_every": "3",
          "train.checkpoint_every": "3"}


def test_patch_training_on_3d_phantoms_records_its_plan(tmp_path):
    config = apply_overrides(load_config("smoke"), TINY3D)
    train, val, info = open_sources(config.data)
    assert isinstance(train, PatchSource) and len(train) == 8 and len(val) == 4  # two per validation case
    assert train[0]["image"].shape == (16, 16, 16, 4) and val[3]["foreground"] == 1
    plan = planner.Plan.from_dict(info.extra["plan"])
    assert plan.patch_size == (16, 16, 16) and plan.spatial_dims == 3
    assert [c["scheme"] for c in plan.channels] == ["zscore_fg"] * 4  # brain phantoms are MR-like

    result = train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    assert result["step"] == 3 and np.isfinite(result["mean_dice"]) and result["num_cases"] == 4
    with open(tmp_path / "run" / "config.json", encoding="utf-8") as f:
        saved = json.load(f)["data"]["extra"]["plan"]
    assert planner.Plan.from_dict(saved) == plan
    with open(tmp_path / "run" / "metrics.jsonl", encoding="utf-8") as f:
        losses = [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]
    assert len(losses) == 3 and all(np.isfinite(losses))

    # The saved plan applied again (data.plan): the same plan, the same patches.
    plan.save(tmp_path / "plan.json")
    again = apply_overrides(config, {"data.plan": str(tmp_path / "plan.json"), "data.patch_size": "()"})
    train2, _, info2 = open_sources(again.data)
    assert info2.extra["plan"] == info.extra["plan"]
    np.testing.assert_array_equal(train2[5]["image"], train[5]["image"])
    wrong = apply_overrides(again, {"data.spatial_dims": "2", "data.image_size": "(24,24)"})
    with pytest.raises(ValueError, match="spatial_dims"):
        open_sources(wrong.data)


def test_default_config_keeps_whole_image_training():
    config = load_config("smoke")
    assert tuple(config.data.patch_size) == () and config.data.plan == ""
    train, _, info = open_sources(config.data)
    assert not isinstance(train, PatchSource) and "plan" not in info.extra
    assert os.fspath(config.data.crop) == "" and config.data.n4 is False
