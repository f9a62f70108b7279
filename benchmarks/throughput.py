"""Throughput of every registered model: compile time, train steps/s, inference images/s (voxels/s in 3D),
peak memory, and data-parallel scaling over 1, 2, 4, 8 devices.

    python -m benchmarks.throughput --models=all --dims=2,3 --dtype=float32,bfloat16
    python -m benchmarks.throughput --models=unet --dims=2 --quick          # < 1 minute

Every (model, dims, dtype, devices) case runs in its own subprocess, so peak memory is per case and
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` can fake N CPU devices for the scaling runs
(real accelerators are used as they are). A model that fails (bad config, unsupported 3D, timeout) is a
row with its error, never a crash; the run exits 1 with an ``error:`` line when every case failed (and
says how many failed when some did). Outputs in ``--out``: ``results.json``, ``results.md``, ``results.png``,
tagged with device kind, jax version and the configuration. Timing protocol: ``benchmarks/common.py``.

The zoo U-Net is benchmarked in the configuration of MONAI's reference UNet (16..256 channels, five
levels, batch norm; ``benchmarks/compare_torch.py`` times both side by side). Other models use their
registry defaults unless ``--model_kwargs`` says otherwise.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

from benchmarks.throughput_cases import (WORKER_FLAG, failure_summary, format_markdown, format_value, plan_cases,
                                         plot_results, run_case, run_subprocess, scaling_summary)
from data_pipelines.atomic import write_json, write_text
from zoo.cli import command_parser, run_command

__all__ = ["parser", "main"]  # the cases, plan and reports: benchmarks.throughput_cases

DTYPES = ("float32", "bfloat16")
DEFAULTS = {"size": {2: 128, 3: 64}, "batch": {2: 8, 3: 2}, "repeats": 5, "number": 2, "warmup": 2}
# On a CPU host the default model set must finish in minutes: 3D at 32^3 and fewer timed calls (compile
# time dominates there anyway); accelerators get DEFAULTS.
CPU_DEFAULTS = {"size": {2: 128, 3: 32}, "batch": {2: 8, 3: 2}, "repeats": 3, "number": 1, "warmup": 1,
                "scaling": "strong"}
QUICK = {"size": {2: 64, 3: 32}, "batch": {2: 4, 3: 1}, "repeats": 3, "number": 1, "warmup": 1}


def _per_dim(text: str | None, name: str, default: dict) -> dict:
    """``"8"`` -> both dims; ``"8,2"`` -> 2D 8, 3D 2."""
    if text is None:
        return dict(default)
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be an int or two ints '2D,3D', got {text!r}") from None
    if not 1 <= len(vals) <= 2 or min(vals) < 1:
        raise ValueError(f"--{name} must be one or two positive ints '2D,3D', got {text!r}")
    return {2: vals[0], 3: vals[-1]}


def _int_list(text: str, name: str, allowed=None) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{name} must be comma-separated ints, got {text!r}") from None
    if not vals or (allowed and any(v not in allowed for v in vals)) or min(vals) < 1:
        raise ValueError(f"--{name} must be comma-separated values from {allowed or 'positive ints'}, got {text!r}")
    return vals


def _host_backend() -> str:
    """The default JAX backend, asked without letting this (parent) process grab accelerator memory."""
    user_set = "XLA_PYTHON_CLIENT_PREALLOCATE" in os.environ
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    backend = jax.default_backend()
    if not user_set:  # workers keep JAX's default allocator
        os.environ.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    return backend


def parser():
    """The command line (``--_case JSON``, hidden, makes this process a worker that runs one case)."""
    p = command_parser("python -m benchmarks.throughput", __doc__,
                       out="output folder (default workdirs/benchmarks/throughput-<time>)")
    p.add_argument("--models", default="all", help="'all' or comma-separated registry names")
    p.add_argument("--dims", default="2,3", help="spatial dims to run, e.g. 2 or 2,3")
    p.add_argument("--batch", default=None, help="batch size: N for both dims or '2D,3D' (default 8,2; quick 4,1)")
    p.add_argument("--size", default=None,
                   help="spatial side: N or '2D,3D' (default 128,64; on a CPU host 128,32; quick 64,32)")
    p.add_argument("--dtype", default="float32", help="comma-separated: float32,bfloat16")
    p.add_argument("--devices", default=None, help="device counts for the scaling runs (default 1,2,4,8; quick 1)")
    p.add_argument("--scaling", default=None, choices=("weak", "strong"),
                   help="scaling runs: weak (fixed images per device) or strong (fixed global batch); default "
                        "strong on a CPU host (fake devices share its cores), weak on accelerators")
    p.add_argument("--scaling_batch", type=int, default=None,
                   help="weak: images per device (default half the 2D batch); strong: the global batch "
                        "(default the 2D batch)")
    p.add_argument("--repeats", type=int, default=None, help="timed samples per measurement (median)")
    p.add_argument("--number", type=int, default=None, help="calls per timed sample")
    p.add_argument("--warmup", type=int, default=None, help="untimed calls before timing")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds per measurement: slow cases stop after >= 3 samples once it is spent "
                        "(default 20; quick 10; 0 = no limit)")
    p.add_argument("--quick", action="store_true", help="small shapes, few repeats, one device")
    p.add_argument("--model_kwargs", default="{}", help='JSON {"model": {kwarg: value}} overriding model configs')
    p.add_argument("--conv_lowering", default=None, choices=("auto", "lax", "cpu"),
                   help="kernels.conv lowering (default: $MEDZOO_CONV_LOWERING or auto)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per case before it is reported as failed")
    p.add_argument("--inprocess", action="store_true",
                   help="run single-device cases in this process (no per-case memory; for tests)")
    p.add_argument(WORKER_FLAG, dest="worker_case", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    return run_command(parser(), sys.argv[1:] if argv is None else argv, _run)


def _run(args) -> int:
    if args.worker_case is not None:  # worker: one case, result on stdout
        print("RESULT " + json.dumps(run_case(json.loads(args.worker_case)), default=float), flush=True)
        return 0
    from zoo.registry import list_models

    known = list_models()
    models = known if args.models == "all" else [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in known]
    if not models or unknown:
        raise ValueError(f"--models: unknown {unknown or models!r}; registered: {', '.join(known)}")
    if "unet" in models:  # the reference model first: the scaling runs use the first model
        models = ["unet"] + [m for m in models if m != "unet"]
    dims = _int_list(args.dims, "dims", (2, 3))
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or any(d not in DTYPES for d in dtypes):
        raise ValueError(f"--dtype must be comma-separated values from {DTYPES}, got {args.dtype!r}")
    base = QUICK if args.quick else (CPU_DEFAULTS if _host_backend() == "cpu" else DEFAULTS)
    devices = _int_list(args.devices or ("1" if args.quick else "1,2,4,8"), "devices")
    sizes = _per_dim(args.size, "size", base["size"])
    batches = _per_dim(args.batch, "batch", base["batch"])
    reps = {k: getattr(args, k) if getattr(args, k) is not None else base[k]
            for k in ("repeats", "number", "warmup")}
    if reps["repeats"] < 1 or reps["number"] < 1 or reps["warmup"] < 0:
        raise ValueError(f"--repeats/--number must be >= 1 and --warmup >= 0, got {reps}")
    try:
        model_kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model_kwargs must be JSON {{model: {{kwarg: value}}}}: {e}") from None
    if not isinstance(model_kwargs, dict) or any(not isinstance(v, dict) for v in model_kwargs.values()):
        raise ValueError(f"--model_kwargs must be JSON {{model: {{kwarg: value}}}}, got {args.model_kwargs!r}")

    out = args.out or os.path.join("workdirs", "benchmarks", f"throughput-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    scaling = args.scaling or base.get("scaling", "weak")
    cases = plan_cases(models, dims, dtypes, devices, sizes, batches, reps, model_kwargs, args.scaling_batch,
                       scaling)
    budget = args.budget if args.budget is not None else (10.0 if args.quick else 20.0)
    for c in cases:
        c["conv_lowering"] = args.conv_lowering
        c["budget_s"] = budget if budget > 0 else None
    t0 = time.perf_counter()
    results = []
    for i, case in enumerate(cases, 1):
        tag = f"[{i}/{len(cases)}] {case['model']} {case['dims']}D {case['dtype']} x{case['devices']} dev"
        print(f"{tag} ...", flush=True)
        if args.inprocess and int(case["devices"]) == 1:
            r = run_case(case)
        else:
            r = run_subprocess(case, args.timeout)
        results.append(r)
        if r.get("status") == "ok":
            print(f"{tag}: compile {r.get('compile_train_s') or 0:.1f}+{r['compile_infer_s']:.1f} s, "
                  f"train {format_value(r.get('train_steps_per_s'))} steps/s, "
                  f"infer {r['infer_images_per_s']:.2f} img/s", flush=True)
        else:
            print(f"{tag}: {r.get('error')}", flush=True)
    env = next((r["env"] for r in results if r.get("env") and int(r.get("devices", 1)) == 1), None)
    meta = {"time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "env": env,
            "config": {"models": models, "dims": dims, "dtypes": dtypes, "devices": devices,
                       "size": {f"{k}d": v for k, v in sizes.items()}, "batch": {f"{k}d": v for k, v in batches.items()},
                       **reps, "budget_s": budget, "quick": bool(args.quick), "scaling": scaling,
                       "conv_lowering": args.conv_lowering or "default"},
            "total_wall_s": time.perf_counter() - t0}
    write_json(os.path.join(out, "results.json"), {"meta": meta, "results": results,
                                                   "scaling": scaling_summary(results)})
    md = format_markdown(results, meta)
    write_text(os.path.join(out, "results.md"), md)
    plot_results(results, meta, os.path.join(out, "results.png"))
    print("\n" + md)
    print(f"wrote {out}/results.json, results.md, results.png ({meta['total_wall_s']:.0f} s)")
    summary, rc = failure_summary(results)
    if summary:
        print(summary, file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
