"""Intensity preprocessing and augmentation of one sample ``image [*S, C]`` (float).

Deterministic preprocessing: :func:`zscore` (per channel, optionally with statistics from a mask),
:func:`clip_percentiles`, :func:`ct_window`. Augmentations (parameters may be traced, so a pipeline
can draw them per sample): :func:`adjust_gamma`, :func:`add_gaussian_noise`, :func:`gaussian_blur`,
:func:`adjust_brightness_contrast`, :func:`bias_field` / :func:`apply_bias_field`.
All are pure, jittable and ``vmap``-able; random ones take an explicit ``key``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kernels.geometry import bspline_matrix, check_sample, gaussian_matrix, gaussian_radius

__all__ = ["zscore", "clip_percentiles", "ct_window", "window_center_width", "adjust_gamma", "add_gaussian_noise",
           "gaussian_blur", "adjust_brightness_contrast", "bias_field", "apply_bias_field"]

_HIGHEST = jax.lax.Precision.HIGHEST


def _check_mask(mask, image):
    if mask is None:
        return None
    if tuple(np.shape(mask)) != tuple(image.shape[:-1]):
        raise ValueError(f"mask must have the spatial shape of image {tuple(image.shape[:-1])}; "
                         f"got shape {tuple(np.shape(mask))}")
    return jnp.asarray(mask).astype(bool)[..., None]


def _spatial_axes(image):
    return tuple(range(image.ndim - 1))


def zscore(image, mask=None, eps: float = 1e-8):
    """``(x - mean) / (std + eps)`` per channel; with ``mask [*S]`` the statistics come from the masked voxels
    (all voxels are normalised). A constant channel maps to 0.

    The one z-score of the project: a ``jax.Array`` (or anything but numpy) is normalised with weighted sums
    (jittable); a numpy ``image`` gives a numpy array, its statistics taken over the selected voxels of each
    channel (``v.mean()``, ``v.std()``: the phantoms normalise this way on the host)."""
    check_sample(image)
    if isinstance(image, np.ndarray):
        sel = None if mask is None else np.asarray(mask).astype(bool)
        if sel is not None and sel.shape != image.shape[:-1]:
            _check_mask(mask, image)  # raises, naming the shapes
        out = np.empty_like(image, dtype=np.result_type(image.dtype, np.float32))
        for c in range(image.shape[-1]):
            v = image[..., c] if sel is None else image[..., c][sel]
            mean, std = (v.mean(), v.std()) if v.size else (0.0, 0.0)
            out[..., c] = (image[..., c] - mean) / (std + eps)
        return out
    image = jnp.asarray(image)
    m = _check_mask(mask, image)
    axes = _spatial_axes(image)
    if m is None:
        mean = jnp.mean(image, axis=axes, keepdims=True)
        var = jnp.mean(jnp.square(image - mean), axis=axes, keepdims=True)
    else:
        w = m.astype(image.dtype)
        n = jnp.maximum(jnp.sum(w, axis=axes, keepdims=True), 1)
        mean = jnp.sum(image * w, axis=axes, keepdims=True) / n
        var = jnp.sum(jnp.square(image - mean) * w, axis=axes, keepdims=True) / n
    return (image - mean) / (jnp.sqrt(var) + jnp.asarray(eps, image.dtype))


def clip_percentiles(image, lower: float = 0.5, upper: float = 99.5, mask=None):
    """Clip each channel to its ``[lower, upper]`` percentiles (of the masked voxels when ``mask`` is given)."""
    check_sample(image)
    if not (0 <= lower < upper <= 100):
        raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100; got lower={lower}, upper={upper}")
    image = jnp.asarray(image)
    m = _check_mask(mask, image)
    flat = image.reshape(-1, image.shape[-1])
    q = jnp.asarray([lower, upper], jnp.float32)
    if m is None:
        lo, hi = jnp.percentile(flat, q, axis=0)
    else:
        vals = jnp.where(m.reshape(-1, 1), flat, jnp.asarray(jnp.nan, flat.dtype))
        lo, hi = jnp.nanpercentile(vals, q, axis=0)
    return jnp.clip(image, lo.astype(image.dtype), hi.astype(image.dtype))


def ct_window(image, center: float, width: float, out_range: tuple = (0.0, 1.0)):
    """CT windowing: clip Hounsfield units to ``[center - width/2, center + width/2]`` and map that
    interval linearly onto ``out_range`` (e.g. soft tissue ``center=40, width=400``; the lung window
    ``center=-300, width=1400`` is HU [-1000, 400]).

    The one HU window of the project: a numpy ``image`` gives a numpy array (the data loaders and prediction
    window on the host, integer HU as float32), anything else a ``jax.Array`` (jittable)."""
    check_sample(image)
    if not width > 0:
        raise ValueError(f"width must be positive; got {width}")
    lo, hi = center - width / 2.0, center + width / 2.0
    a, b = out_range
    xp = np if isinstance(image, np.ndarray) else jnp
    image = xp.asarray(image)
    if not xp.issubdtype(image.dtype, xp.floating):
        image = image.astype(xp.float32)
    x = (xp.clip(image, lo, hi) - lo) / width
    return (x * (b - a) + a).astype(image.dtype)


def window_center_width(window) -> tuple[float, float]:
    """``(center, width)`` of an HU window given as ``(lo, hi)`` with ``hi > lo`` (for :func:`ct_window`)."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"HU window must be (lo, hi) with hi > lo, got {tuple(window)}")
    return (lo + hi) / 2.0, hi - lo


