"""The zoo against its peers, each framework in its own process: the residual U-Net against MONAI's UNet in
PyTorch (suite ``unet``, float32 and bfloat16), and the elastic augmentation against a scipy loop (suite ``elastic``).

    pip install -e ".[compare]"          # torch==2.13.0 (CPU wheel) + monai
    python -m benchmarks.compare_torch [--suite=unet,elastic] [--dims=2,3] [--dtype=float32,bfloat16] [--groups=2]
        [--repeats=5] [--max-load=0.5] [--out=r.json]

Theirs: ``monai.networks.nets.UNet(spatial_dims=D, in_channels=1, out_channels=2, channels=(16, 32, 64, 128,
256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")``, ``Adam(1e-3)``, ``DiceCELoss(softmax=True,
to_onehot_y=True)``, float32, NCHW, PyTorch's own thread count (``--torch_threads`` to set one). Ours:
``zoo.models.residual_unet`` with the same configuration (the same network, the same parameter count), Adam(1e-3),
Dice + CE, channels-last, the train step built as ``zoo.train`` builds it (jit, donated state).

bfloat16 (``--dtype``): ours as ``train.dtype=bfloat16`` builds it (bf16 compute, float32 parameters); theirs under
``torch.autocast("cpu", dtype=torch.bfloat16)``, PyTorch's own recipe. The table names the CPU and whether it has
AVX512-BF16 / AMX-BF16.

Elastic (``benchmarks.elastic.build_elastic``): a random rotation (15 deg), scale (0.85-1.15) and elastic field
(``--alpha``, ``--sigma``; B-spline control grid for the zoo, full-resolution Gaussian-filtered noise for scipy),
linear resampling of the image (and with ``--labels`` nearest resampling of a label map); the zoo's pipeline jitted
and vmapped over the batch, scipy one sample at a time.

Shapes (batch x channels x spatial, the same on both sides; ``--train_batch``/``--infer_batch``/``--size`` and
``--elastic_batch``/``--elastic_size`` change them): 2D train 8x1x128^2, inference 16x1x128^2; 3D train 2x1x64^3,
inference 2x1x64^3; elastic 2D 32x1x256^2, 3D 2x1x96^3.

Protocol: for each suite and dims, ``--groups`` rounds; in each round one worker process for the zoo, then one for
the peer (``python -m benchmarks.framework_worker``; interleaved process by process: zoo, peer, zoo, peer, ...; with
two dtypes each round runs both, float32 first). In each process: build (and for the zoo compile; the compile seconds
are reported apart), ``--warmup`` untimed calls, then ``--repeats`` samples of N calls each, N chosen so a sample
lasts at least ``--min_repeat_s``; the train step and then inference (or the augmentation of one batch). A row's rate
is the median of all its samples (groups x repeats); the per-process medians are kept in the JSON. No process ever
hosts both frameworks (the worker refuses).

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

from benchmarks import elastic, frameworks
from zoo.cli import command_parser, run_command

__all__ = ["SHAPES", "QUICK_SHAPES", "ELASTIC_SHAPES", "QUICK_ELASTIC_SHAPES", "plan", "summarize", "format_table",
           "main"]

# spatial dims -> (train batch, inference batch, side)
SHAPES = {2: (8, 16, 128), 3: (2, 2, 64)}
QUICK_SHAPES = {2: (2, 4, 32), 3: (1, 1, 32)}
# spatial dims -> (batch, side) of the elastic suite (issue 36: 2D 32x256^2, 3D 2x96^3, image only)
ELASTIC_SHAPES = {2: (32, 256), 3: (2, 96)}
QUICK_ELASTIC_SHAPES = {2: (4, 32), 3: (1, 16)}
_PEER = {"unet": "monai", "elastic": "scipy"}
_PEER_NAME = {"monai": "PyTorch + MONAI", "scipy": "scipy loop"}
_WORK_NAME = {"train": "train step", "infer": "inference", "elastic": "elastic + affine"}


def plan(dims_list, groups: int, shapes: dict, protocol: dict, *, suites=("unet",), dtypes=("float32",),
         elastic_shapes: dict | None = None, elastic: dict | None = None) -> list[dict]:
    """The worker specs in run order: per suite, per dims, ``groups`` rounds of (zoo, peer) for each dtype (the
    ``unet`` suite; the ``elastic`` suite is float32 only)."""
    specs = []
    for suite in suites:
        for dims in dims_list:
            for group in range(groups):
                for dtype in (dtypes if suite == "unet" else ("float32",)):
                    for framework in ("zoo", _PEER[suite]):
                        spec = dict(protocol, suite=suite, framework=framework, dims=dims, group=group, dtype=dtype)
                        if suite == "unet":
                            train_batch, infer_batch, size = shapes[dims]
                            spec.update(train_batch=train_batch, infer_batch=infer_batch, size=size)
                        else:
                            batch, size = elastic_shapes[dims]
                            spec.update(dict(elastic or {}), batch=batch, size=size)
                        specs.append(spec)
    return specs


def _per_call(spec: dict, work: str) -> int:
    """What one call of ``work`` does: 1 train step, or the images (volumes) of its batch."""
    return 1 if work == "train" else int(spec["infer_batch"] if work == "infer" else spec["batch"])


def _shape(batch: int, dims: int, size: int) -> str:
    return f"{batch}×1×{size}{'²' if dims == 2 else '³'}"


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (suite, dims, dtype, work): both sides' rates from the median of all their samples, and the
    ratio zoo / peer."""
    rows = []
    keys = sorted({(r["spec"].get("suite", "unet"), r["spec"]["dims"], r["spec"].get("dtype", "float32"))
                   for r in runs}, key=lambda k: (k[0] != "unet", k[1], k[2] != "float32"))
    for suite, dims, dtype in keys:
        peer = _PEER[suite]
        mine_all = [r for r in runs if (r["spec"].get("suite", "unet"), r["spec"]["dims"],
                                        r["spec"].get("dtype", "float32")) == (suite, dims, dtype)]
        for work in ("train", "infer") if suite == "unet" else ("elastic",):
            row = {"suite": suite, "dims": dims, "dtype": dtype, "work": work, "peer": peer}
            for fw in (peer, "zoo"):
                mine = [r for r in mine_all if r["framework"] == fw]
                samples = [s for r in mine for s in r[work]["samples_s"]]
                if not samples:
                    raise ValueError(f"no {fw} samples for {dims}D {dtype} {work}")
                spec = mine[0]["spec"]
                batch = spec["train_batch"] if work == "train" else _per_call(spec, work)
                per = _per_call(spec, work)  # train: steps/s; else images (volumes) / s
                row[fw] = {"rate": per / statistics.median(samples), "median_s": statistics.median(samples),
                           "process_rates": [per / r[work]["median_s"] for r in mine], "samples": len(samples),
                           "params": mine[0]["params"], "number": [r[work]["number"] for r in mine]}
                row["shape"] = _shape(batch, dims, spec["size"])
            row["unit"] = "steps/s" if work == "train" else ("img/s" if dims == 2 else "vol/s")
            row["ratio"] = row["zoo"]["rate"] / row[peer]["rate"]
            rows.append(row)
    return rows


