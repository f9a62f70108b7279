"""Case-level prediction in the input's geometry: read a case, predict it with a run's own preprocessing, write
the label map (the library behind ``python -m zoo.predict`` and the clinician application).

:func:`read_case` reads one image file (NIfTI, NRRD, MHD/MHA, a DICOM folder, PNG/JPEG/BMP/TIFF) or a case
folder holding one file per modality, matched by the patterns the model was trained with (``data.patterns``, else
its data family's: BraTS names for BraTS, the phantoms and TFDS records; label files in the folder are ignored).

:func:`predict_case` sends the case through the run's own preprocessing and brings it back on the input's grid:

* a run trained with a plan (``data.extra.plan`` in its metadata; ``data_pipelines.preprocessing``):
  ``preprocess_case`` (orientation, crop, spacing, normalisation exactly as in training), Gaussian-weighted
  sliding windows of the plan's patch (``zoo.inference.Predictor.sliding_window_proba``; 2D plans slice by
  slice), then ``restore_case``;
* a run without a plan (images resized to ``data.image_size`` by its loader): the intensity scaling that
  loader applied, as the run recorded it (:func:`scaling_record`: pictures to [0, 1], CT through its HU window;
  never re-derived from the data set's name, except once for runs trained before runs recorded it), axial
  slices of volumes in LPS orientation, each resized to the training size and its probabilities resized back;
  a 2D model predicts only the slices that hold a body voxel (:func:`body_slices`: any channel off its minimum,
  the rule of a plan's ``crop="nonzero"``), every other slice is background, as outside a plan's crop;
* ``tta``: the probabilities averaged over every mirroring of the spatial axes.

:func:`predict_case_proba` returns those probabilities ``[*S, K]`` on the input's grid (optionally with each
window's logits divided by a calibration ``temperature``), and with ``members=True`` also each member of the
ensemble of mirrored inputs, ``[M, *S, K]`` (``zoo.uncertainty`` reads them); :func:`predict_case` is their argmax.

:func:`write_label` writes the label map with the input's exact shape, spacing, origin and direction (a NIfTI
input keeps its affine and header), or as a PNG mask of the input's height and width, atomically
(``data_pipelines.atomic``); :func:`write_map` a float map in [0, 1] (an uncertainty map) the same way (PNG:
8-bit, 255 = 1); :func:`write_overlay` a PNG of the image with the contours; :func:`output_name` names a case's
label map in an output folder (several cases in one run).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import numpy as np

from data_pipelines import geometry, preprocessing, readers
from data_pipelines.atomic import atomic_path
from data_pipelines.families import list_families
from data_pipelines.fingerprint import body_mask
from data_pipelines.planner import Plan
from data_pipelines.preprocessing import scale_intensity
from zoo.inference import flip_axes
from zoo.pretrained import Pretrained

__all__ = ["read_case", "predict_case", "predict_case_proba", "CaseProba", "write_map", "scaling_record",
           "resize_slices", "body_slices", "output_name", "intensity_scaling", "output_format", "write_label",
           "write_overlay", "LABEL_NAME", "VOLUME_FORMATS"]

LABEL_NAME = re.compile(r"(seg|label|mask|otmulticlass|[-_.]ot[-_.]|glistrboost)", re.IGNORECASE)
VOLUME_FORMATS = {"nifti": (".nii.gz", ".nii"), "nrrd": (".nrrd",), "mha": (".mha",)}
SLICES = 8  # axial slices per call of a 2D model on a volume


# ------------------------------------------------------------------------------------------------ reading

def _modality_patterns(pre: Pretrained) -> dict:
    """``data.patterns`` of the run, else its data family's default patterns (none for an unknown family)."""
    data = pre.config.data
    custom = data.get("patterns", None)
    if custom:
        return dict(custom)
    family = {f.name: f for f in list_families()}.get(data.get("name", ""))
    return dict(family.patterns or {}) if family is not None else {}


