"""Uncertainty maps, calibration records and probabilities on the input grid: entropy / mutual information
against hand-computed values, the stored temperature applied to logits, ``zoo.predict --uncertainty`` writing
maps in the input's geometry, and an empty batch through the prediction path (issue 35's sweep).

The model is the package's phantom U-Net (``unet-phantoms-brain2d``: 2D, 4 channels, 4 classes; no training).
"""

from __future__ import annotations

import json
import math
import os

import nibabel as nib
import numpy as np
import pytest

import zoo
from data_pipelines import phantoms, readers
from zoo import predict
from zoo.calibration import CALIBRATION_FILE, load_calibration, model_temperature, save_calibration
from zoo.prediction import predict_case, predict_case_proba, read_case
from zoo.uncertainty import (ensemble_case_proba, entropy, entropy_map, mutual_information,
                             mutual_information_path, uncertainty_maps)

MODEL = "unet-phantoms-brain2d"
AFFINE = np.array([[0.0, -0.9, 0.0, 12.0], [1.1, 0.0, 0.0, -3.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


@pytest.fixture(scope="module")
def pre():
    return zoo.load_pretrained(MODEL)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A 4-modality phantom volume (48 x 40 x 3) with a rotated, anisotropic affine, as NIfTI."""
    pc = phantoms.PhantomConfig(kind="brain", shape=(48, 40), seed=3, difficulty="realistic")
    image = np.stack([phantoms.make_phantom(pc, i)["image"] for i in range(3)], axis=2).astype(np.float32)
    path = tmp_path_factory.mktemp("unc") / "case.nii.gz"
    nib.save(nib.Nifti1Image(image, AFFINE), str(path))
    return path


def test_entropy_and_mutual_information_by_hand():
    p = np.array([[0.5, 0.5], [1.0, 0.0], [0.9, 0.1]])
    want = [math.log(2), 0.0, -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))]
    np.testing.assert_allclose(entropy(p), want, rtol=1e-6)
    # two members that disagree completely: mean (0.5, 0.5), each certain -> MI = log 2; agreeing members -> 0
    members = np.array([[[1.0, 0.0], [0.7, 0.3]], [[0.0, 1.0], [0.7, 0.3]]])
    np.testing.assert_allclose(mutual_information(members), [math.log(2), 0.0], atol=1e-6)
    # partly disagreeing: H(0.6, 0.4) - (H(0.8, 0.2) + H(0.4, 0.6)) / 2
    h = lambda q: -(q * math.log(q) + (1 - q) * math.log(1 - q))  # noqa: E731
    np.testing.assert_allclose(mutual_information(np.array([[[0.8, 0.2]], [[0.4, 0.6]]])),
                               [h(0.6) - (h(0.8) + h(0.4)) / 2], rtol=1e-5)
    with pytest.raises(ValueError, match="non-negative"):
        entropy(np.array([[-0.1, 1.1]]))


def test_probabilities_on_the_input_grid_and_members(pre, volume):
    image, meta, _ = read_case(str(volume), pre)
    case = predict_case_proba(pre, image, meta, tta=True, members=True)
    assert case.proba.shape == (48, 40, 3, 4) and case.members.shape == (4, 48, 40, 3, 4)  # 1 + 3 mirrorings
    np.testing.assert_allclose(case.proba.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(case.members.mean(0), case.proba, atol=1e-6)
    plain = predict_case_proba(pre, image, meta, tta=True)
    np.testing.assert_allclose(plain.proba, case.proba, atol=1e-5)  # members or not: one mean
    np.testing.assert_array_equal(predict_case(pre, image, meta, tta=True), plain.proba.argmax(-1))
    maps = uncertainty_maps(case)
    assert set(maps) == {"entropy", "mutual_information"}
    assert 0 <= maps["mutual_information"].min() and maps["mutual_information"].max() <= maps["entropy"].max() <= 1
    np.testing.assert_allclose(entropy_map(pre, image, meta, tta=True), maps["entropy"], atol=1e-5)
    folds = ensemble_case_proba([pre, pre], image, meta, tta=True)  # the program compiled above
    assert folds.members.shape == (2, 48, 40, 3, 4)
    np.testing.assert_allclose(uncertainty_maps(folds)["mutual_information"], 0.0, atol=1e-6)  # equal folds agree


def test_temperature_divides_the_logits(pre):
    x = phantoms.make_phantom(phantoms.PhantomConfig(kind="brain", shape=(64, 64), seed=1), 0)["image"][None]
    logits = np.asarray(pre.model.apply(pre.variables, x, train=False), np.float64)
    for t in (0.5, 3.0):
        want = np.exp(logits / t - (logits / t).max(-1, keepdims=True))
        want /= want.sum(-1, keepdims=True)
        got = pre.predictor.sliding_window_proba(x, (64, 64), temperature=t)
        np.testing.assert_allclose(got, want, atol=2e-4)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        pre.predictor.sliding_window_proba(x, (64, 64), temperature=0.0)


def test_calibration_record_round_trips_through_the_store(tmp_path, monkeypatch, volume, pre):
    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    entry = zoo.save_pretrained(zoo.store.resolve(MODEL), "unet-calibrated", card={"intended_use": "tests"})
    assert model_temperature("unet-calibrated") is None  # an entry without a record: as trained
    path = save_calibration("unet-calibrated", 2.5, validation_cases=7, conformal={"alpha": 0.1, "threshold": 0.3})
    assert path == os.path.join(entry.path, CALIBRATION_FILE)
    record = load_calibration(os.path.join(entry.path, "checkpoints"))  # a checkpoint folder means its model
    assert record["temperature"] == 2.5 and record["conformal"]["threshold"] == 0.3
    out, unc = tmp_path / "seg.nii.gz", tmp_path / "unc.nii.gz"
    assert predict.main(["--model", "unet-calibrated", "--input", str(volume), "--output", str(out),
                         "--uncertainty", str(unc)]) == 0
    image, meta, _ = read_case(str(volume), pre)
    hot = uncertainty_maps(predict_case_proba(pre, image, meta, temperature=2.5))["entropy"]
    cold = uncertainty_maps(predict_case_proba(pre, image, meta))["entropy"]
    written = np.asarray(nib.load(str(unc)).dataobj)
    np.testing.assert_allclose(written, hot, atol=1e-5)  # the stored temperature was applied
    again = zoo.save_pretrained(entry.path, "unet-calibrated-copy", card={"intended_use": "tests"})
    assert model_temperature(again.path) == 2.5  # the record travels with the entry it is saved from
    assert written.mean() > cold.mean()  # T > 1 flattens the softmax
    (tmp_path / "home" / "unet-calibrated" / CALIBRATION_FILE).write_text(json.dumps({"temperature": -1}))
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        model_temperature("unet-calibrated")


def test_cli_writes_entropy_and_mi_maps_in_the_input_geometry(volume, tmp_path, capsys):
    out, unc = tmp_path / "seg.nrrd", tmp_path / "unc.nrrd"
    assert predict.main(["--model", MODEL, "--input", str(volume), "--output", str(out), "--tta",
                         "--uncertainty", str(unc)]) == 0
    _, want = readers.read_image(str(volume))
    for path in (unc, tmp_path / "unc_mi.nrrd"):
        arr, meta = readers.read_image(str(path))
        assert arr.shape[:3] == (48, 40, 3) and arr.dtype == np.float32
        assert 0 <= arr.min() and arr.max() <= 1 and arr.max() > 0
        np.testing.assert_allclose(meta.spacing, want.spacing, atol=1e-5)
        np.testing.assert_allclose(meta.origin, want.origin, atol=1e-4)
        np.testing.assert_allclose(meta.direction_matrix, want.direction_matrix, atol=1e-6)
    assert mutual_information_path(str(unc)) == str(tmp_path / "unc_mi.nrrd")
    assert "wrote" in capsys.readouterr().out


def test_cli_writes_an_8bit_entropy_picture(tmp_path):
    from PIL import Image

    pc = phantoms.PhantomConfig(kind="brain", shape=(64, 64), seed=4)
    img = phantoms.make_phantom(pc, 0)["image"]
    rgba = np.clip(img / max(float(img.max()), 1e-6) * 255, 0, 255).astype(np.uint8)
    picture, out, unc = tmp_path / "case.png", tmp_path / "seg.png", tmp_path / "unc.png"
    Image.fromarray(rgba, mode="RGBA").save(picture)
    assert predict.main(["--model", MODEL, "--input", str(picture), "--output", str(out),
                         "--uncertainty", str(unc)]) == 0
    m = np.asarray(Image.open(unc))
    assert m.shape == (64, 64) and m.dtype == np.uint8 and m.max() > 0


@pytest.mark.parametrize("argv,fragment", [
    (["--uncertainty", "unc.txt"], "--uncertainty unc.txt: write the map as"),
    (["--uncertainty", "missing/unc.nii.gz"], "--uncertainty missing/unc.nii.gz: folder"),
])
def test_bad_uncertainty_output_is_one_line_and_writes_nothing(volume, tmp_path, capsys, argv, fragment, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = predict.main(["--model", MODEL, "--input", str(volume), "--output", "seg.nii.gz", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not os.listdir(tmp_path)


def test_an_empty_batch_predicts_an_empty_result(pre):
    empty = np.zeros((0, 64, 64, 4), np.float32)
    labels, proba = pre.predict(empty), pre.predict_proba(empty)
    assert labels.shape == (0, 64, 64) and labels.dtype == np.int32
    assert proba.shape == (0, 64, 64, 4) and proba.dtype == np.float32
