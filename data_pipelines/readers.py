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

Every failure to read raises :class:`data_pipelines.errors.UnreadableInput` (a ``ValueError``; a missing
file is its ``MissingInput``, also a ``FileNotFoundError``) with the message ``"<file>: <what is wrong>"``,
never a parser library's own exception: a missing, truncated or corrupt file, an unknown format, NaN/Inf voxels
(unless ``nan_policy="zero"``), label values that do not fit int32, a DICOM series with an unreadable slice
file, a gap in its slice positions (ITK would read it silently as a compressed volume), two series in one
folder, a non-image DICOM or an unsupported transfer syntax.

Bounds, checked from the headers **before** anything is inflated or allocated (``max_bytes``, default
:data:`DEFAULT_MAX_BYTES`; the application passes its upload limit): the decoded array a header claims (NIfTI
dims and data offset, NRRD sizes, MHD DimSize, DICOM rows x columns x frames x slices, a picture's pixels) must
fit, else :class:`~data_pipelines.errors.InputTooLarge` naming the claimed size. Compressed payloads the parser
would inflate whole (NRRD gzip data, a deflated DICOM data set) are inflated first as a stream, capped. A data
file named by a header (NRRD ``data file:``, MHD/MHA ``ElementDataFile``) must resolve, symlinks followed, inside
the header's own folder unless the caller passes ``allow_external_data=True``: a header can never pull in
another file on the machine by default.
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
from typing import Sequence

import numpy as np

from data_pipelines.errors import InputTooLarge, MissingInput, UnreadableInput, format_bytes
from data_pipelines.limits import DEFAULT_MAX_BYTES, GZIP_OR_ZLIB, RAW_DEFLATE, check_claim, inflated_size

__all__ = ["ImageMeta", "read_image", "read_label", "image_format", "VOLUME_SUFFIXES", "PICTURE_SUFFIXES",
           "NAN_POLICIES", "DEFAULT_MAX_BYTES"]

_MAX_HEADER_BYTES = 1 << 20  # a text header (NRRD, MHD/MHA) longer than this is not one
_MAX_DATA_FILES = 100_000  # data files one header may list

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
    raise UnreadableInput(p, f"unknown image format (expected one of {VOLUME_SUFFIXES + PICTURE_SUFFIXES} "
                             f"or a DICOM directory)")


def _meta(spacing, origin, direction, path, fmt) -> ImageMeta:
    direction = np.asarray(direction, np.float64)
    return ImageMeta(tuple(float(s) for s in spacing), tuple(float(o) for o in origin),
                     tuple(tuple(float(v) for v in row) for row in direction), str(path), fmt)


def _nifti_header(path: str):
    """The NIfTI-1/2 header of ``path`` parsed from its first bytes only (a bounded read of the gzip stream)."""
    import nibabel as nib

    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(540)
    for cls, size in ((nib.Nifti1Header, 348), (nib.Nifti2Header, 540)):
        for order in ("<", ">"):
            if len(head) >= size and int(np.frombuffer(head[:4], order + "i4")[0]) == size:
                return cls(head[:size], endianness=order, check=False)
    raise UnreadableInput(path, f"not a NIfTI file (no NIfTI-1/2 header in its first {len(head)} bytes)")


def _read_nifti(path: str, max_bytes: int):
    import nibabel as nib

    hdr = _nifti_header(path)
    slope, inter = hdr.get_slope_inter()
    scaled = slope not in (None, 1.0) or inter not in (None, 0.0)
    item = max(hdr.get_data_dtype().itemsize, 8 if scaled else 0)  # scaling reads as float64
    check_claim(path, "the NIfTI header's dims", hdr.get_data_shape(), item, max_bytes,
                 extra=max(int(hdr.get_data_offset()), 0))
    img = nib.load(path)
    # dataobj applies scl_slope/scl_inter (the BraTS brain masks need it).
    data = np.asanyarray(img.dataobj)
    if data.ndim < 2 or data.ndim > 4:
        raise UnreadableInput(path, f"expected a 2D, 3D or 4D NIfTI image, got shape {data.shape}")
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
        raise UnreadableInput(path, f"array has {spatial} spatial axes but the header says {nd}")
    perm = tuple(range(nd - 1, -1, -1)) + ((nd,) if ncomp > 1 else ())
    arr = np.transpose(arr, perm)
    if ncomp == 1:
        arr = arr[..., None]
    direction = np.asarray(img.GetDirection(), np.float64).reshape(nd, nd)
    return np.ascontiguousarray(arr), _meta(img.GetSpacing(), img.GetOrigin(), direction, path, fmt)


def _sitk_item_bytes(pixel_id: int, components: int) -> int:
    """Bytes per voxel of an ITK pixel type (``"16-bit signed integer"``, ``"complex of 32-bit float"``, ...)."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(pixel_id)
    bits = re.search(r"(\d+)-bit", name)
    item = int(bits.group(1)) // 8 if bits else 8
    return max(item, 1) * (2 if "complex" in name else 1) * max(int(components), 1)


def _image_information(path: str, what: str, max_bytes: int, copies: int = 1):
    """ITK's reading of the header of ``path`` (no voxels); refused when the decoded array (``copies`` such
    images: the slices of a series) would pass ``max_bytes``."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise UnreadableInput(path, f"cannot read the {what} header ({_last_line(e)})") from None
    size = list(reader.GetSize()) + ([copies] if copies > 1 else [])
    item = _sitk_item_bytes(reader.GetPixelID(), reader.GetNumberOfComponents())
    check_claim(path, f"the {what} header's size", size, item, max_bytes)
    return reader


