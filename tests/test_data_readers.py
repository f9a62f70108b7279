"""Readers and geometry: format round trips, LPS geometry, real samples, bad files, resampling."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from data_pipelines import geometry, read_image, read_label
from data_pipelines.errors import MissingInput, UnreadableInput

SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-10.0, 20.0, 30.0)
# A permuted/flipped direction (columns: world direction of each index axis, LPS).
DIRECTION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def _volume():
    return np.arange(4 * 5 * 3, dtype=np.int16).reshape(4, 5, 3) - 20  # (i, j, k)


def _sitk_image(arr_ijk, direction=DIRECTION):
    img = sitk.GetImageFromArray(np.transpose(arr_ijk, (2, 1, 0)))
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    img.SetDirection(tuple(np.asarray(direction).reshape(-1)))
    return img


def _write_dicom_series(folder, arr_ijk):
    os.makedirs(folder)
    uid = "1.2.826.0.1.3680043.2.1125.1"
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for z in range(arr_ijk.shape[2]):
        s = sitk.GetImageFromArray(arr_ijk[:, :, z].T.copy())
        s.SetSpacing(SPACING[:2])
        tags = {"0008|0060": "CT", "0020|000e": uid + ".2", "0020|000d": uid + ".1",
                "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(z + 1), "0018|0050": str(SPACING[2]),
                "0020|0032": "\\".join(str(v) for v in (ORIGIN[0], ORIGIN[1], ORIGIN[2] + z * SPACING[2])),
                "0028|0030": f"{SPACING[1]}\\{SPACING[0]}"}
        for k, v in tags.items():
            s.SetMetaData(k, v)
        w.SetFileName(os.path.join(folder, f"{z}.dcm"))
        w.Execute(s)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mhd", ".mha"])
def test_volume_round_trip_keeps_values_and_lps_geometry(tmp_path, suffix):
    arr = _volume()
    path = str(tmp_path / f"vol{suffix}")
    sitk.WriteImage(_sitk_image(arr), path)
    out, meta = read_image(path)
    assert out.shape == arr.shape + (1,)
    np.testing.assert_array_equal(out[..., 0], arr)
    np.testing.assert_allclose(meta.spacing, SPACING, atol=1e-5)
    # NIfTI goes through nibabel's RAS affine and back to LPS: it must agree with ITK.
    np.testing.assert_allclose(meta.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(meta.direction_matrix, DIRECTION, atol=1e-5)
    # The affine maps index (1, 2, 1) where ITK says it is.
    itk_world = _sitk_image(arr).TransformIndexToPhysicalPoint((1, 2, 1))
    np.testing.assert_allclose(geometry.voxel_to_world([[1, 2, 1]], meta)[0], itk_world, atol=1e-4)


def test_dicom_series_directory(tmp_path):
    arr = _volume()
    _write_dicom_series(str(tmp_path / "series"), arr)
    out, meta = read_image(tmp_path / "series")
    np.testing.assert_array_equal(out[..., 0], arr)
    np.testing.assert_allclose(meta.spacing, SPACING, atol=1e-4)
    np.testing.assert_allclose(meta.origin, ORIGIN, atol=1e-4)


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3), ("P", 3)])
def test_pictures_are_channels_last(tmp_path, mode, channels):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, size=(7, 9, 3), dtype=np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    path = str(tmp_path / ("x.png" if mode != "L" else "x.bmp"))
    im.save(path)
    out, meta = read_image(path)
    assert out.shape == (7, 9, channels) and out.dtype == np.uint8
    assert meta.spacing == (1.0, 1.0)
    if mode == "RGB":
        np.testing.assert_array_equal(out, rgb)


def test_real_brats_and_ct_samples(shared_data):
    case = shared_data / "brats" / "brats_2013_pat0005_1"
    lab, meta = read_label(case / "OTMultiClass.nii.gz", allowed=range(5))
    assert lab.shape == (240, 240, 155) and lab.dtype == np.int32
    assert set(np.unique(lab).tolist()) == {0, 1, 2, 3, 4}
    assert meta.spacing == (1.0, 1.0, 1.0)
    np.testing.assert_allclose(meta.origin, (0.0, -239.0, 0.0))
    assert geometry.orientation_code(meta) == "LPS"
    assert int((lab == 4).sum()) == 18354  # SOURCES.md voxel count for this case
    mask, _ = read_image(case / "brainmask.nii.gz")  # int32 with scl_slope: scaled on read
    assert mask.max() < 1.0 and mask.max() > 0.99 and int((mask > 0.5).sum()) == 1523743
    ct, cmeta = read_image(shared_data / "lung_ct" / "lung1_image.nrrd")
    assert ct.shape == (512, 374, 19, 1)
    np.testing.assert_allclose(cmeta.spacing, (0.5703125, 0.5703125, 5.0), atol=1e-5)
    np.testing.assert_allclose(cmeta.origin, (-146.0, -246.297, -657.5), atol=1e-3)
    assert ct.min() == -1024 and ct.max() == 3071


def _truncated_gz(tmp_path):
    path = str(tmp_path / "t.nii.gz")
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(20, 20, 20)).astype(np.float32), np.eye(4)), path)
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    return path


def _corrupt_png(tmp_path):
    path = str(tmp_path / "c.png")
    open(path, "wb").write(b"\x89PNG\r\n\x1a\nnot really a png")
    return path


def _truncated_raw(tmp_path):
    path = str(tmp_path / "s.mhd")
    sitk.WriteImage(_sitk_image(_volume()), path)
    raw = str(tmp_path / "s.raw")
    data = open(raw, "rb").read()
    open(raw, "wb").write(data[:10])
    return path


def _garbage_nrrd(tmp_path):
    path = str(tmp_path / "g.nrrd")
    open(path, "wb").write(b"this is not an nrrd file\n")
    return path


@pytest.mark.parametrize("make,needle", [(_truncated_gz, "t.nii.gz"), (_corrupt_png, "c.png"),
                                         (_truncated_raw, "truncated"), (_garbage_nrrd, "g.nrrd")])
def test_bad_files_raise_unreadable_input_naming_the_file(tmp_path, make, needle):
    path = make(tmp_path)
    with pytest.raises(UnreadableInput, match=needle.replace(".", r"\.")):
        read_image(path)


def test_missing_and_unknown(tmp_path):
    with pytest.raises(MissingInput, match="nope.nii.gz"):  # also a FileNotFoundError
        read_image(tmp_path / "nope.nii.gz")
    p = tmp_path / "x.xyz"
    p.write_text("hi")
    with pytest.raises(UnreadableInput, match="unknown image format"):
        read_image(p)


def test_label_checks(tmp_path):
    p = str(tmp_path / "l.nii.gz")
    nib.save(nib.Nifti1Image(np.array([[[0.0, 1.5]]], np.float32), np.eye(4)), p)
    with pytest.raises(ValueError, match="non-integer"):
        read_label(p)
    nib.save(nib.Nifti1Image(np.array([[[0.0, 7.0]]], np.float32), np.eye(4)), p)
    with pytest.raises(ValueError, match=r"label values \[7\] outside"):
        read_label(p, allowed=(0, 1, 2))
    lab, _ = read_label(p)
    assert lab.dtype == np.int32 and lab.max() == 7


# ------------------------------------------------------------------ geometry

def _meta(direction=DIRECTION):
    from data_pipelines.readers import ImageMeta

    return ImageMeta(SPACING, ORIGIN, tuple(map(tuple, direction)))


@pytest.mark.parametrize("target", ["LPS", "RAS", "SAL", "IPR"])
def test_reorient_keeps_world_positions(target):
    arr = _volume()[..., None].astype(np.float32)
    meta = _meta()
    out, m2 = geometry.reorient(arr, meta, target)
    assert geometry.orientation_code(m2) == target
    # The voxel holding value v sits at the same world point before and after.
    for v in (-20, 0, 17, 39):
        a = np.argwhere(arr[..., 0] == v)[0]
        b = np.argwhere(out[..., 0] == v)[0]
        np.testing.assert_allclose(geometry.voxel_to_world([a], meta), geometry.voxel_to_world([b], m2), atol=1e-9)
    lab, m3 = geometry.reorient(_volume(), meta, target, is_label=True)
    np.testing.assert_array_equal(lab, out[..., 0].astype(lab.dtype))
    assert m3 == m2


def test_reorient_rejects_bad_target():
    with pytest.raises(ValueError, match="target orientation"):
        geometry.reorient(_volume()[..., None], _meta(), "LLS")


def test_resample_linear_images_nearest_labels():
    from data_pipelines.readers import ImageMeta

    meta = ImageMeta((1.0, 1.0, 2.0), (5.0, 6.0, 7.0), tuple(map(tuple, np.eye(3))))
    x = np.arange(16, dtype=np.float32)
    ramp = np.broadcast_to(x[:, None, None, None], (16, 8, 6, 1)).copy()
    out, m2 = geometry.resample_to_spacing(ramp, meta, (0.5, 2.0, 1.0))
    assert out.shape == (32, 4, 12, 1) and m2.spacing == (0.5, 2.0, 1.0) and m2.origin == meta.origin
    # Linear interpolation of a ramp is exact away from the far border.
    np.testing.assert_allclose(out[:30, 1, 3, 0], np.arange(30) * 0.5, atol=1e-5)
    lab = (np.random.default_rng(0).integers(0, 4, size=(16, 8, 6)) * 2).astype(np.int32)
    lout, _ = geometry.resample_to_spacing(lab, meta, (0.5, 2.0, 1.0), is_label=True)
    assert lout.dtype == np.int32 and set(np.unique(lout)) <= set(np.unique(lab))
    np.testing.assert_array_equal(lout[::2, 0, ::2], lab[:, 0, :])  # upsampled axes copy the source voxels
    with pytest.raises(ValueError, match="spacing must be 3 positive"):
        geometry.resample_to_spacing(ramp, meta, (1.0, 0.0, 1.0))


def test_resize_antialias_and_labels():
    checker = ((np.indices((16, 16)).sum(0) % 2).astype(np.float32))[..., None]
    small = geometry.resize(checker, (4, 4))
    np.testing.assert_allclose(small, 0.5, atol=0.05)  # averages, does not alias
    const = np.full((9, 7, 2), 3.0, np.float32)
    np.testing.assert_allclose(geometry.resize(const, (20, 3)), 3.0, atol=1e-6)
    lab = np.zeros((8, 8), np.int32)
    lab[2:6, 2:6] = 3
    up = geometry.resize(lab, (16, 16), is_label=True)
    assert set(np.unique(up)) == {0, 3} and int((up == 3).sum()) == 64
    with pytest.raises(ValueError, match="spatial axes"):
        geometry.resize(lab, (4, 4, 4), is_label=True)


@pytest.mark.parametrize("shape,size", [((20, 14, 2), (9, 23)), ((12, 10, 8, 1), (7, 15, 8)), ((32, 32, 3), (16, 16))])
def test_resize_is_the_numpy_reference_of_the_jax_resize(shape, size):
    import jax.numpy as jnp

    from kernels import spatial

    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    want = geometry.resize(x, size)
    got, _ = spatial.resize(jnp.asarray(x), size)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)


def test_check_same_geometry_names_files():
    from data_pipelines.readers import ImageMeta

    a = ImageMeta((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(map(tuple, np.eye(3))), path="img.nii.gz")
    b = a.replace(path="seg.nii.gz", spacing=(1.0, 1.0, 2.0))
    geometry.check_same_geometry((4, 4, 4), a, (4, 4, 4), a.replace(path="x"))
    with pytest.raises(ValueError, match=r"seg\.nii\.gz.*img\.nii\.gz.*spacing"):
        geometry.check_same_geometry((4, 4, 4), a, (4, 4, 4), b)
    with pytest.raises(ValueError, match="shape"):
        geometry.check_same_geometry((4, 4, 4), a, (4, 4, 5), a)


def test_gzip_helper_is_really_gzip(tmp_path):
    # Guard for the truncation case above: the file we cut is gzip, so the error comes from decompression.
    p = _truncated_gz(tmp_path)
    with pytest.raises((EOFError, OSError)):
        gzip.open(p).read()
