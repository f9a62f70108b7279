"""CT: LUNA16 (``subset*/<seriesuid>.mhd`` + ``annotations.csv``) and labelled CT volumes, in-memory arrays.

``load_luna16(cfg)`` takes the ``data`` section of a training config (``data_dir``, ``spatial_dims``,
``image_size``, ``channels``, ``val_fraction``, ``seed``, ``cache_dir``; extras ``hu_window``,
``empty_slice_ratio`` read with ``cfg.get``, ``None`` meaning the default) and returns ``(train, val, info)``:
HU-windowed (``kernels.intensity.ct_window``) ``image [N, *S, 1] float32`` in [0, 1], nodule
``label [N, *S] int32``, ``instances`` (one id per nodule), ``patient_id``. :func:`read_cases` gives the cases
at full resolution in Hounsfield units (patch training, planning). Volumes are reoriented to LPS, so 2D slices are
axial ``image[:, :, z]``.
"""

from __future__ import annotations

import csv
import os
import re

import numpy as np

from data_pipelines import cache, geometry, readers
from data_pipelines.cases import (check_channels, check_image_size, data_option, nonnegative_float, select_slices,
                                  slices_to_arrays, split_cases, stable_int, stack_cases, to_canonical)
from data_pipelines.info import DatasetInfo
from kernels.intensity import ct_window, window_center_width

__all__ = ["HU_WINDOW", "hu_window_option", "loader_hu_window", "read_luna_annotations", "nodule_mask",
           "find_ct_cases", "read_ct_case", "read_cases", "load_luna16"]

HU_WINDOW = (-1000.0, 400.0)  # the lung phantoms' window


def read_luna_annotations(path: str) -> dict[str, list[tuple[np.ndarray, float]]]:
    """LUNA16 ``annotations.csv`` -> ``{seriesuid: [(centre_xyz_mm, diameter_mm), ...]}``."""
    out: dict[str, list] = {}
    with open(path, newline="", encoding="utf-8") as f:
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
        from scipy import ndimage  # only labelled CT needs it

        inst, _ = ndimage.label(lab > 0)
        inst = inst.astype(np.int32)
    else:
        lab, inst = nodule_mask(img.shape[:3], meta, case["nodules"])
    hu = img[..., 0].astype(np.float32)
    hu4, meta, lab, inst = to_canonical(hu[..., None], meta, lab, inst)
    hu = hu4[..., 0]
    if spacing is not None:
        hu4, meta2 = geometry.resample_to_spacing(hu[..., None], meta, spacing)
        lab, _ = geometry.resample_to_spacing(lab, meta, spacing, is_label=True)
        inst, _ = geometry.resample_to_spacing(inst, meta, spacing, is_label=True)
        hu, meta = hu4[..., 0], meta2
    return hu, lab, inst, meta


def hu_window_option(value) -> tuple[float, float]:
    """``data.hu_window``: ``(lo, hi)`` or the command-line string ``"-1000,400"``, finite with hi > lo."""
    try:
        parts = value.split(",") if isinstance(value, str) else list(value)
        window = tuple(float(v) for v in parts)
    except (TypeError, ValueError):
        raise ValueError(f"data.hu_window must be two numbers (lo, hi), got {value!r}") from None
    if len(window) != 2 or not all(np.isfinite(window)) or not window[1] > window[0]:
        raise ValueError(f"data.hu_window must be two finite numbers (lo, hi) with hi > lo, got {value!r}")
    return window


def loader_hu_window(cfg) -> tuple[float, float]:
    """The HU window ``load_luna16`` maps to [0, 1]: ``data.hu_window``, or ``HU_WINDOW`` when unset."""
    return hu_window_option(data_option(cfg, "hu_window", HU_WINDOW))


def read_cases(cfg):
    """``(cases, ("CT",), class names)``: every CT case in ``cfg.data_dir`` at full resolution in Hounsfield
    units, ``{"patient_id", "image" [X, Y, Z, 1] float32, "label", "meta"}``, in LPS."""
    out = []
    for c in find_ct_cases(cfg.get("data_dir", "")):
        hu, lab, _, meta = read_ct_case(c)
        out.append({"patient_id": c["patient_id"], "image": hu[..., None], "label": lab, "meta": meta})
    return out, ("CT",), ("background", "nodule")


def load_luna16(cfg):
    """LUNA16-style CT (or labelled CT volumes) -> HU-windowed 2D axial slices with nodule masks."""
    cases = find_ct_cases(cfg.data_dir)
    nd = int(cfg.spatial_dims)
    size = check_image_size(cfg)
    check_channels(cfg, ("CT",))
    ids = [c["patient_id"] for c in cases]
    train_ids, val_ids = split_cases(ids, cfg)
    window = loader_hu_window(cfg)
    center, width = window_center_width(window)
    ratio = nonnegative_float(data_option(cfg, "empty_slice_ratio", 0.5), "empty_slice_ratio")
    seed = int(cfg.get("seed", 0))
    cache_dir = cache.cache_dir(cfg)

    def make(case):
        hu, lab, inst, _ = read_ct_case(case)
        img = ct_window(hu[..., None], center, width)
        if nd == 2:
            idx = select_slices(lab, hu > -500, ratio, [seed, stable_int(case["patient_id"])], 2)
            im, lb, pid = slices_to_arrays(img, lab, idx, size, case["patient_id"])
            _, ins, _ = slices_to_arrays(img, inst, idx, size, case["patient_id"])
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
        per_case[case["patient_id"]] = cache.cached_case(cache_dir, files, params, lambda c=case: make(c))
    train = stack_cases([per_case[p] for p in train_ids])
    val = stack_cases([per_case[p] for p in val_ids])
    return train, val, DatasetInfo("luna16", 2, ("CT",), ("background", "nodule"), nd)
