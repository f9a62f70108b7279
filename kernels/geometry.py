"""Geometric resampling of one sample: affine and elastic warps in one gather pass.

Shapes: ``image: [*S, C]`` float, ``label: [*S]`` integer, ``S`` has 2 or 3 entries.
Everything here works on one sample; ``vmap`` it over the batch with per-sample keys.

Coordinate convention (the same as ``scipy.ndimage.affine_transform``): a homogeneous
``(D+1)x(D+1)`` matrix maps an *output* voxel index to the *input* voxel index it samples.
A displacement field ``[D, *S]`` is added to those input coordinates.

Boundary convention (the same as scipy ``mode="constant", cval=0``): a sample point outside
``[0, n-1]`` on any axis reads 0 (background for labels); inside, images are interpolated
linearly and labels take the nearest voxel (ties round up, ``floor(x + 0.5)``, as scipy does).

Speed: on CPU a float32 warp is one native pass (``kernels/csrc/warp.cc`` through the XLA FFI, see
:func:`set_warp_backend`; 2-2.6x the XLA form below in the augmentation pipeline). The XLA form, the
reference and the choice on accelerators, is one hand-written gather on flat indices (2^D corners) rather than
``jax.scipy.ndimage.map_coordinates`` (PERFORMANCE.md: about 2x faster on XLA:CPU); affine
coordinates are built from per-axis ramps by broadcasting (fused, no grid materialised first).
Random displacement fields are smoothed separably, either with a full-resolution Gaussian as
per-axis ``[n, n]`` matmuls (``control="gaussian"``: Simard / nnU-Net style, the same numbers as
``scipy.ndimage.gaussian_filter`` with ``mode="reflect"``) or from a coarse random control grid
upsampled with cubic B-splines (``control="bspline"``, the default: MONAI ``RandDeformGrid`` style).
With a whole-voxel control spacing the B-spline basis is periodic along each axis, so each axis is
4 multiply-adds per output voxel on static slices (no gathers, no transposes), which is far cheaper,
most of all in 3D.
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "check_sample", "affine_coordinates", "warp",
    "affine_transform", "gaussian_matrix", "bspline_matrix", "smooth_noise", "elastic_displacement",
    "elastic_deform", "ELASTIC_CONTROLS", "separable_apply", "noise_shape", "gaussian_radius", "bspline_spacing",
    "set_warp_backend", "resolve_backend", "WARP_BACKENDS",
]

ELASTIC_CONTROLS = ("bspline", "gaussian")
_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------------------- validation

def check_sample(image, label=None, *, name: str = "image", label_name: str = "label") -> int:
    """Validate one sample ``image [*S, C]`` (+ ``label [*S]``) and return ``D = len(S)``."""
    shape = tuple(np.shape(image))
    if len(shape) not in (3, 4):
        raise ValueError(f"{name} must be one sample [*S, C] with 2 or 3 spatial dims (rank 3 or 4); "
                         f"got shape {shape}")
    if min(shape) < 1:
        raise ValueError(f"{name} must not be empty; got shape {shape}")
    if label is not None and tuple(np.shape(label)) != shape[:-1]:
        raise ValueError(f"{label_name} must have the spatial shape of {name} {shape[:-1]}; "
                         f"got shape {tuple(np.shape(label))}")
    return len(shape) - 1


def _check_matrix(matrix, d: int) -> jnp.ndarray:
    shape = tuple(np.shape(matrix))
    if shape not in ((d + 1, d + 1), (d, d + 1)):
        raise ValueError(f"matrix must be a homogeneous ({d + 1}, {d + 1}) (or ({d}, {d + 1})) affine "
                         f"for {d} spatial dims; got shape {shape}")
    return jnp.asarray(matrix, jnp.float32)


def _check_displacement(displacement, spatial: tuple) -> jnp.ndarray:
    want = (len(spatial), *spatial)
    if tuple(np.shape(displacement)) != want:
        raise ValueError(f"displacement must have shape [D, *S] = {want}; got {tuple(np.shape(displacement))}")
    return jnp.asarray(displacement, jnp.float32)


def _positive(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number; got {value!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ValueError(f"{name} must be positive and finite; got {value!r}")
    return v


# ----------------------------------------------------------------------------- sampling

def affine_coordinates(matrix, spatial: Sequence[int]) -> jnp.ndarray:
    """Input coordinates ``[D, *S]`` sampled by each output voxel under ``matrix``."""
    spatial = tuple(spatial)
    return jnp.stack(_axis_coordinates(_check_matrix(matrix, len(spatial)), spatial))


def _axis_coordinates(matrix, spatial: tuple, displacement=None) -> list:
    """Per-axis input coordinates (a list of D ``[*S]`` arrays): ``matrix`` (or the identity when None)
    applied to the output grid, plus ``displacement[a]``.

    Built from per-axis ramps by broadcasting and kept as separate arrays: XLA then fuses each one into
    the index arithmetic of the gathers that read it, whereas a stacked ``[D, *S]`` array (or a
    ``[D, D] x [D, N]`` dot with tiny D) is materialised in memory and costs as much as the gathers.
    """
    d = len(spatial)
    ramps = [jnp.arange(n, dtype=jnp.float32).reshape([n if a == j else 1 for a in range(d)])
             for j, n in enumerate(spatial)]
    coords = []
    for i in range(d):
        if matrix is None:
            c = ramps[i]
        else:
            c = matrix[i, d]
            for j in range(d):
                c = c + matrix[i, j] * ramps[j]
        c = jnp.broadcast_to(c, spatial)
        coords.append(c if displacement is None else c + displacement[i])
    return coords


def _inside(coords, spatial):
    inside = None
    for x, n in zip(coords, spatial):
        ok = (x >= 0) & (x <= n - 1)
        inside = ok if inside is None else inside & ok
    return inside


def _strides(spatial):
    strides, s = [], 1
    for n in reversed(spatial):
        strides.append(s)
        s *= n
    return strides[::-1]


def _map_linear(image, coords: list) -> jnp.ndarray:
    # One flat-index gather per corner (2^D): on XLA:CPU this beats a single gather of 2^D-voxel
    # windows (lax.gather slice_sizes=(2,)*D) by ~2x, and pairs along the last axis by ~2.5x.
    spatial = image.shape[:-1]
    c = image.shape[-1]
    out_spatial = coords[0].shape
    flat = image.reshape(-1, c)
    inside = _inside(coords, spatial).reshape(-1)
    lo, frac = [], []
    for x, n in zip(coords, spatial):
        x = jnp.clip(x.reshape(-1), 0.0, n - 1.0)
        # Keep the lower corner <= n-2 so the upper one stays inside (its weight is 0 at x = n-1).
        f = jnp.minimum(jnp.floor(x), max(n - 2, 0))
        lo.append(f.astype(jnp.int32))
        frac.append(x - f)
    strides = _strides(spatial)
    out = None
    for corner in itertools.product((0, 1), repeat=len(spatial)):
        idx, weight = None, None
        for a, bit in enumerate(corner):
            i = lo[a] + bit if spatial[a] > 1 else lo[a]
            idx = i * strides[a] if idx is None else idx + i * strides[a]
            w = frac[a] if bit else 1.0 - frac[a]
            weight = w if weight is None else weight * w
        term = jnp.take(flat, idx, axis=0, mode="clip") * weight[:, None].astype(flat.dtype)
        out = term if out is None else out + term
    out = jnp.where(inside[:, None], out, jnp.zeros((), out.dtype))
    return out.reshape(*out_spatial, c)


def _map_nearest(label, coords: list) -> jnp.ndarray:
    spatial = label.shape
    out_spatial = coords[0].shape
    inside = _inside(coords, spatial).reshape(-1)
    idx = None
    for x, n, s in zip(coords, spatial, _strides(spatial)):
        i = jnp.clip(jnp.floor(x.reshape(-1) + 0.5), 0, n - 1).astype(jnp.int32) * s
        idx = i if idx is None else idx + i
    out = jnp.take(label.reshape(-1), idx, mode="clip")
    out = jnp.where(inside, out, jnp.zeros((), out.dtype))
    return out.reshape(out_spatial)


WARP_BACKENDS = ("auto", "native", "xla")
_warp_backend = "auto"


def set_warp_backend(backend: str) -> str:
    """Choose how :func:`warp` resamples on CPU; returns the previous choice. ``"auto"`` (default): the native
    kernel (:mod:`kernels.native`, ``csrc/warp.cc``) where it is built, else XLA gathers; ``"native"``: the
    kernel, or an error naming why it is unavailable; ``"xla"``: always the XLA gathers (the reference).
    Other platforms (GPU, TPU) always use the XLA form."""
    global _warp_backend
    if backend not in WARP_BACKENDS:
        raise ValueError(f"warp backend must be one of {WARP_BACKENDS}; got {backend!r}")
    previous, _warp_backend = _warp_backend, backend
    return previous


# Label dtypes that round-trip through the kernel's int32 exactly.
_NATIVE_LABEL_DTYPES = tuple(np.dtype(t) for t in (np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32))


def resolve_backend(image, label) -> str:
    """``"native"`` or ``"xla"``: the resampling :func:`warp` uses for this ``image`` (and ``label`` map or None)
    under the current :func:`set_warp_backend` setting; raises ``ValueError`` when ``"native"`` was asked for and
    the kernel cannot take these arrays (or is not built)."""
    if _warp_backend == "xla":
        return "xla"
    why = None
    if np.dtype(image.dtype) != np.float32:
        why = f"the image is {image.dtype}, the kernel takes float32"
    elif label is not None and np.dtype(label.dtype) not in _NATIVE_LABEL_DTYPES:
        why = f"the label map is {label.dtype}, the kernel takes integers of up to 32 bits"
    else:
        from kernels import native

        if not native.available("warp"):
            why = native.status()["warp"]
    if why is None:
        return "native"
    if _warp_backend == "native":
        raise ValueError(f"warp backend 'native' was requested but cannot be used: {why}")
    return "xla"


def warp(image, label=None, *, matrix=None, displacement=None):
    """One resampling pass: input coords = ``matrix`` applied to the output grid + ``displacement``.

    ``image [*S, C]`` (linear), ``label [*S]`` (nearest) or None, ``matrix`` homogeneous ``(D+1)x(D+1)``
    (output voxel -> input voxel) or None for the identity, ``displacement [D, *S]`` in input-voxel units
    or None. Returns ``(image, label)`` with the input shapes and dtypes. On CPU a float32 image runs
    through the native kernel when it is built (see :func:`set_warp_backend`), elsewhere through XLA gathers.
    """
    check_sample(image, label)
    spatial = tuple(np.shape(image)[:-1])
    if matrix is not None:
        matrix = _check_matrix(matrix, len(spatial))
    if displacement is not None:
        displacement = _check_displacement(displacement, spatial)
    image = jnp.asarray(image)
    label = None if label is None else jnp.asarray(label)
    return _warp(image, label, matrix, displacement, backend=resolve_backend(image, label))


@functools.partial(jax.jit, static_argnames="backend")
def _warp(image, label, matrix, displacement, backend="xla"):
    # One compiled program per shape (eager op-by-op dispatch would compile dozens of small ones).
    if backend == "native":
        return jax.lax.platform_dependent(image, label, matrix, displacement, cpu=_warp_native_jvp,
                                          default=_warp_xla)
    return _warp_xla(image, label, matrix, displacement)


def _warp_xla(image, label, matrix, displacement):
    coords = _axis_coordinates(matrix, tuple(image.shape[:-1]), displacement)
    out_image = _map_linear(image, coords).astype(image.dtype)
    out_label = None if label is None else _map_nearest(label, coords)
    return out_image, out_label


def _warp_native(image, label, matrix, displacement):
    """The ``medzoo_warp`` FFI call (kernels/csrc/warp.cc); absent operands travel as 1-element dummies."""
    d = image.ndim - 1
    m = jnp.eye(d, d + 1, dtype=jnp.float32) if matrix is None else matrix[:d]
    lab = jnp.zeros((1,), jnp.int32) if label is None else label.astype(jnp.int32)
    disp = jnp.zeros((1,), jnp.float32) if displacement is None else displacement
    call = jax.ffi.ffi_call("medzoo_warp", (jax.ShapeDtypeStruct(image.shape, jnp.float32),
                                            jax.ShapeDtypeStruct(lab.shape, jnp.int32)),
                            vmap_method="broadcast_all")
    out_image, out_label = call(image, lab, m, disp, ndim=np.int64(d), has_label=np.int64(label is not None),
                                has_disp=np.int64(displacement is not None))
    return out_image, None if label is None else out_label.astype(label.dtype)


@jax.custom_jvp
def _warp_native_jvp(image, label, matrix, displacement):
    return _warp_native(image, label, matrix, displacement)


@_warp_native_jvp.defjvp
def _warp_native_tangents(primals, tangents):
    # The kernel has no derivative of its own: differentiate the XLA form, which computes the same values.
    _, out_tangents = jax.jvp(_warp_xla, primals, tangents)
    return _warp_native(*primals), out_tangents


def affine_transform(image, matrix, label=None):
    """Affine warp of one sample; ``matrix`` is homogeneous ``(D+1)x(D+1)`` in voxel coordinates,
    output voxel -> input voxel (as ``scipy.ndimage.affine_transform``). Linear for the image,
    nearest for the label, 0 outside. Returns ``(image [*S, C], label [*S] or None)``."""
    d = check_sample(image, label)
    _check_matrix(matrix, d)
    return warp(image, label, matrix=matrix)


# ----------------------------------------------------------------------------- smoothing matrices

def _reflect(j: np.ndarray, n: int) -> np.ndarray:
    """scipy ``mode="reflect"`` index (d c b a | a b c d | d c b a)."""
    m = np.mod(j, 2 * n)
    return np.where(m < n, m, 2 * n - 1 - m)


def gaussian_radius(sigma: float, truncate: float = 4.0) -> int:
    """Half-width of the Gaussian kernel, as ``scipy.ndimage.gaussian_filter1d``."""
    return int(truncate * float(sigma) + 0.5)


def gaussian_matrix(n: int, sigma, truncate: float = 4.0, radius: int | None = None):
    """``[n, n]`` matrix ``G`` with ``G @ x == scipy.ndimage.gaussian_filter1d(x, sigma, mode="reflect")``.

    ``sigma`` may be traced (then pass a static ``radius``); a Python float gives a numpy matrix.
    """
    if radius is None:
        radius = gaussian_radius(_positive(sigma, "sigma"), truncate)
    taps = np.arange(-radius, radius + 1)
    rows = np.repeat(np.arange(n), taps.size)
    cols = _reflect(np.arange(n)[:, None] + taps[None, :], n).reshape(-1)
    if isinstance(sigma, (int, float)):
        w = np.exp(-0.5 * (taps / float(sigma)) ** 2)
        w = w / w.sum()
        g = np.zeros((n, n), np.float64)
        np.add.at(g, (rows, cols), np.tile(w, n))
        return g.astype(np.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    w = jnp.exp(-0.5 * (jnp.asarray(taps, jnp.float32) / sigma) ** 2)
    w = w / jnp.sum(w)
    return jnp.zeros((n, n), jnp.float32).at[rows, cols].add(jnp.tile(w, n))


def _cubic_bspline(t: np.ndarray) -> np.ndarray:
    t = np.abs(t)
    return np.where(t < 1, (4 - 6 * t ** 2 + 3 * t ** 3) / 6, np.where(t < 2, (2 - t) ** 3 / 6, 0.0))


def bspline_spacing(sigma: float) -> float:
    """Control-point spacing whose cubic B-spline field has the correlation length of a Gaussian-smoothed
    white noise of ``sigma`` (autocorrelation variance ``2 sigma^2`` == ``2 h^2 / 3``), rounded to whole
    voxels so the basis is periodic along the axis (see :func:`_band_plan`)."""
    return float(max(1, round(math.sqrt(3.0) * float(sigma))))


def bspline_matrix(n: int, spacing: float) -> np.ndarray:
    """``[n, m]`` cubic B-spline basis evaluated at voxels ``0..n-1`` for ``m`` control points spaced
    ``spacing`` voxels, centred on the axis and covering it (every voxel has its 4 supports inside)."""
    spacing = _positive(spacing, "spacing")
    m = int(math.ceil((n - 1) / spacing)) + 3
    start = (n - 1) / 2.0 - (m - 1) / 2.0 * spacing
    t = (np.arange(n)[:, None] - (start + spacing * np.arange(m)[None, :])) / spacing
    return _cubic_bspline(t).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _smoothing_matrices(spatial: tuple, sigma: float, control: str, truncate: float):
    """Per-axis matrices ``M_a [n_a, k_a]`` and the noise shape ``[*k]`` for one control mode."""
    if control == "gaussian":
        mats = [gaussian_matrix(n, sigma, truncate) for n in spatial]
        return tuple(mats), tuple(spatial)
    if control == "bspline":
        h = bspline_spacing(sigma)
        mats = []
        for n in spatial:
            b = bspline_matrix(n, h)
            g = gaussian_matrix(n, sigma, truncate)
            # Match the mean per-voxel variance of the Gaussian mode, so alpha means the same in both.
            scale = math.sqrt(float((g.astype(np.float64) ** 2).sum(1).mean())
                              / float((b.astype(np.float64) ** 2).sum(1).mean()))
            mats.append((b * scale).astype(np.float32))
        return tuple(mats), tuple(m.shape[1] for m in mats)
    raise ValueError(f"control must be one of {ELASTIC_CONTROLS}; got {control!r}")


def _check_control(control):
    if control not in ELASTIC_CONTROLS:
        raise ValueError(f"control must be one of {ELASTIC_CONTROLS}; got {control!r}")


def noise_shape(spatial: Sequence[int], sigma: float, control: str = "bspline", truncate: float = 4.0):
    """Shape ``[D, *k]`` of the uniform(-1, 1) noise that :func:`smooth_noise` smooths."""
    _check_control(control)
    spatial = tuple(int(n) for n in spatial)
    _, k = _smoothing_matrices(spatial, _positive(sigma, "sigma"), control, float(truncate))
    return (len(spatial), *k)


def smooth_noise(noise, spatial: Sequence[int], sigma: float, control: str = "bspline",
                 truncate: float = 4.0) -> jnp.ndarray:
    """Separable smoothing of ``noise [D, *k]`` to a field ``[D, *S]``.

    ``control="gaussian"``: ``k == S`` and the result equals ``scipy.ndimage.gaussian_filter`` of each
    component (``mode="reflect"``, ``truncate``). ``control="bspline"``: ``k`` is a coarse grid spaced
    ``sqrt(3) sigma`` and the result is its cubic B-spline interpolation, scaled to the same mean variance.
    """
    _check_control(control)
    spatial = tuple(int(n) for n in spatial)
    sigma = _positive(sigma, "sigma")
    mats, k = _smoothing_matrices(spatial, sigma, control, float(truncate))
    d = len(spatial)
    if tuple(np.shape(noise)) != (d, *k):
        raise ValueError(f"noise must have shape {(d, *k)} for control={control!r}; got {tuple(np.shape(noise))}")
    x = jnp.asarray(noise, jnp.float32)
    if control == "bspline":
        plans = _band_plans(spatial, sigma, float(truncate))
        if all(p is not None for p in plans):
            # Minor axis first: the last (largest) steps then interleave their phases along major
            # axes, i.e. copy whole contiguous rows; minor-last interleaves single floats (~6x slower).
            for a in reversed(range(d)):
                x = _band_apply(x, plans[a], a + 1)
            return x
    return separable_apply(x, mats)


@functools.lru_cache(maxsize=64)
def _band_plans(spatial: tuple, sigma: float, truncate: float):
    mats, _ = _smoothing_matrices(spatial, sigma, "bspline", truncate)
    h = int(bspline_spacing(sigma))
    return tuple(_band_plan(m, h) for m in mats)


def _band_plan(mat: np.ndarray, h: int):
    """Phase decomposition of a 4-band matrix ``M [n, k]`` with period ``h`` (``M[i+h, j+1] == M[i, j]``):
    row ``r + h q`` is ``W[r] . x[j0[r] + q : j0[r] + q + 4]``. Returns None when ``M`` is not of that form
    (the caller then uses a dense matmul)."""
    n, k = mat.shape
    if n < h:
        return None
    j0 = np.zeros(h, int)
    w = np.zeros((h, 4), np.float64)
    for r in range(h):
        nz = np.nonzero(mat[r])[0]
        if nz.size == 0 or nz.max() - nz.min() > 3:
            return None
        j0[r] = nz.min()
        take = mat[r, j0[r]:j0[r] + 4]
        w[r, :take.size] = take
    q_count = -(-n // h)
    rebuilt = np.zeros((q_count * h, k + 4 + q_count))
    for r in range(h):
        for q in range(q_count):
            rebuilt[r + h * q, j0[r] + q:j0[r] + q + 4] = w[r]
    if not np.allclose(rebuilt[:n, :k], mat, rtol=1e-6, atol=1e-7) or np.any(rebuilt[:n, k:]):
        return None
    return tuple(int(j) for j in j0), tuple(tuple(float(v) for v in row) for row in w), h, q_count, n, \
        int(j0.max()) + 3 + q_count


def _band_apply(x, plan, axis: int):
    """Apply a :func:`_band_plan` along ``axis`` with static slices only (XLA fuses it into one pass;
    4 multiply-adds per output instead of ``k`` in a dense matmul, and no transposes)."""
    j0, w, h, q_count, n, need = plan
    if x.shape[axis] < need:
        pads = [(0, 0)] * x.ndim
        pads[axis] = (0, need - x.shape[axis])
        x = jnp.pad(x, pads)
    phases = []
    for r in range(h):
        acc = None
        for t in range(4):
            if w[r][t] == 0.0:
                continue
            term = jax.lax.slice_in_dim(x, j0[r] + t, j0[r] + t + q_count, axis=axis) * w[r][t]
            acc = term if acc is None else acc + term
        phases.append(acc)
    y = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = q_count * h
    y = y.reshape(shape)
    return jax.lax.slice_in_dim(y, 0, n, axis=axis)


def separable_apply(x, mats) -> jnp.ndarray:
    """Apply ``M_a [n_a, k_a]`` along each trailing axis of ``x [L, *k]`` -> ``[L, *n]`` (leading axis kept).

    One plain matmul on the last axis per step, then that axis is rolled to the front of the spatial
    axes; after D steps the order is restored. (A multi-operand ``einsum`` picked slow paths on XLA:CPU.)
    """
    d = len(mats)
    for a in reversed(range(d)):
        m = jnp.asarray(mats[a], jnp.float32)
        x = jnp.matmul(x, m.T, precision=_HIGHEST)
        x = jnp.moveaxis(x, -1, 1)
    return x


def elastic_displacement(key, spatial: Sequence[int], *, alpha, sigma, control: str = "bspline",
                         truncate: float = 4.0) -> jnp.ndarray:
    """Random smooth displacement ``[D, *S]`` (voxels): ``alpha * smooth(uniform(-1, 1), sigma)``.

    ``alpha`` may be traced (e.g. zeroed by a probability draw); ``sigma``/``control`` are static.
    """
    spatial = tuple(int(n) for n in spatial)
    shape = noise_shape(spatial, sigma, control, truncate)
    return _elastic_displacement(key, jnp.asarray(alpha, jnp.float32), spatial, float(sigma), control,
                                 float(truncate), shape)


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _elastic_displacement(key, alpha, spatial, sigma, control, truncate, shape):
    noise = jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    return alpha * smooth_noise(noise, spatial, sigma, control, truncate)


def elastic_deform(key, image, label=None, *, alpha, sigma, control: str = "bspline", matrix=None):
    """Simard-style elastic deformation of one sample, optionally composed with an affine in the same pass.

    ``image [*S, C]``, ``label [*S]`` or None; displacement = ``alpha * smooth(uniform(-1, 1), sigma)``
    (``control`` chooses the smoothing, see :func:`smooth_noise`); sample points are
    ``matrix @ x + displacement(x)``. Returns ``(image, label)``.
    """
    d = check_sample(image, label)
    if isinstance(alpha, (int, float)) and not (alpha >= 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be >= 0 and finite; got {alpha!r}")
    sigma = _positive(sigma, "sigma")
    _check_control(control)
    if matrix is not None:
        _check_matrix(matrix, d)
    disp = elastic_displacement(key, image.shape[:-1], alpha=alpha, sigma=sigma, control=control)
    return warp(image, label, matrix=matrix, displacement=disp)
