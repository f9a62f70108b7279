"""Uploads: which files the application accepts, saving them under the server's names, reading them into arrays.

Nothing here takes a path from a request: files live only in a temporary folder the caller creates, under
names chosen here (``upload<suffix>``; the client's name only decides which suffix). A file is parsed by its
content: one that does not parse is a ``ValueError`` naming it. A zip holds a DICOM series or an ``.mhd``
header with its raw file.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from data_pipelines import readers

__all__ = ["ACCEPTED_SUFFIXES", "MAX_ZIP_MEMBERS", "PICTURE_SUFFIXES", "UnsupportedType", "TooLarge", "limit_bytes",
           "upload_suffix", "save_upload", "read_upload", "read_reference"]

# Suffix -> what the upload is. A zip holds a DICOM series or an .mhd header with its raw file.
ACCEPTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".zip")
MAX_ZIP_MEMBERS = 4096
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class UnsupportedType(ValueError):
    """An upload whose name says a file type the application does not read (the server answers 415)."""


class TooLarge(ValueError):
    """An upload larger than the server's limit (the server answers 413)."""

    def __init__(self, max_upload_mb: float):
        super().__init__(f"upload larger than the limit of {max_upload_mb:g} MiB")


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


def _extract_zip(path: str, folder: str) -> str:
    """Extract a zip flat into ``folder/zip`` (member folders dropped, no absolute or '..' names honoured);
    returns the path to read: the .mhd inside, or the folder (a DICOM series)."""
    out = os.path.join(folder, "zip")
    os.makedirs(out)
    try:
        with zipfile.ZipFile(path) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            if not members or len(members) > MAX_ZIP_MEMBERS:
                raise ValueError(f"holds {len(members)} files (1..{MAX_ZIP_MEMBERS} expected)")
            names = set()
            for i, m in enumerate(members):
                base = os.path.basename(m.filename.replace("\\", "/"))
                if not base or base.startswith(".") or base in names:
                    base = f"member{i:05d}" + os.path.splitext(base)[1]
                names.add(base)
                with z.open(m) as src, open(os.path.join(out, base), "wb") as dst:
                    dst.write(src.read())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
        raise ValueError(f"not a readable zip ({e})") from None
    headers = sorted(n for n in os.listdir(out) if n.lower().endswith(".mhd"))
    if len(headers) > 1:
        raise ValueError(f"holds {len(headers)} .mhd headers; zip one image (an .mhd with its .raw)")
    return os.path.join(out, headers[0]) if headers else out


def _readable_path(path: str, suffix: str, folder: str) -> str:
    return _extract_zip(path, folder) if suffix == ".zip" else path


def read_upload(path: str, suffix: str, folder: str, label: str = "upload"):
    """``(image [*S, C], meta, read_path)`` of a saved upload; anything that does not parse is a ``ValueError``."""
    try:
        target = _readable_path(path, suffix, folder)
        image, meta = readers.read_image(target)
    except ValueError as e:
        raise ValueError(f"{label} ({suffix}): cannot be read: {e}") from None
    except Exception as e:  # readers' libraries (nibabel, SimpleITK, pydicom, PIL) raise their own types
        raise ValueError(f"{label} ({suffix}): cannot be read as an image ({type(e).__name__}: {e})") from None
    if image.size == 0 or not np.all(np.isfinite(np.asarray(image, np.float32))):
        raise ValueError(f"{label} ({suffix}): empty or holds NaN/Inf values")
    return image, meta, target


def read_reference(path: str, suffix: str, folder: str, shape: tuple) -> np.ndarray:
    """A reference label map of the image's ``shape``."""
    sub = os.path.join(folder, "reference")
    os.makedirs(sub, exist_ok=True)
    try:
        target = _readable_path(path, suffix, sub)
        labels, _ = readers.read_label(target)
    except ValueError as e:
        raise ValueError(f"reference mask ({suffix}): cannot be read: {e}") from None
    except Exception as e:
        raise ValueError(f"reference mask ({suffix}): cannot be read ({type(e).__name__}: {e})") from None
    labels = np.asarray(labels)
    if suffix in PICTURE_SUFFIXES and labels.max(initial=0) == 255:
        labels = (labels > 0).astype(np.int32)  # a binary picture mask (zoo.predict writes 0/255)
    if labels.shape != tuple(shape):
        raise ValueError(f"reference mask: shape {labels.shape} differs from the image's {tuple(shape)}")
    return labels
