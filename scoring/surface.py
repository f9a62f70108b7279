"""Surface distances between binary masks, computed once and reduced into HD, HD95, ASSD and surface Dice.

Conventions (MedPy >= 0.5):
  * The **surface** of a mask is the mask minus its binary erosion by the face-connected
    structuring element (``scipy.ndimage.generate_binary_structure(ndim, 1)``: 4-neighbourhood
    in 2D, 6 in 3D), eroded with ``border_value=0`` so foreground voxels on the image border
    are surface voxels.
  * The distance from a surface voxel of A to B is the Euclidean distance, with voxel
    ``spacing``, to the nearest surface voxel of B (``scipy.ndimage.distance_transform_edt`` of
    the complement of B's surface with ``sampling=spacing``).
  * ``hausdorff`` is the maximum and ``hd95`` the 95th percentile (``np.percentile``, linear) of
    the distances **pooled from both directions**; ``assd`` is the mean of all those distances
    taken together. ``directed=True`` uses only prediction → target distances. ``surface_dice``
    is the normalised surface Dice at ``tolerance`` (Nikolov et al. 2018), counting surface
    voxels of both masks. Both masks empty → ``empty_value`` (NaN); exactly one empty →
    ``one_empty_value`` (``inf`` for the distances, 0 for ``surface_dice``).

One computation per (prediction, reference): :func:`surface_distances` returns the two directed
distance arrays, and :func:`reduce_surface_distances` turns them into any of the four metrics, so
:func:`surface_metrics` (and ``scoring.binary_metrics``) run the distance transforms once for all
of them. The transforms run on the bounding box of both masks grown by one voxel and clipped to
the image: every surface voxel and every voxel its erosion looks at lies inside it, and where the
box meets the image border the border rule is the image's own, so the values are exactly those of
the whole image. Finding the box is the only whole-image work (:func:`bounding_box`: one ``any``
pass over each mask, then only the slab that holds its foreground); the erosions and distance
transforms see only the box, so a small structure in a CT-sized volume costs milliseconds.
"""

from __future__ import annotations

import numpy as np

from scoring._inputs import mask_pair as _pair

__all__ = ["check_spacing", "bounding_box", "surface_mask", "distance_to_surface", "surface_distances",
           "reduce_surface_distances", "surface_metrics", "hausdorff", "hd95", "assd", "surface_dice",
           "SURFACE_METRIC_NAMES", "DISTANCE_METRIC_NAMES"]

DISTANCE_METRIC_NAMES = ("hausdorff", "hd95", "assd")
SURFACE_METRIC_NAMES = DISTANCE_METRIC_NAMES + ("surface_dice",)


def check_spacing(spacing, ndim: int) -> tuple[float, ...]:
    """``spacing`` as a tuple of ``ndim`` positive finite floats (``None`` → all ones); masks without a spatial
    axis (``ndim`` 0: scalars) have no surface and raise."""
    if int(ndim) < 1:
        raise ValueError("surface metrics need masks with at least one spatial axis; got 0-d (scalar) inputs")
    if spacing is None:
        return (1.0,) * ndim
    if np.isscalar(spacing):
        spacing = (spacing,) * ndim
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim:
        raise ValueError(f"spacing must have {ndim} entries (one per spatial axis), got {spacing!r}")
    if not all(np.isfinite(s) and s > 0 for s in sp):
        raise ValueError(f"spacing entries must be positive and finite, got {spacing!r}")
    return sp


def surface_mask(mask: np.ndarray) -> np.ndarray:
    """Boolean surface ``[*S]`` of a boolean mask ``[*S]``: mask minus its face-connected erosion."""
    mask = np.asarray(mask, bool)
    if mask.ndim == 0:
        raise ValueError("mask must have at least one spatial axis, got a scalar")
    if not mask.any():
        return mask.copy()
    from scipy import ndimage  # here, not at import: a prediction process never measures surfaces

    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)


def distance_to_surface(mask: np.ndarray, spacing=None) -> np.ndarray:
    """Distance ``[*S]`` (spacing units) from every voxel to the nearest surface voxel of ``mask``.

    ``mask`` must be non-empty (the distance to nothing is undefined).
    """
    mask = np.asarray(mask, bool)
    surf = surface_mask(mask)
    if not surf.any():
        raise ValueError("mask is empty: no surface to measure distances to")
    from scipy import ndimage

    return ndimage.distance_transform_edt(~surf, sampling=check_spacing(spacing, mask.ndim))


