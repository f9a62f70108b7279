"""DICOM in, DICOM SEG out: a label map (or probability map) written as a DICOM Segmentation of the series it
was predicted from, with highdicom (the maintained library; what MONAI Deploy's SEG writer uses).

:func:`series_headers` reads the headers of one DICOM image series (a folder, file paths or pydicom datasets;
pixel data is deferred, never decoded) and refuses what cannot be segmented: files that are not images (a
structured report, a file without pixel data), a folder holding more than one series, multi-frame objects.

:func:`write_seg` writes ``labels [X, Y, Z]`` (the array order of ``data_pipelines.readers``: axis 0 runs along
a DICOM row, i.e. the column index; axis 1 down the rows; axis 2 across the slices) as a SEG:

* one segment per foreground class of the model card (``card["class_codes"]``, :func:`zoo.cards.class_codes`:
  SNOMED-CT segmented-property category and type), algorithm type AUTOMATIC, the algorithm identified by the
  card (model name, version = the checkpoint step, source = the model-store entry or work directory);
* every frame is one source slice: the slice of each source image is found from its ImagePositionPatient
  through the label map's geometry (``meta``: spacing, origin, direction as the reader returned them), never
  from file names or instance numbers, and its orientation, pixel spacing and size are checked against the
  grid; a slice missing from (or not on) the grid is an error. The SEG references the source series and each
  frame's source image, and carries its plane position and orientation;
* frames with no voxel of a segment are omitted (a label map with no foreground keeps its frames, so the SEG is
  never empty);
* ``fractional=probabilities [X, Y, Z, K]`` (softmax over the K classes of the card) writes a FRACTIONAL SEG
  (PROBABILITY, 8 bit) of the foreground classes instead of the BINARY one.

The file is written atomically (``data_pipelines.atomic.atomic_path``). Bad input raises ``ValueError`` naming
the file or argument and the problem.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Sequence

import numpy as np

from data_pipelines.atomic import atomic_path
from data_pipelines.errors import UnreadableInput
from data_pipelines.readers import ImageMeta

__all__ = ["series_headers", "slice_order", "write_seg", "SEG_SUFFIX"]

SEG_SUFFIX = ".dcm"
# How far (in voxels) a source slice's ImagePositionPatient may lie from its grid position: in plane, and along the
# slice normal, where rounded DS values and the few-percent irregular spacing the reader accepts add up over a
# series; a quarter slice still names one slice unambiguously.
_IN_PLANE_TOLERANCE = 0.1
_SLICE_TOLERANCE = 0.25
_DIRECTION_TOLERANCE = 1e-3


def _name(ds) -> str:
    return str(getattr(ds, "filename", None) or f"SOP instance {getattr(ds, 'SOPInstanceUID', '?')}")


def _read_header(path: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, defer_size="1 KB")
    except InvalidDicomError:
        if path.lower().endswith((".dcm", ".dicom", ".ima")):
            raise UnreadableInput(path, "not a readable DICOM file") from None
        return None  # notes, JSON sidecars, ... beside the slices
    except Exception as e:  # pydicom raises many types for truncated files
        raise UnreadableInput(path, f"cannot read DICOM header ({type(e).__name__}: {e})") from e


def series_headers(source) -> list:
    """The datasets (headers; pixel data deferred) of the one DICOM image series ``source``: a folder, a list of
    file paths or a list of ``pydicom.Dataset``. Raises ``data_pipelines.errors.UnreadableInput`` (a
    ``ValueError``) naming the file for an unreadable file, a non-image object (no pixel data, e.g. a structured
    report), several series, multi-frame objects or no DICOM file at all."""
    if isinstance(source, (str, os.PathLike)):
        folder = str(source)
        if not os.path.isdir(folder):
            raise ValueError(f"a DICOM SEG needs a DICOM series input; got {folder} (not a folder of DICOM slices)")
        names = sorted(n for n in os.listdir(folder) if not n.startswith(".") and n.upper() != "DICOMDIR"
                       and os.path.isfile(os.path.join(folder, n)))
        datasets = [d for d in (_read_header(os.path.join(folder, n)) for n in names) if d is not None]
        where = folder
    else:
        datasets = [_read_header(str(s)) if isinstance(s, (str, os.PathLike)) else s for s in source]
        datasets = [d for d in datasets if d is not None]
        where = "the source images"
    if not datasets:
        raise UnreadableInput(where, "no DICOM files")
    for ds in datasets:
        if "PixelData" not in ds or "Rows" not in ds or "ImagePositionPatient" not in ds:
            sop = getattr(ds, "SOPClassUID", None)
            kind = sop.name if sop is not None else "unknown SOP class"
            raise UnreadableInput(_name(ds), f"not an image slice ({kind}; no pixel data or no image position); a "
                                             f"DICOM SEG needs the image series it segments")
        if int(getattr(ds, "NumberOfFrames", 1) or 1) > 1:
            raise UnreadableInput(_name(ds), f"a multi-frame object ({ds.NumberOfFrames} frames); give a series "
                                             f"of single-slice images")
    series = sorted({str(getattr(ds, "SeriesInstanceUID", "")) for ds in datasets})
    if len(series) > 1:
        raise UnreadableInput(where, f"{len(series)} DICOM series (SeriesInstanceUID {', '.join(series[:3])}"
                                     f"{', ...' if len(series) > 3 else ''}); give one series")
    return datasets


def slice_order(datasets: Sequence, shape: Sequence[int], meta: ImageMeta) -> list:
    """``datasets`` ordered by slice index ``k`` of a label map of ``shape [X, Y, Z]`` and geometry ``meta``:
    each dataset's ImagePositionPatient mapped into voxel indices through the inverse affine must land on
    ``(0, 0, k)`` (within 0.1 voxel in plane, a quarter slice along the normal), and its orientation, pixel spacing, rows and columns must match the grid. Each ``k`` must be
    found exactly once (a missing slice, a duplicate or a slice off the grid raises ``ValueError``)."""
    if len(shape) != 3 or meta.ndim != 3:
        raise ValueError(f"a DICOM SEG needs a DICOM series input; got a {len(shape)}D label map "
                         f"(shape {tuple(shape)})")
    direction, spacing = meta.direction_matrix, np.asarray(meta.spacing, np.float64)
    to_voxel = np.linalg.inv(meta.affine())
    by_k: dict[int, object] = {}
    for ds in datasets:
        where = _name(ds)
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], np.float64)
        if not (np.allclose(iop[:3], direction[:, 0], atol=_DIRECTION_TOLERANCE)
                and np.allclose(iop[3:], direction[:, 1], atol=_DIRECTION_TOLERANCE)):
            raise ValueError(f"{where}: ImageOrientationPatient {iop.round(4).tolist()} differs from the series "
                             f"grid (rows {direction[:, 0].round(4).tolist()}, columns "
                             f"{direction[:, 1].round(4).tolist()})")
        if (int(ds.Columns), int(ds.Rows)) != tuple(shape[:2]):
            raise ValueError(f"{where}: {ds.Rows} rows x {ds.Columns} columns, but the label map's slices are "
                             f"{shape[1]} x {shape[0]}")
        ps = [float(v) for v in getattr(ds, "PixelSpacing", [])]
        if len(ps) != 2 or not np.allclose(ps[::-1], spacing[:2], rtol=1e-3):
            raise ValueError(f"{where}: PixelSpacing {ps} differs from the grid's {spacing[1]:g}, {spacing[0]:g} mm")
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient] + [1.0], np.float64)
        i, j, k = (to_voxel @ ipp)[:3]
        kk = int(round(k))
        if (abs(i) > _IN_PLANE_TOLERANCE or abs(j) > _IN_PLANE_TOLERANCE or abs(k - kk) > _SLICE_TOLERANCE
                or not 0 <= kk < shape[2]):
            raise ValueError(f"{where}: ImagePositionPatient {ipp[:3].round(3).tolist()} is not a slice of the "
                             f"label map's grid (voxel {np.round([i, j, k], 3).tolist()}, {shape[2]} slices)")
        if kk in by_k:
            raise ValueError(f"{where} and {_name(by_k[kk])}: two images at slice {kk} "
                             f"(ImagePositionPatient {ipp[:3].round(3).tolist()})")
        by_k[kk] = ds
    missing = [k for k in range(shape[2]) if k not in by_k]
    if missing:
        at = [f"{(meta.affine() @ np.array([0.0, 0.0, k, 1.0]))[:3].round(3).tolist()}" for k in missing[:3]]
        raise ValueError(f"the DICOM series has {len(by_k)} of the label map's {shape[2]} slices: slice(s) "
                         f"{missing[:5]}{' ...' if len(missing) > 5 else ''} missing (ImagePositionPatient "
                         f"{', '.join(at)}{' ...' if len(missing) > 3 else ''})")
    return [by_k[k] for k in range(shape[2])]


def _text(value, limit: int = 64) -> str:
    """``value`` as a DICOM LO string (at most ``limit`` characters, no backslash)."""
    return str(value).replace("\\", "/")[:limit]


def _algorithm(card: dict):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    name = card.get("name") or card.get("model") or "medzoo model"
    step = card.get("step")
    version = f"step {step}" if step is not None else str(card.get("created") or "unknown")
    entry = f"medzoo store entry {card['name']}" if card.get("name") else (
        f"medzoo work directory {os.path.basename(str(card.get('source', '')).rstrip(os.sep)) or '?'}")
    params = {"model": _text(card.get("model", "?")), "data": _text((card.get("data") or {}).get("name", "?"))}
    return hd.AlgorithmIdentificationSequence(name=_text(name), family=codes.cid7162.ArtificialIntelligence,
                                              version=_text(version), source=_text(entry), parameters=params)


def _segments(card: dict, algorithm) -> list:
    import highdicom as hd

    descriptions = []
    for c in card["class_codes"]:
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=int(c["label"]), segment_label=_text(c["name"]),
            segmented_property_category=hd.sr.CodedConcept(c["category"]["value"], c["category"]["scheme"],
                                                           c["category"]["meaning"]),
            segmented_property_type=hd.sr.CodedConcept(c["type"]["value"], c["type"]["scheme"], c["type"]["meaning"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm))
    return descriptions


def _software_version() -> str:
    try:
        return importlib.metadata.version("medzoo")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def write_seg(labels: np.ndarray, meta: ImageMeta, source, card: dict, out_path: str, *,
              fractional: np.ndarray | None = None, series_description: str | None = None) -> str:
    """Write the DICOM Segmentation of ``labels [X, Y, Z]`` (int, 0 = background, values the card's labels) to
    ``out_path`` and return it.

    ``meta``: the label map's geometry (the source series as ``data_pipelines.readers.read_image`` read it);
    ``source``: that series (a folder, file paths or pydicom datasets, :func:`series_headers`); ``card``: the
    model card as ``zoo.cards.read_card`` returns it (``class_codes``, ``name`` / ``model``, ``step``, ``data``).
    ``fractional``: probabilities ``[X, Y, Z, K]`` in [0, 1] over the card's K classes; when given, a FRACTIONAL
    SEG of the K - 1 foreground probabilities is written instead of the BINARY one. See the module docstring.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"a DICOM SEG needs a DICOM series input; got a {labels.ndim}D label map "
                         f"(shape {labels.shape})")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be an integer label map; got {labels.dtype}")
    codes = card.get("class_codes") or []
    if not codes:
        raise ValueError(f"the model card of {card.get('name') or card.get('model')!r} names no foreground classes "
                         f"(class_codes); a SEG needs at least one segment")
    top = len(codes)
    if labels.min(initial=0) < 0 or labels.max(initial=0) > top:
        raise ValueError(f"labels hold values {int(labels.min())}..{int(labels.max())}; the card codes labels "
                         f"1..{top}")
    folder = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output {out_path}: folder {folder} does not exist")
    datasets = slice_order(series_headers(source), labels.shape, meta)
    if fractional is not None:
        proba = np.asarray(fractional, np.float32)
        if proba.shape != labels.shape + (top + 1,):
            raise ValueError(f"fractional: expected probabilities {labels.shape + (top + 1,)} (the card's "
                             f"{top + 1} classes on the label map's grid); got {proba.shape}")
        if not (np.isfinite(proba).all() and proba.min() >= 0.0 and proba.max() <= 1.0):
            raise ValueError("fractional: probabilities must be finite and in [0, 1]")
        pixels = np.ascontiguousarray(proba[..., 1:].transpose(2, 1, 0, 3))  # [Z, rows (Y), columns (X), K-1]
        kind = hd.seg.SegmentationTypeValues.FRACTIONAL
    else:
        pixels = np.ascontiguousarray(labels.transpose(2, 1, 0)).astype(np.uint8 if top < 256 else np.uint16)
        kind = hd.seg.SegmentationTypeValues.BINARY
    first = datasets[0]
    name = card.get("name") or card.get("model") or "medzoo"
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=pixels, segmentation_type=kind,
        segment_descriptions=_segments(card, _algorithm(card)), series_instance_uid=hd.UID(),
        series_number=int(getattr(first, "SeriesNumber", 0) or 0) + 1000, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="medzoo", manufacturer_model_name=_text(f"medzoo {name}"),
        software_versions=_software_version(), device_serial_number="none",
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY, max_fractional_value=255,
        content_description=_text(f"automatic segmentation by {name}"), content_label="MEDZOO",
        omit_empty_frames=bool(pixels.any()))  # an all-empty SEG keeps its frames
    seg.SeriesDescription = _text(series_description or f"{name} segmentation (medzoo)")
    with atomic_path(out_path) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out_path
