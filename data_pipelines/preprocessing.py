"""Applying a plan to one case (nnU-Net v2's ``DefaultPreprocessor``): :func:`preprocess_case`,
:func:`preprocess_label`, :func:`restore_case`; and the intensity scaling of runs trained without a plan
(:func:`scale_intensity`).

Geometry of a preprocessed case (``ctx`` records every step, so ``restore_case`` undoes it exactly):

1. volumes are reoriented to LPS (``geometry.reorient``: axis permutations and flips only, no interpolation),
   so the plan's ``spacing`` and ``patch_size`` are in LPS array order (for a file already in LPS/RAS-like
   axis order, which is nearly every scan, that is the file's own array order);
2. for a 2D plan of volumes the slice axis (``Plan.slice_axis``, the coarsest one) is moved last, so the
   2D slices are ``array[:, :, z]`` as everywhere else in the project;
3. ``crop="nonzero"``: the bounding box of the voxels that differ from the background (any channel differs
   from its own minimum: the zero padding of a raw scan, or the constant outside-the-brain value of the
   z-scored BraTS samples);
4. optional N4 bias-field correction (MR) and noise reduction (median or curvature flow), per channel,
   SimpleITK, on the native grid;
5. normalisation per channel (below);
6. resampling to the plan's spacing with ``sitk.Resample`` (linear for images, nearest for labels); voxel 0
   keeps its world position and each axis gets ``max(round(n * spacing_in / spacing_out), 1)`` voxels; a 2D
   plan never resamples along the slice axis; ``spacing=None`` (photos) never resamples.

Normalisation: the plan's scheme per channel (``zscore_fg``, ``ct``, ``rgb``, ``zscore``: described in
:mod:`data_pipelines.planner`).

Runs trained without a plan (images resized to ``data.image_size`` by a data family's loader) record the
loader's intensity scaling as data (``DatasetInfo.extra["intensity_scaling"]``, see
:mod:`data_pipelines.families`); :func:`scale_intensity` applies such a record:

* ``{"kind": "none"}``: the values as read, as float32;
* ``{"kind": "unit_range"}``: integer pictures divided by their dtype's maximum (255 for 8-bit), floats as read;
* ``{"kind": "hu_window", "window": [lo, hi]}``: Hounsfield units clipped to the window and mapped to [0, 1];
* ``{"kind": "zscore_fg"}``: each channel z-scored over the body/brain (:func:`~data_pipelines.fingerprint.
  body_mask`: any channel off its constant minimum), 0 outside (nnU-Net's MR scheme, per case: BraTS's
  loader with ``data.brats_intensity="zscore_fg"``).
"""

from __future__ import annotations

import numpy as np

from data_pipelines import geometry, readers
from data_pipelines.fingerprint import body_mask, is_picture, lps_perm
from data_pipelines.planner import Plan
from kernels.intensity import ct_window, window_center_width

__all__ = ["preprocess_case", "preprocess_label", "restore_case", "scale_intensity", "SCALING_KINDS"]

SCALING_KINDS = ("none", "unit_range", "hu_window", "zscore_fg")


def scale_intensity(image: np.ndarray, record: dict) -> np.ndarray:
    """``image`` scaled by an intensity-scaling ``record`` (module docstring), float32."""
    kind = (record or {}).get("kind")
    image = np.asarray(image)
    if kind == "none":
        return image.astype(np.float32)
    if kind == "unit_range":
        if np.issubdtype(image.dtype, np.integer):
            return image.astype(np.float32) / float(np.iinfo(image.dtype).max)
        return image.astype(np.float32)
    if kind == "hu_window":
        return ct_window(image.astype(np.float32, copy=False), *window_center_width(record["window"]))
    if kind == "zscore_fg":
        mask = body_mask(image)
        return np.stack([_normalise(image[..., c], {"scheme": "zscore_fg", "mean": 0.0, "std": 1.0}, mask)
                         for c in range(image.shape[-1])], axis=-1)
    raise ValueError(f"intensity scaling {record!r}: kind must be one of {SCALING_KINDS}")


