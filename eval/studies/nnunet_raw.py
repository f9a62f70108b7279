"""A data family's cases in nnU-Net v2's raw layout, and its patient-level folds as nnU-Net's ``splits_final.json``.

:func:`convert` reads every case of a family through the data-family protocol (``read_cases`` for the pixels,
labels and geometry; ``find_cases`` for each case's patient and original files) and writes, under
``<raw_root>/Dataset<ID>_<name>/`` (nnU-Net's ``dataset_conversion/generate_dataset_json.py`` format):

* ``imagesTr/<case>_<XXXX><ending>``: NIfTI volumes (``.nii.gz``, one file per channel, in the geometry of the
  case's original files: ``read_cases`` may reorient a volume (BraTS: to LPS), so it is put back in the voxel order,
  spacing, origin and direction of the case's reference file, which the zoo's predictions (written in the input
  file's geometry) and nnU-Net's (in its input's) share with the references; what nnU-Net's ``SimpleITKIO``
  reads); 8-bit RGB pictures as one RGB ``.png`` per case
  (``<case>_0000.png`` holding channels R, G, B: nnU-Net's ``NaturalImage2DIO``, as its own road-segmentation
  example Dataset120 does), other pictures one grey ``.png`` per channel;
* ``labelsTr/<case><ending>``: the label map (the family's class indices 0..K-1, uint8) in the same geometry;
* ``dataset.json``: ``channel_names``, ``labels`` (``background`` for 0, then the family's class names, or BraTS-style ``regions`` with
  ``regions_class_order``), ``numTraining``, ``file_ending``;
* ``cases.json``: every nnU-Net case id with its patient, the family's case id, its original input and reference
  files (what the study's other contender predicts from).

:func:`write_splits` writes ``splits_final.json`` (``[{"train": [...], "val": [...]}]`` per fold) from the
project's one k-fold splitter (``data_pipelines.splits.patient_kfold``: the folds the zoo's cross-validation
trains on, which depend only on the patient ids and the seed), so both tools train and test on the same patients.
Every file goes through ``data_pipelines.atomic`` (the image writers write a temporary with the target's suffix).
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from data_pipelines import geometry, readers
from data_pipelines.atomic import atomic_path, write_json
from data_pipelines.families import get_family
from data_pipelines.splits import patient_kfold

__all__ = ["RawDataset", "BRATS_REGIONS", "dataset_folder_name", "case_identifier", "original_geometry", "convert",
           "write_label_map",
           "fold_patients", "write_splits", "read_raw_cases"]

# BraTS sub-regions over the family's classes (1 necrosis / non-enhancing core, 2 oedema, 3 enhancing): the
# region-based training nnU-Net uses for BraTS. ``regions_class_order`` writes oedema where only the whole
# tumour is predicted, necrosis where the core is, enhancing where the enhancing tumour is.
BRATS_REGIONS = {"labels": {"background": 0, "whole_tumour": [1, 2, 3], "tumour_core": [1, 3],
                            "enhancing_tumour": [3]}, "regions_class_order": [2, 1, 3]}


class RawDataset(dict):
    """What :func:`convert` wrote: ``folder``, ``dataset_id``, ``name``, ``file_ending``, ``cases`` (``[{"case",
    "patient_id", "family_case", "input", "truth"}]``), ``spatial_dims``, ``channel_names``, ``class_names``."""


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset<ID:03d>_<name>`` (nnU-Net's naming; ids 1..999, a name of letters, digits, ``-`` and ``_``)."""
    if isinstance(dataset_id, bool) or not isinstance(dataset_id, int) or not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset id must be an integer in 1..999 (nnU-Net's Dataset<ID>), got {dataset_id!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", str(name)):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '-' and '_'")
    return f"Dataset{dataset_id:03d}_{name}"


def case_identifier(patient_id: str, index: int, count: int) -> str:
    """nnU-Net's case id of a patient's ``index``-th of ``count`` cases: the patient id with characters other than
    letters, digits and ``-`` replaced by ``-`` (nnU-Net splits channel suffixes at ``_``), ``-<index>`` when the
    patient has several cases."""
    base = re.sub(r"[^A-Za-z0-9-]", "-", str(patient_id)).strip("-") or "case"
    return f"{base}-{index}" if count > 1 else base


def _is_rgb_picture(case: dict, channel_names) -> bool:
    img = case["image"]
    return (case["meta"].format == "picture" and img.ndim == 3 and tuple(channel_names) == ("R", "G", "B"))


def _as_uint8(values: np.ndarray, what: str) -> np.ndarray:
    v = np.asarray(values)
    if v.size and (not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 255 or not np.array_equal(np.rint(v), v)):
        raise ValueError(f"{what}: a PNG for nnU-Net holds integers 0..255; these values are not")
    return v.astype(np.uint8)


def _write_png(values: np.ndarray, path: str) -> None:
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(values).save(tmp, format="PNG")


def _write_nifti(values: np.ndarray, meta, path: str) -> None:
    """``values [*S]`` with ``meta``'s spacing, origin and direction (LPS, as ITK keeps them)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(values.T))  # array (i, j, k) -> ITK's (k, j, i) order
    img.SetSpacing([float(s) for s in meta.spacing])
    img.SetOrigin([float(o) for o in meta.origin])
    img.SetDirection([float(v) for v in np.asarray(meta.direction, np.float64).reshape(-1)])
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, tmp, useCompression=True)


def write_label_map(labels: np.ndarray, meta, path: str) -> None:
    """A label map ``[*S]`` of class indices as ``path`` (``.png``: 8 bits; ``.nii.gz``: uint8 with ``meta``'s
    geometry): the writer of the references and of the zoo's predictions, so both tools' files match."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: label values {int(labels.min())}..{int(labels.max())} do not fit 8 bits")
    if path.endswith(".png"):
        if labels.ndim != 2:
            raise ValueError(f"{path}: a PNG holds a 2D label map, this one is {labels.ndim}D")
        _write_png(labels.astype(np.uint8), path)
    elif path.endswith(".nii.gz"):
        _write_nifti(labels.astype(np.uint8), meta, path)
    else:
        raise ValueError(f"{path}: label maps are written as .png or .nii.gz")


