"""The label map a MONAI Label client asks for: one uploaded image segmented through the library's case-level path
(``zoo.prediction.predict_case``) and written in the file format (``result_extension``) and pixel type
(``result_dtype``) of its ``params``, in the upload's geometry, with values equal to the model's label ids
(:func:`label_ids`: class ``i`` of the card has id ``i``, 0 the background). 3D Slicer's MONAI Label module asks
for ``.nrrd`` and ``uint8`` and reads the file with SimpleITK. A DICOM series can come back as a DICOM SEG
(``zoo.dicom``), as MONAI Label's ``output=dicom_seg``.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid

import numpy as np

from data_pipelines.atomic import atomic_path
from zoo import dicom, prediction
from zoo.app.services.served import ServedModel
from zoo.app.services.uploads import DEFAULT_UPLOAD_MB, read_upload

__all__ = ["RESULT_EXTENSIONS", "RESULT_DTYPES", "label_ids", "result_format", "describe_upload", "segment_to_file"]

RESULT_EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha")
RESULT_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32")


def label_ids(m: ServedModel) -> dict:
    """``{class name: label id}`` of the model's foreground classes (MONAI Label's ``labels`` of a model)."""
    return {str(name): i for i, name in enumerate(m.data["class_names"]) if i > 0}


def result_format(params: dict, upload_suffix: str, num_classes: int) -> tuple[str, str]:
    """``(extension, dtype)`` the request's ``params`` ask for: ``result_extension`` (default the upload's own
    volume format, else ``.nii.gz``) and ``result_dtype`` (default ``uint8``, ``uint16`` past 255 classes); one
    that is not written here, or a type too small for the label ids, is a ``ValueError``."""
    ext = params.get("result_extension") or (upload_suffix if upload_suffix in RESULT_EXTENSIONS else ".nii.gz")
    dtype = params.get("result_dtype") or ("uint8" if num_classes <= 256 else "uint16")
    if not isinstance(ext, str) or ext.lower() not in RESULT_EXTENSIONS:
        raise ValueError(f"params.result_extension {ext!r}: this server writes {', '.join(RESULT_EXTENSIONS)}")
    if not isinstance(dtype, str) or dtype not in RESULT_DTYPES:
        raise ValueError(f"params.result_dtype {dtype!r}: one of {', '.join(RESULT_DTYPES)}")
    if dtype != "float32" and np.iinfo(dtype).max < num_classes - 1:
        raise ValueError(f"params.result_dtype {dtype}: too small for label ids up to {num_classes - 1}")
    return ext.lower(), dtype


def _cast(path: str, dtype: str) -> None:
    """Rewrite the label file ``path`` with pixel type ``dtype``, geometry unchanged (a NIfTI keeps its header)."""
    if prediction.output_format(path) == "nifti":
        import nibabel as nib

        src = nib.load(path)
        header = src.header.copy()
        header.set_data_dtype(dtype)
        img = nib.Nifti1Image(np.asarray(src.dataobj).astype(dtype), src.affine, header)
        with atomic_path(path) as tmp:
            nib.save(img, tmp)
        return
    import SimpleITK as sitk

    src = sitk.ReadImage(path)
    img = sitk.GetImageFromArray(sitk.GetArrayFromImage(src).astype(dtype))
    img.CopyInformation(src)
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, tmp, useCompression=True)


def describe_upload(path: str, suffix: str, label: str = "upload",
                    max_upload_mb: float = DEFAULT_UPLOAD_MB) -> dict:
    """Read the saved upload ``path`` once (a file that is not an image is a ``ValueError`` here, at upload time;
    one that decodes or inflates past ``max_upload_mb`` MiB is refused) and say what it holds: ``shape`` (spatial), ``channels``, ``spacing`` (mm) and ``format``."""
    with tempfile.TemporaryDirectory(prefix="zoo-describe-") as scratch:
        image, meta, _ = read_upload(path, suffix, scratch, label, max_upload_mb)
    return {"shape": [int(s) for s in image.shape[:-1]], "channels": int(image.shape[-1]),
            "spacing": [float(s) for s in meta.spacing], "format": str(meta.format)}


def segment_to_file(m: ServedModel, path: str, suffix: str, folder: str, params: dict,
                    label: str = "image", dicom_seg: bool = False,
                    max_upload_mb: float = DEFAULT_UPLOAD_MB) -> tuple[str, dict]:
    """Segment the saved upload ``path`` (its accepted ``suffix``) with ``m`` and write the label map into
    ``folder`` as the request's ``params`` ask (:func:`result_format`), or with ``dicom_seg`` as a DICOM SEG of
    the uploaded DICOM series (``zoo.dicom.write_seg``: segments coded from the card); returns ``(label file,
    result params)``: MONAI Label's ``label_names`` and ``latencies`` (seconds) with the file's format, shape and
    spacing."""
    t0 = time.perf_counter()
    k = int(m.data["num_classes"])
    ext, dtype = (dicom.SEG_SUFFIX, "uint8") if dicom_seg else result_format(params, suffix, k)
    image, meta, read_path = read_upload(path, suffix, folder, label, max_upload_mb)
    channels = len(m.data["channel_names"])
    if image.shape[-1] != channels:
        raise ValueError(f"{label}: {image.shape[-1]} channel(s), but model {m.name!r} takes {channels} "
                         f"({', '.join(m.data['channel_names'])})")
    if dicom_seg and not os.path.isdir(read_path):
        raise ValueError(f"{label}: output=dicom_seg needs a DICOM series (uploaded as a .zip); this is a "
                         f"{suffix} file")
    sources = dicom.series_headers(read_path) if dicom_seg else None  # a bad series fails before predicting
    t1 = time.perf_counter()
    labels = prediction.predict_case(m.pre, image, meta)
    t2 = time.perf_counter()
    out = os.path.join(folder, f"result-{uuid.uuid4().hex[:12]}{ext}")
    if dicom_seg:
        dicom.write_seg(labels, meta, sources, m.card, out)
    else:
        prediction.write_label(labels, meta, read_path, out, k)
        written = "uint8" if k <= 256 else "int32"  # what write_label writes
        if dtype != written:
            _cast(out, dtype)
    t3 = time.perf_counter()
    return out, {"label_names": label_ids(m), "model": m.name, "result_extension": ext, "result_dtype": dtype,
                 "shape": [int(s) for s in labels.shape], "spacing": [float(s) for s in meta.spacing],
                 "latencies": {"pre": round(t1 - t0, 4), "infer": round(t2 - t1, 4), "post": round(t3 - t2, 4),
                               "total": round(t3 - t0, 4)}}