def _header_bytes(path: str, detached: bool) -> bytes:
    """The first bytes of a text-headed file (all of it for a detached header), at most 1 MiB."""
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER_BYTES + 1)
    if detached and len(head) > _MAX_HEADER_BYTES:
        raise UnreadableInput(path, f"header longer than {_MAX_HEADER_BYTES} bytes; not an image header")
    return head


def _text_lines(head: bytes):
    """``(line, end offset)`` for each line of ``head`` (``\\n`` or ``\\r\\n`` endings)."""
    pos = 0
    while pos < len(head):
        nl = head.find(b"\n", pos)
        end = len(head) if nl < 0 else nl + 1
        yield head[pos:end].rstrip(b"\r\n").decode("latin-1"), end
        pos = end


def _numbered_names(path: str, field: str, value: str) -> list[str] | None:
    """The file names of a ``"<printf pattern> min max step"`` data-file field, or None for a plain name."""
    parts = value.split()
    if len(parts) < 4 or "%" not in parts[0]:
        return None
    try:
        lo, hi, step = int(parts[1]), int(parts[2]), int(parts[3])
        numbers = range(lo, hi + (1 if step > 0 else -1), step)
        names = [parts[0] % i for i in numbers] if len(numbers) <= _MAX_DATA_FILES else None
    except (ValueError, TypeError) as e:
        raise UnreadableInput(path, f"{field} {value!r} is not a file pattern with min, max and step ({e})") from None
    if names is None:
        raise UnreadableInput(path, f"{field} names {len(numbers)} files (at most {_MAX_DATA_FILES})")
    return names


def _data_files(path: str, field: str, names: Sequence[str], allow_external: bool) -> list[str]:
    """The data files a header at ``path`` names in ``field``, resolved (symlinks followed) next to it; each
    must exist, and lie in the header's folder unless ``allow_external``."""
    folder = os.path.dirname(os.path.abspath(path))
    inside = os.path.realpath(folder)
    out = []
    for name in names:
        full = os.path.realpath(os.path.join(folder, name))
        if not allow_external and os.path.commonpath([inside, full]) != inside:
            raise UnreadableInput(path, f"{field} {name!r} lies outside the header's folder {folder}; refusing to "
                                        f"read it (a header may only name data beside it; pass "
                                        f"allow_external_data=True to read data elsewhere)")
        if not os.path.isfile(full):
            raise UnreadableInput(path, f"data file {name!r} named by {field} is missing")
        out.append(full)
    return out


