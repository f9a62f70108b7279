"""The zoo's residual U-Net against MONAI's UNet in PyTorch, each framework in its own process.

    pip install -e ".[compare]"          # torch==2.13.0 (CPU wheel) + monai
    python -m benchmarks.compare_torch [--dims=2,3] [--groups=2] [--repeats=5] [--max-load=0.5] [--out=r.json]

Theirs: ``monai.networks.nets.UNet(spatial_dims=D, in_channels=1, out_channels=2, channels=(16, 32, 64, 128,
256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")``, ``Adam(1e-3)``, ``DiceCELoss(softmax=True,
to_onehot_y=True)``, float32, NCHW, PyTorch's own thread count (``--torch_threads`` to set one). Ours:
``zoo.models.residual_unet`` with the same configuration (the same network, the same parameter count), Adam(1e-3),
Dice + CE, channels-last, the train step built as ``zoo.train`` builds it (jit, donated state).

Shapes (batch x channels x spatial, the same on both sides; ``--train_batch``/``--infer_batch``/``--size`` change
them): 2D train 8x1x128^2, inference 16x1x128^2; 3D train 2x1x64^3, inference 2x1x64^3.

Protocol: for each dims, ``--groups`` rounds; in each round one worker process for the zoo, then one for PyTorch +
MONAI (``python -m benchmarks.framework_worker``; interleaved process by process: zoo, torch, zoo, torch, ...).
In each process: build (and for the zoo compile; the compile seconds are reported apart), ``--warmup`` untimed calls,
then ``--repeats`` samples of N calls each, N chosen so a sample lasts at least ``--min_repeat_s``; the train step
and then inference. A row's rate is the median of all its samples (groups x repeats); the per-process medians are
kept in the JSON. No process ever hosts both frameworks (the worker refuses).

Load: before the first worker the 1-minute load average per CPU must be at most ``--max-load`` (default 0.5),
before every later one the share of CPU time other processes took over one second; above it the run stops with
one ``error:`` line (exit 2). Every worker's load is recorded in the JSON and the table's header.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

from benchmarks import frameworks
from zoo.cli import command_parser, run_command

__all__ = ["SHAPES", "QUICK_SHAPES", "plan", "summarize", "format_table", "main"]

# spatial dims -> (train batch, inference batch, side)
SHAPES = {2: (8, 16, 128), 3: (2, 2, 64)}
QUICK_SHAPES = {2: (2, 4, 32), 3: (1, 1, 32)}


def plan(dims_list, groups: int, shapes: dict, protocol: dict) -> list[dict]:
    """The worker specs in run order: per dims, ``groups`` rounds of (zoo, monai)."""
    specs = []
    for dims in dims_list:
        train_batch, infer_batch, size = shapes[dims]
        for group in range(groups):
            for framework in ("zoo", "monai"):
                specs.append(dict(protocol, framework=framework, dims=dims, train_batch=train_batch,
                                  infer_batch=infer_batch, size=size, group=group))
    return specs


def _shape(batch: int, dims: int, size: int) -> str:
    return f"{batch}×1×{size}{'²' if dims == 2 else '³'}"


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (dims, work): both frameworks' rates from the median of all their samples, and the ratio."""
    rows = []
    for dims in sorted({r["spec"]["dims"] for r in runs}):
        for work in ("train", "infer"):
            row = {"dims": dims, "work": work}
            for fw in ("monai", "zoo"):
                mine = [r for r in runs if r["spec"]["dims"] == dims and r["framework"] == fw]
                samples = [s for r in mine for s in r[work]["samples_s"]]
                if not samples:
                    raise ValueError(f"no {fw} samples for {dims}D {work}")
                spec = mine[0]["spec"]
                batch = spec["train_batch"] if work == "train" else spec["infer_batch"]
                per = 1.0 if work == "train" else batch  # train: steps/s; inference: images (volumes) / s
                row[fw] = {"rate": per / statistics.median(samples), "median_s": statistics.median(samples),
                           "process_rates": [per / r[work]["median_s"] for r in mine], "samples": len(samples),
                           "params": mine[0]["params"], "number": [r[work]["number"] for r in mine]}
                row["shape"] = _shape(batch, dims, spec["size"])
            row["unit"] = "steps/s" if work == "train" else ("img/s" if dims == 2 else "vol/s")
            row["ratio"] = row["zoo"]["rate"] / row["monai"]["rate"]
            rows.append(row)
    return rows