def adjust_gamma(image, gamma, eps: float = 1e-7):
    """nnU-Net-style gamma: per channel, rescale to [0, 1] by min/max, raise to ``gamma``, scale back."""
    check_sample(image)
    image = jnp.asarray(image)
    axes = _spatial_axes(image)
    lo = jnp.min(image, axis=axes, keepdims=True)
    hi = jnp.max(image, axis=axes, keepdims=True)
    rng = hi - lo
    x = (image - lo) / (rng + jnp.asarray(eps, image.dtype))
    return (jnp.power(x, jnp.asarray(gamma, image.dtype)) * rng + lo).astype(image.dtype)


def add_gaussian_noise(key, image, std):
    """``image + std * N(0, 1)`` (``std`` may be traced)."""
    check_sample(image)
    image = jnp.asarray(image)
    noise = jax.random.normal(key, image.shape, image.dtype)
    return image + jnp.asarray(std, image.dtype) * noise


def gaussian_blur(image, sigma, truncate: float = 4.0, max_sigma: float | None = None):
    """Separable Gaussian blur over the spatial axes (``scipy.ndimage.gaussian_filter``, ``mode="reflect"``).

    ``sigma`` is a number or per-axis sequence; it may be traced if ``max_sigma`` (a Python float that
    bounds it and fixes the kernel width) is given.
    """
    d = check_sample(image)
    image = jnp.asarray(image)
    sig = jnp.broadcast_to(jnp.asarray(sigma, jnp.float32), (d,))
    if max_sigma is None:
        try:
            static = [float(s) for s in np.broadcast_to(np.asarray(sigma, np.float64), (d,))]
        except jax.errors.TracerArrayConversionError:
            raise ValueError("sigma is traced: pass max_sigma (a Python float) to fix the kernel width") from None
        if any(not (s > 0) for s in static):
            raise ValueError(f"sigma must be positive; got {sigma!r}")
        radii = [gaussian_radius(s, truncate) for s in static]
    else:
        if not max_sigma > 0:
            raise ValueError(f"max_sigma must be positive; got {max_sigma!r}")
        radii = [gaussian_radius(max_sigma, truncate)] * d
    x = image
    for a, n in enumerate(image.shape[:-1]):
        g = gaussian_matrix(n, sig[a], truncate, radius=radii[a]).astype(image.dtype)
        x = jnp.moveaxis(jnp.tensordot(g, x, axes=([1], [a]), precision=_HIGHEST), 0, a)
    return x


def adjust_brightness_contrast(image, brightness=1.0, contrast=1.0, preserve_range: bool = True):
    """Multiply by ``brightness``; then scale each channel's deviation from its mean by ``contrast``
    (clipped to the channel's previous min/max when ``preserve_range``, as nnU-Net)."""
    check_sample(image)
    image = jnp.asarray(image)
    axes = _spatial_axes(image)
    x = image * jnp.asarray(brightness, image.dtype)
    mean = jnp.mean(x, axis=axes, keepdims=True)
    y = (x - mean) * jnp.asarray(contrast, image.dtype) + mean
    if preserve_range:
        y = jnp.clip(y, jnp.min(x, axis=axes, keepdims=True), jnp.max(x, axis=axes, keepdims=True))
    return y.astype(image.dtype)


def bias_field(key, spatial: Sequence[int], control_points: int = 4) -> jnp.ndarray:
    """Smooth random field ``[*S]`` in about [-1, 1]: uniform(-1, 1) on a coarse ``control_points``^D
    grid interpolated with cubic B-splines across each axis."""
    if int(control_points) < 1:
        raise ValueError(f"control_points must be >= 1; got {control_points}")
    spatial = tuple(int(n) for n in spatial)
    # B-spline spacing so that about `control_points` cells cover each axis.
    mats = [bspline_matrix(n, max(n - 1, 1) / max(int(control_points) - 1, 1)) for n in spatial]
    k = tuple(m.shape[1] for m in mats)
    noise = jax.random.uniform(key, k, jnp.float32, -1.0, 1.0)
    d = len(spatial)
    spec = ",".join(o + i for o, i in zip("abc"[:d], "ijk"[:d])) + f",{'ijk'[:d]}->{'abc'[:d]}"
    return jnp.einsum(spec, *[jnp.asarray(m) for m in mats], noise, precision=_HIGHEST)


def apply_bias_field(key, image, strength=0.3, control_points: int = 4):
    """Multiply every channel by ``exp(strength * bias_field)`` (an MRI-like smooth gain field)."""
    check_sample(image)
    image = jnp.asarray(image)
    field = bias_field(key, image.shape[:-1], control_points)
    gain = jnp.exp(jnp.asarray(strength, jnp.float32) * field).astype(image.dtype)
    return image * gain[..., None]