def _nrrd_header(path: str) -> tuple[dict, list[str], int]:
    """NRRD fields (lower-case keys), the data-file names listed after ``data file: LIST`` and the offset of
    attached data."""
    head = _header_bytes(path, detached=path.lower().endswith(".nhdr"))
    if not head.startswith(b"NRRD000"):
        raise UnreadableInput(path, "not an NRRD file (its first line is not 'NRRD000<version>')")
    fields, listed, offset, in_list = {}, [], None, False
    for line, end in _text_lines(head):
        if not line.strip():
            offset = end
            break
        if in_list:
            listed.append(line.strip())
        elif ":" in line and not line.startswith("#") and ":=" not in line:
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
            in_list = key.strip().lower() in ("data file", "datafile") and value.strip().upper().startswith("LIST")
    if offset is None and not path.lower().endswith(".nhdr") and "data file" not in fields \
            and "datafile" not in fields:
        raise UnreadableInput(path, f"no blank line ends the NRRD header within its first {len(head)} bytes")
    return fields, listed, offset or len(head)


def _mhd_header(path: str) -> tuple[dict, list[str], int]:
    """MetaImage fields (lower-case keys) up to ``ElementDataFile``, the names listed after ``LIST`` and the
    offset of local data."""
    head = _header_bytes(path, detached=path.lower().endswith(".mhd"))
    fields, listed, offset = {}, [], None
    for line, end in _text_lines(head):
        if offset is not None:  # after "ElementDataFile = LIST": one file name per line
            if line.strip():
                listed.append(line.strip())
            continue
        if "=" in line:
            key, value = line.split("=", 1)
            fields[key.strip().lower()] = value.strip()
            if key.strip().lower() == "elementdatafile":
                offset = end
                if not value.strip().upper().startswith("LIST"):
                    break
    if offset is None:
        raise UnreadableInput(path, f"no ElementDataFile line in the MetaImage header's first {len(head)} bytes")
    return fields, listed, offset


_MET_TYPES = {"met_char", "met_uchar", "met_short", "met_ushort", "met_int", "met_uint", "met_long", "met_ulong",
              "met_long_long", "met_ulong_long", "met_float", "met_double"}
_MET_VECTORS = {"DimSize": 1, "ElementSpacing": 1, "ElementSize": 1, "Offset": 1, "Position": 1, "Origin": 1,
                "CenterOfRotation": 1, "TransformMatrix": 2, "Rotation": 2, "Orientation": 2}  # NDims ** power values


def _check_mhd_fields(path: str, fields: dict) -> None:
    """The MetaImage fields ITK's MetaIO trusts, checked first (it reads past its arrays, and crashes, when NDims
    and the vectors disagree): NDims 1..10, each vector with NDims (matrices NDims x NDims) numbers, a known
    ElementType, whole positive DimSize and channel count."""
    nd = fields.get("ndims", "")
    if not nd.isdigit() or not 1 <= int(nd) <= 10:
        raise UnreadableInput(path, f"NDims must be a whole number 1..10, got {nd!r}")
    nd = int(nd)
    for key, power in _MET_VECTORS.items():
        if key.lower() in fields:
            values = fields[key.lower()].split()
            if len(values) != nd ** power or _float_list("\\".join(values)) is None:
                raise UnreadableInput(path, f"{key} must hold {nd ** power} numbers (NDims = {nd}), got "
                                            f"{fields[key.lower()][:80]!r}")
    dims = fields.get("dimsize", "").split()
    if len(dims) != nd or not all(d.isdigit() and int(d) > 0 for d in dims):
        raise UnreadableInput(path, f"DimSize must be {nd} whole numbers > 0, got {fields.get('dimsize', '')[:80]!r}")
    if fields.get("elementtype", "").lower() not in _MET_TYPES:
        raise UnreadableInput(path, f"unknown ElementType {fields.get('elementtype', '')[:40]!r}")
    channels = fields.get("elementnumberofchannels", "1")
    if not channels.isdigit() or int(channels) < 1:
        raise UnreadableInput(path, f"ElementNumberOfChannels must be a whole number >= 1, got {channels!r}")


def _claimed_bytes(reader) -> int:
    return int(np.prod([int(s) for s in reader.GetSize()], dtype=object)) * _sitk_item_bytes(
        reader.GetPixelID(), reader.GetNumberOfComponents())


