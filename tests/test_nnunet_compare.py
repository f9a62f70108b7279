"""eval.studies.nnunet_raw / nnunet_study: a data family's cases become an nnU-Net raw data set that nnU-Net's own
integrity check accepts, with labels and geometry kept; splits_final.json holds the zoo's patient-level folds; the
study (tiny, slow) scores both tools with the same call and resumes, skipping a finished fold.

nnU-Net and torch run only in subprocesses (never in this jax process); skipped when nnunetv2 is not installed
(``pip install -e ".[nnunet]"``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_pipelines import readers
from data_pipelines.families import CaseFiles, DataFamily, register_family, unregister_family
from eval.studies.nnunet_raw import (BRATS_REGIONS, case_identifier, convert, dataset_folder_name, fold_patients,
                                     read_raw_cases, write_label_map, write_splits)
from zoo.training import kfold

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nnunetv2") is None,
                                reason="nnunetv2 is not installed (pip install -e '.[nnunet]')")

NAME = "nnunet_toy"
SHAPE = (12, 10, 6)
SPACING = (0.9, 1.1, 2.5)
ORIGIN = (-10.0, 4.0, 7.5)
# A rotation about z (not axis-aligned), so a writer that drops the direction fails the round trip.
C, S = np.cos(0.3), np.sin(0.3)
DIRECTION = ((C, -S, 0.0), (S, C, 0.0), (0.0, 0.0, 1.0))


def _toy_volumes(folder, n_patients: int = 4) -> list[dict]:
    """Two-channel volumes with a blob of classes 1..3 (BraTS-like), one case per patient, two for patient p1."""
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    out = []
    for p in range(n_patients):
        for k in range(2 if p == 1 else 1):
            label = np.zeros(SHAPE, np.int32)
            x, y = rng.integers(2, 6, size=2)
            label[x:x + 5, y:y + 4, 1:5] = 2
            label[x + 1:x + 4, y + 1:y + 3, 2:4] = 1
            label[x + 2, y + 1, 2] = 3
            image = np.stack([label * 10.0 + rng.normal(0, 1, SHAPE), rng.normal(0, 1, SHAPE)], -1).astype(np.float32)
            meta = readers.ImageMeta(SPACING, ORIGIN, DIRECTION, "", "nifti")
            truth = folder / f"pat{p}_{k}_seg.nii.gz"
            img = sitk.GetImageFromArray(np.ascontiguousarray(label.astype(np.uint8).T))
            img.SetSpacing(SPACING), img.SetOrigin(ORIGIN), img.SetDirection(np.ravel(DIRECTION).tolist())
            sitk.WriteImage(img, str(truth))
            out.append({"patient_id": f"p{p}", "case_id": f"pat{p}_{k}", "image": image, "label": label,
                        "meta": meta, "truth": str(truth)})
    return out


@pytest.fixture
def toy_family(tmp_path):
    cases = _toy_volumes(tmp_path)

    def read_cases(cfg):
        return ([{k: c[k] for k in ("patient_id", "image", "label", "meta")} for c in cases], ("FLAIR", "T1c"),
                ("background", "necrosis", "oedema", "enhancing"))

    def find_cases(cfg):
        return [CaseFiles(c["patient_id"], c["case_id"], c["truth"], c["truth"]) for c in cases]

    def load(cfg):
        raise ValueError("the toy family has no training arrays")

    register_family(DataFamily(NAME, load=load, read_cases=read_cases, find_cases=find_cases, modality="MR",
                               needs_data_dir=False), replace=True)
    yield cases
    unregister_family(NAME)


def _cfg():
    import ml_collections

    return ml_collections.ConfigDict({"name": NAME, "data_dir": ""})


def _nnunet_env(root) -> dict:
    env = dict(os.environ)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[var] = str(root / var)
    return env


def test_converter_writes_a_dataset_nnunet_accepts_with_geometry_and_labels(toy_family, tmp_path):
    raw = convert(NAME, _cfg(), str(tmp_path / "nnUNet_raw"), 7, "toy")
    folder = raw["folder"]
    assert os.path.basename(folder) == "Dataset007_toy" == dataset_folder_name(7, "toy")
    ds = json.load(open(os.path.join(folder, "dataset.json")))
    assert ds["channel_names"] == {"0": "FLAIR", "1": "T1c"} and ds["file_ending"] == ".nii.gz"
    assert ds["labels"] == {"background": 0, "necrosis": 1, "oedema": 2, "enhancing": 3}
    assert ds["numTraining"] == len(toy_family) == 5
    ids = [c["case"] for c in read_raw_cases(folder)]
    assert ids == ["p0", "p1-0", "p1-1", "p2", "p3"]
    # nnU-Net's own integrity check (in a subprocess: torch never shares a process with jax)
    check = ("import sys; from nnunetv2.experiment_planning.verify_dataset_integrity import "
             "verify_dataset_integrity as v; v(sys.argv[1], 1); print('INTEGRITY OK')")
    proc = subprocess.run([sys.executable, "-c", check, folder], env=_nnunet_env(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and "INTEGRITY OK" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
    # labels, intensities and geometry round-trip (read back with ITK, as nnU-Net's SimpleITKIO does)
    import SimpleITK as sitk

    for case, cid in zip(toy_family, ids):
        lab = sitk.ReadImage(os.path.join(folder, "labelsTr", cid + ".nii.gz"))
        assert np.allclose(lab.GetSpacing(), SPACING) and np.allclose(lab.GetOrigin(), ORIGIN)
        assert np.allclose(lab.GetDirection(), np.ravel(DIRECTION))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(lab).T, case["label"])
        for ch in range(2):
            img = sitk.ReadImage(os.path.join(folder, "imagesTr", f"{cid}_{ch:04d}.nii.gz"))
            assert np.allclose(img.GetDirection(), np.ravel(DIRECTION))
            np.testing.assert_allclose(sitk.GetArrayFromImage(img).T, case["image"][..., ch], rtol=0, atol=1e-6)
        # and through the project's reader (LPS geometry of the reference file it came from)
        label, meta = readers.read_label(os.path.join(folder, "labelsTr", cid + ".nii.gz"))
        ref_label, ref_meta = readers.read_label(case["truth"])
        np.testing.assert_array_equal(label, ref_label)
        np.testing.assert_allclose(meta.affine(), ref_meta.affine(), atol=1e-5)


def test_brats_regions_and_bad_input(toy_family, tmp_path):
    raw = convert(NAME, _cfg(), str(tmp_path / "raw"), 8, "toyregions", regions=BRATS_REGIONS)
    ds = json.load(open(os.path.join(raw["folder"], "dataset.json")))
    assert ds["labels"]["whole_tumour"] == [1, 2, 3] and ds["regions_class_order"] == [2, 1, 3]
    with pytest.raises(ValueError, match="1..999"):
        convert(NAME, _cfg(), str(tmp_path / "raw"), 1000, "toy")
    with pytest.raises(ValueError, match="dataset name"):
        dataset_folder_name(3, "bad name")
    with pytest.raises(ValueError, match="8 bits"):
        write_label_map(np.full((4, 4), 300), None, str(tmp_path / "x.png"))
    assert case_identifier("IMD_008", 0, 1) == "IMD-008"  # nnU-Net splits channel suffixes at '_'


def test_splits_final_holds_the_zoos_folds(toy_family, tmp_path):
    raw = convert(NAME, _cfg(), str(tmp_path / "raw"), 9, "toy")
    cases = read_raw_cases(raw["folder"])
    folds = fold_patients([c["patient_id"] for c in cases], 2, seed=3)
    splits = write_splits(str(tmp_path / "pre"), cases, folds)
    assert json.load(open(tmp_path / "pre" / "splits_final.json")) == splits
    # the zoo's folds over per-slice patient ids (what zoo.training.kfold trains on): same patients per fold
    slice_ids = [pid for c in toy_family for pid in [c["patient_id"]] * 3]
    for (tr, va), split in zip(kfold.patient_folds(slice_ids, 2, 3), splits):
        zoo_val = {slice_ids[j] for j in va}
        zoo_train = {slice_ids[j] for j in tr}
        nn_val = {c["patient_id"] for c in cases if c["case"] in split["val"]}
        nn_train = {c["patient_id"] for c in cases if c["case"] in split["train"]}
        assert zoo_val == nn_val and zoo_train == nn_train and not nn_val & nn_train
    assert sorted(c for s in splits for c in s["val"]) == sorted(c["case"] for c in cases)  # every case once


# BraTS-like volumes stored the NIfTI way (RAS: direction diag(-1, -1, 1) in ITK's LPS): read_cases reorients
# them to LPS, so the converter must put every case back in its files' own geometry.
RAS = ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0))


def _brats_folder(folder, n: int = 2) -> None:
    import SimpleITK as sitk

    rng = np.random.default_rng(2)
    for p in range(n):
        case = folder / f"brats_2013_pat{p:04d}_1"
        case.mkdir(parents=True)
        label = np.zeros((9, 8, 5), np.uint8)  # BraTS 2015 values: 1 necrosis, 2 oedema, 3 non-enh., 4 enh.
        label[2:7, 1 + p:6 + p, 1:4] = 2
        label[3:6, 2 + p:5 + p, 2] = 4
        label[4, 3 + p, 2] = 3
        label[3, 2 + p, 1] = 1
        flair = (label * 3.0 + rng.normal(0, 0.5, label.shape)).astype(np.float32)
        for name, values in (("Flair_subtrMeanDivStd", flair), ("T1c_subtrMeanDivStd", -flair),
                             ("OTMultiClass", label)):
            img = sitk.GetImageFromArray(np.ascontiguousarray(values.T))
            img.SetSpacing((1.0, 1.2, 2.0)), img.SetOrigin((30.0 + p, -5.0, 12.0))
            img.SetDirection(np.ravel(RAS).tolist())
            sitk.WriteImage(img, str(case / f"{name}.nii.gz"))


def test_brats_like_volumes_keep_their_files_geometry_for_both_tools(tmp_path):
    import ml_collections

    from data_pipelines.brats import map_brats_labels
    from data_pipelines.geometry import orientation_code
    from eval.studies.nnunet_study import score_folder

    _brats_folder(tmp_path / "brats")
    cfg = ml_collections.ConfigDict({"name": "brats", "data_dir": str(tmp_path / "brats")})
    raw = convert("brats", cfg, str(tmp_path / "raw"), 12, "brats", regions=BRATS_REGIONS)
    pred, ref = tmp_path / "zoo_pred", tmp_path / "ref"
    for c in raw["cases"]:
        truth, truth_meta = readers.read_label(c["truth"])
        assert orientation_code(truth_meta) == "RAS"
        label, meta = readers.read_label(os.path.join(raw["folder"], "labelsTr", c["case"] + ".nii.gz"))
        np.testing.assert_array_equal(label, map_brats_labels(truth))  # same voxel order as the file
        np.testing.assert_allclose(meta.affine(), truth_meta.affine(), atol=1e-6)
        flair, flair_meta = readers.read_image(os.path.join(c["input"], "Flair_subtrMeanDivStd.nii.gz"))
        img, img_meta = readers.read_image(os.path.join(raw["folder"], "imagesTr", c["case"] + "_0000.nii.gz"))
        np.testing.assert_allclose(img, flair, atol=1e-6)
        np.testing.assert_allclose(img_meta.affine(), flair_meta.affine(), atol=1e-6)
        # the zoo writes its label map in the input file's geometry; eval.folders accepts it against the reference
        with open(os.path.join(raw["folder"], "labelsTr", c["case"] + ".nii.gz"), "rb") as fh:
            (ref.mkdir(exist_ok=True) or ref / (c["case"] + ".nii.gz")).write_bytes(fh.read())
        pred.mkdir(exist_ok=True)
        write_label_map(map_brats_labels(truth), flair_meta, str(pred / (c["case"] + ".nii.gz")))
    scores = score_folder(str(pred), str(ref), 4, True)
    assert sorted(scores["cases"]) == sorted(c["case"] for c in raw["cases"])
    assert all(d["WT"] == d["TC"] == d["ET"] == 1.0
               for d in scores["cases"].values())


# ------------------------------------------------------------------------------------ the study, end to end

def _isic_folder(folder, n: int = 6):
    rng = np.random.default_rng(1)
    for i in range(n):
        lab = np.zeros((40, 48), np.uint8)
        r, c = rng.integers(4, 20, size=2)
        lab[r:r + 14, c:c + 18] = 255
        img = np.clip(rng.normal(160, 12, (40, 48, 3)) - (lab[..., None] > 0) * 90, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"IMD{i:03d}.png")
        Image.fromarray(lab).save(folder / f"IMD{i:03d}_mask.png")


@pytest.mark.slow
def test_study_scores_both_tools_with_one_call_and_resumes(tmp_path):
    from eval.studies.nnunet_study import run_study, score_folder

    data = tmp_path / "isic"
    data.mkdir()
    _isic_folder(data)
    out = tmp_path / "out"
    logs: list[str] = []
    kw = dict(budget_min=0.1, folds=2, configs=("2d",), dataset_id=11, quick=True, threads=1, clock="cpu",
              log=lambda *a, **k: logs.append(" ".join(map(str, a))))
    run_study(str(data), "isic", str(out), fold_ids=[0], **kw)  # an "interrupted" study: fold 0 only
    done0 = out / "folds" / "fold0" / "done.json"
    assert done0.is_file() and not (out / "folds" / "fold1").exists()
    mtime = done0.stat().st_mtime_ns
    ckpt = next((out / "nnUNet_results").rglob("fold_0/checkpoint_final.pth"))
    ckpt_mtime = ckpt.stat().st_mtime_ns
    logs.clear()
    result = run_study(str(data), "isic", str(out), fold_ids=[1], **kw)  # the next run: fold 1 only
    assert not any("fold 0:" in line for line in logs)  # fold 0 not run again ...
    assert result["folds_done"] == [0, 1]  # ... yet in the table: it gathers every finished fold under OUT
    logs.clear()
    result = run_study(str(data), "isic", str(out), **kw)  # a rerun of all folds: both skipped
    assert any("fold 0: done.json present, skipped" in line for line in logs)
    assert any("fold 1: done.json present, skipped" in line for line in logs)
    assert done0.stat().st_mtime_ns == mtime and ckpt.stat().st_mtime_ns == ckpt_mtime
    assert result["folds_done"] == [0, 1] and result["clock"] == "cpu"
    with pytest.raises(ValueError, match="--clock wall"):  # one table, one clock: a done fold is not mixed
        run_study(str(data), "isic", str(out), **dict(kw, clock="wall"))
    assert set(result["contenders"]) == {"nnunet-2d", "zoo-unet"}
    for fold in (0, 1):
        rec = json.load(open(out / "folds" / f"fold{fold}" / "done.json"))
        ref = str(out / "folds" / f"fold{fold}" / "ref")
        held = sorted(os.path.splitext(f)[0] for f in os.listdir(ref))
        assert len(held) == 3
        assert rec["clock"] == "cpu"
        nn = next(c for c in rec["contenders"] if c["contender"] == "nnunet-2d")
        # nnU-Net trained on its process's CPU seconds: stopped by the 6 s budget, checked every iteration
        assert nn["stopped_by_time"] and 6.0 <= nn["cpu_s"] < 60.0 and nn["trained_s"] > 0
        for c in rec["contenders"]:
            # each tool's label maps, scored again by the same call against the same references
            assert sorted(f[:-4] for f in os.listdir(c["pred"]) if f.endswith(".png")) == held
            assert score_folder(c["pred"], ref, 2, False) == c["scores"]
            assert sorted(c["scores"]["cases"]) == held and c["steps"] >= 1
            assert all(0.0 <= d["1"] <= 1.0 for d in c["scores"]["cases"].values())
    assert all(len(s["per_case"]) == 6 for s in result["contenders"].values())
    table = (out / "table.md").read_text(encoding="utf-8")
    assert "nnunet-2d" in table and "zoo-unet" in table and "250,000" in table


def test_cpu_budget_counts_cpu_seconds_from_the_first_step_and_stops_through_the_preemption_signal(tmp_path):
    import signal
    import time

    from eval.studies.nnunet_study import CpuBudget

    started = tmp_path / "metrics.jsonl"
    stops: list[int] = []
    with CpuBudget(0.3, str(started), poll_s=0.01) as watch:
        time.sleep(0.1)
        assert watch.cpu_s is None  # nothing counted before the training core logs its first step
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stops.append(signum))  # the core's handler
        try:
            started.write_text("{}", encoding="utf-8")
            t0 = time.time()
            while not stops and time.time() - t0 < 60:
                sum(i * i for i in range(20000))  # CPU work in this process
        finally:
            signal.signal(signal.SIGTERM, previous)
        os.kill(os.getpid(), signal.SIGTERM)  # a late signal, after the core's handler is gone: ignored
        time.sleep(0.05)
    assert stops == [signal.SIGTERM] and watch.fired
    assert 0.3 <= watch.cpu_s < 10 and watch.wall_s > 0


@pytest.mark.parametrize("argv, message", [
    (["--data_dir", "/nonexistent/dir", "--family", "isic", "--budget_min", "1"], "--data_dir"),
    (["--data_dir", ".", "--family", "isic", "--budget_min", "0"], "--budget_min must be > 0"),
    (["--data_dir", ".", "--family", "isic", "--budget_min", "1", "--configs", "3d_lowres"], "--configs: unknown"),
    (["--data_dir", ".", "--family", "isic", "--budget_min", "1", "--fold_ids", "a"], "--fold_ids expects"),
])
def test_command_line_bad_input_is_one_error_line(argv, message, tmp_path, capsys):
    from eval.studies.compare_nnunet import main

    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_worker_refuses_a_missing_environment_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    proc = subprocess.run([sys.executable, "-m", "eval.studies.nnunet_worker", "train", "--dataset_id", "3",
                           "--fold", "0", "--budget_s", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: environment variable nnUNet_raw is not set")
