"""2D image/mask pairs from a folder: ISIC / PH2 dermoscopy and generic folders (CXR, EM), in-memory arrays.

``load_isic(cfg)`` and ``load_folder(cfg)`` take the ``data`` section of a training config
(``data_dir``, ``spatial_dims=2``, ``image_size``, ``channels``, ``val_fraction``, ``seed``; optional
extras read with ``cfg.get``: ``patient_column``, ``allow_unpaired``, ``mask_foreground``) and return
``(train, val, info)``: ``image [N, H, W, C] float32`` in [0, 1], ``label [N, H, W] int32`` in {0, 1},
``instances``, ``patient_id``. :func:`read_isic_cases` / :func:`read_folder_cases` give the same pairs at full
resolution with their pixel values as read (patch training, planning). The split is by patient
(``metadata.csv``'s patient column when present, else one patient per image).
"""

from __future__ import annotations

import csv
import os
import warnings

import numpy as np

from data_pipelines import geometry, readers, splits
from data_pipelines.cases import check_channels
from data_pipelines.info import DatasetInfo

__all__ = ["UnpairedWarning", "find_image_mask_pairs", "read_metadata_csv", "read_pair", "read_pair_cases",
           "read_isic_cases", "read_folder_cases", "load_isic", "load_folder"]

_MASK_SUFFIXES = ("_segmentation", "_Segmentation", "_mask", "_lesion", "_label", "_seg")


def _lossy(path: str) -> bool:
    return path.lower().endswith((".jpg", ".jpeg"))


class UnpairedWarning(UserWarning):
    """Images without a mask, or masks without an image, skipped because ``data.allow_unpaired`` is set."""


# Pictures the supported layouts ship beside the pairs that are neither images nor masks of the data set:
# ISIC 2016-2017 superpixel maps and PH2's colour-region (``<id>_roi/``) folders.
_AUXILIARY_STEMS = ("_superpixels",)
_AUXILIARY_DIRS = ("_roi",)


def _is_auxiliary(path: str) -> bool:
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem.endswith(_AUXILIARY_STEMS) or os.path.basename(os.path.dirname(path)).endswith(_AUXILIARY_DIRS)


def _report_unpaired(data_dir: str, images: list[str], masks: list[str], allow_unpaired: bool) -> None:
    if not images and not masks:
        return
    parts = ([f"{len(images)} image(s) without a mask: {', '.join(images[:10])}{', ...' if len(images) > 10 else ''}"]
             if images else []) + \
            ([f"{len(masks)} mask(s) without an image: {', '.join(masks[:10])}{', ...' if len(masks) > 10 else ''}"]
             if masks else [])
    if not allow_unpaired:
        raise ValueError(f"data_dir {data_dir!r}: {'; '.join(parts)} (set data.allow_unpaired=True to train on "
                         f"the pairs only)")
    warnings.warn(f"data_dir {data_dir!r}: skipping {'; '.join(parts)}", UnpairedWarning, stacklevel=3)


