"""Real data sets from a folder: case discovery, label conventions, and in-memory train/val arrays.

``load_brats(cfg)``, ``load_isic(cfg)``, ``load_luna16(cfg)``, ``load_folder(cfg)`` take the ``data``
section of a training config (``data_dir``, ``spatial_dims``, ``image_size``, ``channels``,
``val_fraction``, ``seed``; optional extras read with ``cfg.get``) and return ``(train, val, info)``
like the phantoms: ``image [N, *S, C] float32``, ``label [N, *S] int32``, ``instances``, ``patient_id``.
The train/val split is by patient (``data_pipelines.splits.patient_split``). Volumes are reoriented
to LPS (``geometry.reorient``), so 2D slices are axial ``image[:, :, z]``.

BraTS labels are mapped to the phantoms' four classes::

    0 background          <- BraTS 0
    1 necrosis / non-enhancing tumour core  <- BraTS 1 (necrosis) and 3 (non-enhancing, 2013-2015)
    2 oedema              <- BraTS 2
    3 enhancing tumour    <- BraTS 4 (2015-2021), BraTS 3 in the 2023 naming

so the BraTS evaluation regions are ``WT = label > 0``, ``TC = label in {1, 3}``, ``ET = label == 3``
(``brats_regions``). With ``data.brats_regions=True`` the arrays also carry ``regions [N, *S, 3]``.
"""

from __future__ import annotations

import concurrent.futures
import csv
import os
import re
from typing import Sequence

import numpy as np

from data_pipelines import geometry, readers, splits

__all__ = ["BRATS_MODALITIES", "BRATS_PATTERNS", "BRATS_LABEL_MAP", "BRATS2023_LABEL_MAP", "BratsCase",
           "find_brats_cases", "read_brats_case", "map_brats_labels", "brats_regions", "find_image_mask_pairs",
           "find_ct_cases", "read_luna_annotations", "nodule_mask", "hu_window", "load_brats", "load_isic",
           "load_luna16", "load_folder", "DATASETS"]

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
HU_WINDOW = (-1000.0, 400.0)  # the lung phantoms' window
CANONICAL = "LPS"  # volumes are reoriented to this (array axes point to patient left, posterior, superior)


def _is_volume(name: str) -> bool:
    return name.lower().endswith(readers.VOLUME_SUFFIXES)


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
            if not _is_volume(f):
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


def brats_regions(label: np.ndarray) -> np.ndarray:
    """Mapped labels ``[*S]`` -> the BraTS regions ``[*S, 3]`` uint8: whole tumour, tumour core, enhancing."""
    return np.stack([label > 0, (label == 1) | (label == 3), label == 3], axis=-1).astype(np.uint8)


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
    image, meta, label, mask = _to_canonical(image, meta0, label, mask)
    return image, label, meta, mask


def _to_canonical(image, meta, label, mask=None, target: str = CANONICAL):
    if geometry.orientation_code(meta) == target:
        return image, meta, label, mask
    image2, meta2 = geometry.reorient(image, meta, target)
    label2, _ = geometry.reorient(label, meta, target, is_label=True)
    mask2 = None if mask is None else geometry.reorient(mask, meta, target, is_label=True)[0]
    return image2, meta2, label2, mask2


def select_slices(label: np.ndarray, foreground: np.ndarray, empty_ratio: float, seed, axis: int = 2,
                  max_slices: int | None = None) -> np.ndarray:
    """Indices along ``axis``: every slice with label > 0, plus ``empty_ratio`` times as many others
    drawn (seeded) from slices that contain ``foreground`` (e.g. brain), sorted."""
    other_axes = tuple(a for a in range(label.ndim) if a != axis)
    has_lab = np.any(label > 0, axis=other_axes)
    has_fg = np.any(foreground, axis=other_axes)
    tumour = np.flatnonzero(has_lab)
    others = np.flatnonzero(has_fg & ~has_lab)
    if not len(others) and not len(tumour):  # nothing to anchor on (e.g. a scan without body above -500 HU)
        others = np.flatnonzero(~has_lab)
    n_extra = min(len(others), int(round(empty_ratio * max(len(tumour), 1))))
    rng = np.random.default_rng(seed)
    extra = rng.choice(others, n_extra, replace=False) if n_extra else np.zeros(0, np.int64)
    idx = np.sort(np.concatenate([tumour, extra]).astype(np.int64))
    if max_slices is not None and len(idx) > max_slices:
        idx = idx[np.linspace(0, len(idx) - 1, max_slices).round().astype(int)]
    return idx


