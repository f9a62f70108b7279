"""Augmentation pipelines built from a plain config dict: one pure, jittable function per sample.

    fn = make_pipeline({"rotate": {"max_angle": 15, "p": 0.5}, "flip": {"axes": (0, 1), "p": 0.5},
                        "elastic": {"alpha": 30, "sigma": 4, "p": 0.3}, "gamma": {"range": (0.7, 1.5)}})
    image, label = fn(key, image [*S, C], label [*S] or None)
    # batch: jax.vmap(fn)(jax.random.split(key, B), images, labels)   (or make_batch_pipeline)

Geometric transforms (``rotate``, ``flip``, ``scale``, ``translate``, ``elastic``) are drawn per sample,
composed into one affine about the image centre plus one displacement field, and applied in a
single resampling pass (linear for the image, nearest for the label, 0 outside; see
:mod:`kernels.geometry`). Intensity transforms then act on the image only, in the order the spec
lists them. Each transform fires independently with probability ``p`` (default 1). Under ``vmap``
every transform is computed for every sample and selected by its draw, so the cost does not depend
on ``p``.

Parameters (angles in degrees, distances in voxels):

- ``rotate``: ``max_angle`` (number; in 3D a number or 3 numbers, one per rotation plane (1,2), (0,2),
  (0,1)); angle ~ U(-max, max) per plane.
- ``flip``: ``axes`` (spatial axes); each listed axis flips independently with probability ``p``.
- ``scale``: ``range`` (lo, hi), factor ~ U(lo, hi), > 1 zooms in; ``isotropic`` (default True).
- ``translate``: ``max_voxels`` (number or one per axis); shift ~ U(-max, max).
- ``elastic``: ``alpha`` (>= 0), ``sigma`` (> 0), ``control`` ("bspline" default | "gaussian").
- ``gamma``: ``range`` (lo, hi) > 0. ``noise``: ``std`` (lo, hi) or number. ``blur``: ``sigma`` (lo, hi) > 0.
- ``brightness_contrast``: ``brightness`` (lo, hi), ``contrast`` (lo, hi).
- ``bias_field``: ``strength`` (>= 0; drawn ~ U(0, strength)), ``control_points`` (int, default 4).
"""

from __future__ import annotations

import copy
import difflib
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from kernels import geometry, intensity

__all__ = ["make_pipeline", "make_batch_pipeline", "DEFAULT_SEGMENTATION_SPEC", "default_segmentation_spec",
           "TRANSFORMS", "random_affine_matrix"]

GEOMETRIC = ("rotate", "flip", "scale", "translate", "elastic")
INTENSITY = ("gamma", "noise", "brightness_contrast", "blur", "bias_field")
TRANSFORMS = GEOMETRIC + INTENSITY

# Parameter names each transform accepts (``p`` everywhere).
_PARAMS = {
    "rotate": {"max_angle"}, "flip": {"axes"}, "scale": {"range", "isotropic"}, "translate": {"max_voxels"},
    "elastic": {"alpha", "sigma", "control"}, "gamma": {"range"}, "noise": {"std"},
    "brightness_contrast": {"brightness", "contrast"}, "blur": {"sigma"},
    "bias_field": {"strength", "control_points"},
}
_REQUIRED = {"rotate": {"max_angle"}, "flip": set(), "scale": {"range"}, "translate": {"max_voxels"},
             "elastic": {"alpha", "sigma"}, "gamma": {"range"}, "noise": {"std"}, "brightness_contrast": set(),
             "blur": {"sigma"}, "bias_field": {"strength"}}

# nnU-Net-like defaults for segmentation training (probabilities per sample).
DEFAULT_SEGMENTATION_SPEC: dict = {
    "rotate": {"max_angle": 15.0, "p": 0.2},
    "scale": {"range": (0.85, 1.25), "p": 0.2},
    "flip": {"axes": (0, 1), "p": 0.5},
    "elastic": {"alpha": 30.0, "sigma": 4.0, "p": 0.2},
    "noise": {"std": (0.0, 0.1), "p": 0.1},
    "blur": {"sigma": (0.5, 1.0), "p": 0.2},
    "brightness_contrast": {"brightness": (0.75, 1.25), "contrast": (0.75, 1.25), "p": 0.15},
    "gamma": {"range": (0.7, 1.5), "p": 0.3},
}