def find_image_mask_pairs(data_dir: str, allow_unpaired: bool = False) -> list[tuple[str, str, str]]:
    """``(id, image_path, mask_path)`` for 2D pairs, sorted by id.

    Layouts: ``<id>.<ext>`` + ``<id>{_mask,_segmentation,_Segmentation,_lesion,_label,_seg}.<ext>``
    anywhere below ``data_dir`` (ISIC 2016-2018, PH2 folders, flat copies), or parallel folders
    ``image(s)/<name>`` + ``label(s)|mask(s)/<name>`` (e.g. ISBI EM).

    An image without a mask or a mask without an image raises ``ValueError`` listing them; with
    ``allow_unpaired=True`` they are skipped with an ``UnpairedWarning`` naming each. ISIC superpixel maps
    and PH2 ``*_roi/`` pictures are neither.
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
    mask_bases: dict[str, str] = {}  # mask path -> the id it names
    for path, f in pics.items():
        stem = os.path.splitext(f)[0]
        for suf in _MASK_SUFFIXES:
            if stem.endswith(suf) and stem[: -len(suf)]:
                mask_bases.setdefault(path, stem[: -len(suf)])
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
    if pairs:
        lone_masks = [p for p, base in mask_bases.items() if base not in pairs and not _is_auxiliary(p)]
        lone_images = [p for p, f in pics.items() if p not in mask_bases and os.path.splitext(f)[0] not in pairs
                       and not _is_auxiliary(p)]
        _report_unpaired(data_dir, lone_images, lone_masks, allow_unpaired)
    if not pairs:  # parallel folders
        for img_dir, mask_dir in (("image", "label"), ("images", "masks"), ("image", "mask"), ("images", "labels")):
            a, b = os.path.join(data_dir, img_dir), os.path.join(data_dir, mask_dir)
            if os.path.isdir(a) and os.path.isdir(b):
                lone_images = []
                for f in sorted(os.listdir(a)):
                    if f.lower().endswith(readers.PICTURE_SUFFIXES):
                        m = os.path.join(b, f)
                        if not os.path.exists(m):
                            lone_images.append(os.path.join(a, f))
                            continue
                        pairs[os.path.splitext(f)[0]] = (os.path.splitext(f)[0], os.path.join(a, f), m)
                lone_masks = [os.path.join(b, f) for f in sorted(os.listdir(b))
                              if f.lower().endswith(readers.PICTURE_SUFFIXES) and not os.path.exists(os.path.join(a, f))]
                _report_unpaired(data_dir, lone_images, lone_masks, allow_unpaired)
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
    with open(path, newline="", encoding="utf-8") as f:
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


def _check_same_channels(paths: list[str], channels: list[int]) -> int:
    """The channel count all images share; else ``ValueError`` naming the images that differ from the
    majority (a grayscale picture among RGB ones is named, whichever comes first)."""
    counts: dict[int, int] = {}
    for c in channels:
        counts[c] = counts.get(c, 0) + 1
    if len(counts) == 1:
        return channels[0]
    # The most common count (ties: the first one seen) is the data set's; the others are the odd ones.
    common = max(counts, key=lambda c: (counts[c], -channels.index(c)))
    odd = [(p, c) for p, c in zip(paths, channels) if c != common]
    if len(odd) == 1:
        p, c = odd[0]
        raise ValueError(f"{p}: {c} channel(s) but the other {counts[common]} image(s) have {common}")
    listed = ", ".join(f"{p} ({c})" for p, c in odd[:10])
    raise ValueError(f"{len(odd)} images differ in channel count from the other {counts[common]} ({common} "
                     f"channel(s)): {listed}{', ...' if len(odd) > 10 else ''}")


def _load_pairs(cfg, name: str, class_names, foreground: str = "nonzero"):
    pairs = find_image_mask_pairs(cfg.data_dir, allow_unpaired=bool(cfg.get("allow_unpaired", False)))
    meta = read_metadata_csv(cfg.data_dir)
    size = tuple(int(s) for s in cfg.image_size)
    if int(cfg.spatial_dims) != 2 or len(size) != 2:
        raise ValueError(f"{name} is a 2D data set: use data.spatial_dims=2 and a 2-entry data.image_size "
                         f"(got {cfg.spatial_dims}, {size})")
    pid_col = cfg.get("patient_column", "patientid")
    pids = [str(meta.get(i, {}).get(pid_col) or i) for i, _, _ in pairs]
    images, labels, channels = [], [], []
    for (i, ip, mp) in pairs:
        img, lab = read_pair(ip, mp, foreground)
        channels.append(img.shape[-1])
        images.append(geometry.resize(img, size))
        labels.append(geometry.resize(lab, size, is_label=True))
    nchan = _check_same_channels([ip for _, ip, _ in pairs], channels)
    names = ("R", "G", "B") if nchan == 3 else ("gray",)
    n = check_channels(cfg, names)
    image = np.stack(images)[..., :n].astype(np.float32)
    label = np.stack(labels).astype(np.int32)
    tr, va = splits.patient_split(pids, float(cfg.get("val_fraction", 0.2)), int(cfg.get("seed", 0)))
    arrays = {"image": image, "label": label, "instances": label.copy()}

    def take(idx):
        out = {k: v[idx] for k, v in arrays.items()}
        out["patient_id"] = [pids[j] for j in idx]
        return out

    return take(tr), take(va), DatasetInfo(name, 2, tuple(names[:n]), tuple(class_names), 2)


def read_pair_cases(cfg, name: str, class_names, foreground: str = "nonzero"):
    """``(cases, channel names, class names)``: every pair at full resolution, ``{"patient_id", "image"
    [H, W, C] float32, "label", "meta"}`` with the pixel values as ``readers.read_image`` gives them (what
    ``zoo.prediction`` passes to ``preprocess_case``; the RGB plan scales them, 0..255 -> 0..1); an alpha
    channel is dropped as :func:`read_pair` does."""
    data_dir = cfg.get("data_dir", "")
    pairs = find_image_mask_pairs(data_dir, allow_unpaired=bool(cfg.get("allow_unpaired", False)))
    out = []
    for pid, ip, mp in pairs:
        _, lab = read_pair(ip, mp, foreground)  # its checks and foreground rule
        img, meta = readers.read_image(ip)
        img = np.ascontiguousarray(img[..., :3] if img.shape[-1] == 4 else img, dtype=np.float32)
        out.append({"patient_id": pid, "image": img, "label": lab, "meta": meta})
    nch = {c["image"].shape[-1] for c in out}
    if len(nch) != 1:
        raise ValueError(f"{data_dir}: images differ in channel count {sorted(nch)}")
    names = ("R", "G", "B") if nch == {3} else ("gray",) if nch == {1} else tuple(f"channel{i}" for i in
                                                                              range(nch.pop()))
    return out, names, tuple(class_names)


def read_isic_cases(cfg):
    """ISIC / PH2 pairs at full resolution (:func:`read_pair_cases`; lesion = mask > 0)."""
    return read_pair_cases(cfg, "isic", ("skin", "lesion"))


def read_folder_cases(cfg):
    """Generic pairs at full resolution (:func:`read_pair_cases`; ``data.mask_foreground``)."""
    return read_pair_cases(cfg, "folder", ("background", "foreground"),
                           _mask_foreground(cfg.get("mask_foreground", "nonzero") or "nonzero"))


def _mask_foreground(fg) -> str:
    if fg not in ("nonzero", "zero"):
        raise ValueError(f"data.mask_foreground must be 'nonzero' or 'zero', got {fg!r}")
    return fg


def load_isic(cfg):
    """ISIC / PH2-style dermoscopy pairs -> RGB images in [0, 1] and lesion masks (0 skin, 1 lesion)."""
    return _load_pairs(cfg, "isic", ("skin", "lesion"))


def load_folder(cfg):
    """Generic 2D image/mask pairs (e.g. shared/data/cxr, em). ``cfg.get("mask_foreground")``:
    ``nonzero`` (default) or ``zero`` (e.g. EM membranes, stored as 0)."""
    return _load_pairs(cfg, "folder", ("background", "foreground"),
                       _mask_foreground(cfg.get("mask_foreground", "nonzero")))