def bounding_box(mask: np.ndarray) -> tuple[tuple[int, int], ...] | None:
    """``((lo, hi), ...)`` per axis of the foreground of a boolean ``mask`` (``hi`` exclusive); ``None`` if empty.

    One pass over the image (rows of the first axis), then only over the slab that holds the
    foreground: projecting the slab along the first axis leaves an image of one axis fewer.
    """
    rows = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if rows.size == 0:
        return None
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if mask.ndim == 1:
        return ((lo, hi),)
    rest = bounding_box(np.ascontiguousarray(mask[lo:hi].any(axis=0)))
    return ((lo, hi),) + rest


def _crop_box(a: np.ndarray, b: np.ndarray, margin: int = 1, boxes=None) -> tuple[slice, ...]:
    """Bounding box of ``a | b`` grown by ``margin`` voxels per side, clipped to the array.

    ``boxes``: the two masks' :func:`bounding_box` when the caller has them (at least one not ``None``).
    """
    ba, bb = boxes if boxes is not None else (bounding_box(a), bounding_box(b))
    both = [x for x in (ba, bb) if x is not None]
    return tuple(slice(max(min(x[ax][0] for x in both) - margin, 0),
                       min(max(x[ax][1] for x in both) + margin, a.shape[ax])) for ax in range(a.ndim))


def surface_distances(pred: np.ndarray, target: np.ndarray, spacing=None, *, crop: bool = True,
                      boxes=None) -> tuple[np.ndarray, np.ndarray]:
    """``(d_pred_to_target, d_target_to_pred)``: one distance per surface voxel of each mask.

    Both masks must be non-empty (the metric functions handle the empty cases before calling).
    ``crop=True`` computes on the masks' bounding box plus a one-voxel margin (same values, see
    the module docstring); ``crop=False`` on the whole image. ``boxes``: the masks'
    :func:`bounding_box` results when the caller has them (saves the pass over the image).
    """
    pred = np.asarray(pred, bool)
    target = np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} != target shape {target.shape}")
    sp = check_spacing(spacing, pred.ndim)
    if not crop:
        if not pred.any() or not target.any():
            raise ValueError("surface distances need two non-empty masks")
        return _distances(pred, target, sp)
    if boxes is None:
        boxes = (bounding_box(pred), bounding_box(target))
    if boxes[0] is None or boxes[1] is None:
        raise ValueError("surface distances need two non-empty masks")
    box = _crop_box(pred, target, boxes=boxes)
    return _distances(pred[box], target[box], sp)


def _distances(pred: np.ndarray, target: np.ndarray, sp) -> tuple[np.ndarray, np.ndarray]:
    sp_pred, sp_target = surface_mask(pred), surface_mask(target)
    from scipy import ndimage

    d_pt = ndimage.distance_transform_edt(~sp_target, sampling=sp)[sp_pred]
    d_tp = ndimage.distance_transform_edt(~sp_pred, sampling=sp)[sp_target]
    return d_pt, d_tp


def _check_percentile(percentile: float) -> None:
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")


def _check_tolerance(tolerance: float) -> None:
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")


def _check_names(metrics) -> None:
    unknown = [m for m in metrics if m not in SURFACE_METRIC_NAMES]
    if unknown:
        raise ValueError(f"unknown surface metrics {unknown}; expected some of {list(SURFACE_METRIC_NAMES)}")


def reduce_surface_distances(d_pt: np.ndarray, d_tp: np.ndarray, metrics=SURFACE_METRIC_NAMES, *,
                             directed: bool = False, percentile: float = 95.0,
                             tolerance: float = 1.0) -> dict[str, float]:
    """``{metric: value}`` of the two directed distance arrays (from :func:`surface_distances`).

    ``hausdorff``/``hd95``/``assd``: max / ``percentile`` / mean of the pooled distances (only
    ``d_pt`` with ``directed=True``); ``surface_dice``: fraction of both surfaces within ``tolerance``.
    """
    _check_names(metrics)
    _check_percentile(percentile)
    _check_tolerance(tolerance)
    pooled = d_pt if directed else np.concatenate([d_pt, d_tp])
    out = {}
    for m in metrics:
        if m == "hausdorff":
            out[m] = float(pooled.max())
        elif m == "hd95":
            out[m] = float(np.percentile(pooled, percentile))
        elif m == "assd":
            out[m] = float(pooled.mean())
        else:
            out[m] = float((np.count_nonzero(d_pt <= tolerance) + np.count_nonzero(d_tp <= tolerance))
                           / (d_pt.size + d_tp.size))
    return out


