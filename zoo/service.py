"""What the web application (``zoo.serve``) does, as plain functions the routes and tests call.

Uploads are parsed into arrays here (by content: a file that does not parse is a ``ValueError`` naming it),
predicted through ``zoo.predict.predict_case`` (the CLI's path: plan, scaling, geometry), measured (volume
in mL from the real spacing, area in mm² for 2D, per-class Dice against a reference mask) and turned into
what a page draws (display arrays as base64) and downloads (the label map in the input's geometry written
by ``zoo.predict.write_label``, the overlay PNG of ``zoo.predict.write_overlay``, a JSON and a PDF summary).

Nothing here takes a path from a request: files live only in a temporary folder the caller creates, under
names chosen here (``upload<suffix>``; the client's name only decides which suffix).

``zoo`` does not import ``eval`` (DESIGN.md), so Grad-CAM and SHAP come in as functions
(``explain_image(model, variables, images, layer=..., target_class=...)``, ``explain_tabular(predict_fn,
background, X, feature_names=...)``) handed over by the entry point ``zoo.serve``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import json
import os
import threading
import zipfile

import numpy as np

from data_pipelines import ehr, geometry, phantoms, readers
from scoring.overlap import dice
from zoo import predict as zpredict
from zoo import store

__all__ = ["ACCEPTED_SUFFIXES", "ServedModel", "Busy", "InferencePool", "upload_suffix", "read_upload",
           "read_reference", "load_model", "phantom_sample", "segment", "outcome", "survival_curve", "model_info",
           "summary_pdf"]

# Suffix -> what the upload is. A zip holds a DICOM series or an .mhd header with its raw file.
ACCEPTED_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".zip")
MAX_ZIP_MEMBERS = 4096


class Busy(RuntimeError):
    """The pool's queue is full (the server answers 503)."""


# ------------------------------------------------------------------------------------------------ uploads

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
    raise ValueError(f"upload {name!r}: unsupported file type; upload one of {', '.join(ACCEPTED_SUFFIXES)} "
                     f"(a DICOM series or .mhd+.raw as a .zip)")


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
    if suffix in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff") and labels.max(initial=0) == 255:
        labels = (labels > 0).astype(np.int32)  # a binary picture mask (zoo.predict writes 0/255)
    if labels.shape != tuple(shape):
        raise ValueError(f"reference mask: shape {labels.shape} differs from the image's {tuple(shape)}")
    return labels


# ------------------------------------------------------------------------------------------------ models

@dataclasses.dataclass
class ServedModel:
    """A model loaded (and compiled) once at start-up: ``pre`` is a ``zoo.Pretrained`` or an exported model
    (``zoo.exported.ExportedModel``) with the same ``meta`` / ``config`` / ``task`` / ``predictor``."""

    name: str
    pre: object
    card: dict
    exported: bool = False
    survival: object = None  # a zoo.survival.SurvivalModel (time-to-event models: curves from survival.json)

    @property
    def task(self) -> str:
        return self.pre.task

    @property
    def data(self) -> dict:
        return self.pre.meta["data"]


def _card(name_or_path: str, pre) -> dict:
    path = store.resolve(name_or_path)
    for cand in (os.path.join(path, "card.json"), os.path.join(os.path.dirname(os.path.abspath(path)), "card.json")):
        if os.path.isfile(cand):
            with open(cand, encoding="utf-8") as f:
                return json.load(f)
    cfg = pre.meta.get("config", {})
    return {"model": cfg.get("model", {}).get("name", "?"), "task": pre.task,
            "data": {"name": cfg.get("data", {}).get("name", "?")}, "note": "work directory (no store card)"}


def _survival_card(path: str, sm) -> dict:
    meta, cfg = sm.meta, sm.pretrained.meta.get("config", {})
    extra = meta.get("extra") or {}
    card = {"model": cfg.get("model", {}).get("name", "?"), "task": "survival", "head": meta["head"],
            "data": {"name": extra.get("cohort", cfg.get("data", {}).get("name", "?")),
                     "covariates": list(meta["covariate_names"]), "time_unit": extra.get("time_unit", "")},
            "metrics": {"harrell_c": meta.get("best_harrell_c_val"), "split": extra.get(
                "inner_validation", "validation split (patients unseen in training)")},
            "intended_use": extra.get("intended_use", "research: survival curves from the covariates"),
            "data_licence": extra.get("data_licence", "-"), "source": os.path.abspath(path)}
    return card


