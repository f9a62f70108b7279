"""TFDS builders: build from the real samples (and synthetic LUNA16 / BraTS cases) into a tmp dir,
read back through array_record without TensorFlow, check shapes, spacing, labels; bad input
raises ValueError and leaves nothing behind."""

from __future__ import annotations

import csv
import importlib.util
import os
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow_datasets as tfds

from data_pipelines import tfds_builders as tb


def _files_under(path) -> list[str]:
    return [os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs] if os.path.exists(path) else []


def test_tensorflow_is_not_needed():
    if importlib.util.find_spec("tensorflow") is not None:
        pytest.skip("tensorflow is installed in this environment; the check needs a venv without it")
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401
    assert {"brats", "isic", "luna16", "phantoms"} <= set(tfds.core.registered._DATASET_REGISTRY)


def test_phantoms_builder_round_trip(tmp_path):
    b = tb.prepare("phantoms", str(tmp_path), config=tb.PhantomsConfig(name="tiny", shape=(24, 24), num_train=6,
                                                                         num_val=3))
    train, val = tb.load(b, "train"), tb.load(b, "val")
    assert (len(train), len(val)) == (6, 3)
    ex = val[0]
    assert ex["image"].shape == (24, 24, 4) and ex["image"].dtype == np.float32
    assert ex["label"].shape == (24, 24) and set(np.unique(ex["label"])) <= {0, 1, 2, 3}
    assert ex["instances"].dtype == np.int32 and ex["comorbidities"].shape == (4,)
    assert ex["sex"] in (b"F", b"M") and ex["outcome"] in (0, 1) and 18 <= ex["age"] <= 90
    ids_t = {train[i]["patient_id"] for i in range(6)}
    ids_v = {val[i]["patient_id"] for i in range(3)}
    assert not ids_t & ids_v
    # The same record through the folder alone (no builder class) and through tfds.data_source.
    folder = tmp_path / "phantoms" / "tiny" / "1.1.0"
    again = tb.load(str(folder), "val")
    np.testing.assert_array_equal(again[0]["image"], ex["image"])
    assert "tensorflow" not in sys.modules


def test_phantoms_registered_config_via_data_source(tmp_path):
    # Plain TFDS calls (no file_format given): the builders default to array_record, not tfrecord.
    tfds.builder("phantoms", config="lung_2d", data_dir=str(tmp_path)).download_and_prepare()
    src = tfds.data_source("phantoms/lung_2d", data_dir=str(tmp_path), split="train")
    assert len(src) == 64 and src[3]["image"].shape == (64, 64, 1)
    assert any(files.endswith(".array_record-00000-of-00001") for files in _files_under(tmp_path))


@pytest.fixture(scope="module")
def one_brats_case(shared_data, tmp_path_factory):
    d = tmp_path_factory.mktemp("brats_manual")
    os.symlink(shared_data / "brats" / "brats_2013_pat0005_1", d / "brats_2013_pat0005_1")
    return str(d)


def test_brats_3d_from_real_sample(tmp_path, one_brats_case):
    cfg = tb.BratsConfig(name="test3d", mode="3d", downsample=4)
    src = tb.load(tb.prepare("brats", str(tmp_path), manual_dir=one_brats_case, config=cfg))
    assert len(src) == 1
    ex = src[0]
    assert ex["patient_id"] == b"brats_2013_pat0005_1" and ex["modalities"] == b"FLAIR,T1c"
    assert ex["image"].shape == (60, 60, 38, 2) and ex["label"].shape == (60, 60, 38)
    np.testing.assert_allclose(ex["spacing"], (4.0, 4.0, 155 / 38), rtol=1e-5)
    assert set(np.unique(ex["label"])) == {0, 1, 2, 3}
    reg = ex["regions"]
    np.testing.assert_array_equal(reg[..., 0], ex["label"] > 0)
    np.testing.assert_array_equal(reg[..., 2], ex["label"] == 3)
    assert reg[..., 2].sum() <= reg[..., 1].sum() <= reg[..., 0].sum()  # ET within TC within WT


def test_brats_2d_slices_from_real_sample(tmp_path, one_brats_case):
    cfg = tb.BratsConfig(name="test2d", mode="2d", image_size=(32, 32), max_slices_per_case=4, empty_slice_ratio=0.0)
    src = tb.load(tb.prepare("brats", str(tmp_path), manual_dir=one_brats_case, config=cfg))
    assert len(src) == 4
    zs = sorted(int(src[i]["slice_index"]) for i in range(4))
    for i in range(4):
        ex = src[i]
        assert ex["image"].shape == (32, 32, 2) and ex["label"].shape == (32, 32)
        np.testing.assert_allclose(ex["spacing"][:2], (7.5, 7.5))
        assert ex["origin"][2] == pytest.approx(float(ex["slice_index"]))  # slice z in world mm
    assert 59 <= zs[0] and zs[-1] <= 134 and len(set(zs)) == 4  # tumour slices are z 59..134 (SOURCES.md)
    # Slices from inside the tumour keep label after the 240 -> 32 nearest-neighbour resize
    # (the edge slices may hold only a few voxels, which can vanish).
    inner = [src[i] for i in range(4) if int(src[i]["slice_index"]) in zs[1:3]]
    assert all(ex["label"].any() for ex in inner)


