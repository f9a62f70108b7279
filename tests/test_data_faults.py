"""Data-side faults of issue #24 ("nothing lost, nothing silent"), each injected as its reproducer does:
damaged or missing DICOM slices, NaN/Inf voxels, label values beyond int32, odd images among pairs,
unpaired images/masks, data options from the command line, labels >= K in Dice, all-failed benchmarks."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from data_pipelines import read_image, read_label

SLICES, DZ = 6, 2.5
ORIGIN = (-10.0, 20.0, 30.0)


def _dicom_series(folder) -> np.ndarray:
    """6 axial slices 2.5 mm apart (``0.dcm`` .. ``5.dcm``) with positions and thickness; returns ``(i, j, k)``."""
    arr = np.arange(4 * 5 * SLICES, dtype=np.int16).reshape(4, 5, SLICES)
    os.makedirs(folder)
    uid = "1.2.826.0.1.3680043.2.1125.24"
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for z in range(SLICES):
        s = sitk.GetImageFromArray(arr[:, :, z].T.copy())
        s.SetSpacing((0.7, 0.8))
        tags = {"0008|0060": "CT", "0020|000e": uid + ".2", "0020|000d": uid + ".1",
                "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(z + 1), "0018|0050": str(DZ),
                "0020|0032": "\\".join(str(v) for v in (ORIGIN[0], ORIGIN[1], ORIGIN[2] + z * DZ)),
                "0028|0030": "0.8\\0.7"}
        for k, v in tags.items():
            s.SetMetaData(k, v)
        w.SetFileName(os.path.join(folder, f"{z}.dcm"))
        w.Execute(s)
    return arr


def _half(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _zero(path):
    open(path, "wb").close()


@pytest.mark.parametrize("damage,slice_,needle", [
    (_half, 3, r"3\.dcm: truncated or corrupt"), (_zero, 3, r"3\.dcm: empty file \(0 bytes\)"),
    (_half, 0, r"0\.dcm: truncated"), (_zero, 5, r"5\.dcm: empty file"),  # first/last: no gap to see
    (os.remove, 3, r"gap: 1 slice\(s\) missing at 37\.5 mm .*2\.dcm \(35 mm\) and .*4\.dcm \(40 mm\)"),
])
def test_dicom_series_with_a_damaged_or_missing_slice_is_an_error(tmp_path, damage, slice_, needle):
    folder = str(tmp_path / "series")
    arr = _dicom_series(folder)
    out, meta = read_image(folder)  # intact: all six slices, 2.5 mm
    np.testing.assert_array_equal(out[..., 0], arr)
    np.testing.assert_allclose(meta.spacing, (0.7, 0.8, DZ), atol=1e-4)
    damage(os.path.join(folder, f"{slice_}.dcm"))
    with pytest.raises(ValueError, match=needle):
        read_image(folder)


def test_dicom_series_two_bad_slices_and_a_notes_file(tmp_path):
    folder = str(tmp_path / "series")
    _dicom_series(folder)
    _zero(os.path.join(folder, "1.dcm"))
    _half(os.path.join(folder, "4.dcm"))
    with pytest.raises(ValueError, match=r"2 files of the DICOM series cannot be read: .*1\.dcm .*4\.dcm"):
        read_image(folder)
    # A notes file beside the slices is not a slice.
    folder2 = str(tmp_path / "s2")
    _dicom_series(folder2)
    open(os.path.join(folder2, "notes.txt"), "w").write("scanned on tuesday\n")
    assert read_image(folder2)[0].shape == (4, 5, SLICES, 1)


def _nifti(tmp_path, arr, name="v.nii.gz"):
    p = str(tmp_path / name)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), p)
    return p


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_image_rejects_nan_and_inf_unless_asked(tmp_path, bad):
    a = np.ones((3, 4, 2), np.float32)
    a[1, 2, 1] = bad
    p = _nifti(tmp_path, a)
    with pytest.raises(ValueError, match=r"v\.nii\.gz: image has .*(NaN|Inf).*index \(1, 2, 1, 0\).*nan_policy='zero'"):
        read_image(p)
    out, _ = read_image(p, nan_policy="zero")
    assert out.dtype == np.float32 and out[1, 2, 1, 0] == 0 and np.isfinite(out).all() and out.sum() == 23
    with pytest.raises(ValueError, match="nan_policy"):
        read_image(p, nan_policy="omit")
    good = _nifti(tmp_path, np.ones((3, 4, 2), np.float32), "g.nii.gz")
    assert read_image(good)[0].sum() == 24


@pytest.mark.parametrize("dtype,value", [(np.uint32, 3_000_000_000), (np.int64, -3_000_000_000),
                                         (np.float32, 3e9), (np.float64, 2.0 ** 40)])
def test_label_values_beyond_int32_raise_instead_of_wrapping(tmp_path, dtype, value):
    a = np.zeros((2, 3, 4), dtype)
    a[1, 1, 1] = value
    p = str(tmp_path / "seg.nrrd")
    sitk.WriteImage(sitk.GetImageFromArray(a), p)
    with pytest.raises(ValueError, match=rf"seg\.nrrd: label values \[{int(value)}\] do not fit int32"):
        read_label(p)
    a[1, 1, 1] = 7  # in range: read as before
    sitk.WriteImage(sitk.GetImageFromArray(a), p)
    lab, _ = read_label(p)
    assert lab.dtype == np.int32 and lab.max() == 7


# ------------------------------------------------------------------ image/mask folders

def _pairs_folder(root, n=4, gray=(), lone_images=(), lone_masks=()):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((6, 6), np.uint8)
    mask[2:4, 2:4] = 255
    for i in range(n):
        img = np.full((6, 6) if i in gray else (6, 6, 3), 40 * i, np.uint8)
        Image.fromarray(img).save(root / f"img{i}.png")
        Image.fromarray(mask).save(root / f"img{i}_mask.png")
    for name in lone_images:
        Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(root / name)
    for name in lone_masks:
        Image.fromarray(mask).save(root / name)
    return root


def _data_cfg(name, data_dir, **kw):
    from zoo.configs import load_config

    c = load_config("smoke").data
    c.name, c.data_dir, c.val_fraction = name, str(data_dir), 0.25
    for k, v in kw.items():
        c[k] = v
    return c


@pytest.mark.parametrize("gray,needle", [
    ((0,), r"img0\.png: 1 channel\(s\) but the other 3 image\(s\) have 3"),  # the first one is the odd one
    ((2,), r"img2\.png: 1 channel\(s\) but the other 3 image\(s\) have 3"),
])
def test_grayscale_image_among_rgb_names_that_file(tmp_path, gray, needle):
    from data_pipelines.datasets import load_dataset

    _pairs_folder(tmp_path / "d", gray=gray)
    with pytest.raises(ValueError, match=needle):
        load_dataset(_data_cfg("isic", tmp_path / "d"))


def test_unpaired_images_and_masks_are_an_error_or_a_warning_never_silent(tmp_path):
    import warnings

    from data_pipelines import image_folders
    from data_pipelines.datasets import load_dataset

    d = _pairs_folder(tmp_path / "d", lone_images=("extra.png",), lone_masks=("orphan_mask.png",))
    with pytest.raises(ValueError, match=r"1 image\(s\) without a mask: .*extra\.png; 1 mask\(s\) without an image: "
                                         r".*orphan_mask\.png \(set data\.allow_unpaired=True"):
        load_dataset(_data_cfg("folder", d))
    with pytest.warns(image_folders.UnpairedWarning, match=r"skipping 1 image\(s\) without a mask: .*extra\.png"):
        train, val, _ = load_dataset(_data_cfg("folder", d, allow_unpaired=True))
    assert len(train["image"]) + len(val["image"]) == 4
    # Parallel image/ + label/ folders: the same rule both ways.
    from PIL import Image

    p = tmp_path / "p"
    for sub, names in (("image", ("a.png", "b.png")), ("label", ("a.png", "c.png"))):
        (p / sub).mkdir(parents=True)
        for n in names:
            Image.fromarray(np.zeros((6, 6), np.uint8)).save(p / sub / n)
    with pytest.raises(ValueError, match=r"image\(s\) without a mask: .*image/b\.png; 1 mask\(s\) without an "
                                         r"image: .*label/c\.png"):
        image_folders.find_image_mask_pairs(str(p))
    # A complete folder (ISIC superpixel maps beside the pairs are not images of the set) warns nothing.
    ok = _pairs_folder(tmp_path / "ok", lone_images=("img0_superpixels.png",))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(image_folders.find_image_mask_pairs(str(ok))) == 4


# ------------------------------------------------------------------ data options from the command line

def test_documented_data_options_are_in_the_recipe_and_take_cli_strings():
    from zoo.configs import apply_overrides, load_config

    cfg = apply_overrides(load_config("smoke"), {
        "data.modalities": "FLAIR,T1c", "data.mask_foreground": "zero", "data.hu_window": "-500,500",
        "data.empty_slice_ratio": "0.5", "data.max_slices_per_case": "8", "data.brats_regions": "true",
        "data.patient_column": "pid", "data.allow_unpaired": "true"})
    d = cfg.data
    assert (d.modalities, d.mask_foreground, tuple(d.hu_window), d.empty_slice_ratio, d.max_slices_per_case,
            d.brats_regions, d.patient_column, d.allow_unpaired) == \
        ("FLAIR,T1c", "zero", (-500, 500), 0.5, 8, True, "pid", True)
    from data_pipelines import brats, ct

    assert brats._modalities("FLAIR,T1c") == brats._modalities(["flair", "t1c"]) == ("FLAIR", "T1c")
    assert brats._modalities(None) == brats._modalities("") == ()
    with pytest.raises(ValueError, match=r"data\.modalities: unknown \['T3'\]"):
        brats._modalities("FLAIR,T3")
    assert ct.hu_window_option("-500,500") == ct.hu_window_option((-500, 500)) == (-500.0, 500.0)
    with pytest.raises(ValueError, match=r"data\.hu_window"):
        ct.hu_window_option("400,-1000")


def test_brats_modalities_from_the_command_line_on_the_samples(shared_data):
    from data_pipelines.datasets import load_dataset
    from zoo.configs import apply_overrides, load_config

    cfg = apply_overrides(load_config("smoke"), {
        "data.name": "brats", "data.data_dir": str(shared_data / "brats"), "data.modalities": "T1c,FLAIR",
        "data.max_slices_per_case": "2", "data.val_fraction": "0.25"})
    train, val, info = load_dataset(cfg.data)
    assert info.channel_names == ("T1c", "FLAIR") and train["image"].shape[1:] == (32, 32, 2)
    with pytest.raises(ValueError, match=r"data\.modalities: unknown \['T3'\]"):
        load_dataset(apply_overrides(cfg, {"data.modalities": "T3"}).data)
