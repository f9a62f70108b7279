"""What the web application (``zoo.serve``) does, as plain functions the routes and tests call.

Uploads are parsed into arrays here (by content: a file that does not parse is a ``ValueError`` naming it),
predicted through ``zoo.predict.predict_case`` (the CLI's path: plan, scaling, geometry), measured (volume
in mL from the real spacing, area in mm² for 2D, per-class Dice against a reference mask) and turned into
what a page draws (display arrays as base64) and downloads (the label map in the input's geometry written
by ``zoo.predict.write_label``, the overlay PNG of ``zoo.predict.write_overlay``, a JSON summary).

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
           "read_reference", "load_model", "phantom_sample", "segment", "outcome", "model_info"]

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


def load_model(name_or_path: str, warm: bool = True) -> ServedModel:
    """Load a store entry, work directory or exported folder (``zoo.export``) and run it once."""
    path = store.resolve(name_or_path)
    from zoo import exported

    if exported.is_exported(path):
        pre = exported.ExportedModel.load(path)
        served = ServedModel(name=_display_name(name_or_path), pre=pre, card=pre.card, exported=True)
    else:
        from zoo.pretrained import load_pretrained

        pre = load_pretrained(path)
        served = ServedModel(name=_display_name(name_or_path), pre=pre, card=_card(name_or_path, pre))
    if warm:  # compile every program a request will run, before the first request
        image, meta, _ = phantom_sample(served, 0)
        if served.task in ("segmentation", "instance"):
            zpredict.predict_case(served.pre, image, meta)
        elif served.task == "outcome":
            _outcome_proba(served, image, _default_covariates(served)[None])
    return served


def _display_name(name_or_path: str) -> str:
    return os.path.basename(os.path.normpath(name_or_path)) if os.path.exists(name_or_path) else name_or_path


def model_info(m: ServedModel) -> dict:
    d = m.data
    return {"name": m.name, "task": m.task, "exported": m.exported, "card": m.card,
            "channel_names": list(d.get("channel_names") or ()), "class_names": list(d.get("class_names") or ()),
            "spatial_dims": int(d.get("spatial_dims", 2)), "covariate_names": list(d.get("covariate_names") or ()),
            "ehr_form": tuple(d.get("covariate_names") or ()) == ehr.COVARIATE_NAMES}


def phantom_sample(m: ServedModel, index: int):
    """A bundled phantom of the model's kind, channels and input size: ``(image, meta, label)`` (1 mm voxels)."""
    if not 0 <= int(index) < 64:
        raise ValueError(f"sample must be 0..63, got {index}")
    cfg = m.pre.config.data
    channels = len(m.data.get("channel_names") or ()) or None
    shape = tuple(int(s) for s in cfg.image_size)
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
            tta: bool = False, explain_image=None) -> dict:
    """Predict, measure and package one case (see the module docstring). ``folder``: the request's temp dir."""
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
    with open(label_path, "rb") as f:
        label_bytes = f.read()
    with open(overlay_path, "rb") as f:
        overlay_bytes = f.read()
    disp = _display(q)
    return {**summary,
            "display": {"depth": int(disp.shape[0]), "height": int(disp.shape[1]), "width": int(disp.shape[2]),
                        "image_u16": _b64(disp), "image_range": [lo, hi],
                        "labels_u8": _b64(_display(labels.astype(np.uint8))),
                        "gradcam_u8": None if cam is None else _b64(_display(np.round(cam * 255).astype(np.uint8))),
                        "gradcam_note": cam_note},
            "downloads": {"label_map": {"filename": "prediction" + suffix, "base64": _b64_bytes(label_bytes)},
                          "overlay_png": {"filename": "overlay.png", "base64": _b64_bytes(overlay_bytes)},
                          "summary_json": {"filename": "summary.json",
                                           "base64": _b64_bytes(json.dumps(summary, indent=1).encode())}}}


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
    try:
        return np.array([float(fields[n]) for n in names], np.float32)
    except KeyError as e:
        raise ValueError(f"covariate {e.args[0]!r} missing; the model takes {', '.join(names)}") from None


def outcome(m: ServedModel, fields: dict, sample: int = 0, explain_tabular=None) -> dict:
    """Risk of the adverse outcome for ``fields`` with phantom ``sample``'s image: the risk, its spread over
    the mirrored images (test-time augmentation; a model-sensitivity range, not a confidence interval) and
    the SHAP contribution of each covariate (against a synthetic EHR background)."""
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
    return {"model": m.name, "risk": risk, "risk_range": [min(spread), max(spread)],
            "risk_range_note": "spread of the risk over the mirrored images (not a confidence interval)",
            "covariates": {n: float(v) for n, v in zip(names, cov)}, "shap": shap, "shap_note": note,
            "sample": int(sample)}


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