def read_case(path: str, pre: Pretrained) -> tuple[np.ndarray, readers.ImageMeta, list[str]]:
    """``(image [*S, C], meta, files)`` for ``path`` with the model's channels (see the module docstring)."""
    channels = tuple(pre.meta["data"]["channel_names"])
    if not os.path.exists(path):
        raise FileNotFoundError(f"--input {path}: no such file or folder")
    if os.path.isdir(path) and readers.image_format(path) == "dicom" and not _case_files(path):
        image, meta = readers.read_image(path)
        files = [path]
    elif os.path.isdir(path):
        image, meta, files = _read_case_folder(path, channels, _modality_patterns(pre))
    else:
        image, meta = readers.read_image(path)
        files = [path]
    if meta.format == "picture" and image.shape[-1] == 4 and len(channels) == 3:
        image = image[..., :3]  # RGBA: the loaders train on RGB and drop the alpha channel too
    if image.shape[-1] != len(channels):
        raise ValueError(f"--input {path}: {image.shape[-1]} channel(s), but the model takes {len(channels)} "
                         f"({', '.join(channels)})")
    return image, meta, files


def _case_files(folder: str) -> list[str]:
    suffixes = readers.VOLUME_SUFFIXES + readers.PICTURE_SUFFIXES
    return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                  if n.lower().endswith(suffixes) and not n.startswith(".") and not n.lower().endswith(".dcm"))


def _read_case_folder(folder, channels, patterns):
    files = [f for f in _case_files(folder) if not LABEL_NAME.search(os.path.basename(f).lower())]
    if len(channels) == 1 and len(files) == 1:
        chosen = files
    else:
        chosen = []
        for ch in channels:
            pat = patterns.get(ch)
            hits = [f for f in files if pat and re.search(pat, os.path.basename(f).lower())]
            if len(hits) != 1:
                raise ValueError(f"--input {folder}: expected one file for modality {ch} (pattern {pat!r}), found "
                                 f"{len(hits)}: {[os.path.basename(h) for h in hits]}; the model takes "
                                 f"{len(channels)} modalities ({', '.join(channels)})")
            chosen.append(hits[0])
    arrays, meta0, shape0 = [], None, None
    for f in chosen:
        arr, meta = readers.read_image(f)
        if meta0 is None:
            meta0, shape0 = meta, arr.shape
        geometry.check_same_geometry(shape0[:meta0.ndim], meta0, arr.shape[:meta.ndim], meta)
        arrays.append(arr.astype(np.float32))
    return np.concatenate(arrays, axis=-1), meta0, chosen


# ------------------------------------------------------------------------------------------------ predicting

def scaling_record(pre: Pretrained) -> dict:
    """The intensity scaling a run without a plan trained with: the record its metadata holds
    (``data.extra.intensity_scaling``, written at training time by ``data_pipelines.families.
    record_preprocessing``).

    Runs trained before runs recorded it have none; for them, and only here, the record is derived once from
    the rule prediction used then (the loaders' scaling by ``data.name``): ``isic`` / ``folder`` integer
    pictures to [0, 1] (``unit_range``), ``luna16`` through its ``data.hu_window`` (default [-1000, 400]),
    every other data set as read (``none``).
    """
    record = (pre.meta["data"].get("extra") or {}).get("intensity_scaling")
    if record:
        return dict(record)
    data = pre.config.data  # an old run: the rule of its time
    if data.name in ("isic", "folder"):
        return {"kind": "unit_range"}
    if data.name == "luna16":
        return {"kind": "hu_window", "window": list(data.get("hu_window", None) or (-1000.0, 400.0))}
    return {"kind": "none"}


def intensity_scaling(image: np.ndarray, pre: Pretrained) -> np.ndarray:
    """``image`` scaled as the run's loader scaled its training images (runs without a plan;
    :func:`scaling_record`)."""
    return scale_intensity(image, scaling_record(pre))