def surface_metrics(pred, target, metrics=SURFACE_METRIC_NAMES, *, spacing=None, directed: bool = False,
                    percentile: float = 95.0, tolerance: float = 1.0, empty_value: float = float("nan"),
                    one_empty_distance: float = float("inf"), one_empty_surface_dice: float = 0.0,
                    threshold: float = 0.5) -> dict[str, float]:
    """Several surface metrics of one binary pair from one distance computation.

    Both masks empty → ``empty_value`` for every metric; exactly one empty → ``one_empty_distance``
    for the distances and ``one_empty_surface_dice`` for ``surface_dice``.
    """
    _check_names(metrics)
    _check_percentile(percentile)
    _check_tolerance(tolerance)
    p, t = _pair(pred, target, threshold)
    sp = check_spacing(spacing, p.ndim)
    metrics = tuple(metrics)
    if not metrics:
        return {}
    boxes = (bounding_box(p), bounding_box(t))
    has_p, has_t = boxes[0] is not None, boxes[1] is not None
    if not has_p or not has_t:
        if not has_p and not has_t:
            return {m: float(empty_value) for m in metrics}
        return {m: float(one_empty_surface_dice if m == "surface_dice" else one_empty_distance) for m in metrics}
    d_pt, d_tp = surface_distances(p, t, sp, boxes=boxes)
    return reduce_surface_distances(d_pt, d_tp, metrics, directed=directed, percentile=percentile,
                                    tolerance=tolerance)


def hausdorff(pred, target, *, spacing=None, directed: bool = False, empty_value: float = float("nan"),
              one_empty_value: float = float("inf"), threshold: float = 0.5) -> float:
    """Hausdorff distance: max of the pooled surface distances (both directions), spacing units."""
    return surface_metrics(pred, target, ("hausdorff",), spacing=spacing, directed=directed,
                           empty_value=empty_value, one_empty_distance=one_empty_value,
                           threshold=threshold)["hausdorff"]


def hd95(pred, target, *, spacing=None, directed: bool = False, percentile: float = 95.0,
         empty_value: float = float("nan"), one_empty_value: float = float("inf"),
         threshold: float = 0.5) -> float:
    """95th percentile of the surface distances pooled from both directions (MedPy >= 0.5), spacing units."""
    return surface_metrics(pred, target, ("hd95",), spacing=spacing, directed=directed, percentile=percentile,
                           empty_value=empty_value, one_empty_distance=one_empty_value,
                           threshold=threshold)["hd95"]


def assd(pred, target, *, spacing=None, directed: bool = False, empty_value: float = float("nan"),
         one_empty_value: float = float("inf"), threshold: float = 0.5) -> float:
    """Average symmetric surface distance: mean of all pooled surface distances (MedPy >= 0.5).

    ``directed=True`` gives the average surface distance from the prediction to the target.
    """
    return surface_metrics(pred, target, ("assd",), spacing=spacing, directed=directed,
                           empty_value=empty_value, one_empty_distance=one_empty_value,
                           threshold=threshold)["assd"]


def surface_dice(pred, target, *, spacing=None, tolerance: float = 1.0, empty_value: float = float("nan"),
                 one_empty_value: float = 0.0, threshold: float = 0.5) -> float:
    """Normalised surface Dice at ``tolerance`` (Nikolov et al. 2018), counting surface voxels.

    ``(#{p in S_P: d(p, S_T) <= tol} + #{t in S_T: d(t, S_P) <= tol}) / (|S_P| + |S_T|)``.
    """
    return surface_metrics(pred, target, ("surface_dice",), spacing=spacing, tolerance=tolerance,
                           empty_value=empty_value, one_empty_surface_dice=one_empty_value,
                           threshold=threshold)["surface_dice"]
