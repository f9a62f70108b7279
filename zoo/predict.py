"""Prediction in the input's geometry: ``python -m zoo.predict --model NAME_OR_PATH --input PATH --output PATH
[--tta] [--overlay PNG] [--overlap 0.5] [--batch_size 4]``.

``--model``: a model-store name (``zoo.list_pretrained``) or a work directory. ``--input``: one image file
(NIfTI, NRRD, MHD/MHA, a DICOM folder, PNG/JPEG/BMP/TIFF) or a case folder holding one file per modality,
matched by the patterns the model was trained with (BraTS names; label files in the folder are ignored).

The case goes through the run's own preprocessing and comes back on the input's grid:

* a run trained with a plan (``data_pipelines.planning``): ``preprocess_case`` (orientation, crop, spacing,
  normalisation exactly as in training), Gaussian-weighted sliding windows of the plan's patch
  (``zoo.inference.Predictor.sliding_window_proba``; 2D plans slice by slice), then ``restore_case``;
* a run without a plan (images resized to ``data.image_size`` by its loader): the same intensity scaling as
  that loader (pictures to [0, 1], CT through its HU window), axial slices of volumes in LPS orientation,
  each resized to the training size and its probabilities resized back;
* ``--tta``: the probabilities averaged over every mirroring of the spatial axes.

The label map is written with the input's exact shape, spacing, origin and direction (a NIfTI input keeps its
affine and header), or as a PNG mask of the input's height and width. Bad input (unknown model, wrong number
of modalities, unreadable file, an output format that cannot hold the geometry) ends with one line and exit
2, with nothing written.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile

import numpy as np

from data_pipelines import geometry, planning, readers
from zoo.cli import run_cli
from zoo.pretrained import Pretrained, load_pretrained

__all__ = ["read_case", "predict_case", "write_label", "write_overlay", "main"]

LABEL_NAME = re.compile(r"(seg|label|mask|otmulticlass|[-_.]ot[-_.]|glistrboost)", re.IGNORECASE)
VOLUME_FORMATS = {"nifti": (".nii.gz", ".nii"), "nrrd": (".nrrd",), "mha": (".mha",)}


# ------------------------------------------------------------------------------------------------ reading

def _modality_patterns(pre: Pretrained) -> dict:
    from data_pipelines.brats import BRATS_PATTERNS

    custom = pre.config.data.get("patterns", None)
    return dict(custom) if custom else dict(BRATS_PATTERNS)


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

def _scaled(image: np.ndarray, pre: Pretrained) -> np.ndarray:
    """The intensity scaling of the run's loader (runs without a plan)."""
    data = pre.config.data
    if np.issubdtype(image.dtype, np.integer) and data.name in ("isic", "folder"):
        return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
    if data.name == "luna16":
        from data_pipelines.ct import hu_window

        return hu_window(image, data.get("hu_window", None) or (-1000.0, 400.0))
    return image.astype(np.float32)


def _windows(pre, x, roi, nd_model, overlap, batch_size, tta):
    """Probabilities ``[*S, K]`` of ``x [*S, C]``: whole (model dims == image dims) or slice by slice along the
    last spatial axis (a 2D model on a volume)."""
    p = pre.predictor
    if x.ndim - 1 == nd_model:
        return p.sliding_window_proba(x[None], roi, overlap=overlap, batch_size=batch_size, tta=tta)[0]
    if x.ndim - 1 == 3 and nd_model == 2:
        slices = np.moveaxis(x, 2, 0)  # [Z, H, W, C]
        out = [p.sliding_window_proba(slices[i:i + 8], roi, overlap=overlap, batch_size=batch_size, tta=tta)
               for i in range(0, len(slices), 8)]
        return np.moveaxis(np.concatenate(out), 0, 2)
    raise ValueError(f"a {nd_model}D model cannot predict a {x.ndim - 1}D image")


