"""BraTS: case discovery (every naming scheme since 2013), label mapping, and in-memory train/val arrays.

``load_brats(cfg)`` takes the ``data`` section of a training config (``data_dir``, ``spatial_dims``,
``image_size``, ``channels``, ``val_fraction``, ``seed``, ``cache_dir``; optional extras read with
``cfg.get``) and returns ``(train, val, info)`` like the phantoms: ``image [N, *S, C] float32``,
``label [N, *S] int32``, ``instances``, ``patient_id``. The train/val split is by patient
(``cases.split_cases``). Volumes are reoriented to LPS, so 2D slices are axial ``image[:, :, z]``.

BraTS labels are mapped to the phantoms' four classes::

    0 background          <- BraTS 0
    1 necrosis / non-enhancing tumour core  <- BraTS 1 (necrosis) and 3 (non-enhancing, 2013-2015)
    2 oedema              <- BraTS 2
    3 enhancing tumour    <- BraTS 4 (2015-2021), BraTS 3 in the 2023 naming

so the BraTS evaluation regions are ``WT = label > 0``, ``TC = label in {1, 3}``, ``ET = label == 3``
(``scoring.brats_region_channels``). With ``data.brats_regions=True`` the arrays also carry
``regions [N, *S, 3]`` uint8 in the order WT, TC, ET.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
from typing import Sequence

import numpy as np

import scoring
from data_pipelines import cache, geometry, readers
from data_pipelines.cases import (check_channels, check_image_size, crop_to, data_option, is_volume, name_list,
                                  nonnegative_float, select_slices, slices_to_arrays, split_cases, stable_int,
                                  stack_cases, to_canonical)
from data_pipelines.info import DatasetInfo
from data_pipelines.preprocessing import scale_intensity

__all__ = ["BRATS_MODALITIES", "BRATS_PATTERNS", "BRATS_LABEL_MAP", "BRATS2023_LABEL_MAP", "BRATS_CLASS_NAMES",
           "BratsCase", "find_brats_cases", "available_modalities", "read_brats_case", "map_brats_labels",
           "read_cases", "load_brats", "intensity_record", "BRATS_INTENSITY"]

BRATS_MODALITIES = ("FLAIR", "T1", "T1c", "T2")
# Regexes on the lower-case file name; one per modality plus the segmentation and brain mask.
# Covers BraTS 2017-2021 (``_flair``, ``_t1``, ``_t1ce``, ``_t2``, ``_seg``), 2023 (``-t2f``, ``-t1n``,
# ``-t1c``, ``-t2w``, ``-seg``), the 2015 SMIR names (``MR_Flair``, ``MR_T1c``, ``.OT.``) and the DeepMedic
# copies of BraTS 2015 (``Flair_subtrMeanDivStd``, ``T1c_subtrMeanDivStd``, ``OTMultiClass``).
BRATS_PATTERNS = {
    "FLAIR": r"(flair|[-_.]t2f[-_.])",
    "T1": r"(^|[-_.])t1n?[-_.]",
    "T1c": r"(^|[-_.])(t1ce|t1c|t1gd)[-_.]",
    "T2": r"(^|[-_.])t2w?[-_.]",
    "label": r"(([-_.])seg[-_.]|otmulticlass|[-_.]ot[-_.]|glistrboost)",
    "brainmask": r"brainmask",
}
BRATS_LABEL_MAP = {0: 0, 1: 1, 2: 2, 3: 1, 4: 3}
BRATS2023_LABEL_MAP = {0: 0, 1: 1, 2: 2, 3: 3}
BRATS_CLASS_NAMES = ("background", "necrosis/non-enhancing", "oedema", "enhancing")


class BratsCase:
    """One BraTS case: ``patient_id`` and the file of each modality / the label / the brain mask."""

    def __init__(self, patient_id: str, files: dict):
        self.patient_id = patient_id
        self.files = files

    def __repr__(self):
        return f"BratsCase({self.patient_id!r}, {sorted(self.files)})"


def _match_brats(name: str, patterns: dict) -> str | None:
    low = name.lower()
    # The label and mask patterns first ("seg" files must not count as a modality).
    for key in ("label", "brainmask"):
        if key in patterns and re.search(patterns[key], low):
            return key
    hits = [m for m in patterns if m not in ("label", "brainmask") and re.search(patterns[m], low)]
    if len(hits) > 1 and "T1c" in hits and "T1" in hits:
        hits.remove("T1")
    return hits[0] if len(hits) == 1 else None


def find_brats_cases(data_dir: str, patterns: dict | None = None) -> list[BratsCase]:
    """Every folder holding BraTS-named volumes is one case (its name is the patient id), sorted.

    A 2015 SMIR layout (one ``VSD.*`` sub-folder per modality) is folded into its parent folder.
    """
    patterns = patterns or BRATS_PATTERNS
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} is not a directory")
    cases: dict[str, dict] = {}
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            if not is_volume(f):
                continue
            kind = _match_brats(f, patterns)
            if kind is None:
                continue
            case_dir = os.path.dirname(root) if os.path.basename(root).startswith("VSD.") else root
            entry = cases.setdefault(case_dir, {})
            if kind in entry:
                raise ValueError(f"{case_dir}: two files match {kind}: {os.path.basename(entry[kind])} and {f}")
            entry[kind] = os.path.join(root, f)
    out = [BratsCase(os.path.basename(d.rstrip(os.sep)), files) for d, files in sorted(cases.items())]
    if not out:
        raise ValueError(f"data_dir {data_dir!r}: no BraTS cases found (expected files named like "
                         f"*_flair.nii.gz / Flair_subtrMeanDivStd.nii.gz and a segmentation)")
    return out


def available_modalities(cases: Sequence[BratsCase]) -> tuple[str, ...]:
    """Modalities every case has, in the canonical order FLAIR, T1, T1c, T2."""
    return tuple(m for m in BRATS_MODALITIES if all(m in c.files for c in cases))


def map_brats_labels(label: np.ndarray, label_map: dict | None = None, path: str = "label") -> np.ndarray:
    """Raw BraTS labels -> 0..3 (see the module docstring); unknown values raise ``ValueError``."""
    label_map = BRATS_LABEL_MAP if label_map is None else label_map
    raw = np.unique(label)
    stray = [int(v) for v in raw if int(v) not in label_map]
    if stray:
        raise ValueError(f"{path}: label values {stray} outside the expected set {sorted(label_map)}")
    lut = np.zeros(max(label_map) + 1, np.int32)
    for k, v in label_map.items():
        lut[k] = v
    return lut[label.astype(np.int64)]


def read_brats_case(case: BratsCase, modalities: Sequence[str], label_map: dict | None = None,
                    read_mask: bool = False, threads: int = 2):
    """``(image [X, Y, Z, C] float32, label [X, Y, Z] int32 (mapped), meta, brainmask or None)``.

    Raises ``ValueError`` for a missing modality or label, geometry mismatches and stray labels.
    """
    missing = [m for m in list(modalities) + ["label"] if m not in case.files]
    if missing:
        raise ValueError(f"case {case.patient_id}: missing {missing} (found {sorted(case.files)})")
    keys = list(modalities) + ["label"] + (["brainmask"] if read_mask and "brainmask" in case.files else [])

    def read(k):
        if k == "label":
            return readers.read_label(case.files[k])
        return readers.read_image(case.files[k])

    # zlib releases the GIL: read the files of one case concurrently.
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as ex:
        results = dict(zip(keys, ex.map(read, keys)))
    arrays, meta0 = [], results[modalities[0]][1]
    shape0 = results[modalities[0]][0].shape
    for k in keys:
        arr, meta = results[k]
        if arr.ndim - (0 if k == "label" else 1) != 3:
            raise ValueError(f"{case.files[k]}: expected a 3D volume, got shape {arr.shape}")
        geometry.check_same_geometry(shape0, meta0, arr.shape, meta)
        if k in modalities:
            if arr.shape[-1] != 1:
                raise ValueError(f"{case.files[k]}: expected one channel, got {arr.shape[-1]}")
            arrays.append(arr[..., 0].astype(np.float32))
    image = np.stack(arrays, axis=-1)
    if not np.all(np.isfinite(image)):
        raise ValueError(f"case {case.patient_id}: image contains NaN or Inf")
    label = map_brats_labels(results["label"][0], label_map, case.files["label"])
    mask = results["brainmask"][0][..., 0] > 0.5 if "brainmask" in results else None
    # Canonical orientation, so axis 2 runs inferior -> superior and axial slices are image[:, :, z].
    image, meta, label, mask = to_canonical(image, meta0, label, mask)
    return image, label, meta, mask




def _modalities(value) -> tuple[str, ...]:
    """``data.modalities`` -> canonical names (any case: ``flair,t1c`` is ``("FLAIR", "T1c")``)."""
    canon = {m.lower(): m for m in BRATS_MODALITIES}
    names = name_list(value, "modalities")
    unknown = [n for n in names if n.lower() not in canon]
    if unknown:
        raise ValueError(f"data.modalities: unknown {unknown}; expected names from {list(BRATS_MODALITIES)}")
    mods = tuple(canon[n.lower()] for n in names)
    if len(set(mods)) != len(mods):
        raise ValueError(f"data.modalities lists a modality twice: {list(mods)}")
    return mods


def read_cases(cfg):
    """``(cases, modalities, class names)``: every BraTS case in ``cfg.data_dir`` at full resolution
    (``data.modalities`` or every modality all cases have), ``{"patient_id", "image" [*S, C] float32, "label",
    "meta"}`` with the intensities as the files hold them, in LPS (``data_pipelines.families``)."""
    data_dir = cfg.get("data_dir", "")
    found = find_brats_cases(data_dir)
    mods = _modalities(cfg.get("modalities", None)) or available_modalities(found)
    if not mods:
        raise ValueError(f"{data_dir}: no modality is present in every BraTS case")
    out = []
    for c in found:
        image, label, meta, _ = read_brats_case(c, mods)
        out.append({"patient_id": c.patient_id, "image": image, "label": label, "meta": meta})
    return out, tuple(mods), BRATS_CLASS_NAMES


BRATS_INTENSITY = ("none", "zscore_fg")


def intensity_record(cfg) -> dict:
    """The loader's intensity scaling (``data.brats_intensity``): ``none`` (default: the files' values; the
    deepmedic samples are z-scored per brain with a case-specific constant background) or ``zscore_fg``
    (each channel z-scored over the brain, 0 outside: ``data_pipelines.preprocessing.scale_intensity``)."""
    kind = cfg.get("brats_intensity", None) or "none"
    if kind not in BRATS_INTENSITY:
        raise ValueError(f"data.brats_intensity must be one of {BRATS_INTENSITY}, got {kind!r}")
    return {"kind": kind}


def load_brats(cfg):
    """BraTS cases in ``cfg.data_dir`` -> 2D axial slices (or 3D volumes) resized to ``cfg.image_size``.

    Extras (``cfg.get``; ``None`` is the default): ``modalities`` (``"FLAIR,T1c"`` or a list, in that
    channel order; default: all that every case has), ``empty_slice_ratio`` (non-tumour brain slices per
    tumour slice, 0.25), ``max_slices_per_case``, ``brats_regions``, ``brats_intensity`` (:func:`intensity_record`).
    """
    cases = find_brats_cases(cfg.data_dir)
    mods = _modalities(cfg.get("modalities", None)) or available_modalities(cases)
    if not mods:
        raise ValueError(f"{cfg.data_dir}: no modality is present in every case "
                         f"({[sorted(c.files) for c in cases]})")
    nch = check_channels(cfg, mods)
    mods = mods[:nch]
    nd = int(cfg.spatial_dims)
    size = check_image_size(cfg)
    ids = [c.patient_id for c in cases]
    train_ids, val_ids = split_cases(ids, cfg)
    ratio = nonnegative_float(data_option(cfg, "empty_slice_ratio", 0.25), "empty_slice_ratio")
    max_slices = cfg.get("max_slices_per_case", None)
    if max_slices is not None:  # None or 0: no limit
        try:
            ok = not isinstance(max_slices, bool) and int(max_slices) == max_slices and int(max_slices) >= 0
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok:
            raise ValueError(f"data.max_slices_per_case must be a positive int (None: no limit), got {max_slices!r}")
    seed = int(cfg.get("seed", 0))
    want_regions = bool(cfg.get("brats_regions", False))
    cache_dir = cache.cache_dir(cfg)
    scaling = intensity_record(cfg)

    def make(case):
        image, label, meta, _ = read_brats_case(case, mods)
        # Foreground = voxels that differ from the volume's constant background (the brain).
        brain = image[..., 0] != image[..., 0].min()
        image = scale_intensity(image, scaling)
        if nd == 2:
            idx = select_slices(label, brain, ratio, [seed, stable_int(case.patient_id)], 2,
                                int(max_slices) if max_slices else None)
            img, lab, pid = slices_to_arrays(image, label, idx, size, case.patient_id)
        else:
            crop = crop_to(brain)
            img = geometry.resize(image[crop], size)[None].astype(np.float32)
            lab = geometry.resize(label[crop], size, is_label=True)[None].astype(np.int32)
            pid = [case.patient_id]
        return {"image": img, "label": lab, "instances": (lab > 0).astype(np.int32), "patient_id": pid}

    per_case = {}
    for case in cases:
        keys = list(mods) + ["label"]
        files = [case.files[k] for k in keys if k in case.files]
        complete = len(files) == len(keys)
        params = {"loader": "brats/v2", "mods": mods, "size": size, "nd": nd, "ratio": ratio,
                  "max": max_slices, "seed": seed, **({} if scaling["kind"] == "none" else {"scaling": scaling})}
        item = cache.cached_case(cache_dir if complete else None, files, params, lambda c=case: make(c))
        if want_regions:
            item["regions"] = scoring.brats_region_channels(item["label"])
        per_case[case.patient_id] = item
    train = stack_cases([per_case[p] for p in train_ids])
    val = stack_cases([per_case[p] for p in val_ids])
    return train, val, DatasetInfo("brats", 4, tuple(mods), BRATS_CLASS_NAMES, nd)