def load_model(name_or_path: str, warm: bool = True) -> ServedModel:
    """Load a store entry, work directory or exported folder (``zoo.export``) and run it once. A work
    directory written by ``zoo.survival.fit_deep_survival`` (it holds ``survival.json``) is served as a
    time-to-event model with its survival curves."""
    path = store.resolve(name_or_path)
    from zoo import exported, survival

    if exported.is_exported(path):
        pre = exported.ExportedModel.load(path)
        served = ServedModel(name=_display_name(name_or_path), pre=pre, card=pre.card, exported=True)
    elif os.path.isfile(os.path.join(path, survival.SURVIVAL_FILE)):
        sm = survival.SurvivalModel.load(path)
        served = ServedModel(name=_display_name(name_or_path), pre=sm.pretrained, card=_survival_card(path, sm),
                             survival=sm)
    else:
        from zoo.pretrained import load_pretrained

        pre = load_pretrained(path)
        served = ServedModel(name=_display_name(name_or_path), pre=pre, card=_card(name_or_path, pre))
    if warm:  # compile every program a request will run, before the first request
        image, meta, _ = phantom_sample(served, 0) if served.data.get("channel_names") else (None, None, None)
        if served.task in ("segmentation", "instance"):
            zpredict.predict_case(served.pre, image, meta)
        elif served.task == "outcome":
            _outcome_proba(served, image, _default_covariates(served)[None])
        elif served.survival is not None:
            survival_curve(served, _default_covariates(served), image)
    return served


def _display_name(name_or_path: str) -> str:
    return os.path.basename(os.path.normpath(name_or_path)) if os.path.exists(name_or_path) else name_or_path


def model_info(m: ServedModel) -> dict:
    d = m.data
    defaults = [float(v) for v in m.survival.mean] if m.survival is not None else None
    return {"name": m.name, "task": m.task, "exported": m.exported, "card": m.card,
            "channel_names": list(d.get("channel_names") or ()), "class_names": list(d.get("class_names") or ()),
            "spatial_dims": int(d.get("spatial_dims", 2)), "covariate_names": list(d.get("covariate_names") or ()),
            "ehr_form": tuple(d.get("covariate_names") or ()) == ehr.COVARIATE_NAMES,
            "covariate_defaults": defaults,
            "time_unit": (m.survival.meta.get("extra") or {}).get("time_unit", "") if m.survival is not None else ""}


def _image_size(m: ServedModel) -> tuple:
    cfg = m.pre.config.data
    if cfg.get("image_size"):
        return tuple(int(s) for s in cfg.image_size)
    inputs = m.pre.meta.get("inputs") or {}
    if "image" in inputs:  # models trained on in-memory arrays (e.g. survival): the saved input shape
        return tuple(int(s) for s in inputs["image"][1:-1])
    raise ValueError(f"model {m.name!r} takes no image")


def phantom_sample(m: ServedModel, index: int):
    """A bundled phantom of the model's kind, channels and input size: ``(image, meta, label)`` (1 mm voxels)."""
    if not 0 <= int(index) < 64:
        raise ValueError(f"sample must be 0..63, got {index}")
    cfg = m.pre.config.data
    channels = len(m.data.get("channel_names") or ()) or None
    shape = _image_size(m)
    pc = phantoms.PhantomConfig(kind=str(cfg.get("kind", "brain") or "brain"), shape=shape, channels=channels,
                                seed=1000)  # not the training seed: samples are unseen cases
    s = phantoms.make_phantom(pc, int(index))
    d = len(shape)
    meta = readers.ImageMeta(spacing=(1.0,) * d, origin=(0.0,) * d,
                             direction=tuple(tuple(float(i == j) for j in range(d)) for i in range(d)),
                             path=f"phantom-{index}", format="phantom")
    return s["image"], meta, s["label"]


# ------------------------------------------------------------------------------------------------ segmenting

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


