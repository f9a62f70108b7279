"""Shared measurement helpers for the benchmarks: timing, memory, environment tags, and the
JAX train/inference steps built the way the training core (``zoo.training``) builds them.

Timing protocol (every number in ``benchmarks/``): compile first (timed separately), ``warmup``
untimed calls, then ``repeats`` samples of ``number`` calls each, every sample ending with
``jax.block_until_ready``; the reported time per call is the median sample / ``number``.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from typing import Any, Callable

import numpy as np

__all__ = ["Timing", "time_calls", "peak_memory", "env_info", "make_batch", "build_model", "xla_flags_with_cpu_devices",
           "JaxSteps", "build_jax_steps", "PEAK_TFLOPS", "UNET_MONAI_LIKE", "RESIDUAL_UNET_MONAI", "BENCHMARK_KWARGS"]

# The zoo U-Net configured like MONAI's reference UNet(channels=(16, 32, 64, 128, 256), norm="batch"):
# five levels starting at 16 features, batch norm (see benchmarks/compare_torch.py).
UNET_MONAI_LIKE = {"features": 16, "depth": 5, "norm": "batch"}
# MONAI's reference UNet itself, layer for layer (zoo.models.residual_unet).
RESIDUAL_UNET_MONAI = {"channels": (16, 32, 64, 128, 256), "strides": (2, 2, 2, 2), "num_res_units": 2,
                       "norm": "batch"}
# outcome_net: its image branch only (the benchmark feeds images; the EHR MLP is negligible next to it).
BENCHMARK_KWARGS = {"unet": UNET_MONAI_LIKE, "residual_unet": RESIDUAL_UNET_MONAI,
                    "outcome_net": {"modalities": "image"}}

# Dense peak TFLOP/s by device kind and dtype, for model-FLOPs utilisation (None: unknown, no MFU).
PEAK_TFLOPS = {
    "NVIDIA H100": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA H200": {"bfloat16": 989.0, "float32": 67.0},
    "NVIDIA A100": {"bfloat16": 312.0, "float32": 19.5},
}


class Timing(dict):
    """``{"median_s", "min_s", "samples_s", "number", "last"}``: seconds per call, and the last call's result."""


def time_calls(fn: Callable[[], Any], *, warmup: int = 2, repeats: int = 5, number: int = 1,
               sync: Callable[[Any], Any] | None = None, budget_s: float | None = None,
               min_repeats: int = 3) -> Timing:
    """Median seconds per call of ``fn()`` (see the module docstring for the protocol).

    ``sync(result)`` must block until the work is done (default ``jax.block_until_ready``). ``budget_s``
    bounds the wall time of one measurement for slow cases (a 3D model on a CPU): after the first warm-up
    call, calls slower than the budget allows get ``number=1`` and one warm-up, and sampling stops once the
    budget is spent and ``min_repeats`` samples exist (the samples taken are reported either way).
    """
    if warmup < 0 or repeats < 1 or number < 1:
        raise ValueError(f"need warmup >= 0, repeats >= 1, number >= 1; got {warmup}, {repeats}, {number}")
    if sync is None:
        import jax

        sync = jax.block_until_ready
    t_begin = time.perf_counter()
    for i in range(warmup):
        t0 = time.perf_counter()
        sync(fn())
        if i == 0 and budget_s is not None and (time.perf_counter() - t0) * number * (repeats + 1) > budget_s:
            number = 1
            break
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = None
        for _ in range(number):
            out = fn()
        sync(out)
        samples.append((time.perf_counter() - t0) / number)
        if budget_s is not None and len(samples) >= min(min_repeats, repeats) and \
                time.perf_counter() - t_begin > budget_s:
            break
    return Timing(median_s=statistics.median(samples), min_s=min(samples), samples_s=samples, number=number,
                  last=out)


def peak_memory() -> dict:
    """Peak memory so far: device ``memory_stats()`` where the backend has them, else host peak RSS."""
    import jax

    dev = jax.devices()[0]
    stats = None
    try:
        stats = dev.memory_stats()
    except Exception:  # backends without memory stats raise or return None
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return {"peak_bytes": int(stats["peak_bytes_in_use"]), "source": f"device:{dev.platform}"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"peak_bytes": int(rss_kb) * 1024, "source": "host_peak_rss"}


def xla_flags_with_cpu_devices(flags: str, n: int) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) asking for ``n`` host-platform (CPU) devices: any earlier count
    is dropped, and none is added for ``n == 1``."""
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + ([f"--xla_force_host_platform_device_count={n}"] if n > 1 else []))


def env_info() -> dict:
    """Tags every result carries: device kind/count, jax version, backend, conv lowering, flags."""
    import jax

    from kernels import conv

    devs = jax.devices()
    return {"device_kind": devs[0].device_kind, "platform": devs[0].platform, "num_devices": len(devs),
            "jax": jax.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "conv_lowering": conv.resolve_conv_lowering(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def make_batch(batch: int, spatial: tuple, in_channels: int = 1, num_classes: int = 2, seed: int = 0) -> dict:
    """A synthetic segmentation batch: ``image [B, *S, C]`` float32, ``label [B, *S]`` int32 (blob masks,
    so the loss is not trivially constant)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(batch, *spatial, in_channels)).astype(np.float32)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in spatial], indexing="ij")
    radius = np.sqrt(sum(g ** 2 for g in grids))
    label = np.stack([((radius < rng.uniform(0.3, 0.8)) * rng.integers(1, num_classes, endpoint=False)
                       if num_classes > 1 else radius * 0) for _ in range(batch)]).astype(np.int32)
    image[..., 0] += label
    return {"image": image, "label": label}