def _windows(pre, x, roi, nd_model, *, overlap, batch_size, tta, temperature, members):
    """Probabilities ``[*S, K]`` of ``x [*S, C]`` (``[M, *S, K]`` with ``members``): whole (model dims == image
    dims) or slice by slice along the last spatial axis (a 2D model on a volume; a volume of no slices gives
    ``[H, W, 0, K]``)."""
    p = pre.predictor
    kw = dict(overlap=overlap, batch_size=batch_size, tta=tta, temperature=temperature, members=members)
    b = 1 if members else 0  # the batch axis of the predictor's output
    if x.ndim - 1 == nd_model:
        return np.take(p.sliding_window_proba(x[None], roi, **kw), 0, axis=b)
    if x.ndim - 1 == 3 and nd_model == 2:
        slices = np.moveaxis(x, 2, 0)  # [Z, H, W, C]
        n = len(slices)
        if n == 0:
            copies = (1 + len(flip_axes(2)) if tta else 1,) if members else ()
            return np.zeros((*copies, *x.shape[:3], int(pre.meta["data"]["num_classes"])), np.float32)
        # Calls of SLICES slices, the last one padded with copies of its final slice: one program for every
        # call and every case's depth (a depth-dependent remainder would compile, and miss the cache, per case).
        slices = np.concatenate([slices, np.repeat(slices[-1:], -n % SLICES, axis=0)])
        out = [p.sliding_window_proba(slices[i:i + SLICES], roi, **kw) for i in range(0, len(slices), SLICES)]
        out = np.concatenate(out, axis=b)[(slice(None),) * b + (slice(0, n),)]
        return np.moveaxis(out, b, b + 2)
    raise ValueError(f"a {nd_model}D model cannot predict a {x.ndim - 1}D image")


def resize_slices(x: np.ndarray, size) -> np.ndarray:
    """Each axial slice of ``x [H, W, Z, C]`` resized to ``size`` (``geometry.resize``), ``[*size, Z, C]``: the
    slices are the channels of one 2D image, so each axis is one matrix product over the whole volume instead of
    one per slice."""
    h, w, z, c = x.shape
    return geometry.resize(x.reshape(h, w, z * c), size).reshape(*size, z, c)


class CaseProba(NamedTuple):
    """A case's probabilities on the input's grid: ``proba [*S, K]`` (the ensemble's mean) and, when asked for,
    ``members [M, *S, K]`` (the unmirrored prediction, then one per mirroring; else ``None``)."""

    proba: np.ndarray
    members: np.ndarray | None


def predict_case_proba(pre: Pretrained, image: np.ndarray, meta: readers.ImageMeta, *, tta: bool = False,
                       overlap: float = 0.5, batch_size: int = 4, temperature: float | None = None,
                       members: bool = False) -> CaseProba:
    """Class probabilities ``[*S, K]`` on the input's grid for ``image [*S, C]`` with geometry ``meta`` (see the
    module docstring); ``temperature`` divides each window's logits (``zoo.calibration``)."""
    if pre.task not in ("segmentation", "instance"):
        raise ValueError(f"zoo.predict segments images; this is a {pre.task!r} model")
    nd_model = int(pre.meta["data"]["spatial_dims"])
    plan = (pre.meta["data"].get("extra") or {}).get("plan")
    kw = dict(overlap=overlap, batch_size=batch_size, tta=tta, temperature=temperature, members=members)
    if plan:
        plan = Plan.from_dict(plan)
        x, ctx = preprocessing.preprocess_case(image, meta, plan)
        proba = _windows(pre, x, plan.patch_size, nd_model, **kw)

        def back(p):
            return preprocessing.restore_case(p, ctx, order=1)
    else:
        size = tuple(int(s) for s in pre.config.data.image_size)
        x = intensity_scaling(image, pre)
        if meta.ndim == 3:  # loaders train on LPS volumes (axial slices image[:, :, z])
            x, lps = geometry.reorient(x, meta, "LPS")
        slices = x.ndim - 1 == 3 and nd_model == 2
        kept = body_slices(x) if slices else None  # a 2D model on a volume: the slices with a body voxel
        small = resize_slices(x[:, :, kept], size) if slices else geometry.resize(x, size)
        proba = _windows(pre, small, size, nd_model, **kw)

        def back(p):
            if slices:
                p = _background_except(kept, resize_slices(p, x.shape[:2]), x.shape[2])
            else:
                p = geometry.resize(p, x.shape[:-1])
            return geometry.reorient(p, lps, geometry.orientation_code(meta))[0] if meta.ndim == 3 else p
    if not members:
        return CaseProba(back(proba).astype(np.float32), None)
    stack = np.stack([back(m) for m in proba]).astype(np.float32)
    return CaseProba(stack.mean(axis=0), stack)