def segment(m: ServedModel, image: np.ndarray, meta, read_path: str, folder: str, *, reference=None,
            tta: bool = False, explain_image=None, pdf: bool = True) -> dict:
    """Predict, measure and package one case (see the module docstring). ``folder``: the request's temp dir;
    ``pdf``: also the PDF summary (:func:`summary_pdf`, about 0.3 s of matplotlib on a CPU core)."""
    if m.task not in ("segmentation", "instance"):
        raise ValueError(f"model {m.name!r} is a {m.task} model; /api/segment takes segmentation models")
    channels = len(m.data["channel_names"])
    if image.shape[-1] != channels:
        raise ValueError(f"the image has {image.shape[-1]} channel(s), but model {m.name!r} takes {channels} "
                         f"({', '.join(m.data['channel_names'])})")
    labels = zpredict.predict_case(m.pre, image, meta, tta=tta)
    k = int(m.data["num_classes"])
    names = list(m.data["class_names"])
    voxel = float(np.prod(meta.spacing))
    counts = np.bincount(labels.reshape(-1), minlength=k)
    unit = "mL" if labels.ndim == 3 else "mm2"
    sizes = {names[c]: float(counts[c] * voxel / (1000.0 if unit == "mL" else 1.0)) for c in range(1, k)}
    dices = None
    if reference is not None:
        dices = {names[c]: _finite(dice(labels == c, reference == c)) for c in range(1, k)}
    cam, cam_note = explain(m, image, meta, labels, explain_image)
    suffix = _label_suffix(meta, read_path)
    label_path = os.path.join(folder, "prediction" + suffix)
    zpredict.write_label(labels, meta, read_path, label_path, k)
    overlay_path = os.path.join(folder, "overlay.png")
    zpredict.write_overlay(image, labels, overlay_path)
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
                                  "base64": _b64_bytes(json.dumps(summary, indent=1).encode())}}
    if pdf_bytes is not None:
        downloads["summary_pdf"] = {"filename": "summary.pdf", "base64": _b64_bytes(pdf_bytes)}
    return {**summary,
            "display": {"depth": int(disp.shape[0]), "height": int(disp.shape[1]), "width": int(disp.shape[2]),
                        "image_u16": _b64(disp), "image_range": [lo, hi],
                        "labels_u8": _b64(_display(labels.astype(np.uint8))),
                        "gradcam_u8": None if cam is None else _b64(_display(np.round(cam * 255).astype(np.uint8))),
                        "gradcam_note": cam_note},
            "downloads": downloads}


def _card_lines(card: dict, width: int = 100) -> list[str]:
    import textwrap

    lines = []
    for k, v in card.items():
        text = v if isinstance(v, str) else json.dumps(v, default=str)
        lines += textwrap.wrap(f"{k}: {text}", width, subsequent_indent="    ") or [f"{k}:"]
    return lines


def summary_pdf(path: str, summary: dict, overlay_png: str, card: dict) -> None:
    """A one-page (two when the card is long) PDF of a segmentation result: the overlay, the volume (mL) or
    area (mm²) and Dice per class, the input geometry and the model card. Written with matplotlib's
    ``PdfPages`` on an object-oriented ``Figure`` (no pyplot state, safe in the worker threads), to a
    temporary name then renamed (atomic)."""
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure
    from PIL import Image

    unit = "volume (mL)" if summary["unit"] == "mL" else "area (mm²)"
    rows = [[name, f"{size:.3f}", "-" if summary["dice"] is None else
             ("n/a" if summary["dice"].get(name) is None else f"{summary['dice'][name]:.3f}")]
            for name, size in summary["sizes"].items()]
    card_lines = _card_lines(card)
    tmp = path + ".tmp"
    title = f"medzoo segmentation summary: {summary['model']}"
    with PdfPages(tmp, metadata={"Title": title, "Subject": f"model {summary['model']}",
                                 "Creator": "medzoo zoo.serve"}) as pdf:
        fig = Figure(figsize=(8.27, 11.69))  # A4
        fig.text(0.06, 0.965, title, fontsize=14, weight="bold")
        fig.text(0.06, 0.945, f"image shape {summary['shape']}, spacing {summary['spacing_mm']} mm, "
                              f"test-time augmentation: {'yes' if summary['tta'] else 'no'}", fontsize=9)
        ax = fig.add_axes((0.06, 0.48, 0.5, 0.45))
        with Image.open(overlay_png) as im:
            ax.imshow(np.asarray(im.convert("RGB")))
        ax.set_axis_off()
        ax.set_title("overlay (slice with the most foreground)", fontsize=9)
        tab = fig.add_axes((0.6, 0.6, 0.36, 0.3))
        tab.set_axis_off()
        table = tab.table(cellText=rows or [["-", "-", "-"]], colLabels=["class", unit, "Dice"], loc="upper center")
        table.auto_set_font_size(False)
        table.set_fontsize(8)
        if summary["dice"] is None:
            tab.text(0, 0, "Dice: no reference mask was given", fontsize=8, transform=tab.transAxes)
        fig.text(0.06, 0.45, "Model card", fontsize=11, weight="bold")
        per_page = 40
        fig.text(0.06, 0.44, "\n".join(card_lines[:per_page]), fontsize=7, va="top", family="monospace")
        fig.text(0.06, 0.02, "Research software: not a medical device; check every result.", fontsize=7)
        pdf.savefig(fig)
        for start in range(per_page, len(card_lines), 100):
            more = Figure(figsize=(8.27, 11.69))
            more.text(0.06, 0.97, "\n".join(card_lines[start:start + 100]), fontsize=7, va="top", family="monospace")
            pdf.savefig(more)
    os.replace(tmp, path)


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
    return geometry.resize(zpredict._scaled(image, m.pre), size)


