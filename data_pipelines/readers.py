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
``FileNotFoundError`` / ``ValueError`` naming the file and the problem; so do NaN/Inf voxels (unless
``nan_policy="zero"``), label values that do not fit int32, and a DICOM series with an unreadable slice
file or a gap in its slice positions (ITK would read it silently as a compressed volume).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

__all__ = ["ImageMeta", "read_image", "read_label", "image_format", "VOLUME_SUFFIXES", "PICTURE_SUFFIXES",
           "NAN_POLICIES"]

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


DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_SLICE_GAP_TOLERANCE = 0.05  # relative deviation from the median slice distance still read as even


def _last_line(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    return msg[-1] if msg else type(e).__name__


def _has_dicom_magic(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _unread_slice_files(path: str, files: Sequence[str]) -> list[tuple[str, str]]:
    """Files in the series directory that look like DICOM slices but GDCM left out of the series
    (zero-byte, truncated, corrupt): ``[(file, why), ...]``."""
    import SimpleITK as sitk

    taken = {os.path.abspath(f) for f in files}
    series_suffixes = {os.path.splitext(f)[1].lower() for f in files} - {""}
    bad = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.startswith(".") or name.upper() == "DICOMDIR" or not os.path.isfile(full):
            continue
        if os.path.abspath(full) in taken:
            continue
        suffix = os.path.splitext(name)[1].lower()
        size = os.path.getsize(full)
        if not (suffix in DICOM_SUFFIXES or suffix in series_suffixes or _has_dicom_magic(full)
                or (suffix == "" and size == 0)):
            continue  # not a DICOM file (notes, JSON sidecars, ...)
        if size == 0:
            bad.append((full, "empty file (0 bytes)"))
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(full)
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            bad.append((full, f"truncated or corrupt ({size} bytes, not readable as DICOM)"))
            continue
        bad.append((full, "a DICOM file that is not part of the series"))
    return bad


def _float_list(text: str) -> list[float] | None:
    try:
        vals = [float(v) for v in text.strip("\x00 ").split("\\")]
    except ValueError:
        return None
    return vals if all(np.isfinite(vals)) else None


def _check_slice_positions(path: str, reader, files: Sequence[str]) -> None:
    """Slices must be evenly spaced along the slice normal: ITK reads a series with a missing slice
    as a compressed volume (the gap averaged into the spacing), so a gap is an error naming it."""
    n = len(files)
    if n < 3:
        return
    ipp, iop = [], None
    for i in range(n):
        if not reader.HasMetaDataKey(i, "0020|0032"):
            return  # no positions (e.g. secondary capture): nothing to check against
        p = _float_list(reader.GetMetaData(i, "0020|0032"))
        if p is None or len(p) != 3:
            return
        ipp.append(p)
        if iop is None and reader.HasMetaDataKey(i, "0020|0037"):
            iop = _float_list(reader.GetMetaData(i, "0020|0037"))
    if iop is None or len(iop) != 6:
        return
    normal = np.cross(iop[:3], iop[3:])
    if not np.linalg.norm(normal) > 0:
        return
    normal = normal / np.linalg.norm(normal)
    pos = np.asarray(ipp, np.float64) @ normal
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    names = [files[i] for i in order]
    diffs = np.diff(pos)
    step = float(np.median(diffs))
    if not step > 0:
        same = int(np.flatnonzero(diffs <= 0)[0])
        raise ValueError(f"{path}: DICOM slices {names[same]} and {names[same + 1]} are at the same position "
                         f"({pos[same]:g} mm along the slice normal)")
    dev = np.abs(diffs - step) > _SLICE_GAP_TOLERANCE * step
    if not dev.any():
        return
    i = int(np.flatnonzero(dev)[0])
    d = float(diffs[i])
    k = d / step
    where = f"along the slice normal, between {names[i]} ({pos[i]:g} mm) and {names[i + 1]} ({pos[i + 1]:g} mm)"
    if k > 1.5 and abs(k - round(k)) <= _SLICE_GAP_TOLERANCE * round(k):
        missing = [f"{pos[i] + j * step:g}" for j in range(1, int(round(k)))]
        raise ValueError(f"{path}: DICOM series has a gap: {len(missing)} slice(s) missing at "
                         f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''} mm {where}; the other "
                         f"slices are {step:g} mm apart (a deleted or unreadable slice file?)")
    raise ValueError(f"{path}: DICOM slices are unevenly spaced: {d:g} mm {where}, the other slices are "
                     f"{step:g} mm apart; refusing to read it as a regular volume")


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
        files = list(reader.GetGDCMSeriesFileNames(path, series[0]))
        bad = _unread_slice_files(path, files)
        if len(bad) == 1:
            raise ValueError(f"{bad[0][0]}: {bad[0][1]}; a slice of the DICOM series {path} cannot be read")
        if bad:
            listed = "; ".join(f"{f} ({why})" for f, why in bad[:5])
            raise ValueError(f"{path}: {len(bad)} files of the DICOM series cannot be read: {listed}"
                             f"{'; ...' if len(bad) > 5 else ''}")
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
        try:
            img = reader.Execute()
        except RuntimeError as e:
            for f in files:  # name the slice that fails
                try:
                    sitk.ReadImage(f)
                except RuntimeError as e1:
                    raise ValueError(f"{f}: cannot read this slice of the DICOM series {path} "
                                     f"({_last_line(e1)})") from e
            raise ValueError(f"{path}: cannot read DICOM series ({_last_line(e)})") from e
        _check_slice_positions(path, reader, files)
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


NAN_POLICIES = ("raise", "zero")
_INT32 = np.iinfo(np.int32)


def _read_any(p: str):
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


def read_image(path: str | os.PathLike, nan_policy: str = "raise") -> tuple[np.ndarray, ImageMeta]:
    """Read an image or volume: ``(array [*S, C], meta)``; see the module docstring for conventions.

    The array keeps the file's dtype (float for scaled NIfTI); cast as needed. ``nan_policy``: what a
    NaN or Inf voxel does: ``"raise"`` (default) a ``ValueError`` naming the file and the count,
    ``"zero"`` replace them with 0.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    p = os.fspath(path)
    arr, meta = _read_any(p)
    if np.issubdtype(arr.dtype, np.inexact):
        finite = np.isfinite(arr)
        if not finite.all():
            if nan_policy == "zero":
                arr = np.where(finite, arr, np.zeros((), arr.dtype))
            else:
                n_nan = int(np.isnan(arr).sum())
                n_inf = int(arr.size - finite.sum()) - n_nan
                first = tuple(int(i) for i in np.argwhere(~finite)[0])
                raise ValueError(f"{p}: image has {n_nan} NaN and {n_inf} Inf voxel(s) (first at index {first}); "
                                 f"read with nan_policy='zero' to replace them with 0")
    return arr, meta


def read_label(path: str | os.PathLike, allowed: Sequence[int] | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read a label map: ``(int32 array [*S], meta)``.

    Float files (BraTS ``OTMultiClass`` is float32) must hold exact integers, and every value must fit
    int32 (else ``ValueError`` naming the file). ``allowed``: the label values that may occur; anything
    else raises ``ValueError`` listing the stray values.
    """
    arr, meta = _read_any(os.fspath(path))
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
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{path}: label map has complex values ({arr.dtype}); expected integers")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{path}: label map contains NaN or Inf")
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            bad = np.unique(arr[rounded != arr])[:5]
            raise ValueError(f"{path}: label map has non-integer values, e.g. {bad.tolist()}")
        arr = rounded
    if arr.size and arr.dtype.itemsize >= 4 and arr.dtype != np.int32:
        lo, hi = arr.min(), arr.max()
        if lo < _INT32.min or hi > _INT32.max:
            out_of = arr[(arr < _INT32.min) | (arr > _INT32.max)]
            bad = [int(v) for v in np.unique(out_of)[:5]]
            raise ValueError(f"{path}: label values {bad} do not fit int32 [{_INT32.min}, {_INT32.max}] "
                             f"(range of the file [{int(lo)}, {int(hi)}])")
    out = arr.astype(np.int32)
    if allowed is not None:
        stray = np.setdiff1d(np.unique(out), np.asarray(list(allowed)))
        if stray.size:
            raise ValueError(f"{path}: label values {stray.tolist()[:10]} outside the expected set "
                             f"{sorted(int(a) for a in allowed)}")
    return out, meta