def test_isic_from_ph2_sample(tmp_path, shared_data):
    src = tb.load(tb.prepare("isic", str(tmp_path), manual_dir=str(shared_data / "isic_like"),
                             config=tb.IsicConfig(name="t32", size=32)))
    assert len(src) == 40
    ex = src[0]
    assert ex["image"].shape == (32, 32, 3) and ex["image"].dtype == np.uint8
    assert set(np.unique(ex["label"])) == {0, 1}
    assert tuple(ex["original_size"]) in {(191, 256), (192, 256), (193, 256)}
    diags = {int(src[i]["diagnosis"]) for i in range(len(src))}
    assert diags == {0, 1, 2}


def test_luna16_from_labelled_ct_sample(tmp_path, shared_data):
    cfg = tb.Luna16Config(name="t4mm", spacing=(4.0, 4.0, 5.0))
    src = tb.load(tb.prepare("luna16", str(tmp_path), manual_dir=str(shared_data / "lung_ct"), config=cfg))
    assert len(src) == 2
    by_id = {src[i]["patient_id"]: src[i] for i in range(2)}
    lung1 = by_id[b"lung1"]
    np.testing.assert_allclose(lung1["spacing"], (4.0, 4.0, 5.0))
    assert lung1["image"].shape == (73, 53, 19, 1) and 0.0 <= lung1["image"].min() and lung1["image"].max() <= 1.0
    assert lung1["label"].sum() > 0 and lung1["boxes"].shape == (1, 6)
    # 1.36 mL lesion (SOURCES.md) -> equivalent-sphere diameter 13.7 mm.
    assert lung1["nodule_diameters_mm"][0] == pytest.approx(13.7, rel=0.15)
    lung2 = by_id[b"lung2"]
    assert lung2["nodule_diameters_mm"].max() == pytest.approx(45.2, rel=0.15)  # 48.4 mL


def _write_luna(root, spacing=(0.8, 0.8, 2.0), origin=(-100.0, -120.0, -300.0)):
    """Two scans in subset0/subset1 and annotations.csv with one nodule in the first."""
    rng = np.random.default_rng(0)
    rows = []
    for s, uid in ((0, "1.3.6.1.4.1.14519.5.2.1.6279.6001.100"), (1, "1.3.6.1.4.1.14519.5.2.1.6279.6001.200")):
        os.makedirs(os.path.join(root, f"subset{s}"))
        hu = rng.normal(-800, 30, size=(20, 40, 40)).astype(np.int16)  # (z, y, x)
        img = sitk.GetImageFromArray(hu)
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        sitk.WriteImage(img, os.path.join(root, f"subset{s}", f"{uid}.mhd"))
        if s == 0:
            centre_idx = np.array([20, 18, 10])  # (i, j, k) = (x, y, z)
            world = np.array(origin) + centre_idx * np.array(spacing)
            rows.append([uid, *world.tolist(), 8.0])
    with open(os.path.join(root, "annotations.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"])
        w.writerows(rows)


def test_luna16_synthetic_mhd_with_annotations(tmp_path):
    manual = tmp_path / "manual"
    _write_luna(str(manual))
    b = tb.prepare("luna16", str(tmp_path / "out"), manual_dir=str(manual), config="3d")
    assert set(b.info.splits.keys()) == {"subset0", "subset1"}
    ex = tb.load(b, "subset0")[0]
    assert ex["subset"] == 0 and ex["image"].shape == (40, 40, 20, 1)
    vox = 0.8 * 0.8 * 2.0
    sphere = 4.0 / 3.0 * np.pi * 4.0 ** 3 / vox
    assert abs(int(ex["label"].sum()) - sphere) / sphere < 0.2
    assert set(np.unique(ex["instances"])) == {0, 1}
    box = ex["boxes"][0]
    np.testing.assert_allclose((box[:3] + box[3:]) / 2.0, (20.5, 18.5, 10.5), atol=0.6)
    np.testing.assert_allclose(ex["nodule_diameters_mm"], [8.0])
    empty = tb.load(b, "subset1")[0]
    assert empty["label"].sum() == 0 and empty["boxes"].shape == (0, 6)


# ------------------------------------------------------------------ bad input

def _nii(path, arr, affine=None):
    nib.save(nib.Nifti1Image(arr, np.eye(4) if affine is None else affine), str(path))