def _slices_to_arrays(image, label, idx, size, pid, axis=2):
    """Axial slices ``idx`` of ``image [X, Y, Z, C]`` resized to ``size`` -> ``[n, h, w, C]``, ``[n, h, w]``."""
    img = np.moveaxis(np.take(image, idx, axis=axis), axis, 2)  # [X, Y, n, C]
    lab = np.moveaxis(np.take(label, idx, axis=axis), axis, 2)
    h, w = size
    img = geometry.resize(img, (h, w, len(idx)))
    lab = geometry.resize(lab, (h, w, len(idx)), is_label=True)
    return (np.ascontiguousarray(np.moveaxis(img, 2, 0), dtype=np.float32),
            np.ascontiguousarray(np.moveaxis(lab, 2, 0), dtype=np.int32), [pid] * len(idx))


def _crop_to(mask: np.ndarray, margin: int = 2):
    nz = np.argwhere(mask)
    if not len(nz):
        return tuple(slice(None) for _ in mask.shape)
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _stack(items: list[dict]) -> dict:
    out = {}
    for k in items[0]:
        if k == "patient_id":
            out[k] = [p for it in items for p in it[k]]
        else:
            out[k] = np.concatenate([it[k] for it in items])
    return out


def _cache_dir(cfg) -> str | None:
    d = cfg.get("cache_dir", None)
    if d is None:
        d = os.environ.get("MEDZOO_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "medzoo", "real"))
    return None if str(d).lower() in ("", "none", "off") else str(d)


def _cached_case(cache_dir: str | None, files: Sequence[str], params: dict, make):
    """Per-case result of ``make()`` cached as ``.npz`` under ``cache_dir``, keyed by the files'
    paths, sizes and mtimes and by ``params`` (decompressing NIfTI dominates loading time)."""
    if cache_dir is None:
        return make()
    import hashlib
    import json

    stat = [(os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)) for f in sorted(files)]
    key = hashlib.sha1(json.dumps([stat, params], sort_keys=True, default=str).encode()).hexdigest()[:20]
    path = os.path.join(cache_dir, key + ".npz")
    if os.path.exists(path):
        try:
            with np.load(path, allow_pickle=False) as z:
                out = {k: z[k] for k in z.files}
            out["patient_id"] = [str(p) for p in out["patient_id"]]
            return out
        except Exception:  # a corrupt cache entry: rebuild it
            pass
    out = make()
    try:
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **{k: (np.asarray(v) if k != "patient_id" else np.asarray(v, dtype=str))
                         for k, v in out.items()})
        os.replace(tmp, path)
    except OSError:
        pass  # read-only home: just do not cache
    return out


def _stable_int(text: str) -> int:
    import zlib

    return zlib.crc32(text.encode())


def _split_cases(ids: Sequence[str], cfg):
    tr, va = splits.patient_split(ids, float(cfg.get("val_fraction", 0.2)), int(cfg.get("seed", 0)))
    return [ids[i] for i in tr], [ids[i] for i in va]


def _info(name, num_classes, channels, classes, nd):
    from data_pipelines.datasets import DatasetInfo

    return DatasetInfo(name, num_classes, tuple(channels), tuple(classes), nd)


def _channels(cfg, names: Sequence[str]) -> int:
    n = int(cfg.get("channels", 0) or 0)
    if n < 0 or n > len(names):
        raise ValueError(f"data.channels={n} but the data set has {len(names)} channels {tuple(names)}")
    return n or len(names)