def _check_nrrd(path: str, max_bytes: int, allow_external: bool) -> None:
    """The data files of an NRRD header stay beside it; its claimed size fits; gzip data inflates (streamed,
    capped) to what the header needs."""
    fields, listed, offset = _nrrd_header(path)
    value = fields.get("data file", fields.get("datafile"))
    if value is not None:
        names = listed if value.upper().startswith("LIST") else _numbered_names(path, "data file", value) or [value]
        files = _data_files(path, "data file", names, allow_external)
    else:
        files = [os.path.realpath(path)]
    need = _claimed_bytes(_image_information(path, "NRRD", max_bytes))
    if fields.get("encoding", "").lower() in ("gzip", "gz") and len(files) == 1 and "byte skip" not in fields:
        start = offset if value is None else 0
        got = inflated_size(files[0], start, need, GZIP_OR_ZLIB)
        if got < need:
            raise UnreadableInput(path, f"gzip data truncated: it inflates to {got} bytes, the header needs {need}")


def _check_mhd(path: str, max_bytes: int, allow_external: bool) -> None:
    """The data files of a MetaImage header stay beside it; its claimed size fits; an uncompressed payload has
    the bytes it needs and a compressed one no more claimed bytes than it holds."""
    fields, listed, offset = _mhd_header(path)
    _check_mhd_fields(path, fields)
    value = fields["elementdatafile"]
    if value.upper() == "LOCAL":
        files, start = [os.path.realpath(path)], offset
    else:
        names = listed if value.upper().startswith("LIST") else _numbered_names(path, "ElementDataFile", value) \
            or [value]
        files, start = _data_files(path, "ElementDataFile", names, allow_external), 0
    need = _claimed_bytes(_image_information(path, "MetaImage", max_bytes))
    if len(files) != 1:
        return
    have = os.path.getsize(files[0]) - start
    if fields.get("compresseddata", "false").lower() == "true":
        claimed = fields.get("compresseddatasize")
        if claimed is not None and (not claimed.isdigit() or int(claimed) > have):
            raise UnreadableInput(path, f"CompressedDataSize {claimed} but the data file holds {have} bytes")
        got = inflated_size(files[0], start, need, GZIP_OR_ZLIB)
        if got < need:
            raise UnreadableInput(path, f"compressed data truncated: it inflates to {got} bytes, the header "
                                        f"needs {need}")
    elif have < need:
        raise UnreadableInput(files[0], f"truncated: {have} bytes, the header {os.path.basename(path)} needs {need}")


def _read_sitk(path: str, fmt: str, max_bytes: int, allow_external: bool):
    (_check_nrrd if fmt == "nrrd" else _check_mhd)(path, max_bytes, allow_external)
    return _read_sitk_image(path, fmt)


def _read_sitk_image(path: str, fmt: str):
    import SimpleITK as sitk

    try:
        img = sitk.ReadImage(path)
    except RuntimeError as e:
        raise UnreadableInput(path, f"cannot read {fmt.upper()} ({_last_line(e)})") from None
    return _sitk_to_numpy(img, path, fmt)


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
        raise UnreadableInput(path, f"DICOM slices {names[same]} and {names[same + 1]} are at the same position "
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
        raise UnreadableInput(path, f"DICOM series has a gap: {len(missing)} slice(s) missing at "
                                    f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''} mm {where}; "
                                    f"the other slices are {step:g} mm apart (a deleted or unreadable slice file?)")
    raise UnreadableInput(path, f"DICOM slices are unevenly spaced: {d:g} mm {where}, the other slices are "
                                f"{step:g} mm apart; refusing to read it as a regular volume")


# What GDCM (SimpleITK's DICOM reader) decodes; anything else is refused with its name before GDCM sees it.
_TRANSFER_SYNTAXES = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian", "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian", "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline", "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless", "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless", "1.2.840.10008.1.2.4.81": "JPEG-LS Near-Lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless", "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless"}
_DEFLATED = "1.2.840.10008.1.2.1.99"


def _raw_text(ds, tag: int) -> str:
    """The text of element ``tag`` as stored, without pydicom's conversion (which logs the values it finds
    invalid: a hostile file's contents would reach the logs)."""
    if tag not in ds:
        return ""
    value = ds.get_item(tag).value
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip("\x00 ")


