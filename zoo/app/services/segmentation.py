"""Segmenting one case in the application: predict it through the library's case-level path
(``zoo.prediction.predict_case_proba``: the run's plan or scaling, the model's stored temperature, the input's
geometry; the label map is its argmax), measure it (volume in mL from the real spacing, area in mm² for 2D,
per-class Dice against a reference mask), explain it (Grad-CAM, ``zoo.explain``), map its uncertainty (the
normalised predictive entropy of ``zoo.uncertainty``; with TTA also the mutual information over the mirrored
inputs) and turn it into what the page draws (display arrays as base64) and downloads (the label map in the
input's geometry written by ``zoo.prediction.write_label``, the entropy map by ``zoo.prediction.write_map``, the
overlay PNG of ``zoo.prediction.write_overlay``, a JSON and a PDF summary, and for a DICOM series a DICOM SEG
referencing it, ``zoo.dicom.write_seg``)."""

from __future__ import annotations

import base64
import os

import numpy as np

from data_pipelines import geometry, readers
from data_pipelines.atomic import dumps
from scoring.overlap import dice
from zoo import dicom, explain, prediction
from zoo.app.services.pdf import summary_pdf
from zoo.app.services.served import ServedModel, card_fields, phantom_sample
from zoo.app.services.uploads import DEFAULT_UPLOAD_MB, read_reference, read_upload
from zoo.uncertainty import uncertainty_maps

__all__ = ["GRADCAM_OFF", "SEG_FILENAME", "SEG_PROBABILITIES_FILENAME", "segment_case", "seg_problem", "segment",
           "gradcam_layer", "gradcam_map"]

SEG_FILENAME = "prediction_seg" + dicom.SEG_SUFFIX
SEG_PROBABILITIES_FILENAME = "probabilities_seg" + dicom.SEG_SUFFIX

GRADCAM_OFF = "Grad-CAM is not enabled on this server"


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def _display(volume: np.ndarray) -> np.ndarray:
    """``[*S]`` -> ``[D, H, W]`` (2D: D = 1): slices along the last spatial axis, for the page's slider."""
    v = np.asarray(volume)
    return v[None] if v.ndim == 2 else np.moveaxis(v, 2, 0)


def _label_suffix(meta, read_path: str) -> str:
    fmt = meta.format if meta.format == "phantom" else readers.image_format(read_path)
    if fmt == "picture":
        return ".png"
    return {"nrrd": ".nrrd", "mhd": ".mha"}.get(fmt, ".nii.gz")


def segment_case(m: ServedModel, folder: str, *, upload: tuple | None = None, sample: int | None = None,
                 reference: tuple | None = None, seg: bool | None = None, seg_probabilities: bool = False,
                 max_upload_mb: float = DEFAULT_UPLOAD_MB, **options) -> dict:
    """:func:`segment` of a saved upload (``upload``: ``(path, suffix, label)``) or of bundled phantom ``sample``
    (its own label map is the reference), with an optional uploaded reference mask (``(path, suffix)``);
    ``seg``: the DICOM SEG download (``None``: when the input is a DICOM series; ``True``: required, anything
    else is an error before any prediction); ``seg_probabilities``: also the FRACTIONAL SEG of the class
    probabilities (requires a DICOM series as ``seg=True`` does); ``max_upload_mb``: the most the upload and the
    reference may decode or inflate to (the server's upload limit); ``options`` go to :func:`segment`."""
    if upload is not None:
        path, suffix, label = upload
        image, meta, read_path = read_upload(path, suffix, folder, label, max_upload_mb)
        ref = None
    else:
        image, meta, ref = phantom_sample(m, sample)
        read_path = "phantom.nrrd"
    problem = seg_problem(m, image, read_path)
    if (seg or seg_probabilities) and problem:
        raise ValueError(f"no DICOM SEG: {problem}")
    if reference is not None:
        ref = read_reference(*reference, folder, image.shape[:-1], max_upload_mb)
    return segment(m, image, meta, read_path, folder, reference=ref,
                   seg=False if seg is False else problem is None, seg_probabilities=seg_probabilities, **options)


