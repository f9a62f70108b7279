"""Real data sets through ``datasets.load_dataset``: BraTS naming schemes and label mapping, slices,
patient-level split, caching, and the 2D image/mask folders (ISIC/PH2, CXR, EM), CT."""

from __future__ import annotations

import os

import ml_collections
import nibabel as nib
import numpy as np
import pytest

import scoring
from data_pipelines import brats, cache, image_folders
from data_pipelines.datasets import load_dataset
from data_pipelines.families import list_families


def _cfg(name, data_dir, tmp_path, **kw):
    c = ml_collections.ConfigDict({"name": name, "kind": "brain", "data_dir": str(data_dir), "spatial_dims": 2,
                                   "image_size": (32, 32), "channels": 0, "num_train": 0, "num_val": 0,
                                   "val_fraction": 0.25, "seed": 0, "cache_dir": str(tmp_path / "cache")})
    for k, v in kw.items():
        c[k] = v
    return c


def test_real_datasets_are_registered():
    assert {"phantoms", "brats", "isic", "luna16", "folder"} <= {f.name for f in list_families()}


NAMING = {
    "2021": ["{c}_flair.nii.gz", "{c}_t1.nii.gz", "{c}_t1ce.nii.gz", "{c}_t2.nii.gz", "{c}_seg.nii.gz"],
    "2023": ["{c}-t2f.nii.gz", "{c}-t1n.nii.gz", "{c}-t1c.nii.gz", "{c}-t2w.nii.gz", "{c}-seg.nii.gz"],
    "deepmedic": ["Flair_subtrMeanDivStd.nii.gz", "T1_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz",
                  "T2_subtrMeanDivStd.nii.gz", "OTMultiClass.nii.gz", "brainmask.nii.gz"],
    "smir2015": ["VSD.Brain.XX.O.MR_Flair.54512/VSD.Brain.XX.O.MR_Flair.54512.mha",
                 "VSD.Brain.XX.O.MR_T1.54513/VSD.Brain.XX.O.MR_T1.54513.mha",
                 "VSD.Brain.XX.O.MR_T1c.54514/VSD.Brain.XX.O.MR_T1c.54514.mha",
                 "VSD.Brain.XX.O.MR_T2.54515/VSD.Brain.XX.O.MR_T2.54515.mha",
                 "VSD.Brain_3more.XX.O.OT.54517/VSD.Brain_3more.XX.O.OT.54517.mha"],
}


@pytest.mark.parametrize("scheme", sorted(NAMING))
def test_brats_naming_schemes_are_recognised(tmp_path, scheme):
    case = "BraTS-GLI-00001-000" if scheme == "2023" else "Brats18_CBICA_AAA_1"
    for rel in NAMING[scheme]:
        p = tmp_path / case / rel.format(c=case)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    cases = brats.find_brats_cases(str(tmp_path))
    assert len(cases) == 1 and cases[0].patient_id == case
    want = {"FLAIR", "T1", "T1c", "T2", "label"} | ({"brainmask"} if scheme == "deepmedic" else set())
    assert set(cases[0].files) == want
    assert brats.available_modalities(cases) == ("FLAIR", "T1", "T1c", "T2")


