"""``python -m zoo.predict`` and the model store: prediction in the input's geometry with the run's plan.

One 3D U-Net is patch-trained (16^3 patches) on phantom volumes; it then predicts a 40x36x28 NIfTI volume
with a rotated, anisotropic, offset affine.
"""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

import zoo
from data_pipelines import phantoms, planner, preprocessing
from zoo import predict
from zoo.configs import apply_overrides, load_config
from zoo.training import train_and_evaluate

AFFINE = np.array([[0.0, -1.5, 0.0, 30.0],   # array axis 1 runs to patient right, 1.5 mm
                   [1.2, 0.0, 0.0, -12.5],   # array axis 0 anterior, 1.2 mm
                   [0.0, 0.0, 2.5, 7.0],     # array axis 2 superior, 2.5 mm
                   [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("predict") / "run"
    config = apply_overrides(load_config("smoke"), {
        "data.spatial_dims": "3", "data.image_size": "(24,24,24)", "data.num_train": "4", "data.num_val": "2",
        "data.patch_size": "(16,16,16)", "data.samples_per_epoch": "8", "data.val_samples": "2",
        "model.kwargs.features": "4", "model.kwargs.depth": "2", "train.batch_size": "2", "train.steps": "3",
        "train.warmup_steps": "0", "train.log_every": "1", "train.eval_every": "3", "train.checkpoint_every": "3"})
    train_and_evaluate(config, str(wd), progress=False)
    return wd


@pytest.fixture(scope="module")
def nifti_case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")
    pc = phantoms.PhantomConfig(kind="brain", shape=(40, 36, 28), seed=5)
    image = phantoms.make_phantom(pc, 0)["image"].astype(np.float32)
    path = folder / "case.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), str(path))
    return path


def test_prediction_keeps_the_input_geometry_and_uses_the_saved_plan(patch_run, nifti_case, tmp_path, monkeypatch,
                                                                     capsys):
    saved = json.loads((patch_run / "plan.json").read_text(encoding="utf-8"))
    assert tuple(saved["patch_size"]) == (16, 16, 16)
    used = []
    original = preprocessing.preprocess_case
    monkeypatch.setattr(preprocessing, "preprocess_case", lambda im, meta, plan: used.append(plan) or original(im, meta, plan))
    out = tmp_path / "pred.nii.gz"
    assert predict.main(["--model", str(patch_run), "--input", str(nifti_case), "--output", str(out), "--tta",
                         "--overlay", str(tmp_path / "overlay.png")]) == 0
    assert used and used[0].to_dict() == planner.Plan.from_dict(saved).to_dict()  # the plan training wrote
    src, got = nib.load(str(nifti_case)), nib.load(str(out))
    assert got.shape == src.shape[:3]  # larger than the 16^3 patch in every axis
    np.testing.assert_array_equal(got.affine, src.affine)
    labels = np.asarray(got.dataobj)
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert (tmp_path / "overlay.png").stat().st_size > 1000
    assert "wrote" in capsys.readouterr().out


def test_other_formats_keep_spacing_origin_direction(patch_run, nifti_case, tmp_path):
    from data_pipelines import readers

    out = tmp_path / "pred.nrrd"
    assert predict.main(["--model", str(patch_run), "--input", str(nifti_case), "--output", str(out)]) == 0
    arr, meta = readers.read_label(str(out))
    _, want = readers.read_image(str(nifti_case))
    assert arr.shape == nib.load(str(nifti_case)).shape[:3]
    np.testing.assert_allclose(meta.spacing, want.spacing, atol=1e-5)
    np.testing.assert_allclose(meta.origin, want.origin, atol=1e-4)
    np.testing.assert_allclose(meta.direction_matrix, want.direction_matrix, atol=1e-6)


@pytest.mark.parametrize("case,fragment", [
    ("unknown_model", "unknown model 'unet-nowhere'"),
    ("channels", "channel(s), but the model takes 4"),
    ("corrupt", "case.nii.gz"),
    ("output", "write a label map as"),
])
def test_bad_input_is_one_line_and_writes_nothing(patch_run, nifti_case, tmp_path, capsys, case, fragment):
    model, inp, out = str(patch_run), str(nifti_case), tmp_path / "out.nii.gz"
    if case == "unknown_model":
        model = "unet-nowhere"
    elif case == "channels":
        one = tmp_path / "one.nii.gz"
        nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), AFFINE), str(one))
        inp = str(one)
    elif case == "corrupt":
        bad = tmp_path / "case.nii.gz"
        bad.write_bytes(nifti_case.read_bytes()[:200])
        inp = str(bad)
    else:
        out = tmp_path / "out.jpg"
    assert predict.main(["--model", model, "--input", inp, "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_store_saves_lists_and_loads_by_name(patch_run, nifti_case, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    entry = zoo.save_pretrained(str(patch_run), "unet-phantoms-brain3d", card={"intended_use": "tests"})
    names = [e.name for e in zoo.list_pretrained()]
    assert "unet-phantoms-brain3d" in names
    card = json.loads((tmp_path / "home" / "unet-phantoms-brain3d" / "card.json").read_text(encoding="utf-8"))
    assert card["model"] == "unet" and card["plan"]["patch_size"] == [16, 16, 16]
    assert card["metrics"]["split"].startswith("validation") and card["intended_use"] == "tests"
    assert [c["label"] for c in card["class_codes"]] == list(range(1, len(card["data"]["class_names"])))
    pre = zoo.load_pretrained("unet-phantoms-brain3d")
    assert pre.step == entry.card["step"]
    out = tmp_path / "by_name.nii.gz"
    assert predict.main(["--model", "unet-phantoms-brain3d", "--input", str(nifti_case), "--output", str(out)]) == 0
    with pytest.raises(ValueError, match="exists"):
        zoo.save_pretrained(str(patch_run), "unet-phantoms-brain3d")
    with pytest.raises(ValueError, match="did you mean 'unet-phantoms-brain3d'"):
        zoo.load_pretrained("unet-phantoms-brain3")


@pytest.mark.real_data
def test_picture_model_without_plan_writes_a_mask_of_the_input_size(shared_data, tmp_path):
    from PIL import Image

    wd = tmp_path / "isic"
    config = apply_overrides(load_config("smoke"), {
        "data.name": "isic", "data.data_dir": str(shared_data / "isic_like"), "data.image_size": "(32,32)",
        "model.kwargs.features": "4", "model.kwargs.depth": "2", "train.batch_size": "4", "train.steps": "2",
        "train.warmup_steps": "0", "train.eval_every": "2", "train.checkpoint_every": "2", "train.log_every": "1"})
    train_and_evaluate(config, str(wd), progress=False)
    picture = shared_data / "isic_like" / "IMD008.png"
    out = tmp_path / "mask.png"
    assert predict.main(["--model", str(wd), "--input", str(picture), "--output", str(out)]) == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == np.asarray(Image.open(picture)).shape[:2] and set(np.unique(mask)) <= {0, 255}


def test_the_shipped_phantom_model_is_listed_loads_by_name_and_segments():
    from scoring import dice_per_class_np

    entry = {e.name: e for e in zoo.list_pretrained()}["unet-phantoms-brain2d"]
    assert entry.card["data_licence"].startswith("synthetic") and entry.card["metrics"]["mean_dice"] > 0.8
    pre = zoo.load_pretrained("unet-phantoms-brain2d")
    pc = phantoms.PhantomConfig(kind="brain", shape=(64, 64), seed=123, difficulty="realistic")
    cases = [phantoms.make_phantom(pc, i) for i in range(4)]
    pred = pre.predict(np.stack([c["image"] for c in cases]), batch_size=4)
    fg = [np.nanmean(dice_per_class_np(p, c["label"], 4)[1:]) for p, c in zip(pred, cases)]
    assert np.nanmean(fg) > 0.5  # the card gives its validation Dice on the same kind of phantoms