def _check_transfer_syntax(path: str, max_bytes: int) -> None:
    """Before GDCM reads ``path``: its transfer syntax is one GDCM decodes, and a deflated data set inflates
    (streamed, capped) within ``max_bytes``."""
    import pydicom

    if not _has_dicom_magic(path):
        return  # no file meta (an old ACR-NEMA style file): GDCM decides, in Implicit VR
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
    except Exception as e:  # pydicom's own types for a damaged meta group
        raise UnreadableInput(path, f"corrupt DICOM file meta ({type(e).__name__}: {_last_line(e)})") from None
    uid = _raw_text(meta, 0x00020010)
    if not uid:  # GDCM's recovery from a damaged meta group can take seconds: refuse it here
        raise UnreadableInput(path, "corrupt DICOM file meta: no Transfer Syntax UID (0002,0010)")
    if uid not in _TRANSFER_SYNTAXES:
        name = pydicom.uid.UID(uid).name
        raise UnreadableInput(path, f"unsupported transfer syntax {uid}{f' ({name})' if name != uid else ''}; "
                                    f"readable: {', '.join(sorted(set(_TRANSFER_SYNTAXES.values())))}")
    if uid == _DEFLATED:
        with open(path, "rb") as f:
            f.seek(132)
            tag = f.read(12)
        if tag[:6] != b"\x02\x00\x00\x00UL":
            raise UnreadableInput(path, "deflated DICOM without a file meta group length; cannot bound its size")
        start = 144 + int(np.frombuffer(tag[8:12], "<u4")[0])
        if inflated_size(path, start, max_bytes, RAW_DEFLATE) > max_bytes:
            raise InputTooLarge(path, "the deflated DICOM data set inflates to more than", max_bytes + 1, max_bytes)
        return
    _check_dicom_elements(path, uid)


def _check_dicom_elements(path: str, uid: str) -> None:
    """The data set after the file meta parses element by element to the file's last byte (values over 256
    bytes skipped, not read): GDCM spends seconds to minutes recovering a misaligned or padded data set."""
    from pydicom.filereader import data_element_generator, read_preamble

    with open(path, "rb") as f:
        read_preamble(f, False)
        meta_end = None
        try:
            for elem in data_element_generator(f, False, True, stop_when=lambda tag, vr, n: tag.group != 2):
                meta_end = f.tell()
            end = meta_end if meta_end is not None else 132
            f.seek(end)
            for elem in data_element_generator(f, uid == "1.2.840.10008.1.2", uid != "1.2.840.10008.1.2.2",
                                               defer_size=256):
                end = f.tell()  # just past the element (a deferred value is seeked over)
        except Exception as e:  # pydicom's own types for a damaged element
            raise UnreadableInput(path, f"truncated or corrupt DICOM data set ({type(e).__name__}: "
                                        f"{_last_line(e)})") from None
        size = os.fstat(f.fileno()).st_size
    if end > size:
        raise UnreadableInput(path, f"truncated or corrupt: a DICOM element runs to byte {end}, past the file's "
                                    f"end ({size} bytes)")
    if end < size:
        raise UnreadableInput(path, f"truncated or corrupt: {size - end} stray bytes after the DICOM data set's "
                                    f"last element (at byte {end} of {size})")


def _check_dicom_image(path: str, max_bytes: int) -> None:
    """A single DICOM file: a readable transfer syntax, and an image (Rows and Columns), not a report or a
    truncated header."""
    import pydicom

    _check_transfer_syntax(path, max_bytes)
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    if "Rows" not in ds or "Columns" not in ds:
        sop = pydicom.uid.UID(_raw_text(ds, 0x00080016))
        if sop and "Image" not in sop.name:
            raise UnreadableInput(path, f"not an image: a DICOM {sop.name} object (no Rows/Columns)")
        raise UnreadableInput(path, f"truncated or corrupt: no Rows/Columns in the DICOM header "
                                    f"({os.path.getsize(path)} bytes)")


def _dicom_files(path: str) -> list[str]:
    """The regular files of a series folder that carry the DICOM magic (what GDCM will scan)."""
    names = (os.path.join(path, n) for n in sorted(os.listdir(path)) if not n.startswith("."))
    return [f for f in names if os.path.isfile(f) and _has_dicom_magic(f)]