def _layer(model, variables, x, names_fn) -> str | None:
    names = names_fn(model, variables, x)
    feature = [n for n in names if "/" not in n and not n.lower().startswith(("head", "out", "final", "logits"))]
    return feature[-1] if feature else (names[-2] if len(names) > 1 else None)


def explain(m: ServedModel, image, meta, labels, explain_image):
    """Grad-CAM of the largest predicted foreground class on the image grid: ``(cam [*S] | None, note)``."""
    if m.exported:
        return None, "Grad-CAM needs the model code; this is an exported model"
    if explain_image is None:
        return None, "Grad-CAM is not enabled on this server"
    x = _model_grid_input(m, image, meta)
    if x is None:
        return None, "Grad-CAM is shown for 2D models without a plan"
    fg = np.bincount(labels.reshape(-1), minlength=int(m.data["num_classes"]))[1:]
    target = int(np.argmax(fg)) + 1 if fg.any() else 1
    fn, names_fn = explain_image
    layer = _layer(m.pre.model, m.pre.variables, x[None], names_fn)
    if layer is None:
        return None, "no feature layer found for Grad-CAM"
    cam = fn(m.pre.model, m.pre.variables, x[None], layer=layer, target_class=target)[0]
    cam = geometry.resize(cam[..., None].astype(np.float32), image.shape[:-1])[..., 0]
    return np.clip(cam, 0.0, 1.0), f"Grad-CAM of class {m.data['class_names'][target]!r} at layer {layer!r}"


# ------------------------------------------------------------------------------------------------ outcome

def _default_covariates(m: ServedModel) -> np.ndarray:
    if m.survival is not None:  # the training split's means (the network's standardisation)
        return np.asarray(m.survival.mean, np.float32)
    return np.zeros(len(m.data["covariate_names"]), np.float32)


def _outcome_proba(m: ServedModel, image, covariates: np.ndarray) -> np.ndarray:
    n = len(covariates)
    inputs = {"covariates": np.asarray(covariates, np.float32)}
    if m.data.get("channel_names"):
        inputs["image"] = np.repeat(np.asarray(image, np.float32)[None], n, axis=0)
    return m.pre.predict_proba(inputs, batch_size=32)  # one compiled batch shape for every request


def encode_fields(m: ServedModel, fields: dict) -> np.ndarray:
    """Form fields -> covariates ``[F]``: ``age``, ``sex`` and 0/1 comorbidities for the EHR contract
    (``data_pipelines.ehr.encode_covariates``), else one number per covariate name."""
    names = tuple(m.data["covariate_names"])
    if names == ehr.COVARIATE_NAMES:
        missing = [k for k in ("age", "sex") if k not in fields]
        if missing:
            raise ValueError(f"EHR fields missing: {', '.join(missing)}")
        com = np.array([[float(bool(fields.get(c, 0))) for c in ehr.COMORBIDITIES]])
        return ehr.encode_covariates([float(fields["age"])], [str(fields["sex"])], com)[0]
    missing = [n for n in names if n not in fields]
    if missing:
        raise ValueError(f"covariate {missing[0]!r} missing; the model takes {', '.join(names)}")
    out = []
    for n in names:
        v = fields[n]
        try:
            if isinstance(v, str):
                raise ValueError
            out.append(float(v))
        except (TypeError, ValueError):
            raise ValueError(f"covariate {n!r} must be a number, got {v!r}") from None
        if not np.isfinite(out[-1]):
            raise ValueError(f"covariate {n!r} must be finite, got {v!r}")
    return np.array(out, np.float32)


CURVE_POINTS = 61
SURVIVAL_BATCH = 32  # one compiled batch shape for every survival request (SHAP batches included)