def test_brats_label_mapping_and_regions():
    raw = np.array([0, 1, 2, 3, 4])
    np.testing.assert_array_equal(brats.map_brats_labels(raw), [0, 1, 2, 1, 3])
    np.testing.assert_array_equal(brats.map_brats_labels(np.array([0, 1, 2, 3]), brats.BRATS2023_LABEL_MAP),
                                  [0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"seg\.nii: label values \[5\] outside"):
        brats.map_brats_labels(np.array([0, 5]), path="seg.nii")
    reg = scoring.brats_region_channels(brats.map_brats_labels(raw))
    np.testing.assert_array_equal(reg, [[0, 0, 0], [1, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])


def _synthetic_brats(root, n=3, shape=(16, 16, 10)):
    rng = np.random.default_rng(0)
    for i in range(n):
        name = f"BraTS2021_{i:05d}"
        d = root / name
        d.mkdir(parents=True)
        brain = np.zeros(shape, bool)
        brain[2:14, 2:14, 1:9] = True
        for m in ("flair", "t1ce"):
            img = np.where(brain, rng.normal(size=shape), -3.0).astype(np.float32)
            nib.save(nib.Nifti1Image(img, np.eye(4)), str(d / f"{name}_{m}.nii.gz"))
        seg = np.zeros(shape, np.float32)
        seg[5:10, 5:10, 3:6] = 2
        seg[6:9, 6:9, 4] = 4
        seg[7, 7, 4] = 1
        nib.save(nib.Nifti1Image(seg, np.eye(4)), str(d / f"{name}_seg.nii.gz"))


def test_brats_loader_slices_split_by_patient_and_caches(tmp_path):
    _synthetic_brats(tmp_path / "data")
    cfg = _cfg("brats", tmp_path / "data", tmp_path, empty_slice_ratio=1.0, val_fraction=0.34, brats_regions=True)
    train, val, info = load_dataset(cfg)
    assert info.channel_names == ("FLAIR", "T1c") and info.num_classes == 4
    assert train["image"].shape[1:] == (32, 32, 2) and train["label"].dtype == np.int32
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert len(set(train["patient_id"])) == 2 and len(set(val["patient_id"])) == 1
    # 3 tumour slices per case + as many brain slices without tumour.
    assert len(train["image"]) == 2 * 6 and len(val["image"]) == 6
    assert int((train["label"] > 0).any(axis=(1, 2)).sum()) == 2 * 3
    assert set(np.unique(train["label"])) == {0, 1, 2, 3}
    np.testing.assert_array_equal(train["regions"][..., 0], train["label"] > 0)
    assert len(os.listdir(tmp_path / "cache")) == 3
    again, _, _ = load_dataset(cfg)  # from the cache: identical
    np.testing.assert_array_equal(again["image"], train["image"])
    one, _, info1 = load_dataset(_cfg("brats", tmp_path / "data", tmp_path, channels=1))
    assert one["image"].shape[-1] == 1 and info1.channel_names == ("FLAIR",)
    with pytest.raises(ValueError, match="data.channels=3"):
        load_dataset(_cfg("brats", tmp_path / "data", tmp_path, channels=3))


def test_case_cache_is_off_by_default(tmp_path, monkeypatch):
    _synthetic_brats(tmp_path / "data", n=2)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = _cfg("brats", tmp_path / "data", tmp_path, val_fraction=0.5)
    del cfg["cache_dir"]
    load_dataset(cfg)
    cfg2 = _cfg("brats", tmp_path / "data", tmp_path, val_fraction=0.5, cache_dir="")
    load_dataset(cfg2)
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no cache folder, no ~/.cache


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_entry_warns_naming_it_and_reads_the_source(tmp_path, damage):
    _synthetic_brats(tmp_path / "data")
    cfg = _cfg("brats", tmp_path / "data", tmp_path, val_fraction=0.34)
    train, val, _ = load_dataset(cfg)
    entries = sorted(os.listdir(tmp_path / "cache"))
    assert len(entries) == 3
    bad = tmp_path / "cache" / entries[1]
    data = bad.read_bytes()
    bad.write_bytes({"garbage": b"not an npz file" * 10, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    with pytest.warns(cache.CacheWarning, match=rf"case cache .*{entries[1]}: cannot read it \("):
        again_train, again_val, _ = load_dataset(cfg)
    for k in ("image", "label", "instances"):
        np.testing.assert_array_equal(again_train[k], train[k])
        np.testing.assert_array_equal(again_val[k], val[k])
    assert again_train["patient_id"] == train["patient_id"]
    assert bad.read_bytes() == data  # rewritten from the source


def test_unwritable_cache_warns_and_still_loads(tmp_path):
    _synthetic_brats(tmp_path / "data", n=2)
    (tmp_path / "not_a_dir").write_text("")
    want, _, _ = load_dataset(_cfg("brats", tmp_path / "data", tmp_path, val_fraction=0.5, cache_dir=""))
    cfg = _cfg("brats", tmp_path / "data", tmp_path, val_fraction=0.5, cache_dir=str(tmp_path / "not_a_dir"))
    with pytest.warns(cache.CacheWarning, match=r"case cache .*not_a_dir.*: cannot write it"):
        got, _, _ = load_dataset(cfg)
    np.testing.assert_array_equal(got["image"], want["image"])


def test_brats_3d_volumes(tmp_path):
    _synthetic_brats(tmp_path / "data", n=2)
    train, val, info = load_dataset(_cfg("brats", tmp_path / "data", tmp_path, spatial_dims=3,
                                         image_size=(8, 8, 8), val_fraction=0.5))
    assert train["image"].shape == (1, 8, 8, 8, 2) and val["label"].shape == (1, 8, 8, 8)
    assert info.spatial_dims == 3


def test_brats_real_samples(shared_data, tmp_path):
    cfg = _cfg("brats", shared_data / "brats", tmp_path)
    del cfg["cache_dir"]  # the default: no cache
    train, val, info = load_dataset(cfg)
    assert info.channel_names == ("FLAIR", "T1c")
    assert len(set(train["patient_id"])) == 3 and len(set(val["patient_id"])) == 1
    assert set(np.unique(train["label"])) == {0, 1, 2, 3}
    assert np.all(np.isfinite(train["image"])) and train["image"].shape[1:] == (32, 32, 2)


@pytest.mark.parametrize("name,folder,channels,kw", [
    ("isic", "isic_like", 3, {}),
    ("folder", "cxr", 1, {}),
    ("folder", "em", 1, {"mask_foreground": "zero"}),
])
def test_image_mask_folders(shared_data, tmp_path, name, folder, channels, kw):
    train, val, info = load_dataset(_cfg(name, shared_data / folder, tmp_path, **kw))
    assert train["image"].shape[1:] == (32, 32, channels) and info.num_classes == 2
    assert 0.0 <= train["image"].min() and train["image"].max() <= 1.0
    assert set(np.unique(train["label"])) == {0, 1}
    assert not set(train["patient_id"]) & set(val["patient_id"])
    if folder == "cxr":  # 40 images of 35 patients: the split follows metadata.csv's patientid
        assert len(set(train["patient_id"])) + len(set(val["patient_id"])) == 35
    if folder == "em":  # membranes (0 in the file) are the foreground: about 22 % of pixels
        assert 0.1 < train["label"].mean() < 0.35


def test_luna16_loader_on_labelled_ct(shared_data, tmp_path):
    train, val, info = load_dataset(_cfg("luna16", shared_data / "lung_ct", tmp_path, val_fraction=0.5))
    assert info.channel_names == ("CT",) and train["image"].shape[1:] == (32, 32, 1)
    assert {*train["patient_id"], *val["patient_id"]} == {"lung1", "lung2"}
    assert train["label"].any() and val["label"].any()


def test_missing_or_empty_data_dir(tmp_path):
    with pytest.raises(ValueError, match="needs --data_dir"):
        load_dataset(_cfg("brats", "", tmp_path))
    with pytest.raises(ValueError, match="no BraTS cases found"):
        load_dataset(_cfg("brats", tmp_path, tmp_path))
    with pytest.raises(ValueError, match="no image/mask pairs"):
        load_dataset(_cfg("folder", tmp_path, tmp_path))


def test_pairs_prefer_lossless_masks_and_find_isic_and_ph2_layouts(tmp_path):
    from PIL import Image

    img = np.zeros((6, 6, 3), np.uint8)
    mask = np.zeros((6, 6), np.uint8)
    mask[2:4, 2:4] = 255
    d = tmp_path / "IMD002"
    (d / "IMD002_Dermoscopic_Image").mkdir(parents=True)
    (d / "IMD002_lesion").mkdir()
    Image.fromarray(img).save(d / "IMD002_Dermoscopic_Image" / "IMD002.bmp")
    Image.fromarray(mask).save(d / "IMD002_lesion" / "IMD002_lesion.bmp")
    Image.fromarray(mask).save(d / "IMD002_lesion" / "IMD002_lesion.jpg")
    (tmp_path / "isic").mkdir()
    Image.fromarray(img).save(tmp_path / "isic" / "ISIC_0000001.jpg")
    Image.fromarray(mask).save(tmp_path / "isic" / "ISIC_0000001_Segmentation.png")
    Image.fromarray(img).save(tmp_path / "isic" / "ISIC_0000001_superpixels.png")
    pairs = image_folders.find_image_mask_pairs(str(tmp_path))
    assert [(i, os.path.basename(a), os.path.basename(b)) for i, a, b in pairs] == [
        ("IMD002", "IMD002.bmp", "IMD002_lesion.bmp"),
        ("ISIC_0000001", "ISIC_0000001.jpg", "ISIC_0000001_Segmentation.png")]


def test_brats_cases_are_reoriented_to_lps(tmp_path):
    """The same head stored RAS (identity affine) and LPS (x, y flipped) reads back identically."""
    rng = np.random.default_rng(1)
    vol = rng.normal(size=(6, 5, 4)).astype(np.float32)
    seg = np.zeros((6, 5, 4), np.float32)
    seg[0, 1, 2] = 4
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps_affine[:3, 3] = (5.0, 4.0, 0.0)
    for name, affine, flip in (("ras", np.eye(4), False), ("lps", lps_affine, True)):
        d = tmp_path / name
        d.mkdir()
        f = (lambda a: a[::-1, ::-1]) if flip else (lambda a: a)
        nib.save(nib.Nifti1Image(np.ascontiguousarray(f(vol)), affine), str(d / f"{name}_flair.nii.gz"))
        nib.save(nib.Nifti1Image(np.ascontiguousarray(f(seg)), affine), str(d / f"{name}_seg.nii.gz"))
    cases = {c.patient_id: c for c in brats.find_brats_cases(str(tmp_path))}
    a_img, a_lab, a_meta, _ = brats.read_brats_case(cases["ras"], ("FLAIR",))
    b_img, b_lab, b_meta, _ = brats.read_brats_case(cases["lps"], ("FLAIR",))
    from data_pipelines import geometry

    assert geometry.orientation_code(a_meta) == geometry.orientation_code(b_meta) == "LPS"
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    np.testing.assert_allclose(a_meta.origin, b_meta.origin)
    assert a_lab[5, 3, 2] == 3  # RAS index (0, 1, 2) is LPS index (5, 3, 2)


def _imports_of_data_pipelines() -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every library file of data_pipelines, in-function imports included
    (entry points, the modules with a command-line ``main`` such as ``python -m data_pipelines.planning``, sit
    on top of every package: tests/test_architecture.py)."""
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in sorted((root / "data_pipelines").rglob("*.py"))}
    out = {}
    for mod, path in files.items():
        names = set()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # "from pkg import submodule" imports the submodule; "from mod import name" the module.
                subs = {f"{node.module}.{a.name}" for a in node.names} & set(files)
                names |= subs or {node.module}
        out[mod] = names
    return out


def test_data_pipelines_imports_point_one_way():
    graph = _imports_of_data_pipelines()
    project = ("zoo", "eval", "benchmarks", "kernels", "scoring", "data_pipelines")
    for mod, names in graph.items():
        above = sorted(n for n in names if n.split(".")[0] in project
                       and n.split(".")[0] not in ("data_pipelines", "kernels", "scoring"))
        assert not above, f"{mod} imports {above}: data_pipelines may use only kernels and scoring"
    sources = ("brats", "ct", "image_folders", "phantoms", "outcome_data", "cases", "cache", "ehr", "info")
    for name in sources:
        assert "data_pipelines.datasets" not in graph[f"data_pipelines.{name}"], f"{name} imports the registry"
    # No cycles among data_pipelines' modules.
    edges = {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in edges[m]:
            assert state.get(n) != 1, f"import cycle: {' -> '.join(path + [m, n])}"
            if n not in state:
                visit(n, path + [m])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