def format_table(out: dict) -> str:
    """The Markdown tables (one per suite) with their header: host and its bf16 instructions, versions,
    protocol, loads."""
    h, p, v = out["host"], out["protocol"], out["versions"]
    bf16 = h.get("bf16", {})
    cpu = (f"{h['cpu_model']}, {h['cpus']} CPUs (AVX512-BF16: {'yes' if bf16.get('avx512_bf16') else 'no'}, "
           f"AMX-BF16: {'yes' if bf16.get('amx_bf16') else 'no'})")
    loads = ", ".join(f"{x['load']['loadavg'][0]:.2f}" for x in out["processes"])
    protocol = (f"each framework in its own process, {p['groups']} interleaved process(es) per framework, "
                f"{p['warmup']} warm-up calls, median of {p['repeats']} samples of >= {p['min_repeat_s']:g} s per "
                f"process; 1-min load before each worker: {loads}"
                + ("; QUICK SHAPES: a smoke run, not a measurement" if out.get("quick") else ""))
    suites = [s for s in ("unet", "elastic") if any(r["suite"] == s for r in out["rows"])]
    lines = []
    for suite in suites:
        rows = [r for r in out["rows"] if r["suite"] == suite]
        peer = _PEER[suite]
        short = "MONAI" if peer == "monai" else "scipy"
        if suite == "unet":
            title = (f"residual U-Net (zoo, jax {v.get('jax', '?')}, conv lowering {v.get('conv_lowering', '?')}) vs "
                     f"PyTorch {v.get('torch', '?')} + MONAI {v.get('monai', '?')} ({v.get('torch_threads', '?')} "
                     f"threads)")
            if any(r["dtype"] == "bfloat16" for r in rows):
                title += ("; bfloat16 rows: the zoo computes in bf16 with float32 parameters (train.dtype), "
                          "PyTorch under torch.autocast(\"cpu\", dtype=torch.bfloat16)")
        else:
            e = out.get("elastic", {})
            title = (f"elastic + affine augmentation (zoo kernels.augment, {e.get('control', '?')} control, jax "
                     f"{v.get('jax', '?')}) vs a scipy {v.get('scipy', '?')} loop (Simard: gaussian_filter + "
                     f"map_coordinates); alpha {e.get('alpha', '?')}, sigma {e.get('sigma', '?')}, "
                     f"{'image and label map' if e.get('labels') else 'image only'}")
        lines += [f"{title}; {cpu}; {protocol}", "",
                  f"| work | dtype | shape (batch×channels×spatial) | {_PEER_NAME[peer]} | zoo | zoo / {short} | "
                  f"per-process rates ({short}; zoo) |",
                  "|---|---|---|---:|---:|---:|---|"]
        for r in rows:
            per = "; ".join(", ".join(f"{x:.3g}" for x in r[fw]["process_rates"]) for fw in (peer, "zoo"))
            lines.append(f"| {r['dims']}D {_WORK_NAME[r['work']]} | {r['dtype']} | {r['shape']} | "
                         f"{r[peer]['rate']:.3g} {r['unit']} | {r['zoo']['rate']:.3g} {r['unit']} | "
                         f"{r['ratio']:.2f}× | {per} |")
        lines.append("")
    return "\n".join(lines)