def _brats_case(root, name="BraTS2021_00001", skip=(), seg=None, seg_shape=None):
    d = root / name
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for m in ("flair", "t1", "t1ce", "t2"):
        if m not in skip:
            _nii(d / f"{name}_{m}.nii.gz", rng.normal(size=(8, 8, 6)).astype(np.float32))
    if seg is None:
        seg = np.zeros(seg_shape or (8, 8, 6), np.float32)
        seg[2:5, 2:5, 2:4] = 2
        seg[3, 3, 3] = 4
    _nii(d / f"{name}_seg.nii.gz", seg)
    return d


def _bad_missing_modality(root):
    _brats_case(root, "BraTS2021_00001")
    _brats_case(root, "BraTS2021_00002", skip=("t1ce",))
    return tb.BratsConfig(name="bad", modalities=("FLAIR", "T1c")), r"BraTS2021_00002: missing \['T1c'\]"


def _bad_label_value(root):
    seg = np.zeros((8, 8, 6), np.float32)
    seg[1, 1, 1] = 5
    _brats_case(root, seg=seg)
    return tb.BratsConfig(name="bad"), r"_seg\.nii\.gz: label values \[5\] outside the expected set"


def _bad_geometry(root):
    _brats_case(root, seg_shape=(8, 8, 5))
    return tb.BratsConfig(name="bad"), r"_seg\.nii\.gz: geometry does not match .*_flair\.nii\.gz.*shape"


def _bad_truncated(root):
    d = _brats_case(root)
    p = d / "BraTS2021_00001_t2.nii.gz"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return tb.BratsConfig(name="bad"), r"_t2\.nii\.gz: cannot read NIfTI"


def _bad_second_case(root):
    # The first case is fine and gets written before the second fails: nothing may remain.
    _brats_case(root, "BraTS2021_00001")
    seg = np.zeros((8, 8, 6), np.float32)
    seg[0, 0, 0] = 9
    _brats_case(root, "BraTS2021_00002", seg=seg)
    return tb.BratsConfig(name="bad"), r"BraTS2021_00002_seg\.nii\.gz: label values \[9\]"


@pytest.mark.parametrize("make", [_bad_missing_modality, _bad_label_value, _bad_geometry, _bad_truncated,
                                  _bad_second_case])
def test_bad_brats_input_raises_and_leaves_nothing(tmp_path, make):
    manual = tmp_path / "manual"
    manual.mkdir()
    cfg, msg = make(manual)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=msg):
        tb.prepare("brats", str(out), manual_dir=str(manual), config=cfg)
    assert _files_under(out) == []


def test_good_synthetic_brats_maps_labels(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    _brats_case(manual)
    ex = tb.load(tb.prepare("brats", str(tmp_path / "out"), manual_dir=str(manual),
                            config=tb.BratsConfig(name="ok")))[0]
    assert ex["modalities"] == b"FLAIR,T1,T1c,T2" and ex["image"].shape == (8, 8, 6, 4)
    assert int((ex["label"] == 2).sum()) == 17 and int((ex["label"] == 3).sum()) == 1  # BraTS 4 -> 3


def test_bad_isic_mask_and_luna_annotations(tmp_path):
    from PIL import Image

    manual = tmp_path / "isic"
    manual.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(manual / "ISIC_0000001.png")
    Image.fromarray(np.full((8, 8), 128, np.uint8)).save(manual / "ISIC_0000001_segmentation.png")
    with pytest.raises(ValueError, match=r"ISIC_0000001_segmentation\.png: label values \[128\]"):
        tb.prepare("isic", str(tmp_path / "o1"), manual_dir=str(manual), config="256")
    assert _files_under(tmp_path / "o1") == []
    luna = tmp_path / "luna"
    _write_luna(str(luna))
    with open(luna / "annotations.csv", "a") as f:
        f.write("x,1,2,abc,5\n")
    with pytest.raises(ValueError, match=r"annotations\.csv: line 3: non-numeric"):
        tb.prepare("luna16", str(tmp_path / "o2"), manual_dir=str(luna), config="3d")
    assert _files_under(tmp_path / "o2") == []


def test_luna16_2d_slices_carry_2d_boxes(tmp_path):
    manual = tmp_path / "manual"
    _write_luna(str(manual))
    b = tb.prepare("luna16", str(tmp_path / "out"), manual_dir=str(manual), config="2d")
    s0 = tb.load(b, "subset0")
    zs = sorted(int(s0[i]["slice_index"]) for i in range(len(s0)))
    assert zs == [8, 9, 10, 11, 12]  # 8 mm sphere at z index 10, 2 mm slices
    for i in range(len(s0)):
        ex = s0[i]
        assert ex["image"].shape == (40, 40, 1) and ex["boxes"].shape == (1, 4)
        y1, x1, y2, x2 = ex["boxes"][0]
        assert ex["label"][int(y1):int(y2), int(x1):int(x2)].sum() == ex["label"].sum() > 0
    assert len(tb.load(b, "subset1")) == 1  # a scan without nodules still yields a slice
