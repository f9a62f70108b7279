"""Elastic + affine augmentation measured: the jitted, vmapped ``kernels.augment`` pipeline against a
``scipy.ndimage`` loop (and MONAI's Rand2DElastic / Rand3DElastic when installed) on one batch, and its cost
inside a U-Net train step. ``python -m benchmarks.augment`` runs these in one process; ``python -m
benchmarks.compare_torch --suite elastic`` times each side in its own worker process (:func:`build_elastic`).

Every case does the same work per sample: a random rotation (15 deg) and scale (0.85-1.15) about the
centre, composed with an elastic field (alpha, sigma), linear resampling of a 1-channel image and
nearest resampling of its label map (or the image only). The scipy loop is the classic Simard recipe
(full-resolution ``gaussian_filter`` of uniform noise + ``map_coordinates``).

JAX is imported inside the functions that use it, so that a scipy worker process never has it.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import scipy.ndimage as ndi

from benchmarks import common

__all__ = ["run_case", "train_step_overhead", "build_elastic", "MAX_ANGLE", "SCALE", "ALPHA", "SIGMA",
           "ELASTIC_FRAMEWORKS"]

MAX_ANGLE, SCALE = 15.0, (0.85, 1.15)
# The default elastic field: displacement amplitude (voxels) and smoothness.
ALPHA, SIGMA = 30.0, 4.0
ELASTIC_FRAMEWORKS = ("zoo", "scipy")


def _spec(alpha: float, sigma: float, control: str) -> dict:
    return {"rotate": {"max_angle": MAX_ANGLE, "p": 1.0}, "scale": {"range": SCALE, "p": 1.0},
            "elastic": {"alpha": alpha, "sigma": sigma, "control": control, "p": 1.0}}


def _data(batch: int, shape: tuple, seed: int = 0):
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    img = np.cos(0.1 * grid.sum(0))[None, ..., None] + 0.1 * rng.standard_normal((batch, *shape, 1))
    lab = (rng.random((batch, *shape)) < 0.3).astype(np.int32) * 2
    return img.astype(np.float32), lab


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _scipy_sample(rng, img, lab, alpha, sigma):
    shape = img.shape[:-1]
    d = len(shape)
    angles = np.deg2rad(rng.uniform(-MAX_ANGLE, MAX_ANGLE, 1 if d == 2 else 3))
    a = np.eye(d) / rng.uniform(*SCALE)
    planes = [(0, 1)] if d == 2 else [(1, 2), (0, 2), (0, 1)]
    for (i, j), t in zip(planes, angles):
        r = np.eye(d)
        r[i, i] = r[j, j] = np.cos(t)
        r[i, j], r[j, i] = -np.sin(t), np.sin(t)
        a = r @ a
    c = (np.array(shape) - 1) / 2.0
    coords = np.einsum("ij,j...->i...", a, np.indices(shape, dtype=np.float32))
    coords += (c - a @ c).reshape((d,) + (1,) * d)
    for k in range(d):
        coords[k] += alpha * ndi.gaussian_filter(rng.uniform(-1, 1, shape), sigma, mode="reflect")
    out = ndi.map_coordinates(img[..., 0], coords, order=1, mode="constant")
    out_lab = None if lab is None else ndi.map_coordinates(lab, coords, order=0, mode="constant")
    return out, out_lab


def _monai_fn(d: int, alpha: float, sigma: float, shape: tuple):
    try:
        import torch
        from monai.transforms import Rand2DElastic, Rand3DElastic
    except Exception:  # noqa: BLE001 - MONAI is an optional comparison
        return None
    rot = np.deg2rad(MAX_ANGLE)
    if d == 2:
        t = Rand2DElastic(spacing=(sigma * 1.73,) * 2, magnitude_range=(1.0, 1.0), prob=1.0,
                          rotate_range=rot, scale_range=(0.15, 0.15), padding_mode="zeros")
    else:
        t = Rand3DElastic(sigma_range=(sigma, sigma), magnitude_range=(alpha, alpha), prob=1.0,
                          rotate_range=(rot,) * 3, scale_range=(0.15,) * 3, padding_mode="zeros")

    def run(imgs, labs):
        for x, y in zip(imgs, labs):
            t.set_random_state(0)
            t(torch.from_numpy(np.moveaxis(x, -1, 0)), mode="bilinear")
            t.set_random_state(0)
            t(torch.from_numpy(y[None].astype(np.float32)), mode="nearest")

    return run


def run_case(d: int, size: int, batch: int, repeats: int, alpha: float, sigma: float, controls) -> dict:
    """Images (volumes) per second of ours per elastic control (and, where the native warp kernel is built, of the
    XLA form it replaces, interleaved), of the scipy loop and of MONAI, and their ratios, on ``batch`` samples of
    side ``size`` in ``d`` dimensions (medians of ``repeats``)."""
    import jax
    import jax.numpy as jnp

    from kernels import augment, geometry

    shape = (size,) * d
    imgs, labs = _data(batch, shape)
    ji, jl = jnp.asarray(imgs), jnp.asarray(labs)
    result = {"shape": list(shape), "batch": batch, "alpha": alpha, "sigma": sigma}
    # The default resampling (the native kernel where it is built) and, interleaved in the same run,
    # the pure-XLA form it replaces (geometry.set_warp_backend("xla")).
    result["warp_backend"] = "native" if geometry.resolve_backend(ji, jl) == "native" else "xla"
    for control in controls:
        fns = {}
        for backend in (("auto", "xla") if result["warp_backend"] == "native" else ("auto",)):
            prev = geometry.set_warp_backend(backend)
            try:
                fn = augment.make_batch_pipeline(_spec(alpha, sigma, control))
                t0 = time.perf_counter()
                jax.block_until_ready(fn(jax.random.key(0), ji, jl))
                result[f"compile_s_{control}" + ("_xla" if backend == "xla" else "")] = time.perf_counter() - t0
            finally:
                geometry.set_warp_backend(prev)
            fns[backend] = fn
        keys = iter(jax.random.split(jax.random.key(1), repeats * len(fns)))
        times = {b: [] for b in fns}
        for _ in range(repeats):
            for b, fn in fns.items():
                times[b].append(_median_time(lambda: jax.block_until_ready(fn(next(keys), ji, jl)), 1))
        result[f"jax_{control}_per_s"] = batch / float(np.median(times["auto"]))
        if "xla" in times:
            result[f"jax_{control}_xla_per_s"] = batch / float(np.median(times["xla"]))
    rng = np.random.default_rng(0)
    dt = _median_time(lambda: [_scipy_sample(rng, x, y, alpha, sigma) for x, y in zip(imgs, labs)],
                      max(1, min(repeats, 3)))
    result["scipy_per_s"] = batch / dt
    monai = _monai_fn(d, alpha, sigma, shape)
    if monai is not None:
        try:
            monai(imgs[:1], labs[:1])
            result["monai_per_s"] = batch / _median_time(lambda: monai(imgs, labs), max(1, min(repeats, 3)))
        except Exception as e:  # noqa: BLE001 - an optional comparison must not sink the run
            result["monai_error"] = f"{type(e).__name__}: {e}"
    result["jax_per_s"] = result[f"jax_{controls[0]}_per_s"]
    result["ratio_vs_scipy"] = result["jax_per_s"] / result["scipy_per_s"]
    for control in controls:
        result[f"ratio_{control}_vs_scipy"] = result[f"jax_{control}_per_s"] / result["scipy_per_s"]
        if "monai_per_s" in result:
            result[f"ratio_{control}_vs_monai"] = result[f"jax_{control}_per_s"] / result["monai_per_s"]
        if f"jax_{control}_xla_per_s" in result:
            result[f"native_speedup_{control}"] = result[f"jax_{control}_per_s"] / result[f"jax_{control}_xla_per_s"]
    return result


def train_step_overhead(d: int, size: int, batch: int, rounds: int, alpha: float, sigma: float,
                        model_kwargs: dict | None = None) -> dict:
    """Steps/s of the zoo U-Net train step with and without elastic+affine augmentation inside it
    (``make_train_step(augment_fn=...)``, as ``--config.augment.enabled=true``), timed in interleaved
    rounds in this process; ``overhead`` = plain steps/s / augmented steps/s - 1."""
    from kernels import augment

    model = common.build_model("unet", d, "float32", kwargs=model_kwargs)
    data = common.make_batch(batch, (size,) * d, seed=0)
    sample_fn = augment.make_pipeline(_spec(alpha, sigma, "bspline"))
    steps = {"plain": common.build_jax_steps(model, "segmentation", data),
             "augmented": common.build_jax_steps(model, "segmentation", data, augment_fn=sample_fn)}
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, st in steps.items():
            times[k].append(common.time_calls(st.train, warmup=1, repeats=3, number=1)["median_s"])
    out = {"shape": [size] * d, "batch": batch, "model_kwargs": model_kwargs or {},
           "compile_s": {k: st.compile_train_s for k, st in steps.items()}}
    for k in steps:
        out[f"{k}_steps_per_s"] = 1.0 / float(np.median(times[k]))
    out["overhead"] = out["plain_steps_per_s"] / out["augmented_steps_per_s"] - 1.0
    return out


def build_elastic(framework: str, dims: int, batch: int, size: int, *, labels: bool = False,
                  alpha: float = ALPHA, sigma: float = SIGMA, control: str = "bspline"):
    """One side of the elastic comparison as ``(fn, sync, info)`` for a timing protocol: ``fn()`` augments one
    batch of ``batch`` samples of side ``size`` (a fresh random draw per call), ``sync(out)`` waits for it.

    ``zoo``: the jitted, vmapped ``kernels.augment`` pipeline (compiled here; ``info["compile_s"]``);
    ``scipy``: the per-sample loop. The same rotation, scale and elastic field on both sides; the image only,
    or with ``labels`` its label map as well (nearest)."""
    if framework not in ELASTIC_FRAMEWORKS:
        raise ValueError(f"elastic framework must be one of {ELASTIC_FRAMEWORKS}, got {framework!r}")
    if dims not in (2, 3) or batch < 1 or size < 4:
        raise ValueError(f"need dims 2 or 3, batch >= 1 and size >= 4; got {dims}, {batch}, {size}")
    imgs, labs = _data(batch, (size,) * dims)
    labs = labs if labels else None
    if framework == "scipy":
        import scipy

        rng = np.random.default_rng(0)

        pairs = list(zip(imgs, [None] * batch if labs is None else labs))

        def scipy_fn():
            return [_scipy_sample(rng, x, y, alpha, sigma) for x, y in pairs]

        return scipy_fn, (lambda out: out), {"scipy": scipy.__version__}
    import jax
    import jax.numpy as jnp

    from kernels import augment, geometry

    ji = jnp.asarray(imgs)
    jl = None if labs is None else jnp.asarray(labs)
    pipeline = augment.make_batch_pipeline(_spec(alpha, sigma, control))
    base = jax.random.key(0)
    calls = itertools.count()
    t0 = time.perf_counter()
    jax.block_until_ready(pipeline(jax.random.fold_in(base, next(calls)), ji, jl))
    info = {"jax": jax.__version__, "compile_s": time.perf_counter() - t0, "control": control,
            "warp_backend": geometry.resolve_backend(ji, jl)}
    return (lambda: pipeline(jax.random.fold_in(base, next(calls)), ji, jl)), jax.block_until_ready, info
