"""The throughput benchmark's cases (``python -m benchmarks.throughput`` is its command line, ``gpu_check`` runs
cases too): one ``(model, dims, dtype, devices)`` case measured in this process or in a worker subprocess, the
plan of cases, the scaling summary and the reports (Markdown, a plot, the failure line).

A worker is ``python -m benchmarks.throughput --_case JSON`` with ``XLA_FLAGS`` asking for the case's device
count (fake CPU devices on a CPU host); it prints one ``RESULT {json}`` line. Timing protocol:
``benchmarks/common.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import traceback

from benchmarks.common import xla_flags_with_cpu_devices
from data_pipelines.atomic import atomic_path

__all__ = ["run_case", "run_subprocess", "plan_cases", "scaling_summary", "format_markdown", "plot_results",
           "failure_summary", "format_value", "WORKER_FLAG"]

# The hidden flag of ``python -m benchmarks.throughput`` that makes it a worker running one case.
WORKER_FLAG = "--_case"


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


def run_subprocess(case: dict, timeout: float) -> dict:
    """:func:`run_case` in a worker process with ``case["devices"]`` (fake CPU) devices; a crash or a timeout is a
    result with ``status="error"``."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = xla_flags_with_cpu_devices(env.get("XLA_FLAGS", ""), int(case["devices"]))
    env["MEDZOO_COMPILATION_CACHE"] = "0"  # the compile-time column measures compiling, not loading from a cache
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout: workers import it
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "benchmarks.throughput", WORKER_FLAG, json.dumps(case)]
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


def format_value(v, fmt="{:.2f}") -> str:
    """``v`` formatted, or ``-`` when it is None."""
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
            f"{format_value(r.get('num_params'), '{:,}')} | {format_value(r.get('compile_train_s'), '{:.1f}')} / "
            f"{format_value(r.get('compile_infer_s'), '{:.1f}')} | {format_value(r.get('train_steps_per_s'))} | "
            f"{format_value(r.get('train_images_per_s'))} | {format_value(r.get('infer_images_per_s'))} | "
            f"{format_value(r.get('infer_voxels_per_s') and r['infer_voxels_per_s'] / 1e6)} | "
            f"{format_value(r.get('train_tflops_per_s'), '{:.3f}')} | {format_value(r.get('train_mfu'), '{:.1%}')} | "
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
                         f"{format_value(s['speedup'])} | {format_value(s['efficiency'], '{:.0%}')} | "
                         f"{format_value(s['infer_images_per_s'])} | {format_value(s['infer_speedup'])} |")
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


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