def load_brats(cfg):
    """BraTS cases in ``cfg.data_dir`` -> 2D axial slices (or 3D volumes) resized to ``cfg.image_size``.

    Extras (``cfg.get``): ``modalities`` (default: all that every case has), ``empty_slice_ratio``
    (non-tumour brain slices per tumour slice, 0.25), ``max_slices_per_case``, ``brats_regions``.
    """
    cases = find_brats_cases(cfg.data_dir)
    mods = tuple(cfg.get("modalities", None) or available_modalities(cases))
    if not mods:
        raise ValueError(f"{cfg.data_dir}: no modality is present in every case "
                         f"({[sorted(c.files) for c in cases]})")
    nch = _channels(cfg, mods)
    mods = mods[:nch]
    nd = int(cfg.spatial_dims)
    size = tuple(int(s) for s in cfg.image_size)
    if len(size) != nd:
        raise ValueError(f"data.image_size {size} does not have data.spatial_dims={nd} entries")
    ids = [c.patient_id for c in cases]
    train_ids, val_ids = _split_cases(ids, cfg)
    ratio = float(cfg.get("empty_slice_ratio", 0.25))
    max_slices = cfg.get("max_slices_per_case", None)
    seed = int(cfg.get("seed", 0))
    want_regions = bool(cfg.get("brats_regions", False))
    cache_dir = _cache_dir(cfg)

    def make(case):
        image, label, meta, _ = read_brats_case(case, mods)
        # Foreground = voxels that differ from the volume's constant background (the brain).
        brain = image[..., 0] != image[..., 0].min()
        if nd == 2:
            idx = select_slices(label, brain, ratio, [seed, _stable_int(case.patient_id)], 2,
                                int(max_slices) if max_slices else None)
            img, lab, pid = _slices_to_arrays(image, label, idx, size, case.patient_id)
        else:
            crop = _crop_to(brain)
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
                  "max": max_slices, "seed": seed}
        item = _cached_case(cache_dir if complete else None, files, params, lambda c=case: make(c))
        if want_regions:
            item["regions"] = brats_regions(item["label"])
        per_case[case.patient_id] = item
    train = _stack([per_case[p] for p in train_ids])
    val = _stack([per_case[p] for p in val_ids])
    return train, val, _info("brats", 4, mods, BRATS_CLASS_NAMES, nd)


# --------------------------------------------------------------------------- image/mask pairs

_MASK_SUFFIXES = ("_segmentation", "_Segmentation", "_mask", "_lesion", "_label", "_seg")


def _lossy(path: str) -> bool:
    return path.lower().endswith((".jpg", ".jpeg"))