def _survival_support(sm) -> tuple[float, float]:
    """``(t_max, default horizon)``: the last training time of the baseline (Cox) or the last interval edge
    (logistic hazard); the horizon is the median training time (``extra.horizon`` when the model names one)."""
    if sm.head == "cox":
        t = np.asarray(sm.meta["breslow"]["times"], np.float64)
    else:
        t = np.asarray(sm.meta["edges"], np.float64)[1:]
    horizon = (sm.meta.get("extra") or {}).get("horizon")
    return float(t.max()), float(horizon if horizon is not None else np.median(t))


def survival_curve(m: ServedModel, covariates: np.ndarray, image=None, horizon: float | None = None) -> dict:
    """The predicted survival curve ``S(t | x)`` of one patient on ``CURVE_POINTS`` times in ``[0, t_max]``
    (``t_max``: the end of the training follow-up the model's baseline covers), with ``S`` at ``horizon``
    and the median survival time (``None`` when the curve stays above 0.5). Fused image + EHR models: also the
    pointwise range of ``S`` over the mirrored images (a model-sensitivity band, not a confidence interval);
    EHR-only models give no interval (the deep model has no uncertainty estimate)."""
    sm = m.survival
    t_max, default = _survival_support(sm)
    horizon = default if horizon is None else float(horizon)
    if not 0.0 < horizon <= t_max:
        unit = (sm.meta.get("extra") or {}).get("time_unit", "")
        raise ValueError(f"horizon must be in (0, {t_max:g}] {unit} (the training follow-up), got {horizon:g}")
    times = np.linspace(0.0, t_max, CURVE_POINTS)
    grid = np.unique(np.r_[times, horizon])
    cov = np.asarray(covariates, np.float64)[None]
    if image is None:
        images = [None]
    else:
        images = [image] + [np.flip(image, axis=a) for a in range(image.ndim - 1)]
    curves = np.stack([sm.survival(cov, grid, None if im is None else np.asarray(im, np.float32)[None],
                                   batch_size=SURVIVAL_BATCH)[0] for im in images])
    s = np.clip(curves[0], 0.0, 1.0)
    at = int(np.searchsorted(grid, horizon))
    below = np.nonzero(s <= 0.5)[0]
    keep = np.isin(grid, times)
    out = {"times": grid[keep].tolist(), "survival": s[keep].tolist(), "lower": None, "upper": None,
           "interval_note": "no interval: the model gives a point estimate of S(t) only",
           "horizon": horizon, "survival_at_horizon": float(s[at]),
           "median_time": float(grid[below[0]]) if len(below) else None,
           "time_unit": (sm.meta.get("extra") or {}).get("time_unit", ""), "head": sm.head}
    if len(images) > 1:
        lo, hi = np.clip(curves.min(0), 0, 1), np.clip(curves.max(0), 0, 1)
        out.update(lower=lo[keep].tolist(), upper=hi[keep].tolist(),
                   interval_note="range of S(t) over the mirrored images (model sensitivity, not a confidence "
                                 "interval)", horizon_range=[float(lo[at]), float(hi[at])])
    return out


def _survival_outcome(m: ServedModel, fields: dict, sample: int, explain_tabular, horizon) -> dict:
    cov = encode_fields(m, fields)
    image = phantom_sample(m, sample)[0] if m.data.get("channel_names") else None
    curve = survival_curve(m, cov, image, horizon)
    h = curve["horizon"]
    risk = 1.0 - curve["survival_at_horizon"]
    names = list(m.data["covariate_names"])
    shap, note = None, "SHAP is not enabled on this server"
    if explain_tabular is not None:
        sm = m.survival
        extra = sm.meta.get("extra") or {}
        if extra.get("background"):
            background = np.asarray(extra["background"], np.float32)
            where = f"{len(background)} training patients"
        else:
            rng = np.random.default_rng(0)
            background = (sm.mean + sm.sd * rng.normal(0, 1, (32, len(cov)))).astype(np.float32)
            where = "32 patients drawn from the training means and SDs"
        im = None if image is None else np.asarray(image, np.float32)

        def event_probability(X):
            X = np.asarray(X, np.float64)
            ims = None if im is None else np.repeat(im[None], len(X), axis=0)
            return 1.0 - sm.survival(X, [h], ims, batch_size=SURVIVAL_BATCH)[:, 0]

        expl = explain_tabular(event_probability, background, cov[None], feature_names=names,
                               max_evals=2 * len(names) + 1)
        shap = {"base_value": float(np.ravel(expl.base_values)[0]),
                "values": {n: float(v) for n, v in zip(names, np.asarray(expl.values)[0])}}
        note = f"SHAP (permutation) of the event probability by t = {h:g} against {where}"
    unit = curve["time_unit"]
    return {"model": m.name, "kind": "survival", "risk": float(risk),
            "risk_range": None if curve.get("horizon_range") is None else
            [1.0 - curve["horizon_range"][1], 1.0 - curve["horizon_range"][0]],
            "risk_range_note": (f"event probability by t = {h:g} {unit}: 1 - S(t); "
                                + curve["interval_note"]),
            "covariates": {n: float(v) for n, v in zip(names, cov)}, "shap": shap, "shap_note": note,
            "sample": int(sample), "survival": curve}