def seg_problem(m: ServedModel, image: np.ndarray, read_path: str) -> str | None:
    """Why no DICOM SEG can be made of ``image`` (read from ``read_path``) with ``m``, or ``None``: a SEG needs a
    DICOM series input (3D) and a card that codes the model's classes (``class_codes``)."""
    fmt = "phantom" if read_path == "phantom.nrrd" else readers.image_format(read_path)
    if fmt != "dicom" or not os.path.isdir(read_path):
        return f"a DICOM SEG needs a DICOM series input (a zip of its slices); this input is {fmt}"
    if image.ndim != 4:
        return f"a DICOM SEG needs a 3D series; this one is {image.ndim - 1}D"
    if not m.card.get("class_codes"):
        return f"the card of model {m.name!r} codes no classes (class_codes)"
    return None


def segment(m: ServedModel, image: np.ndarray, meta, read_path: str, folder: str, *, reference=None,
            tta: bool = False, gradcam: bool = False, pdf: bool = True, seg: bool = False,
            seg_probabilities: bool = False) -> dict:
    """Predict, measure and package one case (see the module docstring). ``folder``: the request's temp dir;
    ``gradcam``: also the Grad-CAM map (:func:`gradcam_map`); ``pdf``: also the PDF summary
    (``zoo.app.services.pdf.summary_pdf``, about 0.3 s of matplotlib on a CPU core); ``seg``: also the DICOM SEG
    of the series at ``read_path`` (:func:`seg_problem` says when there can be one); ``seg_probabilities``: also
    the FRACTIONAL SEG of the foreground probabilities."""
    if m.task not in ("segmentation", "instance"):
        raise ValueError(f"model {m.name!r} is a {m.task} model; /api/segment takes segmentation models")
    channels = len(m.data["channel_names"])
    if image.shape[-1] != channels:
        raise ValueError(f"the image has {image.shape[-1]} channel(s), but model {m.name!r} takes {channels} "
                         f"({', '.join(m.data['channel_names'])})")
    case = prediction.predict_case_proba(m.pre, image, meta, tta=tta, temperature=m.temperature, members=tta)
    labels = case.proba.argmax(-1).astype(np.int32)
    maps = uncertainty_maps(case)
    k = int(m.data["num_classes"])
    names = list(m.data["class_names"])
    voxel = float(np.prod(meta.spacing))
    counts = np.bincount(labels.reshape(-1), minlength=k)
    unit = "mL" if labels.ndim == 3 else "mm2"
    sizes = {names[c]: float(counts[c] * voxel / (1000.0 if unit == "mL" else 1.0)) for c in range(1, k)}
    dices = None
    if reference is not None:
        dices = {names[c]: _finite(dice(labels == c, reference == c)) for c in range(1, k)}
    cam, cam_note = gradcam_map(m, image, meta, labels, enabled=gradcam)
    suffix = _label_suffix(meta, read_path)
    label_path = os.path.join(folder, "prediction" + suffix)
    prediction.write_label(labels, meta, read_path, label_path, k)
    overlay_path = os.path.join(folder, "overlay.png")
    prediction.write_overlay(image, labels, overlay_path)
    map_paths = {}
    for key, values in maps.items():  # entropy, and mutual information with TTA
        map_paths[key] = os.path.join(folder, key + suffix)
        prediction.write_map(values, meta, read_path, map_paths[key])
    segs = {}
    if seg:
        segs["seg_dcm"] = dicom.write_seg(labels, meta, read_path, m.card, os.path.join(folder, SEG_FILENAME))
    if seg_probabilities:
        segs["seg_probabilities_dcm"] = dicom.write_seg(labels, meta, read_path, m.card,
                                                        os.path.join(folder, SEG_PROBABILITIES_FILENAME),
                                                        fractional=case.proba)
    summary = {"model": m.name, "shape": list(labels.shape), "spacing_mm": [float(s) for s in meta.spacing],
               "unit": unit, "sizes": sizes, "dice": dices, "class_names": names,
               "voxels": {names[c]: int(counts[c]) for c in range(k)}, "tta": bool(tta)}
    shown = np.asarray(image[..., 0], np.float32)
    lo, hi = float(shown.min()), float(shown.max())
    q = np.round((shown - lo) / max(hi - lo, 1e-12) * 65535.0).astype("<u2")
    disp = _display(q)
    downloads = {"label_map": _download(label_path), "overlay_png": _download(overlay_path),
                 "summary_json": {"filename": "summary.json",
                                  "base64": _b64_bytes(dumps(summary, indent=1).encode())}}
    if pdf:
        pdf_path = os.path.join(folder, "summary.pdf")
        summary_pdf(pdf_path, summary, overlay_path, card_fields(m))
        downloads["summary_pdf"] = _download(pdf_path)
    for key, path in map_paths.items():
        downloads[f"{key}_map"] = _download(path)
    for key, path in segs.items():
        downloads[key] = _download(path)
    entropy_note = ("predictive entropy / log K (0: one class certain, 1: all classes equally likely)"
                    + (", mean over the mirrored inputs" if tta else "")
                    + (f", logits divided by the stored temperature {m.temperature:g}" if m.temperature else
                       ", the model as trained (no stored temperature)"))
    return {**summary,
            "display": {"depth": int(disp.shape[0]), "height": int(disp.shape[1]), "width": int(disp.shape[2]),
                        "image_u16": _b64(disp), "image_range": [lo, hi],
                        "labels_u8": _b64(_display(labels.astype(np.uint8))),
                        "gradcam_u8": None if cam is None else _b64(_display(np.round(cam * 255).astype(np.uint8))),
                        "gradcam_note": cam_note,
                        "entropy_u8": _b64(_display(np.round(maps["entropy"] * 255).astype(np.uint8))),
                        "entropy_note": entropy_note},
            "downloads": downloads}