def find_image_mask_pairs(data_dir: str) -> list[tuple[str, str, str]]:
    """``(id, image_path, mask_path)`` for 2D pairs, sorted by id.

    Layouts: ``<id>.<ext>`` + ``<id>{_mask,_segmentation,_Segmentation,_lesion,_label,_seg}.<ext>``
    anywhere below ``data_dir`` (ISIC 2016-2018, PH2 folders, flat copies), or parallel folders
    ``image(s)/<name>`` + ``label(s)|mask(s)/<name>`` (e.g. ISBI EM).
    """
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} is not a directory")
    pics: dict[str, str] = {}
    for root, dirs, files in os.walk(data_dir, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(readers.PICTURE_SUFFIXES):
                pics[os.path.join(root, f)] = f
    pairs = {}
    stems = {}
    for path, f in pics.items():
        stems.setdefault(os.path.splitext(f)[0], []).append(path)
    for path, f in pics.items():
        stem = os.path.splitext(f)[0]
        for suf in _MASK_SUFFIXES:
            if stem.endswith(suf) and stem[: -len(suf)] in stems:
                base = stem[: -len(suf)]
                images = [p for p in stems[base] if not p.lower().endswith(".jpg") or len(stems[base]) == 1]
                img = sorted(images, key=lambda p: (os.path.dirname(p) != os.path.dirname(path), p))[0]
                if base in pairs:
                    if pairs[base][1] != img:
                        raise ValueError(f"{data_dir}: two images for id {base!r}: {pairs[base][1]}, {img}")
                    # Several masks (PH2 mirrors add lossy .jpg copies): keep the lossless one.
                    if _lossy(path) or not _lossy(pairs[base][2]):
                        break
                pairs[base] = (base, img, path)
                break
    if not pairs:  # parallel folders
        for img_dir, mask_dir in (("image", "label"), ("images", "masks"), ("image", "mask"), ("images", "labels")):
            a, b = os.path.join(data_dir, img_dir), os.path.join(data_dir, mask_dir)
            if os.path.isdir(a) and os.path.isdir(b):
                for f in sorted(os.listdir(a)):
                    if f.lower().endswith(readers.PICTURE_SUFFIXES):
                        m = os.path.join(b, f)
                        if not os.path.exists(m):
                            raise ValueError(f"{os.path.join(a, f)}: no mask {m}")
                        pairs[os.path.splitext(f)[0]] = (os.path.splitext(f)[0], os.path.join(a, f), m)
                break
    if not pairs:
        raise ValueError(f"data_dir {data_dir!r}: no image/mask pairs found (expected <id>.png + <id>_mask.png, "
                         f"ISIC <id>_segmentation.png, or image/ + label/ folders)")
    return [pairs[k] for k in sorted(pairs)]


def read_metadata_csv(data_dir: str) -> dict[str, dict]:
    """``metadata.csv`` in ``data_dir`` keyed by its ``id`` column (empty when absent)."""
    path = os.path.join(data_dir, "metadata.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and "id" not in rows[0]:
        return {}
    return {r["id"]: r for r in rows}


def read_pair(image_path: str, mask_path: str, foreground: str = "nonzero"):
    """``(image [H, W, C] float32 in [0, 1], mask [H, W] int32 in {0, 1})`` with checks."""
    img, _ = readers.read_image(image_path)
    lab, _ = readers.read_label(mask_path)
    if img.shape[:2] != lab.shape:
        raise ValueError(f"{mask_path}: mask shape {lab.shape} does not match image {image_path} {img.shape[:2]}")
    vals = np.unique(lab)
    if not set(vals.tolist()) <= {0, 1, 255}:
        raise ValueError(f"{mask_path}: label values {vals.tolist()[:10]} outside the expected set [0, 1, 255]")
    if img.shape[-1] == 4:
        img = img[..., :3]
    scale = 255.0 if img.dtype == np.uint8 else float(np.iinfo(img.dtype).max) if img.dtype.kind in "ui" else 1.0
    fg = lab > 0 if foreground == "nonzero" else lab == 0
    return img.astype(np.float32) / scale, fg.astype(np.int32)


def _load_pairs(cfg, name: str, class_names, foreground: str = "nonzero"):
    pairs = find_image_mask_pairs(cfg.data_dir)
    meta = read_metadata_csv(cfg.data_dir)
    size = tuple(int(s) for s in cfg.image_size)
    if int(cfg.spatial_dims) != 2 or len(size) != 2:
        raise ValueError(f"{name} is a 2D data set: use data.spatial_dims=2 and a 2-entry data.image_size "
                         f"(got {cfg.spatial_dims}, {size})")
    pid_col = cfg.get("patient_column", "patientid")
    pids = [str(meta.get(i, {}).get(pid_col) or i) for i, _, _ in pairs]
    images, labels = [], []
    nchan = None
    for (i, ip, mp) in pairs:
        img, lab = read_pair(ip, mp, foreground)
        if nchan is None:
            nchan = img.shape[-1]
        elif img.shape[-1] != nchan:
            raise ValueError(f"{ip}: {img.shape[-1]} channels but earlier images have {nchan}")
        images.append(geometry.resize(img, size))
        labels.append(geometry.resize(lab, size, is_label=True))
    names = ("R", "G", "B") if nchan == 3 else ("gray",)
    n = _channels(cfg, names)
    image = np.stack(images)[..., :n].astype(np.float32)
    label = np.stack(labels).astype(np.int32)
    tr, va = splits.patient_split(pids, float(cfg.get("val_fraction", 0.2)), int(cfg.get("seed", 0)))
    arrays = {"image": image, "label": label, "instances": label.copy()}

    def take(idx):
        out = {k: v[idx] for k, v in arrays.items()}
        out["patient_id"] = [pids[j] for j in idx]
        return out

    return take(tr), take(va), _info(name, 2, names[:n], class_names, 2)


def load_isic(cfg):
    """ISIC / PH2-style dermoscopy pairs -> RGB images in [0, 1] and lesion masks (0 skin, 1 lesion)."""
    return _load_pairs(cfg, "isic", ("skin", "lesion"))


def load_folder(cfg):
    """Generic 2D image/mask pairs (e.g. shared/data/cxr, em). ``cfg.get("mask_foreground")``:
    ``nonzero`` (default) or ``zero`` (e.g. EM membranes, stored as 0)."""
    fg = cfg.get("mask_foreground", "nonzero")
    if fg not in ("nonzero", "zero"):
        raise ValueError(f"data.mask_foreground must be 'nonzero' or 'zero', got {fg!r}")
    return _load_pairs(cfg, "folder", ("background", "foreground"), fg)


# --------------------------------------------------------------------------- CT (LUNA16 and labelled CT)

def hu_window(hu: np.ndarray, window=HU_WINDOW) -> np.ndarray:
    """Hounsfield units -> [0, 1] over ``window`` (lo, hi), float32."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must be (lo, hi) with hi > lo, got {window}")
    return np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def read_luna_annotations(path: str) -> dict[str, list[tuple[np.ndarray, float]]]:
    """LUNA16 ``annotations.csv`` -> ``{seriesuid: [(centre_xyz_mm, diameter_mm), ...]}``."""
    out: dict[str, list] = {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        need = {"seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"}
        if not need <= set(reader.fieldnames or ()):
            raise ValueError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
        for n, row in enumerate(reader, start=2):
            try:
                c = np.array([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
                d = float(row["diameter_mm"])
            except ValueError as e:
                raise ValueError(f"{path}: line {n}: non-numeric coordinate or diameter ({e})") from e
            if not np.all(np.isfinite(c)) or not d > 0:
                raise ValueError(f"{path}: line {n}: bad nodule (centre {c.tolist()}, diameter {d})")
            out.setdefault(row["seriesuid"], []).append((c, d))
    return out


def nodule_mask(shape, meta: readers.ImageMeta, nodules) -> tuple[np.ndarray, np.ndarray]:
    """Spheres for ``nodules`` [(centre_world_mm, diameter_mm)] on the voxel grid -> (label, instances).

    LUNA16 coordinates are world mm in the scan's (LPS) frame, as ITK reports origin and direction.
    """
    label = np.zeros(shape, np.int32)
    inst = np.zeros(shape, np.int32)
    grids = None
    for k, (c, d) in enumerate(nodules, start=1):
        v = geometry.world_to_voxel(np.asarray(c)[None], meta)[0]
        r_vox = (d / 2.0) / np.asarray(meta.spacing)
        lo = np.maximum(np.floor(v - r_vox).astype(int), 0)
        hi = np.minimum(np.ceil(v + r_vox).astype(int) + 1, shape)
        if np.any(hi <= lo):
            continue  # outside the scan
        grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        dist = sum(((g - v[i]) * meta.spacing[i]) ** 2 for i, g in enumerate(grids))
        ball = dist <= (d / 2.0) ** 2
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        label[sl][ball] = 1
        inst[sl][ball & (inst[sl] == 0)] = k
    return label, inst


def find_ct_cases(data_dir: str) -> list[dict]:
    """CT cases: ``{"patient_id", "image", "label" (or None), "nodules" (or None), "subset"}``.

    Either LUNA16 (``subset*/<seriesuid>.mhd`` + ``annotations.csv`` beside or above the subsets) or
    labelled volumes ``<id>_image.<ext>`` + ``<id>_label.<ext>`` (e.g. shared/data/lung_ct).
    """
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir!r} is not a directory")
    ann_path = None
    for cand in (os.path.join(data_dir, "annotations.csv"), os.path.join(data_dir, "CSVFILES", "annotations.csv")):
        if os.path.exists(cand):
            ann_path = cand
    cases = []
    if ann_path:
        ann = read_luna_annotations(ann_path)
        for root, dirs, files in os.walk(data_dir, followlinks=True):
            dirs.sort()
            for f in sorted(files):
                if f.lower().endswith(".mhd"):
                    uid = f[:-4]
                    sub = os.path.basename(root)
                    m = re.match(r"subset(\d+)$", sub)
                    cases.append({"patient_id": uid, "image": os.path.join(root, f), "label": None,
                                  "nodules": ann.get(uid, []), "subset": int(m.group(1)) if m else -1})
    else:
        for f in sorted(os.listdir(data_dir)):
            low = f.lower()
            if low.endswith(readers.VOLUME_SUFFIXES) and "_image." in low:
                stem = f[: low.index("_image.")]
                ext = f[low.index("_image.") + len("_image"):]
                lab = os.path.join(data_dir, f"{stem}_label{ext}")
                if not os.path.exists(lab):
                    raise ValueError(f"{os.path.join(data_dir, f)}: no label file {lab}")
                cases.append({"patient_id": stem, "image": os.path.join(data_dir, f), "label": lab,
                              "nodules": None, "subset": -1})
    if not cases:
        raise ValueError(f"data_dir {data_dir!r}: no CT cases found (LUNA16 subset*/<uid>.mhd + annotations.csv, "
                         f"or <id>_image.nrrd + <id>_label.nrrd)")
    return cases


def read_ct_case(case: dict, spacing=None):
    """``(hu [X, Y, Z] float32, label [X, Y, Z] int32 {0,1}, instances, meta)``, optionally resampled."""
    img, meta = readers.read_image(case["image"])
    if img.ndim != 4 or img.shape[-1] != 1:
        raise ValueError(f"{case['image']}: expected a 3D single-channel CT, got shape {img.shape}")
    if case["label"] is not None:
        lab, lmeta = readers.read_label(case["label"], allowed=(0, 1))
        geometry.check_same_geometry(img.shape, meta, lab.shape, lmeta)
        from scipy import ndimage

        inst, _ = ndimage.label(lab > 0)
        inst = inst.astype(np.int32)
    else:
        lab, inst = nodule_mask(img.shape[:3], meta, case["nodules"])
    hu = img[..., 0].astype(np.float32)
    hu4, meta, lab, inst = _to_canonical(hu[..., None], meta, lab, inst)
    hu = hu4[..., 0]
    if spacing is not None:
        hu4, meta2 = geometry.resample_to_spacing(hu[..., None], meta, spacing)
        lab, _ = geometry.resample_to_spacing(lab, meta, spacing, is_label=True)
        inst, _ = geometry.resample_to_spacing(inst, meta, spacing, is_label=True)
        hu, meta = hu4[..., 0], meta2
    return hu, lab, inst, meta


def load_luna16(cfg):
    """LUNA16-style CT (or labelled CT volumes) -> HU-windowed 2D axial slices with nodule masks."""
    cases = find_ct_cases(cfg.data_dir)
    nd = int(cfg.spatial_dims)
    size = tuple(int(s) for s in cfg.image_size)
    if len(size) != nd:
        raise ValueError(f"data.image_size {size} does not have data.spatial_dims={nd} entries")
    _channels(cfg, ("CT",))
    ids = [c["patient_id"] for c in cases]
    train_ids, val_ids = _split_cases(ids, cfg)
    window = tuple(cfg.get("hu_window", HU_WINDOW))
    ratio = float(cfg.get("empty_slice_ratio", 0.5))
    seed = int(cfg.get("seed", 0))
    cache_dir = _cache_dir(cfg)

    def make(case):
        hu, lab, inst, _ = read_ct_case(case)
        img = hu_window(hu, window)[..., None]
        if nd == 2:
            idx = select_slices(lab, hu > -500, ratio, [seed, _stable_int(case["patient_id"])], 2)
            im, lb, pid = _slices_to_arrays(img, lab, idx, size, case["patient_id"])
            _, ins, _ = _slices_to_arrays(img, inst, idx, size, case["patient_id"])
        else:
            im = geometry.resize(img, size)[None]
            lb = geometry.resize(lab, size, is_label=True)[None]
            ins = geometry.resize(inst, size, is_label=True)[None]
            pid = [case["patient_id"]]
        return {"image": im.astype(np.float32), "label": lb.astype(np.int32), "instances": ins.astype(np.int32),
                "patient_id": pid}

    per_case = {}
    for case in cases:
        files = [case["image"]] + ([case["label"]] if case["label"] else [])
        if case["image"].lower().endswith(".mhd"):
            files.append(case["image"][:-4] + ".raw")
        files = [f for f in files if os.path.exists(f)]
        params = {"loader": "luna16/v2", "size": size, "nd": nd, "ratio": ratio, "window": window, "seed": seed,
                  "nodules": [(np.asarray(c).tolist(), d) for c, d in (case["nodules"] or [])]}
        per_case[case["patient_id"]] = _cached_case(cache_dir, files, params, lambda c=case: make(c))
    train = _stack([per_case[p] for p in train_ids])
    val = _stack([per_case[p] for p in val_ids])
    return train, val, _info("luna16", 2, ("CT",), ("background", "nodule"), nd)


DATASETS = {"brats": load_brats, "isic": load_isic, "luna16": load_luna16, "folder": load_folder}
