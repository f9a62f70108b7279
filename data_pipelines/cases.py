"""What the real data sources share: canonical orientation, slice selection, per-case arrays, case splits.

Volumes are reoriented to ``CANONICAL`` (LPS, ``geometry.reorient``), so axis 2 runs inferior -> superior
and 2D axial slices are ``image[:, :, z]``. A source turns each case into a dict of arrays
(``image [n, *S, C]``, ``label [n, *S]``, ..., ``patient_id`` list of ``n``); ``stack_cases`` joins them and
``split_cases`` splits the case ids by patient (``splits.patient_split``).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from data_pipelines import geometry, readers, splits

__all__ = ["CANONICAL", "is_volume", "to_canonical", "select_slices", "slices_to_arrays", "crop_to",
           "stack_cases", "stable_int", "split_cases", "check_channels", "check_image_size", "data_option",
           "name_list", "nonnegative_float"]

CANONICAL = "LPS"  # volumes are reoriented to this (array axes point to patient left, posterior, superior)


def is_volume(name: str) -> bool:
    return name.lower().endswith(readers.VOLUME_SUFFIXES)


def to_canonical(image, meta, label, mask=None, target: str = CANONICAL):
    """``(image, meta, label, mask)`` reoriented to ``target`` (label and mask nearest-neighbour)."""
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


def slices_to_arrays(image, label, idx, size, pid, axis=2):
    """Axial slices ``idx`` of ``image [X, Y, Z, C]`` resized to ``size`` -> ``[n, h, w, C]``, ``[n, h, w]``,
    ``[pid] * n``."""
    img = np.moveaxis(np.take(image, idx, axis=axis), axis, 2)  # [X, Y, n, C]
    lab = np.moveaxis(np.take(label, idx, axis=axis), axis, 2)
    h, w = size
    img = geometry.resize(img, (h, w, len(idx)))
    lab = geometry.resize(lab, (h, w, len(idx)), is_label=True)
    return (np.ascontiguousarray(np.moveaxis(img, 2, 0), dtype=np.float32),
            np.ascontiguousarray(np.moveaxis(lab, 2, 0), dtype=np.int32), [pid] * len(idx))


def crop_to(mask: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """Bounding box of ``mask`` plus ``margin`` voxels (the whole array when ``mask`` is empty)."""
    nz = np.argwhere(mask)
    if not len(nz):
        return tuple(slice(None) for _ in mask.shape)
    lo = np.maximum(nz.min(0) - margin, 0)
    hi = np.minimum(nz.max(0) + margin + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def stack_cases(items: list[dict]) -> dict:
    """Per-case array dicts -> one dict: arrays concatenated along axis 0, ``patient_id`` lists joined."""
    out = {}
    for k in items[0]:
        if k == "patient_id":
            out[k] = [p for it in items for p in it[k]]
        else:
            out[k] = np.concatenate([it[k] for it in items])
    return out


def stable_int(text: str) -> int:
    """A per-case seed that does not change between runs (unlike ``hash``)."""
    return zlib.crc32(text.encode())


def split_cases(ids: Sequence[str], cfg) -> tuple[list[str], list[str]]:
    """Case ids -> ``(train_ids, val_ids)`` by patient, from ``cfg.val_fraction`` and ``cfg.seed``."""
    tr, va = splits.patient_split(ids, float(cfg.get("val_fraction", 0.2)), int(cfg.get("seed", 0)))
    return [ids[i] for i in tr], [ids[i] for i in va]


def check_channels(cfg, names: Sequence[str]) -> int:
    """Channels to keep: ``cfg.channels`` (0: all ``names``); out of range raises ``ValueError``."""
    n = int(cfg.get("channels", 0) or 0)
    if n < 0 or n > len(names):
        raise ValueError(f"data.channels={n} but the data set has {len(names)} channels {tuple(names)}")
    return n or len(names)


def check_image_size(cfg) -> tuple[int, ...]:
    """``cfg.image_size`` as a tuple with ``cfg.spatial_dims`` entries, else ``ValueError``."""
    size = tuple(int(s) for s in cfg.image_size)
    if len(size) != int(cfg.spatial_dims):
        raise ValueError(f"data.image_size {size} does not have data.spatial_dims={cfg.spatial_dims} entries")
    return size


def data_option(cfg, key: str, default):
    """``cfg.get(key)``, or ``default`` when the field is absent or ``None`` (the recipe's "source default")."""
    value = cfg.get(key, None)
    return default if value is None else value


def name_list(value, field: str) -> tuple[str, ...]:
    """A list of names from a config field: a comma-separated string (the command-line form
    ``FLAIR,T1c``) or a sequence; ``None`` / ``""`` -> ``()``."""
    if value is None:
        return ()
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, Sequence):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        raise ValueError(f"data.{field} must be a comma-separated string or a list of names, got {value!r}")
    if any(not isinstance(v, str) or not v for v in items) and items != [""]:
        raise ValueError(f"data.{field} must be a comma-separated list of names, got {value!r}")
    return tuple(v for v in items if v)


def nonnegative_float(value, field: str) -> float:
    """``value`` as a finite float >= 0, else ``ValueError`` naming ``data.<field>``."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"data.{field} must be a number >= 0, got {value!r}") from None
    if not (out >= 0 and out != float("inf")):
        raise ValueError(f"data.{field} must be a finite number >= 0, got {value!r}")
    return out
