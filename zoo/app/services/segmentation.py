"""Segmenting one case in the application: predict it through the library's case-level path
(``zoo.prediction.predict_case``: the run's plan or scaling, the input's geometry), measure it (volume in mL from
the real spacing, area in mm² for 2D, per-class Dice against a reference mask), explain it (Grad-CAM,
``zoo.explain``) and turn it into what the page draws (display arrays as base64) and downloads (the label map in
the input's geometry written by ``zoo.prediction.write_label``, the overlay PNG of ``zoo.prediction.write_overlay``,
a JSON and a PDF summary)."""

from __future__ import annotations

import base64
import os

import numpy as np

from data_pipelines import geometry, readers
from data_pipelines.atomic import dumps
from scoring.overlap import dice
from zoo import prediction
from zoo.app.services.pdf import summary_pdf
from zoo.app.services.served import ServedModel, phantom_sample
from zoo.app.services.uploads import read_reference, read_upload
from zoo import explain

__all__ = ["GRADCAM_OFF", "segment_case", "segment", "gradcam_layer", "gradcam_map"]

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
                 reference: tuple | None = None, **options) -> dict:
    """:func:`segment` of a saved upload (``upload``: ``(path, suffix, label)``) or of bundled phantom ``sample``
    (its own label map is the reference), with an optional uploaded reference mask (``(path, suffix)``);
    ``options`` go to :func:`segment`."""
    if upload is not None:
        path, suffix, label = upload
        image, meta, read_path = read_upload(path, suffix, folder, label)
        ref = None
    else:
        image, meta, ref = phantom_sample(m, sample)
        read_path = "phantom.nrrd"
    if reference is not None:
        ref = read_reference(*reference, folder, image.shape[:-1])
    return segment(m, image, meta, read_path, folder, reference=ref, **options)


def segment(m: ServedModel, image: np.ndarray, meta, read_path: str, folder: str, *, reference=None,
            tta: bool = False, gradcam: bool = False, pdf: bool = True) -> dict:
    """Predict, measure and package one case (see the module docstring). ``folder``: the request's temp dir;
    ``gradcam``: also the Grad-CAM map (:func:`gradcam_map`); ``pdf``: also the PDF summary
    (``zoo.app.services.pdf.summary_pdf``, about 0.3 s of matplotlib on a CPU core)."""
    if m.task not in ("segmentation", "instance"):
        raise ValueError(f"model {m.name!r} is a {m.task} model; /api/segment takes segmentation models")
    channels = len(m.data["channel_names"])
    if image.shape[-1] != channels:
        raise ValueError(f"the image has {image.shape[-1]} channel(s), but model {m.name!r} takes {channels} "
                         f"({', '.join(m.data['channel_names'])})")
    labels = prediction.predict_case(m.pre, image, meta, tta=tta)
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
    summary = {"model": m.name, "shape": list(labels.shape), "spacing_mm": [float(s) for s in meta.spacing],
               "unit": unit, "sizes": sizes, "dice": dices, "class_names": names,
               "voxels": {names[c]: int(counts[c]) for c in range(k)}, "tta": bool(tta)}
    shown = np.asarray(image[..., 0], np.float32)
    lo, hi = float(shown.min()), float(shown.max())
    q = np.round((shown - lo) / max(hi - lo, 1e-12) * 65535.0).astype("<u2")
    pdf_bytes = None
    if pdf:
        pdf_path = os.path.join(folder, "summary.pdf")
        summary_pdf(pdf_path, summary, overlay_path, m.card)
        with open(pdf_path, "rb") as f:
            pdf_bytes = f.read()
    with open(label_path, "rb") as f:
        label_bytes = f.read()
    with open(overlay_path, "rb") as f:
        overlay_bytes = f.read()
    disp = _display(q)
    downloads = {"label_map": {"filename": "prediction" + suffix, "base64": _b64_bytes(label_bytes)},
                 "overlay_png": {"filename": "overlay.png", "base64": _b64_bytes(overlay_bytes)},
                 "summary_json": {"filename": "summary.json",
                                  "base64": _b64_bytes(dumps(summary, indent=1).encode())}}
    if pdf_bytes is not None:
        downloads["summary_pdf"] = {"filename": "summary.pdf", "base64": _b64_bytes(pdf_bytes)}
    return {**summary,
            "display": {"depth": int(disp.shape[0]), "height": int(disp.shape[1]), "width": int(disp.shape[2]),
                        "image_u16": _b64(disp), "image_range": [lo, hi],
                        "labels_u8": _b64(_display(labels.astype(np.uint8))),
                        "gradcam_u8": None if cam is None else _b64(_display(np.round(cam * 255).astype(np.uint8))),
                        "gradcam_note": cam_note},
            "downloads": downloads}


def _b64_bytes(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


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
