"""Readers for medical image formats: one call, one array layout, one geometry convention.

``read_image(path) -> (array, meta)``:

* ``array`` is channels-last: ``[*S, C]`` with ``S`` the spatial axes. For volumes (NIfTI, NRRD,
  MHD/RAW, DICOM series) the spatial axes are the voxel axes ``(i, j, k)`` in file order (what
  nibabel returns; SimpleITK's ``(k, j, i)`` arrays are transposed to match). For 2D pictures
  (PNG/JPEG/BMP) they are ``(row, column)``.
* ``meta.spacing`` is the voxel size in mm per spatial axis; ``meta.origin`` the world position of
  voxel 0 and ``meta.direction`` the ``[D, D]`` matrix whose column ``a`` is the world direction of
  array axis ``a``. World coordinates are **LPS** (the ITK/DICOM convention); NIfTI's RAS affine is
  converted. Pictures get spacing 1, origin 0, identity direction (they carry no geometry).

Every failure to read (missing file, corrupt or truncated data, unknown format) raises
``FileNotFoundError`` / ``ValueError`` naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

__all__ = ["ImageMeta", "read_image", "read_label", "image_format", "VOLUME_SUFFIXES", "PICTURE_SUFFIXES"]

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mhd", ".mha", ".dcm")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """Geometry of an image: per spatial axis spacing (mm), origin (mm, LPS) and direction cosines."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[tuple[float, ...], ...]  # [D][D]; column a = world direction of array axis a
    path: str = ""
    format: str = ""

    @property
    def ndim(self) -> int:
        return len(self.spacing)

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, np.float64)

    def affine(self) -> np.ndarray:
        """``[D+1, D+1]`` voxel index -> LPS world (mm)."""
        d = self.ndim
        a = np.eye(d + 1)
        a[:d, :d] = self.direction_matrix * np.asarray(self.spacing)[None, :]
        a[:d, d] = self.origin
        return a

    def replace(self, **kw) -> "ImageMeta":
        return dataclasses.replace(self, **kw)


def image_format(path: str | os.PathLike) -> str:
    """``nifti | nrrd | mhd | dicom | picture`` from the name (a directory is a DICOM series)."""
    p = str(path)
    low = p.lower()
    if os.path.isdir(p):
        return "dicom"
    if low.endswith((".nii", ".nii.gz")):
        return "nifti"
    if low.endswith((".nrrd", ".nhdr")):
        return "nrrd"
    if low.endswith((".mhd", ".mha")):
        return "mhd"
    if low.endswith(".dcm"):
        return "dicom"
    if low.endswith(PICTURE_SUFFIXES):
        return "picture"
    raise ValueError(f"{p}: unknown image format (expected one of {VOLUME_SUFFIXES + PICTURE_SUFFIXES} "
                     f"or a DICOM directory)")


def _meta(spacing, origin, direction, path, fmt) -> ImageMeta:
    direction = np.asarray(direction, np.float64)
    return ImageMeta(tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                     tuple(tuple(float(v) for v in row) for row in direction), str(path), fmt)


def _read_nifti(path: str):
    import nibabel as nib

    try:
        img = nib.load(path)
        # dataobj applies scl_slope/scl_inter (the BraTS brain masks need it).
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for bad headers / truncated gzip
        raise ValueError(f"{path}: cannot read NIfTI ({type(e).__name__}: {e})") from e
    if data.ndim < 2 or data.ndim > 4:
        raise ValueError(f"{path}: expected a 2D, 3D or 4D NIfTI image, got shape {data.shape}")
    nd = min(data.ndim, 3)
    aff = np.asarray(img.affine, np.float64)
    # RAS -> LPS: negate the first two world rows.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    aff = flip @ aff
    spacing = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))
    spacing = np.where(spacing > 0, spacing, 1.0)
    direction = aff[:3, :3] / spacing[None, :]
    if nd == 2:
        spacing, direction, origin = spacing[:2], direction[:2, :2], aff[:2, 3]
    else:
        origin = aff[:3, 3]
    arr = data if data.ndim == nd + 1 else data[..., None]
    return arr, _meta(spacing, origin, direction, path, "nifti")


def _sitk_to_numpy(img, path, fmt):
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img)  # [k, j, i(, C)]
    nd = img.GetDimension()
    ncomp = img.GetNumberOfComponentsPerPixel()
    spatial = arr.ndim - (1 if ncomp > 1 else 0)
    if spatial != nd:
        raise ValueError(f"{path}: array has {spatial} spatial axes but the header says {nd}")
    perm = tuple(range(nd - 1, -1, -1)) + ((nd,) if ncomp > 1 else ())
    arr = np.transpose(arr, perm)
    if ncomp == 1:
        arr = arr[..., None]
    direction = np.asarray(img.GetDirection(), np.float64).reshape(nd, nd)
    return np.ascontiguousarray(arr), _meta(img.GetSpacing(), img.GetOrigin(), direction, path, fmt)