def default_segmentation_spec() -> dict:
    """A fresh (mutable) copy of :data:`DEFAULT_SEGMENTATION_SPEC`."""
    return copy.deepcopy(DEFAULT_SEGMENTATION_SPEC)


# ----------------------------------------------------------------------------- spec validation

def _num(value, where: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{where} must be a number; got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a number; got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{where} must be finite; got {value!r}")
    return v


def _range(value, where: str, low: float | None = None, strict: bool = False) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{where} must be a (low, high) pair; got {value!r}") from None
    lo, hi = _num(lo, where), _num(hi, where)
    if lo > hi:
        raise ValueError(f"{where} must have low <= high; got {value!r}")
    if low is not None and (lo < low or (strict and lo == low)):
        raise ValueError(f"{where} must be {'>' if strict else '>='} {low}; got {value!r}")
    return lo, hi


def _numbers(value, where: str, low: float = 0.0) -> tuple:
    vals = value if isinstance(value, (tuple, list)) else (value,)
    out = tuple(_num(v, where) for v in vals)
    if not out or any(v < low for v in out):
        raise ValueError(f"{where} must be one or more numbers >= {low}; got {value!r}")
    return out


def _validate(spec) -> list:
    if not isinstance(spec, dict):
        raise ValueError(f"spec must be a dict of transform name -> params; got {type(spec).__name__}")
    out = []
    for name, params in spec.items():
        if name not in TRANSFORMS:
            close = difflib.get_close_matches(str(name), TRANSFORMS, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"spec has unknown transform {name!r}{hint}; known: {', '.join(TRANSFORMS)}")
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise ValueError(f"spec[{name!r}] must be a dict of params; got {params!r}")
        unknown = set(params) - _PARAMS[name] - {"p"}
        if unknown:
            raise ValueError(f"spec[{name!r}] has unknown params {sorted(unknown)}; "
                             f"allowed: {sorted(_PARAMS[name] | {'p'})}")
        missing = _REQUIRED[name] - set(params)
        if missing:
            raise ValueError(f"spec[{name!r}] is missing required params {sorted(missing)}")
        w = f"spec[{name!r}]"
        p = _num(params.get("p", 1.0), f"{w}['p']")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{w}['p'] must be in [0, 1]; got {params.get('p')!r}")
        q: dict[str, Any] = {"p": p}
        if name == "rotate":
            q["max_angle"] = _numbers(params["max_angle"], f"{w}['max_angle']")
            if len(q["max_angle"]) not in (1, 3):
                raise ValueError(f"{w}['max_angle'] must be a number or 3 numbers (3D); got {params['max_angle']!r}")
        elif name == "flip":
            axes = params.get("axes", (0, 1))
            axes = (axes,) if isinstance(axes, int) else tuple(axes)
            if not axes or any(not isinstance(a, (int, np.integer)) or isinstance(a, bool) or a < 0 for a in axes):
                raise ValueError(f"{w}['axes'] must be non-negative spatial axis ints; got {params.get('axes')!r}")
            q["axes"] = tuple(sorted(set(int(a) for a in axes)))
        elif name == "scale":
            q["range"] = _range(params["range"], f"{w}['range']", 0.0, strict=True)
            q["isotropic"] = bool(params.get("isotropic", True))
        elif name == "translate":
            q["max_voxels"] = _numbers(params["max_voxels"], f"{w}['max_voxels']")
        elif name == "elastic":
            q["alpha"] = _num(params["alpha"], f"{w}['alpha']")
            if q["alpha"] < 0:
                raise ValueError(f"{w}['alpha'] must be >= 0; got {params['alpha']!r}")
            q["sigma"] = _num(params["sigma"], f"{w}['sigma']")
            if q["sigma"] <= 0:
                raise ValueError(f"{w}['sigma'] must be positive; got {params['sigma']!r}")
            q["control"] = params.get("control", "bspline")
            if q["control"] not in geometry.ELASTIC_CONTROLS:
                raise ValueError(f"{w}['control'] must be one of {geometry.ELASTIC_CONTROLS}; "
                                 f"got {q['control']!r}")
        elif name == "gamma":
            q["range"] = _range(params["range"], f"{w}['range']", 0.0, strict=True)
        elif name == "noise":
            q["std"] = _range(params["std"], f"{w}['std']", 0.0)
        elif name == "blur":
            q["sigma"] = _range(params["sigma"], f"{w}['sigma']", 0.0, strict=True)
        elif name == "brightness_contrast":
            q["brightness"] = _range(params.get("brightness", (1.0, 1.0)), f"{w}['brightness']", 0.0)
            q["contrast"] = _range(params.get("contrast", (1.0, 1.0)), f"{w}['contrast']", 0.0)
        elif name == "bias_field":
            q["strength"] = _num(params["strength"], f"{w}['strength']")
            if q["strength"] < 0:
                raise ValueError(f"{w}['strength'] must be >= 0; got {params['strength']!r}")
            cp = params.get("control_points", 4)
            if isinstance(cp, bool) or not isinstance(cp, (int, np.integer)) or cp < 2:
                raise ValueError(f"{w}['control_points'] must be an int >= 2; got {cp!r}")
            q["control_points"] = int(cp)
        out.append((name, q))
    return out


# ----------------------------------------------------------------------------- geometry

def _mm(a, b):
    # Full float32 matmuls: accelerators default to reduced precision, which would break exact flips.
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _plane_rotation(d: int, i: int, j: int, angle):
    c, s = jnp.cos(angle), jnp.sin(angle)
    r = jnp.eye(d, dtype=jnp.float32)
    return r.at[i, i].set(c).at[j, j].set(c).at[i, j].set(-s).at[j, i].set(s)


def random_affine_matrix(key, spatial, geo: dict) -> jnp.ndarray:
    """Homogeneous ``(D+1)x(D+1)`` matrix (output voxel -> input voxel) about the image centre for the
    validated geometric params ``geo`` (``rotate``/``flip``/``scale``/``translate`` entries)."""
    d = len(spatial)
    centre = jnp.asarray([(n - 1) / 2.0 for n in spatial], jnp.float32)
    a = jnp.eye(d, dtype=jnp.float32)
    shift = jnp.zeros((d,), jnp.float32)
    keys = {name: jax.random.fold_in(key, TRANSFORMS.index(name)) for name in geo}
    if "scale" in geo:
        q = geo["scale"]
        k1, k2 = jax.random.split(keys["scale"])
        n = 1 if q["isotropic"] else d
        s = jax.random.uniform(k2, (n,), jnp.float32, q["range"][0], q["range"][1])
        s = jnp.where(jax.random.uniform(k1) < q["p"], s, 1.0)
        a = _mm(jnp.diag(jnp.broadcast_to(1.0 / s, (d,))), a)
    if "rotate" in geo:
        q = geo["rotate"]
        planes = [(0, 1)] if d == 2 else [(1, 2), (0, 2), (0, 1)]
        max_angle = q["max_angle"]
        if len(max_angle) == 1:
            max_angle = max_angle * len(planes)
        if len(max_angle) != len(planes):
            raise ValueError(f"spec['rotate']['max_angle'] needs 1 number in 2D (or 1 or 3 in 3D); "
                             f"got {q['max_angle']} for {d}D images")
        k1, k2 = jax.random.split(keys["rotate"])
        lim = jnp.asarray(np.deg2rad(max_angle), jnp.float32)
        ang = jax.random.uniform(k2, (len(planes),), jnp.float32, -1.0, 1.0) * lim
        ang = jnp.where(jax.random.uniform(k1) < q["p"], ang, 0.0)
        for (i, j), t in zip(planes, ang):
            a = _mm(_plane_rotation(d, i, j, t), a)
    if "flip" in geo:
        q = geo["flip"]
        if max(q["axes"]) >= d:
            raise ValueError(f"spec['flip']['axes'] {q['axes']} has an axis >= {d} for {d}D images")
        draws = jax.random.uniform(keys["flip"], (d,)) < q["p"]
        sign = jnp.asarray([1.0] * d, jnp.float32)
        for ax in q["axes"]:
            sign = sign.at[ax].set(jnp.where(draws[ax], -1.0, 1.0))
        a = _mm(jnp.diag(sign), a)
    if "translate" in geo:
        q = geo["translate"]
        mx = q["max_voxels"]
        if len(mx) not in (1, d):
            raise ValueError(f"spec['translate']['max_voxels'] needs 1 or {d} numbers; got {mx}")
        k1, k2 = jax.random.split(keys["translate"])
        t = jax.random.uniform(k2, (d,), jnp.float32, -1.0, 1.0) * jnp.asarray(mx, jnp.float32)
        shift = jnp.where(jax.random.uniform(k1) < q["p"], t, 0.0)
    offset = centre - _mm(a, centre) + shift
    m = jnp.eye(d + 1, dtype=jnp.float32)
    return m.at[:d, :d].set(a).at[:d, d].set(offset)


# ----------------------------------------------------------------------------- pipeline

def _apply_intensity(name: str, q: dict, key, image):
    k_p, k_v, k_n = jax.random.split(key, 3)
    fire = jax.random.uniform(k_p) < q["p"]
    if name == "gamma":
        g = jax.random.uniform(k_v, (), jnp.float32, *q["range"])
        out = intensity.adjust_gamma(image, g)
    elif name == "noise":
        std = jax.random.uniform(k_v, (), jnp.float32, *q["std"])
        out = intensity.add_gaussian_noise(k_n, image, std)
    elif name == "blur":
        sig = jax.random.uniform(k_v, (), jnp.float32, *q["sigma"])
        out = intensity.gaussian_blur(image, sig, max_sigma=q["sigma"][1])
    elif name == "brightness_contrast":
        kb, kc = jax.random.split(k_v)
        b = jax.random.uniform(kb, (), jnp.float32, *q["brightness"])
        c = jax.random.uniform(kc, (), jnp.float32, *q["contrast"])
        out = intensity.adjust_brightness_contrast(image, b, c)
    elif name == "bias_field":
        s = jax.random.uniform(k_v, (), jnp.float32, 0.0, q["strength"])
        out = intensity.apply_bias_field(k_n, image, s, q["control_points"])
    else:  # pragma: no cover - _validate rejects unknown names
        raise ValueError(f"unknown intensity transform {name!r}")
    return jnp.where(fire, out.astype(image.dtype), image)


def make_pipeline(spec: dict) -> Callable:
    """Build ``fn(key, image [*S, C], label [*S] | None) -> (image, label)`` from ``spec``.

    ``spec`` maps transform names (see the module docstring) to their params; unknown names or bad
    params raise ``ValueError`` here, before any tracing. ``fn`` is pure and jittable; vmap it over the
    batch with ``jax.random.split(key, B)``. An empty spec gives the identity.
    """
    steps = _validate(spec)
    geo = {n: q for n, q in steps if n in GEOMETRIC}
    affine_geo = {n: q for n, q in geo.items() if n != "elastic"}
    inten = [(n, q) for n, q in steps if n in INTENSITY]

    def fn(key, image, label=None):
        d = geometry.check_sample(image, label)
        image = jnp.asarray(image)
        if not jnp.issubdtype(image.dtype, jnp.floating):
            raise ValueError(f"image must be a float array; got dtype {image.dtype}")
        spatial = tuple(image.shape[:-1])
        del d
        if geo:
            matrix = random_affine_matrix(key, spatial, affine_geo)
            disp = None
            if "elastic" in geo:
                q = geo["elastic"]
                k1, k2 = jax.random.split(jax.random.fold_in(key, TRANSFORMS.index("elastic")))
                alpha = jnp.where(jax.random.uniform(k1) < q["p"], q["alpha"], 0.0)
                disp = geometry.elastic_displacement(k2, spatial, alpha=alpha, sigma=q["sigma"],
                                                     control=q["control"])
            image, label = geometry.warp(image, label, matrix=matrix, displacement=disp)
        for name, q in inten:
            image = _apply_intensity(name, q, jax.random.fold_in(key, TRANSFORMS.index(name)), image)
        return image, label

    fn.spec = dict(steps)  # the validated, normalised spec (for logging)
    return fn


def make_batch_pipeline(spec: dict) -> Callable:
    """Jitted ``fn(key, images [B, *S, C], labels [B, *S] | None) -> (images, labels)``: the per-sample
    pipeline vmapped over the batch with ``jax.random.split(key, B)``."""
    sample_fn = make_pipeline(spec)

    @jax.jit
    def fn(key, images, labels=None):
        keys = jax.random.split(key, images.shape[0])
        if labels is None:
            out, _ = jax.vmap(lambda k, x: sample_fn(k, x, None))(keys, images)
            return out, None
        return jax.vmap(sample_fn)(keys, images, labels)

    return fn
