"""Uploads: which files the application accepts, saving them under the server's names, reading them into arrays.

Nothing here takes a path from a request: files live only in a temporary folder the caller creates, under
names chosen here (``upload<suffix>``; the client's name only decides which suffix). A file is parsed by its
content: one that does not parse is a :class:`data_pipelines.errors.UnreadableInput` naming the client's file
(never the server's folders). A zip holds a DICOM series or an ``.mhd`` header with its raw file.

Bounds: the upload limit (``max_upload_mb``) applies to the bytes received, to the decoded image (the readers
check the header's claimed size before reading) and to a zip's inflated size: the members' declared sizes are
summed before anything is extracted, and the bytes actually inflated are counted while streaming, so a zip bomb
stops at the limit (:class:`TooLarge`, 413). A zip member that is a symbolic link, has an absolute or ``..``
name, or is encrypted is refused; a header (NRRD ``data file:``, MHD ``ElementDataFile``) may name data only
beside it in the request's folder.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import zipfile
import zlib

import numpy as np

from data_pipelines import readers
from data_pipelines.atomic import atomic_path
from data_pipelines.errors import InputTooLarge, UnreadableInput

__all__ = ["ACCEPTED_SUFFIXES", "MAX_ZIP_MEMBERS", "PICTURE_SUFFIXES", "DEFAULT_UPLOAD_MB", "UnsupportedType",
           "TooLarge", "limit_bytes", "upload_suffix", "save_upload", "read_upload", "read_reference"]

DEFAULT_UPLOAD_MB = 512.0  # the server's default --max-upload-mb

# Suffix -> what the upload is. A zip holds a DICOM series or an .mhd header with its raw file.
ACCEPTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".zip")
MAX_ZIP_MEMBERS = 4096
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class UnsupportedType(ValueError):
    """An upload whose name says a file type the application does not read (the server answers 415)."""


class TooLarge(ValueError):
    """An upload larger than the server's limit (the server answers 413); ``detail``: what was too large when it
    was not the bytes received (a zip's inflated size, an image's decoded size)."""

    def __init__(self, max_upload_mb: float, detail: str = ""):
        self.max_upload_mb, self.detail = float(max_upload_mb), str(detail)
        super().__init__(f"upload larger than the limit of {self.max_upload_mb:g} MiB"
                         + (f": {self.detail}" if self.detail else ""))

    def __reduce__(self):  # picklable with its fields (a worker process may raise it)
        return type(self), (self.max_upload_mb, self.detail)


def limit_bytes(max_upload_mb: float) -> int:
    """The upload limit ``max_upload_mb`` (MiB) in bytes."""
    return int(float(max_upload_mb) * 1024 * 1024)


def upload_suffix(filename: str | None) -> str:
    """The accepted suffix of a client's file name; names with folders or '..' are refused."""
    name = (filename or "").strip()
    if not name:
        raise ValueError("upload: the file has no name (its suffix says what it is: "
                         f"{', '.join(ACCEPTED_SUFFIXES)})")
    if "/" in name or "\\" in name or ".." in name or name.startswith(".") or "\x00" in name:
        raise ValueError(f"upload {name!r}: a file name may not contain folders or '..'")
    low = name.lower()
    for s in ACCEPTED_SUFFIXES:
        if low.endswith(s):
            return s
    raise UnsupportedType(f"upload {name!r}: unsupported file type; upload one of {', '.join(ACCEPTED_SUFFIXES)} "
                          f"(a DICOM series or .mhd+.raw as a .zip)")


async def save_upload(upload, folder: str, stem: str, max_upload_mb: float) -> tuple[str, str]:
    """Save ``upload`` (a ``fastapi.UploadFile``: ``filename``, ``async read(n)``) as ``folder/<stem><suffix>``,
    at most ``max_upload_mb`` MiB (:class:`TooLarge`); returns ``(path, suffix)``. An empty file is a
    ``ValueError``."""
    suffix = upload_suffix(upload.filename)
    limit = limit_bytes(max_upload_mb)
    path = os.path.join(folder, stem + suffix)  # the server's name; the client's name gave only the suffix
    size = 0
    with open(path, "wb") as f:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise TooLarge(max_upload_mb)
            f.write(chunk)
    if size == 0:
        raise ValueError(f"upload {upload.filename!r} is empty")
    return path, suffix


def _member_problem(m: zipfile.ZipInfo) -> str | None:
    """Why the zip member ``m`` is refused (a link, an absolute or '..' name, encrypted), or None."""
    name = m.filename.replace("\\", "/")
    if stat.S_ISLNK(m.external_attr >> 16):
        return f"member {m.filename!r} is a symbolic link"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in name.split("/"):
        return f"member {m.filename!r} has an absolute or '..' path"
    if m.flag_bits & 0x1:
        return f"member {m.filename!r} is encrypted"
    return None


# What reading a damaged archive raises (an offset past the file is an OSError from seek); the disk faults of
# writing the members out are the server's, not the client's, and are not among them.
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, RuntimeError, NotImplementedError, ValueError,
               OSError, struct.error, zlib.error)


def _zip_members(path: str, name: str, max_bytes: int) -> list[zipfile.ZipInfo]:
    """The file members of the zip ``path`` (the client's ``name``), checked before anything is inflated: a count
    in 1..MAX_ZIP_MEMBERS, no links, '..' or absolute names or encryption, declared sizes summing within
    ``max_bytes``."""
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except _ZIP_ERRORS as e:
        raise UnreadableInput(name, f"not a readable zip ({type(e).__name__}: {e})") from None
    members = [m for m in infos if not m.is_dir()]
    if not members or len(members) > MAX_ZIP_MEMBERS:
        raise UnreadableInput(name, f"holds {len(members)} files (1..{MAX_ZIP_MEMBERS} expected)")
    for m in infos:
        if problem := _member_problem(m):
            raise UnreadableInput(name, f"{problem}; a zip may hold only plain files")
    declared = sum(m.file_size for m in members)
    if declared > max_bytes:
        raise InputTooLarge(name, "the zip's members declare", declared, max_bytes)
    return members