def _sitk_resample(array: np.ndarray, in_spacing, out_spacing, out_shape, nearest: bool) -> np.ndarray:
    """Resample the spatial axes of ``array [*S]`` or ``[*S, C]`` (channels one by one) between two grids
    that share voxel 0 and the axis directions; points past the last voxel take the nearest edge value."""
    import SimpleITK as sitk

    nd = len(in_spacing)
    if tuple(array.shape[:nd]) == tuple(out_shape) and np.allclose(in_spacing, out_spacing, rtol=0, atol=1e-9):
        return array
    if array.ndim > nd:
        return np.stack([_sitk_resample(array[..., c], in_spacing, out_spacing, out_shape, nearest)
                         for c in range(array.shape[-1])], axis=-1)
    dtype = array.dtype
    # SimpleITK's index order is the reverse of numpy's: give it the reversed axes.
    src = sitk.GetImageFromArray(np.ascontiguousarray(array.T.astype(np.float32 if not nearest else np.int32)))
    src.SetSpacing([float(s) for s in in_spacing])
    f = sitk.ResampleImageFilter()
    f.SetSize([int(s) for s in out_shape])
    f.SetOutputSpacing([float(s) for s in out_spacing])
    f.SetOutputOrigin([0.0] * nd)
    f.SetOutputDirection(np.eye(nd).ravel().tolist())
    f.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    f.SetUseNearestNeighborExtrapolator(True)
    out = sitk.GetArrayFromImage(f.Execute(src)).T
    return np.ascontiguousarray(out.astype(dtype if nearest else np.float32))


def _n4(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """N4 bias-field correction of one channel (shifted to positive values, fitted on a 4x shrunk copy
    over ``mask``, the full-resolution field divided out, the shift put back)."""
    import SimpleITK as sitk

    shift = float(x.min()) - 1.0
    img = sitk.GetImageFromArray(np.ascontiguousarray((x - shift).T.astype(np.float32)))
    m = sitk.GetImageFromArray(np.ascontiguousarray(mask.T.astype(np.uint8)))
    shrink = [4 if s >= 32 else 1 for s in x.shape]
    small, small_m = sitk.Shrink(img, shrink), sitk.Shrink(m, shrink)
    f = sitk.N4BiasFieldCorrectionImageFilter()
    f.SetMaximumNumberOfIterations([20] * 3)
    f.Execute(small, small_m)
    log_bias = f.GetLogBiasFieldAsImage(img)
    out = sitk.GetArrayFromImage(img / sitk.Exp(log_bias)).T
    return out.astype(np.float32) + shift


def _denoise(x: np.ndarray, method: str) -> np.ndarray:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(x.T.astype(np.float32)))
    if method == "median":
        img = sitk.Median(img, [1] * x.ndim)
    else:  # curvature flow; a time step stable in 2D and 3D
        img = sitk.CurvatureFlow(img, timeStep=0.0625, numberOfIterations=5)
    return sitk.GetArrayFromImage(img).T.astype(np.float32)


def _normalise(x: np.ndarray, ch: dict, mask: np.ndarray) -> np.ndarray:
    scheme = ch["scheme"]
    if scheme == "zscore_fg":
        v = x[mask]
        mu, sd = (float(v.mean()), float(v.std())) if v.size > 1 else (ch["mean"], ch["std"])
        out = (x - mu) / max(sd, 1e-8)
        return np.where(mask, out, 0.0).astype(np.float32)
    if scheme == "ct":
        x = np.clip(x, ch["lower"], ch["upper"])
        return ((x - ch["mean"]) / max(ch["std"], 1e-8)).astype(np.float32)
    if scheme == "rgb":
        return ((x - ch["lower"]) / max(ch["upper"] - ch["lower"], 1e-8)).astype(np.float32)
    return ((x - ch["mean"]) / max(ch["std"], 1e-8)).astype(np.float32)


