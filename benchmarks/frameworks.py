"""One framework's side of the speed comparison, timed inside its own process; and the machine's load.

``benchmarks.compare_torch`` starts one worker process (``python -m benchmarks.framework_worker SPEC``) per framework
per repeat group; the worker calls :func:`run_spec`, which times the train step and inference of one framework
and returns plain numbers. Both frameworks are timed by the same protocol (:func:`time_work`): build (for the zoo:
trace and compile), ``warmup`` untimed calls, then ``repeats`` samples of ``number`` calls each, ``number``
chosen from the last warm-up call so that one sample lasts at least ``min_repeat_s``; seconds per call are the
samples' values. A process that has imported the other framework refuses to run (:func:`refuse_mixed`): PyTorch's
and XLA's thread pools in one process slow each other down (issue 36).

Spec keys (:data:`SPEC_KEYS`): every spec names its ``suite``, ``framework``, ``dims``, ``warmup``, ``repeats`` and
``min_repeat_s``. Suite ``unet`` (``framework`` ``zoo`` or ``monai``): ``dtype`` (``float32``, or ``bfloat16``:
the zoo's model with bf16 compute and float32 parameters as ``train.dtype=bfloat16`` builds it, PyTorch under
``torch.autocast("cpu", dtype=torch.bfloat16)``), ``train_batch``, ``infer_batch``, ``size``, ``torch_threads``
(``None``: PyTorch's own default); timed works ``train`` and ``infer``. Suite ``elastic`` (``zoo`` or ``scipy``;
``benchmarks.elastic.build_elastic``): ``batch``, ``size``, ``labels``, ``alpha``, ``sigma``, ``control``; timed
work ``elastic``.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time

from benchmarks.common import RESIDUAL_UNET_MONAI, make_batch, time_calls

__all__ = ["FRAMEWORKS", "SUITES", "SPEC_KEYS", "DTYPES", "RESULT_PREFIX", "refuse_mixed", "worker_spec", "time_work",
           "run_spec", "build_monai", "machine_load", "check_load", "cpu_model", "cpu_bf16", "report"]

# framework -> the modules whose presence in the same process makes its numbers untrustworthy
FRAMEWORKS = {"zoo": ("torch",), "monai": ("jax",), "scipy": ("jax", "torch")}
# suite -> the frameworks it compares (the zoo first) and the works timed in each process
SUITES = {"unet": {"frameworks": ("zoo", "monai"), "works": ("train", "infer")},
          "elastic": {"frameworks": ("zoo", "scipy"), "works": ("elastic",)}}
DTYPES = ("float32", "bfloat16")
# The worker prints its result as one line: this prefix, then the JSON.
RESULT_PREFIX = "RESULT "
_COMMON_KEYS = ("suite", "framework", "dims", "size", "warmup", "repeats", "min_repeat_s")
SPEC_KEYS = {"unet": _COMMON_KEYS + ("dtype", "train_batch", "infer_batch", "torch_threads"),
             "elastic": _COMMON_KEYS + ("batch", "labels", "alpha", "sigma", "control")}
# MONAI's UNet configured as the zoo's residual_unet (the same network, the same parameter count).
MONAI_KW = dict(in_channels=1, out_channels=2, **RESIDUAL_UNET_MONAI)


def refuse_mixed(framework: str) -> None:
    """Raise ``ValueError`` when this process has imported the other framework (each runs in its own process)."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {sorted(FRAMEWORKS)}, got {framework!r}")
    for other in FRAMEWORKS[framework]:
        if other in sys.modules:
            raise ValueError(f"refusing to time {framework} in a process that has imported {other}: each "
                             f"framework runs in its own process (python -m benchmarks.compare_torch starts one "
                             f"per framework)")


