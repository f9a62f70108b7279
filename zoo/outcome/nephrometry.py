"""Image-derived predictors read from a kidney-tumour segmentation the way a urologist reads the CT.

From a label map (0 background, 1 kidney, 2 tumour, 3 cyst: the KiTS convention) and its geometry, in
millimetres and millilitres: the tumour and kidney volumes, the tumour's maximal diameter, surface area and
sphericity, its exophytic fraction, its nearness to the renal sinus, its position against the polar lines and
anterior/posterior, and the R.E.N.A.L. nephrometry score (Kutikov A, Uzzo RG, "The R.E.N.A.L. nephrometry score: a
comprehensive standardized system for quantitating renal tumor size, location and depth", J Urol 2009;182:844-853)
computed from them. Scores computed from the KiTS19 masks predicted outcomes as well as the experts' (Heller N et
al., "Computer-Generated R.E.N.A.L. Nephrometry Scores Yield Comparable Predictive Results to Those of Human-Expert
Scores in Predicting Oncologic and Perioperative Outcomes", J Urol 2022); the geometric rules below are this
module's own, not theirs. Plus :func:`kidney_crop`, the 3D crop of the tumour-bearing kidney that the deep models
read.

What is measured and what is a stand-in (the masks label no renal sinus, collecting system or hilar vessels):

* **Measured**: volumes (voxel count x voxel volume, exactly, at the file's own spacing); the maximal diameter (the
  largest distance between two surface-voxel centres of the largest tumour, on their convex hull: a sphere of radius
  r measures about 2r minus one voxel); the surface area (skimage's marching cubes is not in the environment: the
  Cauchy-Crofton formula on the voxel lattice at the file's spacing, 13 directions weighted by their share of the
  sphere; spheres within 2 %, flat faces along the array axes about 10 % low; a voxel-face count would read every
  sphere 50 % high) and the sphericity pi^(1/3) (6V)^(2/3) / A (about 1 for a sphere, may exceed it by a per cent);
  the number of tumours (26-connected tumour components of at least ``min_tumour_ml``).
* **The tumour-bearing kidney**: the 26-connected component of the foreground (kidney, tumour, cyst) that holds the
  largest tumour; its volume counts its kidney, tumour and cyst voxels. Tumour and cyst volumes are of the whole mask.
* **Renal contour**: on each axial image (the working grid's S/I slices), the 2D convex hull of the kidney
  parenchyma (label 1) of the tumour-bearing kidney: the outline a reader traces, with the hilum's notch bridged.
  A 3D hull was tried first and rejected: a bean-shaped kidney's 3D hull spans the lateral bulge of distant slices
  and swallowed tumours that plainly protrude on the axial images (KiTS case 0: 10 % "exophytic").
* **Exophytic fraction** (E): the share of the largest tumour's volume outside that renal contour. "Entirely
  endophytic" (E3) is a share below ``ENDOPHYTIC_TOLERANCE`` (voxelisation leaves a tumour touching the contour a
  few voxels outside it).
* **Renal sinus and hilum (stand-ins)**: the KiTS kidney label mostly fills the renal sinus (its masks leave the
  hilum's notch and the collecting system only partly unlabelled), so both are read from the unlabelled space inside
  the renal contour. The **hilum** is the largest part of that space that survives an opening by a ball of
  ``SINUS_OPENING_MM``, is open to the outside, holds ``MIN_HILUM_ML`` and spans the kidney's middle S/I level. The
  **sinus** is the hilum plus the unlabelled space at least ``SINUS_DEPTH_MM`` inside the contour, in parts of at
  least ``MIN_SINUS_PART_ML`` (smaller ones are the annotation's pinholes and seams); where that is under
  ``MIN_SINUS_ML`` (``sinus_found`` 0), the contour's central core (within ``CORE_MM`` of its deepest point), where
  the collecting system lies. **Nearness** (N) is the gap in mm between the largest tumour and the sinus: the
  smallest centre-to-centre distance minus one working voxel (touching = 0 mm).
* **Polar lines (stand-in)**: the superior and inferior levels of the hilum (where the medial concavity starts and
  ends along the body's S/I axis); without a hilum, the levels at 1/3 and 2/3 of the parenchyma's S/I extent
  (``polar_from_hilum`` 0). The axial renal midline is the level halfway between the polar lines.
* **Anterior/posterior** (A): the largest tumour's centroid against the parenchyma's centroid along the A/P axis:
  ``"a"`` or ``"p"`` beyond ``AP_MARGIN_MM``, else ``"x"``.

The shape stand-ins (hull, sinus, nearness, polar lines, A/P) are computed on an isotropic working grid of
``work_mm`` (nearest-neighbour resampling of the tumour-bearing kidney's box; coarser where that box would exceed
``MAX_WORK_VOXELS`` voxels, which only the largest kidneys do), after reorienting the array so its
axes point superior, anterior and left (from the direction cosines, not the axis order). Scores: R (diameter
<= 40 mm: 1, < 70 mm: 2, else 3); E (exophytic >= 50 %: 1, else 2, entirely endophytic: 3); N (>= 7 mm: 1, > 4 mm:
2, <= 4 mm: 3); L (entirely above the upper or below the lower polar line: 1; crosses a polar line with at most half
its volume between the lines: 2; more than half between the lines, crossing the axial midline, or entirely between
the lines: 3); total 4-12; band low 4-6, moderate 7-9, high 10-12.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import os
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist

from data_pipelines.geometry import reorient, resample_to_spacing
from data_pipelines.readers import ImageMeta, read_label
from scoring.surface import bounding_box, surface_mask

__all__ = ["KIDNEY", "TUMOUR", "CYST", "FEATURE_NAMES", "read_mask", "canonical_labels", "image_features",
           "renal_score", "surface_area", "max_diameter", "axial_hull_mask", "kidney_crop",
           "features_for_cohort", "crops_for_cohort", "ENDOPHYTIC_TOLERANCE", "SINUS_OPENING_MM", "MIN_HILUM_ML",
           "SINUS_DEPTH_MM", "MIN_SINUS_PART_ML", "MIN_SINUS_ML", "CORE_MM", "AP_MARGIN_MM",
           "MAX_WORK_VOXELS"]

KIDNEY, TUMOUR, CYST = 1, 2, 3
ENDOPHYTIC_TOLERANCE = 0.01  # share of the tumour outside the hull still read as entirely endophytic
SINUS_OPENING_MM = 2.0  # the opening that separates the hilum's notch from the slivers along the contour
MIN_HILUM_ML = 2.0
SINUS_DEPTH_MM = 3.0
MIN_SINUS_PART_ML = 0.5
MIN_SINUS_ML = 0.5
CORE_MM = 5.0
MAX_WORK_VOXELS = 1_500_000  # the working grid's size cap (a box of 1.5 l at 1 mm)
AP_MARGIN_MM = 5.0
_LARGEST = 4  # the largest tumour's voxels on the working grid
_FULL = ndimage.generate_binary_structure(3, 3)  # 26-connectivity

FEATURE_NAMES = ("tumour_volume_ml", "largest_tumour_volume_ml", "kidney_volume_ml", "parenchyma_volume_ml",
                 "cyst_volume_ml", "n_tumours", "max_diameter_mm", "tumour_surface_mm2", "sphericity",
                 "exophytic_fraction", "sinus_volume_ml", "sinus_found", "sinus_distance_mm", "polar_from_hilum",
                 "fraction_above_upper", "fraction_between", "fraction_below_lower", "crosses_midline",
                 "ap_offset_mm", "renal_r", "renal_e", "renal_n", "renal_l", "renal_a", "renal_score", "renal_band")


def read_mask(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...], ImageMeta]:
    """``(labels [*S] int32, spacing (mm per array axis), meta)`` of a KiTS-style segmentation file.

    Through :func:`data_pipelines.readers.read_label` (values outside 0-3 raise ``ValueError`` naming the file);
    ``meta.direction`` holds the LPS direction of each array axis, which :func:`image_features` needs.
    """
    labels, meta = read_label(path, allowed=(0, KIDNEY, TUMOUR, CYST))
    if labels.ndim != 3:
        raise ValueError(f"{path}: expected a 3D segmentation, got shape {labels.shape}")
    return labels, meta.spacing, meta


def canonical_labels(labels: np.ndarray, spacing: Sequence[float], direction=None):
    """``(labels, spacing)`` with the array axes pointing superior, anterior and left (reorient "SAL").

    ``direction``: ``[3, 3]``, column ``a`` the LPS world direction of array axis ``a`` (``ImageMeta.direction``);
    ``None`` means the identity (axes along L, P, S). Only permutations and flips: no voxel changes.
    """
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"labels must be a 3D label map [*S], got shape {labels.shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive mm values (one per array axis), got {spacing}")
    d = np.eye(3) if direction is None else np.asarray(direction, np.float64)
    if d.shape != (3, 3):
        raise ValueError(f"direction must be a 3x3 matrix, got shape {d.shape}")
    meta = ImageMeta(spacing, (0.0, 0.0, 0.0), tuple(tuple(float(v) for v in r) for r in d))
    out, m = reorient(labels, meta, "SAL", is_label=True)
    return out, m.spacing


def _components(mask: np.ndarray, sizes: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """26-connected components of ``mask`` inside its bounding box: ``(ids [*S] int32, sizes [n + 1] | None)``."""
    ids = np.zeros(mask.shape, np.int32)
    box = bounding_box(mask)
    if box is None:
        return ids, np.zeros(1, np.int64)
    sl = tuple(slice(lo, hi) for lo, hi in box)
    n = ndimage.label(mask[sl], structure=_FULL, output=ids[sl])
    return ids, (np.bincount(ids[sl].ravel(), minlength=n + 1) if sizes else None)


def _box_slices(mask: np.ndarray) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in bounding_box(mask))


def max_diameter(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """The largest distance (mm) between two surface-voxel centres of a non-empty boolean ``mask`` [*S].

    Taken over the vertices of the surface points' convex hull (all points when the hull is flat).
    """
    sl = _box_slices(mask)
    pts = np.argwhere(surface_mask(mask[sl])) * np.asarray(spacing, np.float64)
    if len(pts) < 2:
        return 0.0
    try:
        pts = pts[ConvexHull(pts).vertices]
    except (QhullError, ValueError):  # flat or collinear: every point is a candidate
        pass
    best = 0.0
    for i in range(0, len(pts), 1024):
        best = max(best, float(cdist(pts[i:i + 1024], pts).max()))
    return best


# The 13 lattice directions of a 3x3x3 neighbourhood (one of each +/- pair), in voxel steps.
_DIRECTIONS = np.array([d for d in itertools.product((-1, 0, 1), repeat=3) if d > (0, 0, 0)], np.int64)


def _direction_weights(spacing) -> np.ndarray:
    """Share of the unit sphere nearest to each of the 13 directions in mm (a Voronoi partition, Legland et al.)."""
    k = np.arange(20000) + 0.5  # a Fibonacci lattice on the sphere: near-uniform, deterministic
    z = 1.0 - 2.0 * k / 20000
    phi = np.pi * (1.0 + 5 ** 0.5) * k
    u = np.stack([z, np.sqrt(1 - z * z) * np.cos(phi), np.sqrt(1 - z * z) * np.sin(phi)], axis=1)
    d = _DIRECTIONS * np.asarray(spacing, np.float64)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.bincount(np.argmax(np.abs(u @ d.T), axis=1), minlength=len(d)) / len(u)


def surface_area(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Surface area (mm^2) of a boolean 3D ``mask`` by the Cauchy-Crofton formula on the voxel lattice.

    ``S = 2 * mean over directions u of the integral of |n . u| over the surface``, and that integral is the number
    of in/out transitions between lattice neighbours ``p``, ``p + d_u`` times the area each lattice line stands for
    (voxel volume / |d_u| mm); the 13 directions of the 3x3x3 neighbourhood are weighted by their share of the
    unit sphere at this spacing (Legland, Kieu & Devaux, Image Anal Stereol 2007). Unlike a voxel-face count (which
    reads every sphere 50 % high), it is unbiased for a surface of random orientation: spheres read within 2 %
    (so a sphericity may slightly exceed 1), flat faces along the array axes about 10 % low.
    """
    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0
    sp = np.asarray(spacing, np.float64)
    m = np.pad(mask[_box_slices(mask)], 1)
    weights = _direction_weights(sp)
    voxel = float(np.prod(sp))
    area = 0.0
    for d, w in zip(_DIRECTIONS, weights):
        a = tuple(slice(max(-s, 0), m.shape[i] - max(s, 0)) for i, s in enumerate(d))
        b = tuple(slice(max(s, 0), m.shape[i] - max(-s, 0)) for i, s in enumerate(d))
        transitions = np.count_nonzero(m[a] != m[b])
        area += 2.0 * w * transitions * voxel / float(np.linalg.norm(d * sp))
    return float(area)