def format_table(out: dict) -> str:
    """The Markdown table with its header: host, versions, protocol, loads."""
    h, p = out["host"], out["protocol"]
    loads = ", ".join(f"{x['load']['loadavg'][0]:.2f}" for x in out["processes"])
    lines = [f"residual U-Net (zoo, jax {out['versions'].get('jax', '?')}, conv lowering "
             f"{out['versions'].get('conv_lowering', '?')}) vs PyTorch {out['versions'].get('torch', '?')} + MONAI "
             f"{out['versions'].get('monai', '?')} ({out['versions'].get('torch_threads', '?')} threads); "
             f"{h['cpu_model']}, {h['cpus']} CPUs; each framework in its own process, {p['groups']} interleaved "
             f"process(es) per framework, {p['warmup']} warm-up calls, median of {p['repeats']} samples of >= "
             f"{p['min_repeat_s']:g} s per process; 1-min load before each worker: {loads}"
             + ("; QUICK SHAPES: a smoke run, not a measurement" if out.get("quick") else ""), "",
             "| work | shape (batch×channels×spatial) | PyTorch + MONAI | zoo residual_unet | zoo / MONAI | "
             "per-process rates (MONAI; zoo) |", "|---|---|---:|---:|---:|---|"]
    for r in out["rows"]:
        name = f"{r['dims']}D {'train step' if r['work'] == 'train' else 'inference'}"
        per = "; ".join(", ".join(f"{v:.3g}" for v in r[fw]["process_rates"]) for fw in ("monai", "zoo"))
        lines.append(f"| {name} | {r['shape']} | {r['monai']['rate']:.3g} {r['unit']} | {r['zoo']['rate']:.3g} "
                     f"{r['unit']} | {r['ratio']:.2f}× | {per} |")
    return "\n".join(lines) + "\n"


def _run_worker(cmd: list[str], spec: dict, timeout: float) -> dict:
    worker_spec = {k: spec[k] for k in frameworks.SPEC_KEYS}
    try:
        r = subprocess.run(cmd + [json.dumps(worker_spec)], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ValueError(f"the {spec['framework']} worker ({spec['dims']}D) ran past --timeout {timeout:g} s") from None
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(frameworks.RESULT_PREFIX)]
    if r.returncode != 0 or not lines:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"the {spec['framework']} worker ({spec['dims']}D) failed with exit status "
                         f"{r.returncode}: {last}")
    result = json.loads(lines[-1][len(frameworks.RESULT_PREFIX):])
    result["spec"] = dict(spec)
    return result