def worker_spec(spec: dict) -> dict:
    """The keys of ``spec`` its suite's worker reads (:data:`SPEC_KEYS`); ``ValueError`` naming what is missing."""
    suite = spec.get("suite")
    if suite not in SUITES:
        raise ValueError(f"spec suite must be one of {sorted(SUITES)}, got {suite!r}")
    if spec.get("framework") not in SUITES[suite]["frameworks"]:
        raise ValueError(f"suite {suite} compares {' and '.join(SUITES[suite]['frameworks'])}, got framework "
                         f"{spec.get('framework')!r}")
    missing = [k for k in SPEC_KEYS[suite] if k not in spec]
    if missing:
        raise ValueError(f"worker spec lacks {missing}")
    return {k: spec[k] for k in SPEC_KEYS[suite]}


def time_work(fn, sync, *, warmup: int, repeats: int, min_repeat_s: float) -> dict:
    """Seconds per call of ``fn()`` by the harness's protocol (module docstring); ``sync(out)`` blocks until done."""
    if warmup < 1 or repeats < 1 or min_repeat_s < 0:
        raise ValueError(f"need warmup >= 1, repeats >= 1, min_repeat_s >= 0; got {warmup}, {repeats}, "
                         f"{min_repeat_s}")
    last = 0.0
    for _ in range(warmup):
        t0 = time.perf_counter()
        sync(fn())
        last = time.perf_counter() - t0
    number = max(1, math.ceil(min_repeat_s / max(last, 1e-6)))
    t = time_calls(fn, warmup=0, repeats=repeats, number=number, sync=sync)
    return {"median_s": t["median_s"], "samples_s": t["samples_s"], "number": number}


def build_monai(dims: int, train: dict, infer: dict, torch_threads: int | None = None, dtype: str = "float32"):
    """MONAI's ``UNet`` (:data:`MONAI_KW`), ``Adam(1e-3)``, ``DiceCELoss(softmax, to_onehot_y)``, float32
    parameters, NCHW; with ``dtype="bfloat16"`` the forward pass and loss run under ``torch.autocast("cpu",
    dtype=torch.bfloat16)`` (PyTorch's own mixed precision; the backward pass outside it, as its docs show);
    returns ``(train_fn, infer_fn, num_params, info)`` on the channels-last numpy batches ``train`` / ``infer``."""
    import numpy as np
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    bf16 = dtype == "bfloat16"
    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.manual_seed(0)
    net = UNet(spatial_dims=dims, **MONAI_KW)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(softmax=True, to_onehot_y=True)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(train["image"], -1, 1)))
    y = torch.from_numpy(train["label"][:, None].astype(np.int64))
    xi = torch.from_numpy(np.ascontiguousarray(np.moveaxis(infer["image"], -1, 1)))

    def train_fn():
        net.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        return loss

    def infer_fn():
        net.eval()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return net(xi)

    import monai

    info = {"torch": torch.__version__, "monai": monai.__version__, "threads": torch.get_num_threads(),
            "precision": "autocast bfloat16" if bf16 else "float32"}
    return train_fn, infer_fn, int(sum(p.numel() for p in net.parameters())), info


def _build_zoo(dims: int, train: dict, infer: dict, dtype: str):
    import jax

    from benchmarks import common

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    # As train.dtype builds it (zoo.build): compute in ``dtype``, parameters float32.
    model = common.build_model("residual_unet", dims, dtype)
    t0 = time.perf_counter()
    steps = common.build_jax_steps(model, "segmentation", train)
    isteps = common.build_jax_steps(model, "segmentation", infer, train=False)
    env = common.env_info()
    info = {"jax": jax.__version__, "conv_lowering": env["conv_lowering"], "device_kind": env["device_kind"],
            "compile_s": time.perf_counter() - t0,
            "precision": "bfloat16 compute, float32 parameters" if dtype == "bfloat16" else "float32"}
    return steps.train, isteps.infer, steps.num_params, info