def axial_hull_mask(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Boolean [*S]: slice by slice along axis 0, the pixel centres inside the 2D convex hull of ``mask``'s pixels.

    With axis 0 the body's S/I axis this is the renal contour a reader draws on each axial image (the hilum's
    medial notch bridged). A slice whose pixels are too few or collinear for a hull keeps just its pixels.
    """
    sp = np.asarray(spacing, np.float64)
    tol = 1e-6 * float(sp.max())
    out = np.zeros(mask.shape, bool)
    for i in np.nonzero(mask.any(axis=(1, 2)))[0]:
        pts = np.argwhere(mask[i])
        try:
            eq = ConvexHull(pts * sp[1:]).equations
        except (QhullError, ValueError):
            out[i] = mask[i]
            continue
        (y0, x0), (y1, x1) = pts.min(axis=0), pts.max(axis=0) + 1
        yy = np.arange(y0, y1)[:, None] * sp[1]
        xx = np.arange(x0, x1)[None, :] * sp[2]
        v = eq[:, 0, None, None] * yy + eq[:, 1, None, None] * xx + eq[:, 2, None, None]
        out[i, y0:y1, x0:x1] = (v <= tol).all(axis=0)
    return out


def _opening(mask: np.ndarray, radius: float, spacing) -> np.ndarray:
    """Morphological opening by a ball of ``radius`` mm (two Euclidean distance transforms)."""
    inner = ndimage.distance_transform_edt(mask, sampling=spacing) > radius
    if not inner.any():
        return inner
    return ndimage.distance_transform_edt(~inner, sampling=spacing) <= radius


def _sinus_stand_in(grid: np.ndarray, contour: np.ndarray, w: float):
    """``(sinus, hilum | None, found)`` on the working grid: the stand-ins for the renal sinus and the hilum.

    ``contour``: the axial renal contour (:func:`axial_hull_mask` of the parenchyma). The unlabelled space inside it
    is the kidney's concavity. The **hilum** is its largest part that survives an opening by ``SINUS_OPENING_MM``,
    is open to the outside (reaches the contour's rim), holds at least ``MIN_HILUM_ML`` and spans the parenchyma's
    middle S/I level (the hilum sits at the kidney's waist); ``None`` when there is none. The **sinus** is the hilum
    plus the unlabelled space at least ``SINUS_DEPTH_MM`` deep inside the contour (the sinus fat and collecting
    system that the KiTS annotators left unlabelled, which the kidney label mostly fills), in 26-connected parts of
    at least ``MIN_SINUS_PART_ML`` (smaller ones are pinholes and seams of the annotation); if that holds under
    ``MIN_SINUS_ML`` (``found`` False), the contour's central core (within ``CORE_MM`` of its deepest point).
    """
    sp = (w,) * 3
    concave = contour & (grid == 0)
    depth = ndimage.distance_transform_edt(contour, sampling=sp)
    hilum = None
    if concave.any():
        box = tuple(slice(max(lo - 1, 0), hi + 1) for lo, hi in bounding_box(concave))
        opened = np.zeros_like(concave)
        opened[box] = _opening(concave[box], SINUS_OPENING_MM, sp)
        ids, sizes = _components(opened)
        open_ids = np.unique(ids[opened & (depth < 1.5 * w)])
        pz = np.nonzero((grid == KIDNEY).any(axis=(1, 2)))[0]
        waist = (pz.min() + pz.max()) / 2.0
        for i in open_ids[open_ids > 0][np.argsort(-sizes[open_ids[open_ids > 0]])]:
            if sizes[i] * w ** 3 / 1000.0 < MIN_HILUM_ML:
                break
            z = np.nonzero((ids == i).any(axis=(1, 2)))[0]
            if z.min() <= waist <= z.max():
                hilum = ids == i
                break
    deep_ids, deep_sizes = _components(concave & (depth >= SINUS_DEPTH_MM))
    kept = np.nonzero(deep_sizes * w ** 3 / 1000.0 >= MIN_SINUS_PART_ML)[0]
    sinus = np.isin(deep_ids, kept[kept > 0])  # drops the annotation's pinholes and seams
    if hilum is not None:
        sinus |= hilum
    found = np.count_nonzero(sinus) * w ** 3 / 1000.0 >= MIN_SINUS_ML
    if not found:
        sinus = contour & (depth >= depth.max() - CORE_MM)
    return sinus, hilum, bool(found)


def _tumour_bearing_kidney(labels: np.ndarray, voxel_ml: float, min_tumour_ml: float):
    """``(kidney mask, largest tumour mask, tumour component sizes)`` of a canonical label map."""
    tumour_ids, sizes = _components(labels == TUMOUR)
    if len(sizes) < 2:
        raise ValueError("the mask has no tumour (label 2) voxels: no nephrometry without a tumour")
    largest_id = int(np.argmax(sizes[1:])) + 1
    largest = tumour_ids == largest_id
    fg_ids, _ = _components(labels > 0, sizes=False)
    kidney = fg_ids == fg_ids[tuple(np.argwhere(largest)[0])]
    if not (kidney & (labels == KIDNEY)).any():
        raise ValueError("the largest tumour touches no kidney parenchyma (label 1)")
    counted = sizes[1:] * voxel_ml >= min_tumour_ml
    counted[largest_id - 1] = True
    return kidney, largest, int(counted.sum())


def renal_score(diameter_mm: float, exophytic: float, nearness_mm: float, between: float, above: float,
                below: float, crosses_midline: bool) -> dict:
    """The R, E, N, L components, their total (4-12) and the complexity band (Kutikov & Uzzo 2009)."""
    r = 1 if diameter_mm <= 40.0 else 2 if diameter_mm < 70.0 else 3
    e = 1 if exophytic >= 0.5 else 2 if exophytic >= ENDOPHYTIC_TOLERANCE else 3
    n = 1 if nearness_mm >= 7.0 else 2 if nearness_mm > 4.0 else 3
    if between == 0.0 and (above == 1.0 or below == 1.0):
        loc = 1
    elif between > 0.5 or crosses_midline or between == 1.0:
        loc = 3
    else:
        loc = 2
    total = r + e + n + loc
    band = "low" if total <= 6 else "moderate" if total <= 9 else "high"
    return {"renal_r": r, "renal_e": e, "renal_n": n, "renal_l": loc, "renal_score": total, "renal_band": band}


def image_features(labels: np.ndarray, spacing: Sequence[float], direction=None, *, work_mm: float = 1.0,
                   min_tumour_ml: float = 0.1) -> dict:
    """The image-derived predictors of one case (see the module docstring for each definition and stand-in).

    ``labels``: ``[*S]`` ints (0 background, 1 kidney, 2 tumour, 3 cyst); ``spacing``: mm per array axis;
    ``direction``: the array axes' LPS directions (``meta.direction``; ``None`` = identity). Returns a dict whose
    values are floats but ``renal_a`` (``"a" | "p" | "x"``) and ``renal_band`` (``"low" | "moderate" | "high"``);
    keys :data:`FEATURE_NAMES`. ``ValueError`` for a mask with no tumour or with labels outside 0-3.
    """
    if not (np.isfinite(work_mm) and work_mm > 0):
        raise ValueError(f"work_mm must be a positive number of mm, got {work_mm!r}")
    labels, spacing = canonical_labels(labels, spacing, direction)
    if labels.size and (labels.min() < 0 or labels.max() > CYST):
        raise ValueError(f"labels must be 0-3 (background, kidney, tumour, cyst), got values "
                         f"{np.setdiff1d(np.unique(labels), [0, 1, 2, 3]).tolist()[:5]}")
    sp = np.asarray(spacing, np.float64)
    voxel_ml = float(np.prod(sp)) / 1000.0
    kidney, largest, n_tumours = _tumour_bearing_kidney(labels, voxel_ml, min_tumour_ml)
    tumour_ml = float(np.count_nonzero(labels == TUMOUR)) * voxel_ml
    largest_ml = float(np.count_nonzero(largest)) * voxel_ml
    diameter = max_diameter(largest, sp)
    area = surface_area(largest, sp)
    sphericity = float(np.pi ** (1 / 3) * (6.0 * largest_ml * 1000.0) ** (2 / 3) / area) if area > 0 else float("nan")

    # The working grid: the tumour-bearing kidney's box, padded, isotropic work_mm, the largest tumour marked.
    sl = _box_slices(kidney)
    region = np.where(kidney[sl], labels[sl], 0).astype(np.int32)
    region[largest[sl]] = _LARGEST
    region = np.pad(region, 2)
    # A huge kidney (over 1.5 l of box) gets a coarser grid, so no case costs more than about a second.
    w = max(float(work_mm), (float(np.prod(np.asarray(region.shape) * sp)) / MAX_WORK_VOXELS) ** (1 / 3))
    grid, _ = resample_to_spacing(region, ImageMeta(tuple(sp), (0.0,) * 3, tuple(map(tuple, np.eye(3)))), (w,) * 3,
                                  is_label=True)
    grid = np.pad(grid, 2)
    paren, tum = grid == KIDNEY, grid == _LARGEST
    if not tum.any():
        raise ValueError(f"the largest tumour ({largest_ml:.3g} ml) vanishes on the {w} mm working grid")
    hull = axial_hull_mask(paren, (w,) * 3)
    exophytic = float(np.count_nonzero(tum & ~hull)) / float(np.count_nonzero(tum))

    sinus, hilum, found = _sinus_stand_in(grid, hull, w)
    near = _box_slices(sinus | tum)  # every sinus voxel is in this box: its distances are exact
    gap = ndimage.distance_transform_edt(~sinus[near], sampling=(w,) * 3)[tum[near]].min() - w
    nearness = float(max(gap, 0.0))
    if hilum is not None:
        hz = np.nonzero(hilum.any(axis=(1, 2)))[0] * w
        lower, upper = float(hz.min()), float(hz.max())
    else:
        pz = np.nonzero(paren.any(axis=(1, 2)))[0] * w
        lower, upper = pz.min() + (pz.max() - pz.min()) / 3.0, pz.min() + 2.0 * (pz.max() - pz.min()) / 3.0
    tz = np.argwhere(tum)[:, 0] * w
    above, below = float(np.mean(tz > upper)), float(np.mean(tz < lower))
    between = 1.0 - above - below
    midline = (lower + upper) / 2.0
    crosses = bool(tz.min() < midline < tz.max())
    ap = float((np.argwhere(tum)[:, 1].mean() - np.argwhere(paren)[:, 1].mean()) * w)
    out = {
        "tumour_volume_ml": tumour_ml, "largest_tumour_volume_ml": largest_ml,
        "kidney_volume_ml": float(np.count_nonzero(kidney)) * voxel_ml,
        "parenchyma_volume_ml": float(np.count_nonzero(kidney & (labels == KIDNEY))) * voxel_ml,
        "cyst_volume_ml": float(np.count_nonzero(labels == CYST)) * voxel_ml, "n_tumours": float(n_tumours),
        "max_diameter_mm": diameter, "tumour_surface_mm2": area, "sphericity": sphericity,
        "exophytic_fraction": exophytic, "sinus_volume_ml": float(np.count_nonzero(sinus)) * w ** 3 / 1000.0,
        "sinus_found": float(found), "sinus_distance_mm": nearness, "polar_from_hilum": float(hilum is not None),
        "fraction_above_upper": above, "fraction_between": between, "fraction_below_lower": below,
        "crosses_midline": float(crosses), "ap_offset_mm": ap,
        "renal_a": "a" if ap > AP_MARGIN_MM else "p" if ap < -AP_MARGIN_MM else "x",
    }
    score = renal_score(diameter, exophytic, nearness, between, above, below, crosses)
    out.update({k: (v if isinstance(v, str) else float(v)) for k, v in score.items()})
    return {k: out[k] for k in FEATURE_NAMES}


def kidney_crop(labels: np.ndarray, spacing: Sequence[float], size: Sequence[int] = (48, 48, 48), mm: float = 1.5,
                direction=None) -> np.ndarray:
    """``[*size, 3]`` float32: the tumour-bearing kidney one-hot (kidney, tumour, cyst), isotropic ``mm``.

    Axes point superior, anterior, left (as :func:`image_features`); the other kidney is masked out. Along an axis
    where the kidney fits, its bounding box is centred and padded with background; where it does not (48 voxels of
    1.5 mm are 72 mm, a kidney 100-130 mm long), the window stays inside the kidney's box, as near to centred on the
    largest tumour as that allows, so the tumour is kept whole where it fits.
    """
    size = tuple(int(s) for s in size)
    if len(size) != 3 or min(size) < 1 or not mm > 0:
        raise ValueError(f"kidney_crop: size must be 3 positive ints and mm > 0, got size={size}, mm={mm}")
    labels, spacing = canonical_labels(labels, spacing, direction)
    kidney, largest, _ = _tumour_bearing_kidney(labels, float(np.prod(spacing)) / 1000.0, 0.0)
    sl = _box_slices(kidney)
    region = np.where(kidney[sl], labels[sl], 0).astype(np.int32)
    region[largest[sl]] = _LARGEST
    grid, _ = resample_to_spacing(region, ImageMeta(tuple(spacing), (0.0,) * 3, tuple(map(tuple, np.eye(3)))),
                                  (float(mm),) * 3, is_label=True)
    box = bounding_box(grid == _LARGEST)
    grid[grid == _LARGEST] = TUMOUR
    out = np.zeros(size + (3,), np.float32)
    src, dst = [], []
    for axis, (n_in, n_out) in enumerate(zip(grid.shape, size)):
        if n_in <= n_out:  # pad, the kidney centred
            lo = (n_out - n_in) // 2
            src.append(slice(0, n_in))
            dst.append(slice(lo, lo + n_in))
        else:  # cut, the window slid toward the tumour's centre
            centre = (box[axis][0] + box[axis][1]) // 2 if box is not None else n_in // 2
            start = int(np.clip(centre - n_out // 2, 0, n_in - n_out))
            src.append(slice(start, start + n_out))
            dst.append(slice(0, n_out))
    part = grid[tuple(src)]
    for c, value in enumerate((KIDNEY, TUMOUR, CYST)):
        out[tuple(dst) + (c,)] = part == value
    return out


def _case_features(item):
    case, path, kw = item
    try:
        labels, spacing, meta = read_mask(path)
        return image_features(labels, spacing, meta.direction_matrix, **kw)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"case {case} ({path}): {e}") from e


def _case_crop(item):
    case, path, kw = item
    try:
        labels, spacing, meta = read_mask(path)
        return kidney_crop(labels, spacing, direction=meta.direction_matrix, **kw)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"case {case} ({path}): {e}") from e


def _map_cases(fn, paths: Mapping[str, str | os.PathLike], kw: dict, workers: int, progress: bool, desc: str):
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    items = [(str(c), os.fspath(p), kw) for c, p in paths.items()]
    from tqdm.auto import tqdm

    bar = tqdm(total=len(items), desc=desc, disable=not progress)
    try:
        if int(workers) == 1:
            results = []
            for it in items:
                results.append(fn(it))
                bar.update()
            return [c for c, _, _ in items], results
        # spawned, not forked: the parent runs JAX's threads, and a forked child of a threaded process can deadlock
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(int(workers), mp_context=spawn) as pool:
            results = []
            for r in pool.map(fn, items):
                results.append(r)
                bar.update()
            return [c for c, _, _ in items], results
    finally:
        bar.close()


def features_for_cohort(paths: Mapping[str, str | os.PathLike], workers: int = 1, progress: bool = True, **kw):
    """``pandas.DataFrame`` (index ``case_id``, columns :data:`FEATURE_NAMES`) of every case's mask file.

    ``paths``: case id -> segmentation file; ``kw`` goes to :func:`image_features` (``work_mm``, ``min_tumour_ml``).
    A case that fails raises its ``ValueError`` / ``FileNotFoundError`` with the case id and file in front.
    """
    import pandas as pd

    ids, rows = _map_cases(_case_features, paths, kw, workers, progress, "nephrometry")
    return pd.DataFrame(rows, index=pd.Index(ids, name="case_id"), columns=list(FEATURE_NAMES))


def crops_for_cohort(paths: Mapping[str, str | os.PathLike], size: Sequence[int] = (48, 48, 48), mm: float = 1.5,
                     workers: int = 1, progress: bool = True) -> tuple[list[str], np.ndarray]:
    """``(case ids, crops [N, *size, 3] float32)``: :func:`kidney_crop` of every case, in ``paths``' order."""
    ids, crops = _map_cases(_case_crop, paths, {"size": tuple(size), "mm": mm}, workers, progress, "kidney crops")
    return ids, (np.stack(crops) if crops else np.zeros((0, *size, 3), np.float32))