def _read_sitk(path: str, fmt: str):
    import SimpleITK as sitk

    if fmt == "mhd" and path.lower().endswith(".mhd"):
        _check_mhd_payload(path)
    try:
        img = sitk.ReadImage(path)
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        raise ValueError(f"{path}: cannot read {fmt.upper()} ({msg[-1] if msg else e})") from e
    return _sitk_to_numpy(img, path, fmt)


def _check_mhd_payload(path: str) -> None:
    """A truncated .raw makes ITK read garbage on some versions; check the byte count ourselves."""
    header = {}
    with open(path, "r", errors="replace") as f:
        for line in f:
            if "=" in line:
                k, v = line.split("=", 1)
                header[k.strip().lower()] = v.strip()
    data_file = header.get("elementdatafile", "")
    if not data_file or data_file.upper() == "LOCAL" or data_file.upper().startswith("LIST"):
        return
    raw = os.path.join(os.path.dirname(path), data_file)
    if not os.path.exists(raw):
        raise ValueError(f"{path}: data file {data_file!r} named by ElementDataFile is missing")
    if header.get("compresseddata", "false").lower() == "true":
        return
    sizes = {"met_uchar": 1, "met_char": 1, "met_ushort": 2, "met_short": 2, "met_uint": 4, "met_int": 4,
             "met_float": 4, "met_double": 8, "met_long": 8, "met_ulong": 8}
    try:
        dims = [int(v) for v in header["dimsize"].split()]
        item = sizes[header["elementtype"].lower()] * int(header.get("elementnumberofchannels", "1"))
    except (KeyError, ValueError):
        return  # let ITK report a malformed header
    need = int(np.prod(dims)) * item
    have = os.path.getsize(raw)
    if have < need:
        raise ValueError(f"{raw}: truncated: {have} bytes, the header {os.path.basename(path)} needs {need}")


def _read_dicom_series(path: str):
    import SimpleITK as sitk

    if os.path.isdir(path):
        reader = sitk.ImageSeriesReader()
        series = reader.GetGDCMSeriesIDs(path)
        if not series:
            raise ValueError(f"{path}: no DICOM series found in directory")
        if len(series) > 1:
            raise ValueError(f"{path}: {len(series)} DICOM series in one directory ({list(series)[:3]}...); "
                             f"give one series per directory")
        files = reader.GetGDCMSeriesFileNames(path, series[0])
        reader.SetFileNames(files)
        try:
            img = reader.Execute()
        except RuntimeError as e:
            raise ValueError(f"{path}: cannot read DICOM series ({str(e).strip().splitlines()[-1]})") from e
        return _sitk_to_numpy(img, path, "dicom")
    return _read_sitk(path, "dicom")


def _read_picture(path: str):
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("P", "PA"):
                im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
            elif im.mode in ("1", "CMYK", "YCbCr", "LA"):
                im = im.convert({"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LA": "L"}[im.mode])
            arr = np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, _meta((1.0, 1.0), (0.0, 0.0), np.eye(2), path, "picture")


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, ImageMeta]:
    """Read an image or volume: ``(array [*S, C], meta)``; see the module docstring for conventions.

    The array keeps the file's dtype (float for scaled NIfTI); cast as needed.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"{p}: no such file or directory")
    fmt = image_format(p)
    if fmt == "nifti":
        return _read_nifti(p)
    if fmt in ("nrrd", "mhd"):
        return _read_sitk(p, fmt)
    if fmt == "dicom":
        return _read_dicom_series(p)
    return _read_picture(p)


def read_label(path: str | os.PathLike, allowed: Sequence[int] | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read a label map: ``(int32 array [*S], meta)``.

    Float files (BraTS ``OTMultiClass`` is float32) must hold exact integers. ``allowed``: the label
    values that may occur; anything else raises ``ValueError`` listing the stray values.
    """
    arr, meta = read_image(path)
    if arr.shape[-1] != 1:
        if meta.format == "picture" and arr.shape[-1] in (3, 4):
            # An RGB(A) mask saved by an image editor: all colour channels must agree.
            rgb = arr[..., :3]
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise ValueError(f"{path}: label image has {arr.shape[-1]} channels that differ; "
                                 f"expected a single-channel label map")
            arr = arr[..., :1]
        else:
            raise ValueError(f"{path}: label map has {arr.shape[-1]} channels; expected 1")
    arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}: label map contains NaN or Inf")
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            bad = np.unique(arr[rounded != arr])[:5]
            raise ValueError(f"{path}: label map has non-integer values, e.g. {bad.tolist()}")
        arr = rounded
    out = arr.astype(np.int32)
    if allowed is not None:
        stray = np.setdiff1d(np.unique(out), np.asarray(list(allowed)))
        if stray.size:
            raise ValueError(f"{path}: label values {stray.tolist()[:10]} outside the expected set "
                             f"{sorted(int(a) for a in allowed)}")
    return out, meta