def _run(args) -> int:
    try:
        dims_list = sorted({int(v) for v in args.dims.split(",") if v.strip()})
    except ValueError:
        dims_list = []
    if not dims_list or any(d not in (2, 3) for d in dims_list):
        raise ValueError(f"--dims must be 2, 3 or 2,3; got {args.dims!r}")
    if min(args.groups, args.repeats, args.warmup) < 1 or args.min_repeat_s < 0 or args.max_load < 0:
        raise ValueError(f"--groups, --repeats and --warmup must be >= 1, --min_repeat_s and --max-load >= 0; got "
                         f"{args.groups}, {args.repeats}, {args.warmup}, {args.min_repeat_s}, {args.max_load}")
    shapes = {}
    for d in dims_list:
        tb, ib, size = (QUICK_SHAPES if args.quick else SHAPES)[d]
        tb, ib, size = (v if v is not None else default for v, default in
                        ((args.train_batch, tb), (args.infer_batch, ib), (args.size, size)))
        if min(tb, ib) < 1 or size < 16 or size % 16:
            raise ValueError(f"--train_batch and --infer_batch must be >= 1 and --size a multiple of 16 (four 2x "
                             f"poolings); got {tb}, {ib}, {size}")
        shapes[d] = (tb, ib, size)
    cmd = shlex.split(args.worker_cmd) if args.worker_cmd else [sys.executable, "-m", "benchmarks.framework_worker"]
    if not cmd:
        raise ValueError("--worker_cmd is empty")
    protocol = {"warmup": args.warmup, "repeats": args.repeats, "min_repeat_s": args.min_repeat_s,
                "torch_threads": args.torch_threads, "groups": args.groups}
    specs = plan(dims_list, args.groups, shapes, protocol)
    processes, runs = [], []
    t_start = time.perf_counter()
    for i, spec in enumerate(specs):
        load = frameworks.machine_load()
        frameworks.check_load(load, args.max_load, first=i == 0)
        t0 = time.perf_counter()
        result = _run_worker(cmd, spec, args.timeout)
        wall = time.perf_counter() - t0
        runs.append(result)
        processes.append({"order": i, "framework": spec["framework"], "dims": spec["dims"], "group": spec["group"],
                          "load": load, "wall_s": wall, "setup_s": result.get("setup_s"),
                          "info": result.get("info", {})})
        print(f"[{i + 1}/{len(specs)}] {spec['dims']}D {spec['framework']}: train "
              f"{1 / result['train']['median_s']:.3g} steps/s, inference "
              f"{spec['infer_batch'] / result['infer']['median_s']:.3g}/s ({wall:.0f} s, load before "
              f"{load['loadavg'][0]:.2f})", flush=True)
    versions = {}
    for p in processes:
        info = p["info"]
        versions.update({k: info[k] for k in ("jax", "conv_lowering", "torch", "monai") if k in info})
        if "threads" in info:
            versions["torch_threads"] = info["threads"]
    out = {"host": {"cpu_model": frameworks.cpu_model(), "cpus": os.cpu_count(), "machine": platform.machine(),
                    "python": platform.python_version()},
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "protocol": protocol, "versions": versions,
           "quick": bool(args.quick),
           "shapes": {str(d): {"train_batch": s[0], "infer_batch": s[1], "size": s[2]} for d, s in shapes.items()},
           "processes": processes, "rows": summarize(runs), "wall_s": time.perf_counter() - t_start, "runs": runs}
    frameworks.report(args.out, out, format_table(out))
    return 0


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.compare_torch", __doc__,
                       out="write the result JSON here (and the Markdown table beside it, .md)")
    p.add_argument("--dims", default="2,3", help="spatial dims to compare: 2, 3 or 2,3 (default)")
    p.add_argument("--groups", type=int, default=2, help="worker processes per framework per dims (interleaved)")
    p.add_argument("--repeats", type=int, default=5, help="timed samples per process (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after compilation (default 2)")
    p.add_argument("--min_repeat_s", type=float, default=1.0, help="a sample lasts at least this long (seconds)")
    p.add_argument("--max-load", dest="max_load", type=float, default=0.5,
                   help="refuse to run above this load per CPU (default 0.5)")
    p.add_argument("--train_batch", type=int, default=None, help="default 8 (2D) / 2 (3D)")
    p.add_argument("--infer_batch", type=int, default=None, help="default 16 (2D) / 2 (3D)")
    p.add_argument("--size", type=int, default=None, help="spatial side; default 128 (2D) / 64 (3D)")
    p.add_argument("--torch_threads", type=int, default=None, help="PyTorch threads (default: its own choice)")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run, not a measurement)")
    p.add_argument("--timeout", type=float, default=900, help="seconds one worker may run")
    p.add_argument("--worker_cmd", default=None,
                   help="the command that runs one worker, the spec JSON appended (default: this Python, "
                        "-m benchmarks.framework_worker)")
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


if __name__ == "__main__":
    sys.exit(main())
