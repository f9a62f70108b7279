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
import math
import os
import subprocess
import sys
import time
import traceback

from benchmarks.common import xla_flags_with_cpu_devices

__all__ = ["run_case", "plan_cases", "format_markdown", "scaling_summary", "plot_results", "main"]

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


# ----------------------------------------------------------------------------- one case (worker side)

def run_case(case: dict) -> dict:
    """Measure one ``(model, dims, dtype, devices)`` case in this process; errors become ``status``."""
    import numpy as np

    result = dict(case)
    t_start = time.perf_counter()
    try:
        import jax

        from benchmarks import common
        from zoo import sharding
        from zoo.registry import get_spec

        if case.get("conv_lowering"):
            from kernels import conv

            conv.set_conv_lowering(case["conv_lowering"])
        result["env"] = common.env_info()
        n_dev = int(case["devices"])
        if len(jax.devices()) < n_dev:
            raise RuntimeError(f"needs {n_dev} devices, {len(jax.devices())} available")
        spec = get_spec(case["model"])
        result["task"] = spec.task
        dims, size, batch = int(case["dims"]), int(case["size"]), int(case["batch"])
        spatial = (size,) * dims
        kwargs = case.get("model_kwargs")
        model = common.build_model(case["model"], dims, case["dtype"], kwargs=kwargs)
        data = common.make_batch(batch, spatial, seed=0)
        mesh = sharding.make_mesh((n_dev, 1), devices=jax.devices()[:n_dev])
        sharding.check_batch(mesh, batch)
        do_train = spec.task == "segmentation" and case.get("train", True)
        steps = common.build_jax_steps(model, spec.task, data, train=do_train, mesh=mesh)
        result.update(num_params=steps.num_params, init_s=steps.init_s, compile_infer_s=steps.compile_infer_s,
                      compile_train_s=steps.compile_train_s)
        if not do_train:
            result["train_note"] = f"train step skipped (task {spec.task!r})"
        reps = dict(warmup=int(case["warmup"]), repeats=int(case["repeats"]), number=int(case["number"]),
                    budget_s=case.get("budget_s"))
        kind = result["env"]["device_kind"]
        peak = next((v.get(case["dtype"]) for k, v in common.PEAK_TFLOPS.items() if kind.startswith(k)), None)
        vox = batch * int(np.prod(spatial))
        if do_train:
            t = common.time_calls(steps.train, **reps)
            result.update(train_s=t["median_s"], train_samples_s=t["samples_s"], train_steps_per_s=1 / t["median_s"],
                          train_images_per_s=batch / t["median_s"], train_flops=steps.train_flops)
            loss = float(t["last"])
            if not math.isfinite(loss):
                raise FloatingPointError(f"train loss is {loss}")
            result["final_loss"] = loss
            if steps.train_flops:
                result["train_tflops_per_s"] = steps.train_flops / t["median_s"] / 1e12
                result["train_mfu"] = result["train_tflops_per_s"] / peak if peak else None
        t = common.time_calls(steps.infer, **reps)
        result.update(infer_s=t["median_s"], infer_samples_s=t["samples_s"], infer_images_per_s=batch / t["median_s"],
                      infer_voxels_per_s=vox / t["median_s"], infer_flops=steps.infer_flops)
        result.update(common.peak_memory())
        result["status"] = "ok"
    except Exception as e:  # a failing model is a row in the table, not a crash
        result["status"] = "error"
        result["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        result["traceback"] = traceback.format_exc(limit=6)
    result["wall_s"] = time.perf_counter() - t_start
    return result


def _run_subprocess(case: dict, timeout: float) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags_with_cpu_devices(env.get("XLA_FLAGS", ""), int(case["devices"]))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "benchmarks.throughput", "--_case", json.dumps(case)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        return dict(case, status="error", error=f"timeout after {timeout:.0f} s")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return dict(case, status="error", error=f"worker exited {proc.returncode}: {tail[0][:300]}")


# ----------------------------------------------------------------------------- planning and reports

def plan_cases(models, dims, dtypes, devices, sizes, batches, reps, model_kwargs=None, scaling_batch=None,
               scaling="weak"):
    """Cases to run: every model x dims x dtype on 1 device, then the scaling runs (first model, first
    dims, first dtype) on each device count > 1.

    ``scaling="weak"``: ``scaling_batch`` images per device (default half the batch), so the global batch
    grows with the device count. ``"strong"``: one global batch (``scaling_batch``, default the batch) split
    over the devices; when it equals the throughput case's batch, that case is the 1-device point (it is
    flagged ``scaling_base``, not run twice).
    """
    if scaling not in ("weak", "strong"):
        raise ValueError(f"scaling must be 'weak' or 'strong', got {scaling!r}")
    model_kwargs = model_kwargs or {}
    cases = []
    for m in models:
        for d in dims:
            for dt in dtypes:
                cases.append(dict(model=m, dims=d, dtype=dt, devices=1, size=sizes[d], batch=batches[d],
                                  model_kwargs=model_kwargs.get(m), kind="throughput", **reps))
    scaled = [n for n in devices if n > 1]
    if scaled:
        m, d, dt = models[0], dims[0], dtypes[0]
        if scaling == "strong":
            total = scaling_batch or batches[d]
            bad = [n for n in scaled if total % n]
            if bad:
                raise ValueError(f"strong scaling: the global batch {total} must divide over {bad} devices")
            per_count = {n: total for n in [1] + scaled}
        else:
            per = scaling_batch or max(1, batches[d] // 2)
            per_count = {n: per * n for n in [1] + scaled}
        for n in [1] + scaled:
            if n == 1 and per_count[1] == batches[d]:
                base = next(c for c in cases if (c["model"], c["dims"], c["dtype"]) == (m, d, dt))
                base["scaling_base"] = scaling
                continue
            cases.append(dict(model=m, dims=d, dtype=dt, devices=n, size=sizes[d], batch=per_count[n],
                              model_kwargs=model_kwargs.get(m), kind="scaling", scaling=scaling, **reps))
    return cases


def scaling_summary(results: list[dict]) -> list[dict]:
    """Per device count: train (and inference) images/s, speedup over 1 device and efficiency (speedup / N)."""
    rows = [r for r in results if (r.get("kind") == "scaling" or r.get("scaling_base"))
            and r.get("status") == "ok" and r.get("train_images_per_s")]
    base = next((r for r in rows if int(r["devices"]) == 1), None)
    out = []
    for r in sorted(rows, key=lambda r: int(r["devices"])):
        ips, iips = r["train_images_per_s"], r.get("infer_images_per_s")
        speed = ips / base["train_images_per_s"] if base else None
        ispeed = iips / base["infer_images_per_s"] if base and iips and base.get("infer_images_per_s") else None
        out.append({"devices": int(r["devices"]), "global_batch": int(r["batch"]), "train_images_per_s": ips,
                    "speedup": speed, "efficiency": speed / int(r["devices"]) if speed else None,
                    "infer_images_per_s": iips, "infer_speedup": ispeed})
    return out


def _f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)


def format_markdown(results: list[dict], meta: dict) -> str:
    env = meta.get("env") or {}
    lines = [f"# Throughput ({meta.get('time', '')})", "",
             f"device: {env.get('device_kind', '?')} ({env.get('platform', '?')}), jax {env.get('jax', '?')}, "
             f"conv lowering {env.get('conv_lowering', '?')}, cpus {env.get('cpu_count', '?')}, "
             f"XLA_FLAGS={env.get('xla_flags') or '-'}", "",
             f"config: {json.dumps(meta.get('config', {}), sort_keys=True)}", "",
             "| model | D | dtype | dev | batch × input | params | compile train / infer (s) | train steps/s | "
             "train img/s | infer img/s | infer Mvox/s | train TFLOP/s | MFU | peak mem | status |",
             "|---|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        if r.get("kind") != "throughput":
            continue
        shape = f"{r['batch']} × {'×'.join([str(r['size'])] * int(r['dims']))}"
        status = "ok" if r.get("status") == "ok" else f"error: {r.get('error', '?')}".replace("|", "/")
        if r.get("train_note"):
            status += f" ({r['train_note']})"
        mem = "-" if r.get("peak_bytes") is None else f"{r['peak_bytes'] / 2 ** 20:.0f} MiB ({r.get('source', '?')})"
        lines.append(
            f"| {r['model']} | {r['dims']}D | {r['dtype']} | {r['devices']} | {shape} | "
            f"{_f(r.get('num_params'), '{:,}')} | {_f(r.get('compile_train_s'), '{:.1f}')} / "
            f"{_f(r.get('compile_infer_s'), '{:.1f}')} | {_f(r.get('train_steps_per_s'))} | "
            f"{_f(r.get('train_images_per_s'))} | {_f(r.get('infer_images_per_s'))} | "
            f"{_f(r.get('infer_voxels_per_s') and r['infer_voxels_per_s'] / 1e6)} | "
            f"{_f(r.get('train_tflops_per_s'), '{:.3f}')} | {_f(r.get('train_mfu'), '{:.1%}')} | "
            f"{mem} | {status} |")
    scal = scaling_summary(results)
    if scal:
        first = next(r for r in results if r.get("kind") == "scaling" or r.get("scaling_base"))
        mode = first.get("scaling") or first.get("scaling_base") or "weak"
        fake = (env.get("platform") == "cpu")
        what = (f"one global batch of {first['batch']} split over the devices (strong scaling)" if mode == "strong"
                else f"{first['batch'] // max(int(first['devices']), 1)} image(s) per device (weak scaling)")
        lines += ["", f"## Data-parallel scaling: {first['model']} {first['dims']}D {first['dtype']}, {what}", ""]
        if fake:
            ideal = ("1.0 for weak scaling (no loss from sharding), not N" if mode == "weak" else
                     "what the cores allow: above 1.0 when one device leaves a core idle, below when sharding "
                     "overhead dominates")
            lines += ["Fake CPU devices (`--xla_force_host_platform_device_count`) share the same cores, so the "
                      f"ideal speedup here is {ideal}.", ""]
        lines += ["| devices | global batch | train img/s | speedup | efficiency | infer img/s | infer speedup |",
                  "|---:|---:|---:|---:|---:|---:|---:|"]
        for s in scal:
            lines.append(f"| {s['devices']} | {s['global_batch']} | {s['train_images_per_s']:.2f} | "
                         f"{_f(s['speedup'])} | {_f(s['efficiency'], '{:.0%}')} | {_f(s['infer_images_per_s'])} | "
                         f"{_f(s['infer_speedup'])} |")
        failed = [r for r in results if r.get("kind") == "scaling" and r.get("status") != "ok"]
        for r in failed:
            lines.append(f"\n{r['devices']} devices: error: {r.get('error')}")
    return "\n".join(lines) + "\n"


def plot_results(results: list[dict], meta: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if r.get("kind") == "throughput" and r.get("status") == "ok"]
    scal = scaling_summary(results)
    ncols = 3 if scal else 2
    fig, axes = plt.subplots(1, ncols, figsize=(5 * ncols, 4.2))
    short = {"float32": "f32", "bfloat16": "bf16"}
    labels = [f"{r['model']} {r['dims']}D {short.get(r['dtype'], r['dtype'])}" for r in ok]
    for ax, key, title in ((axes[0], "train_steps_per_s", "train steps/s"),
                           (axes[1], "infer_images_per_s", "inference images/s")):
        vals = [r.get(key) or 0.0 for r in ok]
        ax.barh(range(len(vals)), vals, color="tab:blue" if key.startswith("train") else "tab:green")
        ax.set_yticks(range(len(vals)), labels, fontsize=8)
        ax.set_title(title)
        ax.invert_yaxis()
    if scal:
        ax = axes[2]
        ns = [s["devices"] for s in scal]
        ax.plot(ns, [s["speedup"] for s in scal], "o-", label="measured")
        ax.plot(ns, [1.0] * len(ns) if (meta.get("env") or {}).get("platform") == "cpu" else ns, "k--",
                label="ideal")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("devices")
        ax.set_ylabel("train img/s speedup vs 1 device")
        ax.legend()
        ax.set_title("data-parallel scaling")
    env = meta.get("env") or {}
    fig.suptitle(f"medzoo throughput: {env.get('device_kind', '?')}, jax {env.get('jax', '?')}, "
                 f"conv {env.get('conv_lowering', '?')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI

def _host_backend() -> str:
    """The default JAX backend, asked without letting this (parent) process grab accelerator memory."""
    user_set = "XLA_PYTHON_CLIENT_PREALLOCATE" in os.environ
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    backend = jax.default_backend()
    if not user_set:  # workers keep JAX's default allocator
        os.environ.pop("XLA_PYTHON_CLIENT_PREALLOCATE", None)
    return backend


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0])
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
    p.add_argument("--out", default=None, help="output folder (default workdirs/benchmarks/throughput-<time>)")
    p.add_argument("--_case", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args._case is not None:  # worker: one case, result on stdout
        print("RESULT " + json.dumps(run_case(json.loads(args._case)), default=float), flush=True)
        return 0
    try:
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
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    out = args.out or os.path.join("workdirs", "benchmarks", f"throughput-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    os.makedirs(out, exist_ok=True)
    scaling = args.scaling or base.get("scaling", "weak")
    try:
        cases = plan_cases(models, dims, dtypes, devices, sizes, batches, reps, model_kwargs, args.scaling_batch,
                           scaling)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
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
            r = _run_subprocess(case, args.timeout)
        results.append(r)
        if r.get("status") == "ok":
            print(f"{tag}: compile {r.get('compile_train_s') or 0:.1f}+{r['compile_infer_s']:.1f} s, "
                  f"train {_f(r.get('train_steps_per_s'))} steps/s, infer {r['infer_images_per_s']:.2f} img/s",
                  flush=True)
        else:
            print(f"{tag}: {r.get('error')}", flush=True)
    env = next((r["env"] for r in results if r.get("env") and int(r.get("devices", 1)) == 1), None)
    meta = {"time": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "env": env,
            "config": {"models": models, "dims": dims, "dtypes": dtypes, "devices": devices,
                       "size": {f"{k}d": v for k, v in sizes.items()}, "batch": {f"{k}d": v for k, v in batches.items()},
                       **reps, "budget_s": budget, "quick": bool(args.quick), "scaling": scaling,
                       "conv_lowering": args.conv_lowering or "default"},
            "total_wall_s": time.perf_counter() - t0}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "results": results, "scaling": scaling_summary(results)}, f, indent=2, default=float)
    md = format_markdown(results, meta)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(md)
    plot_results(results, meta, os.path.join(out, "results.png"))
    print("\n" + md)
    print(f"wrote {out}/results.json, results.md, results.png ({meta['total_wall_s']:.0f} s)")
    summary, rc = failure_summary(results)
    if summary:
        print(summary, file=sys.stderr, flush=True)
    return rc


def failure_summary(results: list[dict]) -> tuple[str, int]:
    """``(line, exit status)``: 1 with an ``error:`` line when every case failed, 0 with a count of the
    failed ones when some did, 0 and ``""`` when none did."""
    failed = [r for r in results if r.get("status") != "ok"]
    if not failed:
        return "", 0
    first = f"{failed[0].get('model')} {failed[0].get('dims')}D: {failed[0].get('error', '?')}"
    if len(failed) == len(results):
        return f"error: all {len(results)} benchmark case(s) failed (first: {first})", 1
    return f"warning: {len(failed)} of {len(results)} benchmark case(s) failed (first: {first})", 0


if __name__ == "__main__":
    sys.exit(main())