def _orientation(meta: readers.ImageMeta, shape) -> tuple[list[int], list[bool], readers.ImageMeta]:
    """``(perm, flips, lps_meta)``: LPS axis ``a`` is input axis ``perm[a]``, reversed where ``flips[a]``."""
    if meta.ndim != 3 or is_picture(meta):
        return list(range(meta.ndim)), [False] * meta.ndim, meta
    perm = lps_perm(meta)
    _, lps = geometry.reorient(np.zeros(tuple(shape[:3]) + (1,), np.uint8), meta, "LPS")
    d_in, d_out = meta.direction_matrix, lps.direction_matrix
    flips = [bool(np.dot(d_out[:, a], d_in[:, perm[a]]) < 0) for a in range(3)]
    return perm, flips, lps


def _forward_axes(array: np.ndarray, perm, flips, slice_axis, nd: int) -> np.ndarray:
    """Input array axes -> LPS (permute, flip), then the slice axis last (2D plans of volumes)."""
    out = np.transpose(array, tuple(perm) + tuple(range(nd, array.ndim)))
    for a, f in enumerate(flips):
        if f:
            out = np.flip(out, axis=a)
    if slice_axis is not None:
        out = np.moveaxis(out, slice_axis, nd - 1)
    return out


def _backward_axes(array: np.ndarray, perm, flips, slice_axis, nd: int) -> np.ndarray:
    out = array
    if slice_axis is not None:
        out = np.moveaxis(out, nd - 1, slice_axis)
    for a, f in enumerate(flips):
        if f:
            out = np.flip(out, axis=a)
    inv = np.argsort(perm)
    return np.ascontiguousarray(np.transpose(out, tuple(int(i) for i in inv) + tuple(range(nd, array.ndim))))


def preprocess_case(image: np.ndarray, meta: readers.ImageMeta, plan: Plan) -> tuple[np.ndarray, dict]:
    """``image [*S, C]`` in its file geometry -> ``(array [*S', C] float32, ctx)`` by ``plan`` (module docstring).

    ``ctx`` (JSON-able) holds what :func:`restore_case` / :func:`preprocess_label` need: the input shape and
    geometry, the axis permutation/flips, the crop box, the native and the planned spacing and shapes.
    """
    image = np.asarray(image)
    nd = meta.ndim
    if image.ndim != nd + 1:
        raise ValueError(f"{meta.path or 'image'}: expected [*S, C] with {nd} spatial axes, got {image.shape}")
    if image.shape[-1] != plan.num_channels:
        raise ValueError(f"{meta.path or 'image'}: {image.shape[-1]} channels, the plan expects "
                         f"{plan.num_channels} ({[c.get('name') for c in plan.channels]})")
    if not np.all(np.isfinite(image)):
        raise ValueError(f"{meta.path or 'image'}: image contains NaN or Inf")
    if plan.spacing is not None and len(plan.spacing) != nd:
        raise ValueError(f"{meta.path or 'image'}: {nd}D image, the plan's spacing {plan.spacing} is "
                         f"{len(plan.spacing)}D")
    if plan.spatial_dims == 3 and nd != 3:
        raise ValueError(f"{meta.path or 'image'}: a 3D plan needs a volume, got a {nd}D image")
    perm, flips, lps = _orientation(meta, image.shape)
    slice_axis = plan.slice_axis if nd == 3 and plan.spatial_dims == 2 else None
    x = _forward_axes(image.astype(np.float32, copy=False), perm, flips, slice_axis, nd)
    spacing = [float(lps.spacing[a]) for a in range(nd)]
    target = None if plan.spacing is None else [float(s) for s in plan.spacing]
    if slice_axis is not None:
        spacing.append(spacing.pop(slice_axis))
        target.append(target.pop(slice_axis))
        target[-1] = spacing[-1]  # 2D plans never resample across slices
    oriented_shape = list(x.shape[:nd])
    mask = body_mask(x)
    if plan.preprocessing.get("crop") == "nonzero" and mask.any():
        box = [[int(v.min()), int(v.max()) + 1] for v in
               (np.flatnonzero(np.any(mask, axis=tuple(b for b in range(nd) if b != a))) for a in range(nd))]
    else:
        box = [[0, n] for n in oriented_shape]
    sl = tuple(slice(lo, hi) for lo, hi in box)
    x, mask = np.ascontiguousarray(x[sl]), mask[sl]
    cropped_shape = list(x.shape[:nd])
    chans = []
    for c, ch in enumerate(plan.channels):
        xc = x[..., c]
        if plan.preprocessing.get("n4"):
            xc = _n4(xc, mask if mask.any() else np.ones_like(mask))
        if plan.preprocessing.get("denoise"):
            xc = _denoise(xc, plan.preprocessing["denoise"])
        chans.append(_normalise(xc, ch, mask))
    x = np.stack(chans, axis=-1)
    if target is None:
        out_shape = cropped_shape
    else:
        out_shape = [max(int(round(cropped_shape[a] * spacing[a] / target[a])), 1) for a in range(nd)]
        x = _sitk_resample(x, spacing, target, out_shape, nearest=False)
    ctx = {"input_shape": [int(s) for s in image.shape[:nd]], "perm": [int(p) for p in perm],
           "flips": [bool(f) for f in flips], "slice_axis": slice_axis, "oriented_shape": oriented_shape,
           "crop": box, "cropped_shape": cropped_shape, "spacing_in": spacing,
           "spacing_out": spacing if target is None else target, "shape_out": [int(s) for s in out_shape],
           "meta": {"spacing": list(meta.spacing), "origin": list(meta.origin),
                    "direction": [list(r) for r in meta.direction], "path": meta.path, "format": meta.format}}
    return np.ascontiguousarray(x, dtype=np.float32), ctx