def body_slices(x: np.ndarray) -> np.ndarray:
    """Indices of the slices ``x[:, :, z]`` of ``x [H, W, Z, C]`` that hold any body voxel
    (``data_pipelines.fingerprint.body_mask``, the rule of the plans' ``crop="nonzero"``: any channel off its
    minimum over the volume); a 2D model predicts only these, the others are background."""
    return np.flatnonzero(body_mask(x).any(axis=(0, 1)))


def _background_except(kept: np.ndarray, proba: np.ndarray, depth: int) -> np.ndarray:
    """``[H, W, depth, K]`` probabilities: ``proba [H, W, len(kept), K]`` on the slices ``kept``, class 0 with
    probability 1 on every other slice."""
    full = np.zeros((*proba.shape[:2], depth, proba.shape[-1]), np.float32)
    full[..., 0] = 1.0
    full[:, :, kept] = proba
    return full


def predict_case(pre: Pretrained, image: np.ndarray, meta: readers.ImageMeta, *, tta: bool = False,
                 overlap: float = 0.5, batch_size: int = 4, temperature: float | None = None) -> np.ndarray:
    """Label map ``[*S]`` on the input's grid for ``image [*S, C]``: the argmax of :func:`predict_case_proba`."""
    return predict_case_proba(pre, image, meta, tta=tta, overlap=overlap, batch_size=batch_size,
                              temperature=temperature).proba.argmax(-1).astype(np.int32)


# ------------------------------------------------------------------------------------------------ writing

def output_format(path: str) -> str:
    """The label-map format the name ``path`` asks for (``nifti``, ``nrrd``, ``mha``, ``png``); other names raise."""
    low = path.lower()
    for fmt, suffixes in VOLUME_FORMATS.items():
        if low.endswith(suffixes):
            return fmt
    if low.endswith(".png"):
        return "png"
    raise ValueError(f"--output {path}: write a label map as .nii.gz/.nii, .nrrd, .mha (one file) or .png")


def output_name(input_path: str) -> str:
    """The file name of a case's label map when several cases are predicted into one folder: the case's name (a
    case or DICOM folder's name, a file's name without its image suffix) with ``.png`` for a picture, else
    ``.nii.gz``."""
    name = os.path.basename(os.path.normpath(input_path))
    low = name.lower()
    for suffix in readers.VOLUME_SUFFIXES + readers.PICTURE_SUFFIXES:
        if low.endswith(suffix) and os.path.isfile(input_path):
            return name[:-len(suffix)] + (".png" if suffix in readers.PICTURE_SUFFIXES else ".nii.gz")
    return name + ".nii.gz"