def _member_chunks(z: zipfile.ZipFile, m: zipfile.ZipInfo, name: str):
    """The inflated bytes of member ``m`` in 1 MiB pieces; a damaged member is an ``UnreadableInput``."""
    try:
        with z.open(m) as src:
            while chunk := src.read(1 << 20):
                yield chunk
    except _ZIP_ERRORS as e:
        raise UnreadableInput(name, f"member {m.filename!r} cannot be inflated ({type(e).__name__}: {e})") from None


def _extract_zip(path: str, folder: str, name: str, max_bytes: int) -> str:
    """Extract the zip ``path`` (the client's ``name``) flat into ``folder/zip`` (member folders dropped), at most
    ``max_bytes`` inflated (declared sizes summed first, inflated bytes counted while streaming); returns the path
    to read: the .mhd inside, or the folder (a DICOM series)."""
    members = _zip_members(path, name, max_bytes)
    out = os.path.join(folder, "zip")
    os.makedirs(out)
    names, inflated = set(), 0
    with zipfile.ZipFile(path) as z:
        for i, m in enumerate(members):
            base = os.path.basename(m.filename.replace("\\", "/"))
            if not base or base.startswith(".") or base in names:
                base = f"member{i:05d}" + os.path.splitext(base)[1]
            names.add(base)
            with atomic_path(os.path.join(out, base)) as tmp, open(tmp, "wb") as dst:
                for chunk in _member_chunks(z, m, name):
                    inflated += len(chunk)
                    if inflated > max_bytes:
                        raise InputTooLarge(name, "the zip inflates to more than", inflated, max_bytes)
                    dst.write(chunk)
    headers = sorted(n for n in os.listdir(out) if n.lower().endswith(".mhd"))
    if len(headers) > 1:
        raise UnreadableInput(name, f"holds {len(headers)} .mhd headers; zip one image (an .mhd with its .raw)")
    return os.path.join(out, headers[0]) if headers else out


def _readable_path(path: str, suffix: str, folder: str, name: str, max_bytes: int) -> str:
    return _extract_zip(path, folder, name, max_bytes) if suffix == ".zip" else path


def _read(read, path: str, suffix: str, folder: str, label: str, max_upload_mb: float):
    """``read(target, max_bytes)`` of a saved upload: errors name the client's file (``label``), never the
    server's folder; a size over the limit is :class:`TooLarge`."""
    limit = limit_bytes(max_upload_mb)
    try:
        target = _readable_path(path, suffix, folder, label, limit)
        return read(target, limit), target
    except InputTooLarge as e:
        raise TooLarge(max_upload_mb, _unplaced(e, (path, folder, label))) from None
    except UnreadableInput as e:
        raise UnreadableInput(label, f"cannot be read as {suffix}: {_unplaced(e, (path, folder, label))}") from None


def _unplaced(e: UnreadableInput, upload: tuple) -> str:
    """The reader's error about the upload (``upload``: its path, unpacking folder and client label) or a file
    unpacked from it, without the server's folders: the client is told names (``zip/slice7.dcm: ...``), never
    where they lie."""
    path, folder, _ = upload
    problem = e.problem if e.file in upload else str(e)
    places = {f for d in (folder, os.path.dirname(path)) for f in (d, os.path.realpath(d))}
    for f in sorted(places, key=len, reverse=True):  # the unpacking folder (inside the request's) first
        problem = problem.replace(f + os.sep, "")
    for f in sorted(places, key=len, reverse=True):
        problem = problem.replace(f, "the upload's folder")
    return problem


def read_upload(path: str, suffix: str, folder: str, label: str = "upload",
                max_upload_mb: float = DEFAULT_UPLOAD_MB):
    """``(image [*S, C], meta, read_path)`` of a saved upload; anything that does not parse is an
    ``UnreadableInput`` naming ``label``, a decoded or inflated size over ``max_upload_mb`` :class:`TooLarge`."""
    (image, meta), target = _read(lambda p, n: readers.read_image(p, max_bytes=n), path, suffix, folder, label,
                                  max_upload_mb)
    if image.size == 0 or not np.all(np.isfinite(np.asarray(image, np.float32))):
        raise UnreadableInput(label, f"({suffix}) is empty or holds NaN/Inf values")
    return image, meta, target


def read_reference(path: str, suffix: str, folder: str, shape: tuple,
                   max_upload_mb: float = DEFAULT_UPLOAD_MB) -> np.ndarray:
    """A reference label map of the image's ``shape``."""
    sub = os.path.join(folder, "reference")
    os.makedirs(sub, exist_ok=True)
    (labels, _), _ = _read(lambda p, n: readers.read_label(p, max_bytes=n), path, suffix, sub, "reference mask",
                           max_upload_mb)
    labels = np.asarray(labels)
    if suffix in PICTURE_SUFFIXES and labels.max(initial=0) == 255:
        labels = (labels > 0).astype(np.int32)  # a binary picture mask (zoo.predict writes 0/255)
    if labels.shape != tuple(shape):
        raise ValueError(f"reference mask: shape {labels.shape} differs from the image's {tuple(shape)}")
    return labels