def original_geometry(image: np.ndarray, label: np.ndarray, meta, truth_path: str | None):
    """``(image [*S, C], label [*S], meta)`` of a volume put back in the voxel order of its original reference
    file ``truth_path`` (axis permutations and flips only, as ``read_cases`` reoriented it); ``ValueError`` when
    the result does not share that file's grid. Unchanged without a reference file."""
    if not truth_path or not os.path.isfile(truth_path):
        return image, label, meta
    ref, ref_meta = readers.read_image(truth_path)
    target = geometry.orientation_code(ref_meta)
    if geometry.orientation_code(meta) != target:
        image2, meta2 = geometry.reorient(image, meta, target)
        label, _ = geometry.reorient(label, meta, target, is_label=True)
        image, meta = image2, meta2
    geometry.check_same_geometry(label.shape, meta, ref.shape[:ref_meta.ndim], ref_meta)
    return image, label, meta


def _paired_files(family, cfg, cases) -> list:
    """The family's ``find_cases`` entries in the order of ``read_cases`` (same patients, same order per patient)."""
    files = family.case_files(cfg)
    by_patient: dict[str, list] = {}
    for f in files:
        by_patient.setdefault(str(f.patient_id), []).append(f)
    out, used = [], {}
    for c in cases:
        pid = str(c["patient_id"])
        k = used.get(pid, 0)
        if k >= len(by_patient.get(pid, [])):
            raise ValueError(f"data family {family.name!r}: read_cases gives patient {pid!r} a case that find_cases "
                             f"does not list ({len(by_patient.get(pid, []))} file entries)")
        out.append(by_patient[pid][k])
        used[pid] = k + 1
    return out