def _read_dicom_series(path: str, max_bytes: int):
    import SimpleITK as sitk

    if not os.path.isdir(path):
        _check_dicom_image(path, max_bytes)
        _image_information(path, "DICOM", max_bytes)
        return _read_sitk_image(path, "dicom")
    for f in _dicom_files(path):
        _check_transfer_syntax(f, max_bytes)
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(path)
    if not series:
        raise UnreadableInput(path, "no DICOM series found in directory")
    if len(series) > 1:
        raise UnreadableInput(path, f"{len(series)} DICOM series in one directory ({list(series)[:3]}...); "
                                    f"give one series per directory")
    files = list(reader.GetGDCMSeriesFileNames(path, series[0]))
    bad = _unread_slice_files(path, files)
    if len(bad) == 1:
        raise UnreadableInput(bad[0][0], f"{bad[0][1]}; a slice of the DICOM series {path} cannot be read")
    if bad:
        listed = "; ".join(f"{f} ({why})" for f, why in bad[:5])
        raise UnreadableInput(path, f"{len(bad)} files of the DICOM series cannot be read: {listed}"
                                    f"{'; ...' if len(bad) > 5 else ''}")
    _image_information(files[0], "DICOM", max_bytes, copies=len(files))
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        img = reader.Execute()
    except RuntimeError as e:
        for f in files:  # name the slice that fails
            try:
                sitk.ReadImage(f)
            except RuntimeError as e1:
                raise UnreadableInput(f, f"cannot read this slice of the DICOM series {path} "
                                         f"({_last_line(e1)})") from e
        raise UnreadableInput(path, f"cannot read DICOM series ({_last_line(e)})") from e
    _check_slice_positions(path, reader, files)
    return _sitk_to_numpy(img, path, "dicom")


def _picture_bytes(im) -> int:
    """Bytes of the array :func:`_read_picture` makes of the opened (not yet decoded) picture ``im``."""
    bands = 4 if im.mode in ("P", "PA") else max(len(im.getbands()), 1)
    item = 4 if im.mode in ("I", "F") or im.mode.startswith("I;32") else 2 if im.mode.startswith("I;16") else 1
    return bands * item


def _read_picture(path: str, max_bytes: int):
    from PIL import Image

    try:
        im = Image.open(path)  # reads the header only
    except Image.DecompressionBombError as e:  # PIL's own bound (twice Image.MAX_IMAGE_PIXELS), met at open
        raise UnreadableInput(path, f"too large: {e}") from None
    with im:
        w, h = im.size
        check_claim(path, "the picture's size", (h, w), _picture_bytes(im), max_bytes)
        im.load()
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if "transparency" in im.info or im.mode == "PA" else "RGB")
        elif im.mode in ("1", "CMYK", "YCbCr", "LA"):
            im = im.convert({"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LA": "L"}[im.mode])
        arr = np.asarray(im)
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, _meta((1.0, 1.0), (0.0, 0.0), np.eye(2), path, "picture")


NAN_POLICIES = ("raise", "zero")
_INT32 = np.iinfo(np.int32)
_FORMAT_NAMES = {"nifti": "NIfTI", "nrrd": "NRRD", "mhd": "MetaImage", "dicom": "DICOM", "picture": "image"}


def _read_format(p: str, fmt: str, max_bytes: int, allow_external: bool):
    if fmt == "nifti":
        return _read_nifti(p, max_bytes)
    if fmt in ("nrrd", "mhd"):
        return _read_sitk(p, fmt, max_bytes, allow_external)
    if fmt == "dicom":
        return _read_dicom_series(p, max_bytes)
    return _read_picture(p, max_bytes)


def _read_any(p: str, max_bytes: int = DEFAULT_MAX_BYTES, allow_external: bool = False):
    """``(array, meta)`` of ``p``; every failure is an :class:`UnreadableInput` naming it."""
    if not os.path.exists(p):
        raise MissingInput(p, "no such file or directory")
    fmt = image_format(p)
    try:
        arr, meta = _read_format(p, fmt, int(max_bytes), allow_external)
    except UnreadableInput:
        raise
    except MemoryError:
        raise UnreadableInput(p, f"decoding ran out of memory (limit {format_bytes(max_bytes)})") from None
    except Exception as e:  # the parser libraries' own types (nibabel, SimpleITK, pydicom, PIL, zlib, struct)
        raise UnreadableInput(p, f"cannot read {_FORMAT_NAMES[fmt]} ({type(e).__name__}: {_last_line(e)})") from e
    if arr.nbytes > max_bytes:  # a decoder that grew past what its header said
        raise InputTooLarge(p, "the decoded array is", arr.nbytes, max_bytes)
    return arr, meta