def _run_worker(cmd: list[str], spec: dict, timeout: float) -> dict:
    worker_spec = frameworks.worker_spec(spec)
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


def _csv(value: str, name: str, allowed) -> list:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items or any(v not in allowed for v in items):
        raise ValueError(f"--{name} must be a comma-separated list of {', '.join(map(str, allowed))}; got {value!r}")
    return [v for v in allowed if v in items]  # a fixed order, no repeats


def _run(args) -> int:
    try:
        dims_list = sorted({int(v) for v in args.dims.split(",") if v.strip()})
    except ValueError:
        dims_list = []
    if not dims_list or any(d not in (2, 3) for d in dims_list):
        raise ValueError(f"--dims must be 2, 3 or 2,3; got {args.dims!r}")
    suites = _csv(args.suite, "suite", tuple(frameworks.SUITES))
    dtypes = _csv(args.dtype, "dtype", frameworks.DTYPES)
    if min(args.groups, args.repeats, args.warmup) < 1 or args.min_repeat_s < 0 or args.max_load < 0:
        raise ValueError(f"--groups, --repeats and --warmup must be >= 1, --min_repeat_s and --max-load >= 0; got "
                         f"{args.groups}, {args.repeats}, {args.warmup}, {args.min_repeat_s}, {args.max_load}")
    shapes, elastic_shapes = {}, {}
    for d in dims_list:
        tb, ib, size = (QUICK_SHAPES if args.quick else SHAPES)[d]
        tb, ib, size = (v if v is not None else default for v, default in
                        ((args.train_batch, tb), (args.infer_batch, ib), (args.size, size)))
        if min(tb, ib) < 1 or size < 16 or size % 16:
            raise ValueError(f"--train_batch and --infer_batch must be >= 1 and --size a multiple of 16 (four 2x "
                             f"poolings); got {tb}, {ib}, {size}")
        shapes[d] = (tb, ib, size)
        eb, es = (QUICK_ELASTIC_SHAPES if args.quick else ELASTIC_SHAPES)[d]
        eb, es = (args.elastic_batch or eb, args.elastic_size or es)
        if eb < 1 or es < 4:
            raise ValueError(f"--elastic_batch must be >= 1 and --elastic_size >= 4; got {eb}, {es}")
        elastic_shapes[d] = (eb, es)
    if args.alpha < 0 or args.sigma <= 0:
        raise ValueError(f"--alpha must be >= 0 and --sigma > 0; got {args.alpha}, {args.sigma}")
    cmd = shlex.split(args.worker_cmd) if args.worker_cmd else [sys.executable, "-m", "benchmarks.framework_worker"]
    if not cmd:
        raise ValueError("--worker_cmd is empty")
    protocol = {"warmup": args.warmup, "repeats": args.repeats, "min_repeat_s": args.min_repeat_s,
                "torch_threads": args.torch_threads, "groups": args.groups}
    elastic_params = {"labels": bool(args.labels), "alpha": args.alpha, "sigma": args.sigma, "control": "bspline"}
    specs = plan(dims_list, args.groups, shapes, protocol, suites=suites, dtypes=dtypes,
                 elastic_shapes=elastic_shapes, elastic=elastic_params)
    processes, runs = [], []
    t_start = time.perf_counter()
    for i, spec in enumerate(specs):
        load = frameworks.machine_load()
        frameworks.check_load(load, args.max_load, first=i == 0)
        t0 = time.perf_counter()
        result = _run_worker(cmd, spec, args.timeout)
        wall = time.perf_counter() - t0
        runs.append(result)
        processes.append({"order": i, "suite": spec["suite"], "framework": spec["framework"], "dims": spec["dims"],
                          "dtype": spec["dtype"], "group": spec["group"], "load": load, "wall_s": wall,
                          "setup_s": result.get("setup_s"), "info": result.get("info", {})})
        rates = ", ".join(f"{work} {_per_call(spec, work) / result[work]['median_s']:.3g}/s"
                          for work in frameworks.SUITES[spec["suite"]]["works"])
        print(f"[{i + 1}/{len(specs)}] {spec['suite']} {spec['dims']}D {spec['dtype']} {spec['framework']}: {rates} "
              f"({wall:.0f} s, load before {load['loadavg'][0]:.2f})", flush=True)
    versions = {}
    for p in processes:
        info = p["info"]
        versions.update({k: info[k] for k in ("jax", "conv_lowering", "torch", "monai", "scipy") if k in info})
        if "threads" in info:
            versions["torch_threads"] = info["threads"]
    out = {"host": {"cpu_model": frameworks.cpu_model(), "bf16": frameworks.cpu_bf16(), "cpus": os.cpu_count(),
                    "machine": platform.machine(), "python": platform.python_version()},
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "protocol": protocol, "versions": versions,
           "quick": bool(args.quick), "suites": suites, "dtypes": dtypes,
           "shapes": {str(d): {"train_batch": s[0], "infer_batch": s[1], "size": s[2]} for d, s in shapes.items()},
           "elastic": dict(elastic_params, shapes={str(d): {"batch": b, "size": z}
                                                   for d, (b, z) in elastic_shapes.items()}),
           "processes": processes, "rows": summarize(runs), "wall_s": time.perf_counter() - t_start, "runs": runs}
    frameworks.report(args.out, out, format_table(out))
    return 0


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.compare_torch", __doc__,
                       out="write the result JSON here (and the Markdown table beside it, .md)")
    p.add_argument("--suite", default="unet,elastic",
                   help="what to compare: unet (residual U-Net vs PyTorch + MONAI), elastic (augmentation vs a "
                        "scipy loop), or both (default unet,elastic)")
    p.add_argument("--dims", default="2,3", help="spatial dims to compare: 2, 3 or 2,3 (default)")
    p.add_argument("--dtype", default="float32",
                   help="the unet suite's precisions: float32 (default), bfloat16 or float32,bfloat16")
    p.add_argument("--groups", type=int, default=2, help="worker processes per framework per dims (interleaved)")
    p.add_argument("--repeats", type=int, default=5, help="timed samples per process (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after compilation (default 2)")
    p.add_argument("--min_repeat_s", type=float, default=1.0, help="a sample lasts at least this long (seconds)")
    p.add_argument("--max-load", dest="max_load", type=float, default=0.5,
                   help="refuse to run above this load per CPU (default 0.5)")
    p.add_argument("--train_batch", type=int, default=None, help="default 8 (2D) / 2 (3D)")
    p.add_argument("--infer_batch", type=int, default=None, help="default 16 (2D) / 2 (3D)")
    p.add_argument("--size", type=int, default=None, help="spatial side; default 128 (2D) / 64 (3D)")
    p.add_argument("--elastic_batch", type=int, default=None, help="elastic suite batch; default 32 (2D) / 2 (3D)")
    p.add_argument("--elastic_size", type=int, default=None, help="elastic suite side; default 256 (2D) / 96 (3D)")
    p.add_argument("--labels", action="store_true",
                   help="elastic suite: resample a label map too (default: image only)")
    p.add_argument("--alpha", type=float, default=elastic.ALPHA, help="elastic displacement amplitude (voxels)")
    p.add_argument("--sigma", type=float, default=elastic.SIGMA, help="elastic field smoothness (voxels)")
    p.add_argument("--torch_threads", type=int, default=None, help="PyTorch threads (default: its own choice)")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run, not a measurement)")
    p.add_argument("--timeout", type=float, default=900, help="seconds one worker may run")
    p.add_argument("--worker_cmd", default=None,
                   help="the command that runs one worker, the spec JSON appended (default: this Python, "
                        "-m benchmarks.framework_worker)")
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


if __name__ == "__main__":
    sys.exit(main())