def outcome(m: ServedModel, fields: dict, sample: int = 0, explain_tabular=None, horizon: float | None = None) -> dict:
    """Risk of the adverse outcome for ``fields`` with phantom ``sample``'s image: the risk, its spread over
    the mirrored images (test-time augmentation; a model-sensitivity range, not a confidence interval) and
    the SHAP contribution of each covariate (against a synthetic EHR background). Time-to-event models: the
    survival curve (:func:`survival_curve`), the risk is the event probability by ``horizon``."""
    if m.survival is not None:
        return _survival_outcome(m, fields, sample, explain_tabular, horizon)
    if m.task != "outcome":
        raise ValueError(f"model {m.name!r} is a {m.task} model; /api/outcome takes outcome models")
    cov = encode_fields(m, fields)
    image, _, _ = phantom_sample(m, sample)
    risk = float(_outcome_proba(m, image, cov[None])[0, 1])
    flips = [image] + [np.flip(image, axis=a) for a in range(image.ndim - 1)]
    spread = [float(_outcome_proba(m, f, cov[None])[0, 1]) for f in flips]
    names = list(m.data["covariate_names"])
    shap = None
    note = "SHAP is not enabled on this server"
    if explain_tabular is not None:
        rng = np.random.default_rng(0)
        if tuple(names) == ehr.COVARIATE_NAMES:
            age, sex, com = ehr.synthetic_ehr(rng, 32)
            background = ehr.encode_covariates(age, sex, com)
        else:
            background = np.repeat(cov[None], 32, axis=0) + rng.normal(0, 1, (32, len(cov))).astype(np.float32)
        expl = explain_tabular(lambda X: _outcome_proba(m, image, np.asarray(X, np.float32))[:, 1], background,
                               cov[None], feature_names=names, max_evals=2 * len(names) + 1)
        shap = {"base_value": float(np.ravel(expl.base_values)[0]),
                "values": {n: float(v) for n, v in zip(names, np.asarray(expl.values)[0])}}
        note = "SHAP (permutation) against 32 synthetic EHR patients, same image"
    return {"model": m.name, "kind": "probability", "risk": risk, "risk_range": [min(spread), max(spread)],
            "risk_range_note": "spread of the risk over the mirrored images (not a confidence interval)",
            "covariates": {n: float(v) for n, v in zip(names, cov)}, "shap": shap, "shap_note": note,
            "sample": int(sample), "survival": None}


# ------------------------------------------------------------------------------------------------ pool

class InferencePool:
    """A bounded worker pool: ``workers`` threads run requests, at most ``queue`` more wait; beyond that
    :class:`Busy`. ``run`` waits at most ``timeout`` seconds (``asyncio.TimeoutError``; the work itself
    finishes in its thread and frees its slot)."""

    def __init__(self, workers: int = 2, queue: int = 8, timeout: float = 120.0):
        if workers < 1 or queue < 0 or timeout <= 0:
            raise ValueError(f"pool: workers >= 1, queue >= 0, timeout > 0; got {workers}, {queue}, {timeout}")
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zoo-serve")
        self.limit, self.timeout = workers + queue, float(timeout)
        self._pending, self._lock = 0, threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    def _release(self, _future=None):
        with self._lock:
            self._pending -= 1

    async def run(self, fn, *args, **kwargs):
        with self._lock:
            if self._pending >= self.limit:
                raise Busy(f"the server is busy ({self._pending} requests running or queued); retry shortly")
            self._pending += 1
        try:
            future = self.executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._release()
            raise
        future.add_done_callback(self._release)
        return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)

    def close(self):
        self.executor.shutdown(wait=False, cancel_futures=True)