def run_spec(spec: dict) -> dict:
    """Time one framework's works of one suite as ``spec`` (module docstring) says; plain numbers back."""
    spec = worker_spec(spec)
    framework, suite = spec["framework"], spec["suite"]
    refuse_mixed(framework)
    dims, size = int(spec["dims"]), int(spec["size"])
    t_start = time.perf_counter()
    if suite == "elastic":
        from benchmarks import elastic

        fn, sync, info = elastic.build_elastic(framework, dims, int(spec["batch"]), size, labels=bool(spec["labels"]),
                                               alpha=float(spec["alpha"]), sigma=float(spec["sigma"]),
                                               control=spec["control"])
        fns, params = {"elastic": fn}, None
    else:
        if dims not in (2, 3) or size < 16 or size % 16 or min(spec["train_batch"], spec["infer_batch"]) < 1:
            raise ValueError(f"need dims 2 or 3, size a multiple of 16 and batches >= 1; got {dims}, {size}, "
                             f"{spec['train_batch']}, {spec['infer_batch']}")
        train = make_batch(int(spec["train_batch"]), (size,) * dims, seed=0)
        infer = make_batch(int(spec["infer_batch"]), (size,) * dims, seed=1)
        if framework == "monai":
            train_fn, infer_fn, params, info = build_monai(dims, train, infer, spec["torch_threads"], spec["dtype"])

            def sync(out):
                return out
        else:
            import jax

            train_fn, infer_fn, params, info = _build_zoo(dims, train, infer, spec["dtype"])
            sync = jax.block_until_ready
        fns = {"train": train_fn, "infer": infer_fn}
    refuse_mixed(framework)  # the framework's own imports brought in no other
    reps = dict(warmup=int(spec["warmup"]), repeats=int(spec["repeats"]), min_repeat_s=float(spec["min_repeat_s"]))
    out = {"framework": framework, "params": params, "info": info, "setup_s": time.perf_counter() - t_start}
    for work in SUITES[suite]["works"]:
        out[work] = time_work(fns[work], sync, **reps)
    out["spec"] = dict(spec)
    return out


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_bf16() -> dict:
    """``{"avx512_bf16": bool, "amx_bf16": bool}`` from the CPU flags in ``/proc/cpuinfo`` (both False where
    there is none): whether the CPU has bfloat16 dot-product instructions that oneDNN can use."""
    flags: set = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields), idle


def machine_load(interval_s: float = 1.0) -> dict:
    """``{"loadavg": [1, 5, 15 min], "cpus", "busy"}``: ``busy`` is the fraction of all CPUs' time spent busy over
    the next ``interval_s`` (``/proc/stat``; ``None`` where there is none): what other processes take right now,
    which the 1-minute load average (still counting a worker that just ended) does not tell."""
    a = _cpu_times()
    time.sleep(interval_s if a else 0)
    b = _cpu_times()
    busy = None
    if a and b and b[0] > a[0]:
        busy = 1.0 - (b[1] - a[1]) / (b[0] - a[0])
    return {"loadavg": list(os.getloadavg()), "cpus": os.cpu_count() or 1, "busy": busy}


def check_load(load: dict, max_load: float, first: bool) -> None:
    """Raise ``ValueError`` when the machine is busier than ``max_load`` per core: before the first worker the
    1-minute load average per CPU is judged, before later ones the busy fraction (``machine_load``)."""
    per_core = load["loadavg"][0] / load["cpus"]
    if first and per_core > max_load:
        raise ValueError(f"machine load {load['loadavg'][0]:.2f} on {load['cpus']} CPUs ({per_core:.2f} per core) "
                         f"is above --max-load {max_load:g} per core: measure on an idle machine (or raise "
                         f"--max-load and say so)")
    if not first and load["busy"] is not None and load["busy"] > max_load:
        raise ValueError(f"other processes kept {load['busy']:.0%} of the CPUs busy between workers, above "
                         f"--max-load {max_load:g} per core: measure on an idle machine")


def report(path: str | None, out: dict, table: str) -> None:
    """Print the Markdown ``table``; with ``path``, also write ``out`` there as strict JSON and the table beside it
    (``.md``), atomically."""
    print("\n" + table)
    if not path:
        return
    from data_pipelines import atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic.write_json(path, out)
    md = os.path.splitext(path)[0] + ".md"
    atomic.write_text(md, table)
    print(f"wrote {path} and {md}")