def preprocess_label(label: np.ndarray, meta: readers.ImageMeta, plan: Plan, ctx: dict) -> np.ndarray:
    """``label [*S]`` on the image's grid -> ``[*S']`` int32 through ``ctx``'s geometry (nearest neighbour)."""
    label = np.asarray(label)
    nd = meta.ndim
    if list(label.shape) != list(ctx["input_shape"]):
        raise ValueError(f"{meta.path or 'label'}: label shape {label.shape} does not match the image "
                         f"{tuple(ctx['input_shape'])}")
    y = _forward_axes(label.astype(np.int32), ctx["perm"], ctx["flips"], ctx["slice_axis"], nd)
    y = y[tuple(slice(lo, hi) for lo, hi in ctx["crop"])]
    y = _sitk_resample(y, ctx["spacing_in"], ctx["spacing_out"], ctx["shape_out"], nearest=True)
    return np.ascontiguousarray(y, dtype=np.int32)


def restore_case(array: np.ndarray, ctx: dict, *, order: int = 0) -> np.ndarray:
    """``[*S', ...]`` on the preprocessed grid -> the input's exact shape and grid (undo resampling, crop,
    slice-axis move and reorientation).

    ``order=0``: a label map ``[*S']`` (nearest neighbour; outside the crop: 0). ``order=1``: probabilities
    ``[*S', K]`` (linear; outside the crop: class 0 has probability 1, the others 0).
    """
    array = np.asarray(array)
    nd = len(ctx["input_shape"])
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (labels) or 1 (probabilities), got {order}")
    if list(array.shape[:nd]) != list(ctx["shape_out"]) or array.ndim != nd + order:
        want = tuple(ctx["shape_out"]) + ((("K",)) if order else ())
        raise ValueError(f"restore_case: expected an array of shape {want}, got {array.shape}")
    y = _sitk_resample(array, ctx["spacing_out"], ctx["spacing_in"], ctx["cropped_shape"], nearest=order == 0)
    full_shape = tuple(ctx["oriented_shape"]) + tuple(array.shape[nd:])
    out = np.zeros(full_shape, y.dtype)
    if order == 1 and y.shape[-1]:
        out[..., 0] = 1
    out[tuple(slice(lo, hi) for lo, hi in ctx["crop"])] = y
    return _backward_axes(out, ctx["perm"], ctx["flips"], ctx["slice_axis"], nd)
