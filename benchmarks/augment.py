"""Elastic + affine augmentation throughput: our jitted, vmapped pipeline vs a scipy.ndimage loop
(and MONAI Rand2DElastic / Rand3DElastic when the optional ``[compare]`` extra is installed).

    python -m benchmarks.augment            # 2D 32 x 256^2 and 3D 2 x 128^3
    python -m benchmarks.augment --quick    # small shapes, one repeat (a smoke run)
    python -m benchmarks.augment --train_step   # + cost of elastic+affine inside a U-Net train step

Every case does the same work per sample: a random rotation (15 deg) and scale (0.85-1.15) about the
centre, composed with an elastic field (alpha, sigma), linear resampling of a 1-channel image and
nearest resampling of its label map. The scipy loop is the classic Simard recipe (full-resolution
``gaussian_filter`` of uniform noise + ``map_coordinates``). Results are medians over ``--repeats``,
printed as throughput and as ratios within this one run, and written as JSON (``--json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy
import scipy.ndimage as ndi

from kernels import augment, geometry

MAX_ANGLE, SCALE = 15.0, (0.85, 1.15)


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
    shape = lab.shape
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
    out_lab = ndi.map_coordinates(lab, coords, order=0, mode="constant")
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
    from benchmarks import common

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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small shapes, one repeat")
    p.add_argument("--size2d", type=int)
    p.add_argument("--batch2d", type=int)
    p.add_argument("--size3d", type=int)
    p.add_argument("--batch3d", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--alpha", type=float, default=30.0)
    p.add_argument("--sigma", type=float, default=4.0)
    p.add_argument("--controls", default="bspline,gaussian", help="comma-separated elastic control modes")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--train_step", action="store_true",
                   help="also time a U-Net train step with and without the augmentation inside it")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds for --train_step")
    a = p.parse_args(argv)
    quick = {"size2d": 64, "batch2d": 4, "size3d": 24, "batch3d": 1, "repeats": 1}
    full = {"size2d": 256, "batch2d": 32, "size3d": 128, "batch3d": 2, "repeats": 5}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    controls = [c.strip() for c in a.controls.split(",") if c.strip()]
    for c in controls:
        if c not in ("bspline", "gaussian"):
            print(f"error: --controls: unknown control {c!r} (bspline | gaussian)", file=sys.stderr)
            raise SystemExit(2)
    result = {"backend": jax.default_backend(), "devices": [str(x) for x in jax.devices()],
              "jax": jax.__version__, "scipy": scipy.__version__, "python": platform.python_version(),
              "2d": run_case(2, a.size2d, a.batch2d, a.repeats, a.alpha, a.sigma, controls),
              "3d": run_case(3, a.size3d, a.batch3d, a.repeats, a.alpha, a.sigma, controls)}
    if a.train_step:
        # The throughput benchmark's U-Net shapes (2D 8 x 128^2, 3D 2 x 64^3; --quick: tiny) and the
        # smoke recipe's U-Net (features 8, depth 3, 8 x 32^2) where the network is cheapest.
        cases = {"2d": (2, 64, 2, None), "3d": (3, 32, 1, None)} if a.quick else \
            {"2d": (2, 128, 8, None), "3d": (3, 64, 2, None), "2d_smoke": (2, 32, 8, {"features": 8, "depth": 3})}
        result["train_step"] = {k: train_step_overhead(d, s, b, a.rounds, a.alpha, a.sigma, kw)
                                for k, (d, s, b, kw) in cases.items()}
        for k, r in result["train_step"].items():
            print(f"train step {k} {r['batch']}x{'x'.join(map(str, r['shape']))}: plain "
                  f"{r['plain_steps_per_s']:.2f} steps/s, with elastic+affine {r['augmented_steps_per_s']:.2f} "
                  f"steps/s -> augmentation adds {100 * r['overhead']:.0f}%")
    for case, unit in (("2d", "images/s"), ("3d", "volumes/s")):
        r = result[case]
        line = f"{case} {r['batch']}x{'x'.join(map(str, r['shape']))}: scipy {r['scipy_per_s']:.1f} {unit}"
        for c in controls:
            line += f" | jax[{c}] {r[f'jax_{c}_per_s']:.1f} ({r[f'ratio_{c}_vs_scipy']:.1f}x scipy"
            line += f", {r[f'ratio_{c}_vs_monai']:.1f}x MONAI)" if "monai_per_s" in r else ")"
            if f"jax_{c}_xla_per_s" in r:
                line += f" [{r['warp_backend']} warp; XLA gathers {r[f'jax_{c}_xla_per_s']:.1f}]"
        if "monai_per_s" in r:
            line += f" | MONAI {r['monai_per_s']:.1f}"
        print(line)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    else:
        print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