def predict_case(pre: Pretrained, image: np.ndarray, meta: readers.ImageMeta, *, tta: bool = False,
                 overlap: float = 0.5, batch_size: int = 4) -> np.ndarray:
    """Label map ``[*S]`` on the input's grid for ``image [*S, C]`` with geometry ``meta``."""
    if pre.task not in ("segmentation", "instance"):
        raise ValueError(f"zoo.predict segments images; this is a {pre.task!r} model")
    nd_model = int(pre.meta["data"]["spatial_dims"])
    plan = (pre.meta["data"].get("extra") or {}).get("plan")
    if plan:
        plan = planning.Plan.from_dict(plan)
        x, ctx = planning.preprocess_case(image, meta, plan)
        proba = _windows(pre, x, plan.patch_size, nd_model, overlap, batch_size, tta)
        return planning.restore_case(proba, ctx, order=1).argmax(-1).astype(np.int32)
    size = tuple(int(s) for s in pre.config.data.image_size)
    x = _scaled(image, pre)
    if meta.ndim == 3:  # loaders train on LPS volumes (axial slices image[:, :, z])
        x, lps = geometry.reorient(x, meta, "LPS")
    if x.ndim - 1 == nd_model:
        small = geometry.resize(x, size)
        proba = _windows(pre, small, size, nd_model, overlap, batch_size, tta)
        proba = geometry.resize(proba, x.shape[:-1])
    else:
        slices = np.stack([geometry.resize(x[:, :, z], size) for z in range(x.shape[2])], axis=2)
        proba = _windows(pre, slices, size, nd_model, overlap, batch_size, tta)
        proba = np.stack([geometry.resize(proba[:, :, z], x.shape[:2]) for z in range(x.shape[2])], axis=2)
    labels = proba.argmax(-1).astype(np.int32)
    if meta.ndim == 3:
        labels, _ = geometry.reorient(labels, lps, geometry.orientation_code(meta), is_label=True)
    return labels


# ------------------------------------------------------------------------------------------------ writing

def _output_format(path: str) -> str:
    low = path.lower()
    for fmt, suffixes in VOLUME_FORMATS.items():
        if low.endswith(suffixes):
            return fmt
    if low.endswith(".png"):
        return "png"
    raise ValueError(f"--output {path}: write a label map as .nii.gz/.nii, .nrrd, .mha (one file) or .png")


def _atomic(path: str, write) -> None:
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output {path}: folder {folder} does not exist")
    name = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="-" + name, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_label(labels: np.ndarray, meta: readers.ImageMeta, input_path: str, output_path: str,
                num_classes: int) -> None:
    """Write ``labels [*S]`` with the geometry of the input (``meta``; a NIfTI input's own affine/header)."""
    fmt = _output_format(output_path)
    labels = np.asarray(labels)
    dtype = np.uint8 if num_classes <= 256 else np.int32
    if fmt == "png":
        if labels.ndim != 2:
            raise ValueError(f"--output {output_path}: a PNG holds a 2D mask; this prediction is {labels.ndim}D "
                             f"(write .nii.gz)")
        from PIL import Image

        scale = 255 if num_classes == 2 else 1
        _atomic(output_path, lambda p: Image.fromarray((labels * scale).astype(np.uint8)).save(p, format="PNG"))
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


# ------------------------------------------------------------------------------------------------ CLI

def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.predict", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model-store name or work directory")
    p.add_argument("--input", required=True, help="image file, DICOM folder or case folder")
    p.add_argument("--output", required=True, help="label map to write (.nii.gz, .nrrd, .mha, .png)")
    p.add_argument("--tta", action="store_true", help="average over mirrored copies (test-time augmentation)")
    p.add_argument("--overlay", default=None, help="also write a PNG of the image with the contours")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    p.add_argument("--batch_size", type=int, default=4, help="windows per forward pass (default 4)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        _output_format(args.output)  # a bad output name or folder fails before any work
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"--output {args.output}: folder {folder} does not exist")
        pre = load_pretrained(args.model)
        image, meta, files = read_case(args.input, pre)
        labels = predict_case(pre, image, meta, tta=args.tta, overlap=args.overlap, batch_size=args.batch_size)
        num_classes = int(pre.meta["data"]["num_classes"])
        write_label(labels, meta, files[0], args.output, num_classes)
        if args.overlay:
            write_overlay(image, labels, args.overlay)
        counts = np.bincount(labels.reshape(-1), minlength=num_classes)
        names = pre.meta["data"]["class_names"]
        voxel = float(np.prod(meta.spacing))
        print(f"wrote {args.output} ({'x'.join(map(str, labels.shape))}); " + ", ".join(
            f"{names[k]}: {counts[k]} voxels ({counts[k] * voxel / 1000.0:.2f} mL)" for k in range(1, num_classes)))
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