def build_model(name: str, dims: int, dtype: str, in_channels: int = 1, num_classes: int = 2, kwargs=None):
    """Registry model with the benchmark's kwargs (``unet``: :data:`UNET_MONAI_LIKE`, ``residual_unet``:
    :data:`RESIDUAL_UNET_MONAI`) unless ``kwargs`` is given."""
    from zoo.build import parse_dtype
    from zoo.registry import create_model

    kw = dict(BENCHMARK_KWARGS.get(name, {}) if kwargs is None else kwargs)
    if parse_dtype(dtype) is not None:
        kw["dtype"] = parse_dtype(dtype)
    return create_model(name, spatial_dims=dims, in_channels=in_channels, num_classes=num_classes, **kw)


class JaxSteps:
    """Compiled train and inference steps for one model, plus what they cost to build."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def train(self):
        """One optimisation step (the state is donated and replaced)."""
        self.state, metrics = self.train_compiled(self.state, self.batch)
        return metrics["loss"]

    def infer(self):
        return self.infer_compiled(self.state.variables, self.batch["image"])


def build_jax_steps(model, task_name: str, batch: dict, *, learning_rate: float = 1e-3, loss: str = "dice_ce",
                    train: bool = True, mesh=None, seed: int = 0, augment_fn=None) -> JaxSteps:
    """Train/infer steps exactly as ``zoo.training`` builds them: ``create_train_state``, ``make_train_step``,
    ``jax.jit`` with batch sharding on the mesh's ``data`` axis and the state donated; Adam(lr).

    Records ``compile_train_s`` / ``compile_infer_s`` (lower + compile) and the compiled cost analysis FLOPs.
    ``augment_fn`` (a per-sample ``kernels.augment.make_pipeline`` function) runs inside the train step,
    as ``--config.augment.enabled=true`` does in the trainer.
    """
    import jax
    import ml_collections

    from zoo import optim, sharding
    from zoo.tasks import get_task
    from zoo.training import create_train_state, make_train_step

    mesh = mesh or sharding.make_mesh((-1, 1))
    repl, data_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    # The trainer's own optimiser factory (constant-lr Adam), as the trainer builds it.
    tx, _ = optim.make_optimizer(ml_collections.ConfigDict(
        {"optimizer": "adam", "learning_rate": learning_rate, "schedule": "constant", "steps": 1,
         "warmup_steps": 0, "grad_clip": 0.0, "weight_decay": 0.0}))
    # create_train_state compiles its init at XLA backend level 0 on a CPU (zoo.training.jit_init): ~3 s.
    t0 = time.perf_counter()
    state = create_train_state(model, tx, batch["image"], seed)
    state = jax.block_until_ready(jax.device_put(state, repl))
    init_s = time.perf_counter() - t0
    batch = jax.device_put(batch, data_sh)
    out = {"state": state, "batch": batch, "init_s": init_s, "train_compiled": None, "compile_train_s": None,
           "train_flops": None}

    def infer_fn(variables, images):
        return model.apply(variables, images, train=False)

    t0 = time.perf_counter()
    infer_jit = jax.jit(infer_fn, in_shardings=(repl, data_sh), out_shardings=data_sh)
    infer_compiled = infer_jit.lower(state.variables, batch["image"]).compile()
    out["compile_infer_s"] = time.perf_counter() - t0
    out["infer_compiled"] = infer_compiled
    out["infer_flops"] = _flops(infer_compiled, infer_fn, state.variables, batch["image"])
    if train:
        task = get_task(task_name)
        step = make_train_step(model, tx, task, loss, augment_fn=augment_fn)
        t0 = time.perf_counter()
        train_jit = jax.jit(step, in_shardings=(repl, data_sh), out_shardings=(repl, repl), donate_argnums=(0,))
        compiled = train_jit.lower(state, batch).compile()
        out["compile_train_s"] = time.perf_counter() - t0
        out["train_compiled"] = compiled
        out["train_flops"] = _flops(compiled, step, state, batch)
    out["num_params"] = int(sum(np.prod(p.shape) for p in jax.tree.leaves(state.params)))
    return JaxSteps(**out)


def _flops(compiled, fn=None, *args) -> float | None:
    """FLOPs from XLA's cost analysis of ``compiled``; where its program calls native kernels (which XLA does
    not count), of ``fn(*args)`` traced again with the convolutions in XLA (lowered, not compiled)."""
    import jax

    try:
        if fn is not None and "medzoo_" in compiled.as_text():
            from kernels import conv

            with conv.use_onednn(False):  # a fresh function: jit would reuse the trace it has for fn
                compiled = jax.jit(lambda *a: fn(*a)).lower(*args)
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        f = float(cost.get("flops", 0.0)) if cost else 0.0
        return f if f > 0 else None
    except Exception:  # cost analysis is optional per backend
        return None