def convert(family_name: str, cfg, raw_root: str, dataset_id: int, name: str, *, regions: dict | None = None,
            log=None) -> RawDataset:
    """Write the family's cases (``cfg``: its ``data`` section, ``data_dir`` set) as nnU-Net's raw data set
    ``<raw_root>/Dataset<ID>_<name>`` (module docstring). ``regions``: nnU-Net's region labels and
    ``regions_class_order`` (e.g. :data:`BRATS_REGIONS`) instead of one label per class. Returns what it wrote."""
    family = get_family(family_name)
    cases, channel_names, class_names = family.all_cases(cfg)
    if not cases:
        raise ValueError(f"data family {family_name!r}: no cases in {cfg.get('data_dir', '')!r}")
    files = _paired_files(family, cfg, cases)
    folder = os.path.join(raw_root, dataset_folder_name(dataset_id, name))
    for sub in ("imagesTr", "labelsTr"):
        os.makedirs(os.path.join(folder, sub), exist_ok=True)
    nd = {c["label"].ndim for c in cases}
    if len(nd) != 1 or nd.pop() not in (2, 3):
        raise ValueError(f"data family {family_name!r}: cases must all be 2D or all 3D label maps")
    spatial_dims = cases[0]["label"].ndim
    rgb = all(_is_rgb_picture(c, channel_names) for c in cases)
    picture = all(c["meta"].format == "picture" for c in cases)
    ending = ".png" if picture and spatial_dims == 2 else ".nii.gz"
    counts: dict[str, int] = {}
    for c in cases:
        counts[str(c["patient_id"])] = counts.get(str(c["patient_id"]), 0) + 1
    seen: dict[str, int] = {}
    rows = []
    for c, f in zip(cases, files):
        pid = str(c["patient_id"])
        cid = case_identifier(pid, seen.get(pid, 0), counts[pid])
        seen[pid] = seen.get(pid, 0) + 1
        image, label, meta = np.asarray(c["image"]), np.asarray(c["label"]), c["meta"]
        if image.shape[:-1] != label.shape:
            raise ValueError(f"case {pid}: image {image.shape} and label {label.shape} grids differ")
        if ending == ".nii.gz":
            image, label, meta = original_geometry(image, label, meta, f.truth)
        if image.shape[-1] != len(channel_names):
            raise ValueError(f"case {pid}: {image.shape[-1]} channels, the family names {len(channel_names)}")
        if label.size and (label.min() < 0 or label.max() >= len(class_names)):
            raise ValueError(f"case {pid}: label values outside 0..{len(class_names) - 1} ({class_names})")
        img_dir = os.path.join(folder, "imagesTr")
        if rgb:
            _write_png(_as_uint8(image, f"case {pid}"), os.path.join(img_dir, f"{cid}_0000.png"))
        else:
            for ch in range(image.shape[-1]):
                path = os.path.join(img_dir, f"{cid}_{ch:04d}{ending}")
                if ending == ".png":
                    _write_png(_as_uint8(image[..., ch], f"case {pid}"), path)
                else:
                    _write_nifti(image[..., ch].astype(np.float32), meta, path)
        write_label_map(label, meta, os.path.join(folder, "labelsTr", cid + ending))
        rows.append({"case": cid, "patient_id": pid, "family_case": f.case_id, "input": f.input, "truth": f.truth})
        if log:
            log(f"[nnunet_raw] {cid}: {image.shape} -> {folder}")
    # nnU-Net requires label 0 to be called "background"; the family's other class names are kept.
    labels = dict(regions["labels"]) if regions else {("background" if i == 0 else str(n)): i
                                                      for i, n in enumerate(class_names)}
    dataset = {"channel_names": {str(i): str(n) for i, n in enumerate(channel_names)}, "labels": labels,
               "numTraining": len(rows), "file_ending": ending, "name": name,
               "description": f"data family {family_name!r} converted by eval.studies.nnunet_raw"}
    if regions:
        dataset["regions_class_order"] = list(regions["regions_class_order"])
    write_json(os.path.join(folder, "dataset.json"), dataset)
    write_json(os.path.join(folder, "cases.json"), rows)
    return RawDataset(folder=folder, dataset_id=dataset_id, name=name, file_ending=ending, cases=rows,
                      spatial_dims=spatial_dims, channel_names=list(channel_names), class_names=list(class_names))


def read_raw_cases(folder: str) -> list[dict]:
    """``cases.json`` of a converted data set (see :func:`convert`)."""
    path = os.path.join(folder, "cases.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{folder}: no cases.json (not written by eval.studies.nnunet_raw.convert)")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def fold_patients(patient_ids, k: int, seed: int = 0) -> list[dict]:
    """``[{"train": [patients], "val": [patients]}]``: the k patient-level folds of the one splitter
    (``patient_kfold``, as ``zoo.training.kfold.patient_folds`` calls it), by patient."""
    ids = [str(p) for p in patient_ids]
    out = []
    for tr, va in patient_kfold(ids, k, seed=seed, name="folds"):
        out.append({"train": sorted({ids[i] for i in tr}), "val": sorted({ids[i] for i in va})})
    return out


def write_splits(preprocessed_folder: str, cases: list[dict], folds: list[dict]) -> list[dict]:
    """nnU-Net's ``splits_final.json`` in ``preprocessed_folder``: per fold the case ids of its train and val
    patients (``folds`` from :func:`fold_patients`). Returns the splits written."""
    by_patient: dict[str, list[str]] = {}
    for c in cases:
        by_patient.setdefault(str(c["patient_id"]), []).append(c["case"])
    splits = []
    for i, f in enumerate(folds):
        missing = [p for p in f["train"] + f["val"] if p not in by_patient]
        if missing:
            raise ValueError(f"fold {i}: patients {missing[:5]} have no converted case")
        splits.append({"train": sorted(c for p in f["train"] for c in by_patient[p]),
                       "val": sorted(c for p in f["val"] for c in by_patient[p])})
    os.makedirs(preprocessed_folder, exist_ok=True)
    write_json(os.path.join(preprocessed_folder, "splits_final.json"), splits)
    return splits