def _b64_bytes(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _download(path: str) -> dict:
    """A written file as a download (``zoo.app.schemas.Download``)."""
    with open(path, "rb") as f:
        return {"filename": os.path.basename(path), "base64": _b64_bytes(f.read())}


def _finite(v: float):
    return float(v) if np.isfinite(v) else None


def _model_grid_input(m: ServedModel, image: np.ndarray, meta):
    """The image as the model saw it in training (runs without a plan, image dims == model dims), or None."""
    nd = int(m.data["spatial_dims"])
    if (m.data.get("extra") or {}).get("plan") or image.ndim - 1 != nd or meta.ndim == 3:
        return None
    size = tuple(int(s) for s in m.pre.config.data.image_size)
    return geometry.resize(prediction.intensity_scaling(image, m.pre), size)


def gradcam_layer(model, variables, x) -> str | None:
    """The layer Grad-CAM reads: the last top-level feature module (not a head), else the one before the output."""
    names = explain.layer_names(model, variables, x)
    feature = [n for n in names if "/" not in n and not n.lower().startswith(("head", "out", "final", "logits"))]
    return feature[-1] if feature else (names[-2] if len(names) > 1 else None)


def gradcam_map(m: ServedModel, image, meta, labels, enabled: bool = True):
    """Grad-CAM of the largest predicted foreground class on the image grid: ``(cam [*S] | None, note)``; the
    note says why there is none (an exported model, ``enabled`` false, a model with a plan)."""
    if m.exported:
        return None, "Grad-CAM needs the model code; this is an exported model"
    if not enabled:
        return None, GRADCAM_OFF
    x = _model_grid_input(m, image, meta)
    if x is None:
        return None, "Grad-CAM is shown for 2D models without a plan"
    fg = np.bincount(labels.reshape(-1), minlength=int(m.data["num_classes"]))[1:]
    target = int(np.argmax(fg)) + 1 if fg.any() else 1
    layer = gradcam_layer(m.pre.model, m.pre.variables, x[None])
    if layer is None:
        return None, "no feature layer found for Grad-CAM"
    cam = explain.gradcam(m.pre.model, m.pre.variables, x[None], layer=layer, target_class=target)[0]
    cam = geometry.resize(cam[..., None].astype(np.float32), image.shape[:-1])[..., 0]
    return np.clip(cam, 0.0, 1.0), f"Grad-CAM of class {m.data['class_names'][target]!r} at layer {layer!r}"
