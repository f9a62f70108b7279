"""A data set's fingerprint (nnU-Net v2's ``DatasetFingerprintExtractor``, simplified and stated).

:func:`fingerprint` summarises the cases of a data set (median spacing and shape in LPS array order, the shape
of the body mask's bounding box, intensity statistics per channel over the labelled foreground, class
frequencies); :func:`data_pipelines.planner.make_plan` turns it into a plan. :func:`body_mask` (the voxels that
differ from the background) and :func:`lps_perm` (the array axis of each LPS axis) are shared with
:mod:`data_pipelines.preprocessing`, which crops and reorients the same way.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from data_pipelines import readers

__all__ = ["fingerprint", "body_mask", "bbox_shape", "lps_perm", "is_picture", "SAMPLES_PER_CASE"]

SAMPLES_PER_CASE = 10_000  # foreground voxels sampled per case for the intensity statistics (nnU-Net's number)


def is_picture(meta: readers.ImageMeta) -> bool:
    """Whether ``meta`` is a 2D picture without geometry (PNG/JPEG/...: never reoriented or resampled)."""
    return meta.format == "picture"


def lps_perm(meta: readers.ImageMeta) -> list[int]:
    """Input axis of each LPS output axis (what ``geometry.reorient(..., "LPS")`` permutes)."""
    if meta.ndim != 3 or is_picture(meta):
        return list(range(meta.ndim))
    d = meta.direction_matrix
    world = [int(np.argmax(np.abs(d[:, a]))) for a in range(3)]
    if sorted(world) != [0, 1, 2]:
        raise ValueError(f"{meta.path or 'image'}: oblique direction {d.tolist()} cannot be reoriented by axis flips")
    return [world.index(w) for w in range(3)]


def body_mask(image: np.ndarray) -> np.ndarray:
    """``[*S]`` bool: voxels where any channel differs from that channel's minimum (the background)."""
    flat = image.reshape(-1, image.shape[-1])
    return np.any(image != flat.min(axis=0), axis=-1)


def bbox_shape(mask: np.ndarray) -> list[int]:
    """Extent of the bounding box of ``mask``'s true voxels per axis (the full axis where it has none)."""
    nz = [np.flatnonzero(np.any(mask, axis=tuple(b for b in range(mask.ndim) if b != a))) for a in range(mask.ndim)]
    return [int(v[-1] - v[0] + 1) if len(v) else int(n) for v, n in zip(nz, mask.shape)]


def fingerprint(cases: Iterable) -> dict:
    """Summary of a data set. ``cases``: ``(image [*S, C] float32, label [*S] int or None, meta)`` triples.

    Returns a JSON-able dict: ``num_cases``, ``spatial_dims``, ``num_channels``, ``pictures`` (all cases are
    2D pictures without geometry), per case ``spacings`` / ``shapes`` / ``cropped_shapes`` (LPS order, the
    crop = the body mask's bounding box), ``median_spacing`` / ``median_shape`` / ``median_cropped_shape``,
    ``intensity`` (per channel ``mean``, ``std``, ``min``, ``max``, ``median``, ``percentile_00_5``,
    ``percentile_99_5`` over up to 10,000 labelled voxels per case, seeded; the body mask when a case has no
    label or no labelled voxel), ``class_frequencies`` (fraction of all voxels per label value 0..K-1) and
    ``total_voxels``.
    """
    spacings, shapes, cropped, samples, counts, pictures = [], [], [], [], None, []
    nd = nch = None
    total = 0
    for i, case in enumerate(cases):
        image, label, meta = case
        image = np.asarray(image)
        if image.ndim != meta.ndim + 1:
            raise ValueError(f"case {i} ({meta.path or 'array'}): image {image.shape} is not [*S, C] with "
                             f"{meta.ndim} spatial axes")
        if nd is None:
            nd, nch = meta.ndim, image.shape[-1]
        elif meta.ndim != nd or image.shape[-1] != nch:
            raise ValueError(f"case {i} ({meta.path or 'array'}): {meta.ndim}D with {image.shape[-1]} channels, "
                             f"but the first case is {nd}D with {nch}")
        perm = lps_perm(meta)
        pictures.append(is_picture(meta))
        spacings.append([float(meta.spacing[p]) for p in perm])
        shapes.append([int(image.shape[p]) for p in perm])
        body = body_mask(image)
        bb = bbox_shape(body)
        cropped.append([bb[p] for p in perm])
        total += int(body.size)
        fg = None
        if label is not None:
            label = np.asarray(label)
            if label.shape != image.shape[:-1]:
                raise ValueError(f"case {i}: label {label.shape} does not match image {image.shape[:-1]}")
            if label.size and label.min() < 0:
                raise ValueError(f"case {i}: negative label values {int(label.min())}")
            c = np.bincount(label.reshape(-1).astype(np.int64))
            counts = c if counts is None else np.pad(counts, (0, max(len(c) - len(counts), 0))) + \
                np.pad(c, (0, max(len(counts) - len(c), 0)))
            fg = label > 0
        if fg is None or not fg.any():
            fg = body if body.any() else np.ones(body.shape, bool)
        idx = np.flatnonzero(fg)
        rng = np.random.default_rng([len(idx), i])
        if len(idx) > SAMPLES_PER_CASE:
            idx = np.sort(rng.choice(idx, SAMPLES_PER_CASE, replace=False))
        samples.append(image.reshape(-1, nch)[idx].astype(np.float64))
    if nd is None:
        raise ValueError("fingerprint: no cases")
    vals = np.concatenate(samples)
    intensity = []
    for c in range(nch):
        v = vals[:, c]
        intensity.append({"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()),
                          "max": float(v.max()), "median": float(np.median(v)),
                          "percentile_00_5": float(np.percentile(v, 0.5)),
                          "percentile_99_5": float(np.percentile(v, 99.5))})
    freqs = [] if counts is None else [float(x) for x in counts / counts.sum()]
    return {"num_cases": len(shapes), "spatial_dims": int(nd), "num_channels": int(nch),
            "pictures": bool(all(pictures)), "spacings": spacings, "shapes": shapes, "cropped_shapes": cropped,
            "median_spacing": [float(v) for v in np.median(np.asarray(spacings), axis=0)],
            "median_shape": [float(v) for v in np.median(np.asarray(shapes), axis=0)],
            "median_cropped_shape": [float(v) for v in np.median(np.asarray(cropped), axis=0)],
            "intensity": intensity, "class_frequencies": freqs, "total_voxels": int(total)}