def read_image(path: str | os.PathLike, nan_policy: str = "raise", *, max_bytes: int = DEFAULT_MAX_BYTES,
               allow_external_data: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read an image or volume: ``(array [*S, C], meta)``; see the module docstring for conventions.

    The array keeps the file's dtype (float for scaled NIfTI); cast as needed. ``nan_policy``: what a
    NaN or Inf voxel does: ``"raise"`` (default) an ``UnreadableInput`` naming the file and the count,
    ``"zero"`` replace them with 0. ``max_bytes``: the largest decoded array accepted (checked on the header
    before reading); ``allow_external_data``: let an NRRD/MHD header name data outside its own folder.
    """
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    p = os.fspath(path)
    arr, meta = _read_any(p, max_bytes, allow_external_data)
    if np.issubdtype(arr.dtype, np.inexact):
        finite = np.isfinite(arr)
        if not finite.all():
            if nan_policy == "zero":
                arr = np.where(finite, arr, np.zeros((), arr.dtype))
            else:
                n_nan = int(np.isnan(arr).sum())
                n_inf = int(arr.size - finite.sum()) - n_nan
                first = tuple(int(i) for i in np.argwhere(~finite)[0])
                raise UnreadableInput(p, f"image has {n_nan} NaN and {n_inf} Inf voxel(s) (first at index {first}); "
                                         f"read with nan_policy='zero' to replace them with 0")
    return arr, meta


def read_label(path: str | os.PathLike, allowed: Sequence[int] | None = None, *,
               max_bytes: int = DEFAULT_MAX_BYTES, allow_external_data: bool = False) -> tuple[np.ndarray, ImageMeta]:
    """Read a label map: ``(int32 array [*S], meta)``.

    Float files (BraTS ``OTMultiClass`` is float32) must hold exact integers, and every value must fit
    int32 (else ``UnreadableInput`` naming the file). ``allowed``: the label values that may occur; anything
    else raises ``UnreadableInput`` listing the stray values. ``max_bytes`` and ``allow_external_data`` as in
    :func:`read_image`.
    """
    path = os.fspath(path)
    arr, meta = _read_any(path, max_bytes, allow_external_data)
    if arr.shape[-1] != 1:
        if meta.format == "picture" and arr.shape[-1] in (3, 4):
            # An RGB(A) mask saved by an image editor: all colour channels must agree.
            rgb = arr[..., :3]
            if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
                raise UnreadableInput(path, f"label image has {arr.shape[-1]} channels that differ; "
                                            f"expected a single-channel label map")
            arr = arr[..., :1]
        else:
            raise UnreadableInput(path, f"label map has {arr.shape[-1]} channels; expected 1")
    arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise UnreadableInput(path, f"label map has complex values ({arr.dtype}); expected integers")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise UnreadableInput(path, "label map contains NaN or Inf")
        rounded = np.rint(arr)
        if not np.array_equal(rounded, arr):
            bad = np.unique(arr[rounded != arr])[:5]
            raise UnreadableInput(path, f"label map has non-integer values, e.g. {bad.tolist()}")
        arr = rounded
    if arr.size and arr.dtype.itemsize >= 4 and arr.dtype != np.int32:
        lo, hi = arr.min(), arr.max()
        if lo < _INT32.min or hi > _INT32.max:
            out_of = arr[(arr < _INT32.min) | (arr > _INT32.max)]
            bad = [int(v) for v in np.unique(out_of)[:5]]
            raise UnreadableInput(path, f"label values {bad} do not fit int32 [{_INT32.min}, {_INT32.max}] "
                                        f"(range of the file [{int(lo)}, {int(hi)}])")
    out = arr.astype(np.int32)
    if allowed is not None:
        stray = np.setdiff1d(np.unique(out), np.asarray(list(allowed)))
        if stray.size:
            raise UnreadableInput(path, f"label values {stray.tolist()[:10]} outside the expected set "
                                        f"{sorted(int(a) for a in allowed)}")
    return out, meta
