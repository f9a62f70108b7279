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