def _atomic(path: str, write) -> None:
    """``write(tmp)`` into a unique temporary beside ``path`` (``data_pipelines.atomic.atomic_path``), then renamed
    over ``path``; a missing folder is named as the ``--output`` problem."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output {path}: folder {folder} does not exist")
    with atomic_path(path) as tmp:
        write(tmp)


def write_label(labels: np.ndarray, meta: readers.ImageMeta, input_path: str, output_path: str,
                num_classes: int) -> None:
    """Write ``labels [*S]`` with the geometry of the input (``meta``; a NIfTI input's own affine/header)."""
    labels = np.asarray(labels)
    scale = 255 if num_classes == 2 else 1
    _write_grid(labels, labels * scale, np.uint8 if num_classes <= 256 else np.int32, meta, input_path, output_path)


def write_map(values: np.ndarray, meta: readers.ImageMeta, input_path: str, output_path: str) -> None:
    """Write a float map ``values [*S]`` in [0, 1] (an uncertainty map) with the input's geometry, as
    :func:`write_label` does (float32 volumes; a PNG as 8 bits, ``round(255 * v)``)."""
    values = np.asarray(values, np.float32)
    if values.size and not (np.all(np.isfinite(values)) and values.min() >= 0 and values.max() <= 1):
        raise ValueError(f"--uncertainty {output_path}: the map must hold values in [0, 1]")
    _write_grid(values, np.rint(values * 255.0), np.float32, meta, input_path, output_path)


def _write_grid(labels, png_values, dtype, meta, input_path, output_path):
    """``labels`` as a volume of ``dtype`` in the input's geometry, or ``png_values`` as an 8-bit PNG."""
    fmt = output_format(output_path)
    if fmt == "png":
        if labels.ndim != 2:
            raise ValueError(f"--output {output_path}: a PNG holds a 2D mask; this prediction is {labels.ndim}D "
                             f"(write .nii.gz)")
        from PIL import Image

        _atomic(output_path, lambda p: Image.fromarray(np.asarray(png_values).astype(np.uint8)).save(p, format="PNG"))
        return
    if labels.ndim < 2 or meta.format == "picture":
        raise ValueError(f"--output {output_path}: a picture input has no geometry to write a volume with; "
                         f"use --output ….png")
    if fmt == "nifti" and readers.image_format(input_path) == "nifti":
        import nibabel as nib

        src = nib.load(input_path)
        header = src.header.copy()
        header.set_data_dtype(dtype)
        header["scl_slope"], header["scl_inter"] = 1.0, 0.0
        img = nib.Nifti1Image(labels.astype(dtype), src.affine, header)
        _atomic(output_path, lambda p: nib.save(img, p))  # the temporary name keeps the suffix
        return
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(labels.astype(dtype).T))  # (i, j, k) -> ITK's (k, j, i)
    img.SetSpacing([float(s) for s in meta.spacing])
    img.SetOrigin([float(o) for o in meta.origin])
    img.SetDirection([float(v) for v in meta.direction_matrix.reshape(-1)])
    _atomic(output_path, lambda p: sitk.WriteImage(img, p, useCompression=True))  # the suffix picks the writer


def write_overlay(image: np.ndarray, labels: np.ndarray, path: str) -> None:
    """A PNG of the (middle axial slice of the) image with the label map's contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, lab = np.asarray(image, np.float32), np.asarray(labels)
    if lab.ndim == 3:
        z = int(np.argmax((lab > 0).sum(axis=(0, 1)))) if lab.any() else lab.shape[2] // 2
        img, lab = img[:, :, z], lab[:, :, z]
    shown = img[..., :3] if img.shape[-1] >= 3 else img[..., 0]
    lo, hi = np.percentile(shown, [1, 99])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(np.clip((shown - lo) / max(hi - lo, 1e-6), 0, 1), cmap=None if shown.ndim == 3 else "gray")
    if lab.any():
        ax.contour(lab, levels=np.arange(0.5, lab.max() + 0.5), cmap="autumn", linewidths=1.2)
    ax.set_axis_off()
    _atomic(path, lambda p: fig.savefig(p, format="png", bbox_inches="tight", dpi=100))
    plt.close(fig)
