"""The zoo U-Net against MONAI's UNet in PyTorch, timed interleaved in the same run.

    pip install -e ".[compare]"          # torch==2.13.0 (CPU wheel) + monai
    python -m benchmarks.compare_torch --dims=2 [--lowerings=lax,cpu] [--dtype=bfloat16] [--quick]
    python -m benchmarks.compare_torch --suite [--out results.json]   # every row of the comparison, one run

``--suite`` times, in one process: the residual U-Net's 2D train step (8 x 1 x 128^2) and inference
(16 x 1 x 128^2), 3D train step and inference (2 x 1 x 64^3), each in float32 and in bfloat16 (PyTorch
``torch.autocast("cpu", torch.bfloat16)`` against the zoo's ``dtype=bfloat16``), and elastic deformation of
images with their label maps (``kernels.augment`` against a ``scipy.ndimage`` loop, sigma 4, alpha 34, 2D
32 x 256^2 and 3D 2 x 96^3); prints one table and writes it beside ``--out`` as Markdown.

Theirs: ``monai.networks.nets.UNet(spatial_dims=D, in_channels=1, out_channels=2, channels=(16, 32, 64, 128,
256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch")``, ``Adam(1e-3)``,
``DiceCELoss(softmax=True, to_onehot_y=True)``, float32, NCHW. Ours (``--models``, default both):

- ``residual_unet``: the same network layer for layer (``zoo.models.residual_unet``, the same parameter count,
  MONAI weights reproduce MONAI's outputs) - the like-for-like comparison;
- ``unet``: the zoo's plain U-Net at the same widths/depth/norm (:data:`benchmarks.common.UNET_MONAI_LIKE`), which
  keeps two 3x3 convolutions at full resolution and does ~4x the FLOPs.

Both with Adam(1e-3), Dice+CE, channels-last, the train step built as ``zoo.train`` builds it (jit, donated state).

Protocol: ``--rounds`` rounds; in each, every contender's train step and inference are timed back to back
(``benchmarks.common.time_calls``), so load from other processes hits all of them alike. Reported: the median
over rounds, and our/their ratio of rates (> 1: we are faster).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from benchmarks.common import RESIDUAL_UNET_MONAI, xla_flags_with_cpu_devices
from zoo.cli import command_parser, run_command

__all__ = ["build_monai", "compare", "suite", "format_suite", "torch_missing", "main"]

# The same configuration our residual_unet is benchmarked in, by construction.
MONAI_KW = dict(in_channels=1, out_channels=2, **RESIDUAL_UNET_MONAI)


def torch_missing() -> str | None:
    """The name of the missing module when PyTorch or MONAI cannot be imported, else None."""
    try:
        import monai  # noqa: F401
        import torch  # noqa: F401
    except ImportError as e:
        return f"{e.name or e}"
    return None


def build_monai(dims: int, data: dict, infer_data: dict | None = None, dtype: str = "float32"):
    """MONAI UNet, Adam, DiceCELoss; returns ``(train_fn, infer_fn, num_params)`` on ``data`` (channels-last numpy;
    inference on ``infer_data`` when given). ``dtype="bfloat16"``: both under ``torch.autocast("cpu",
    torch.bfloat16)``, PyTorch's mixed precision on a CPU (oneDNN's bf16/AMX kernels; float32 master weights)."""
    import contextlib

    import numpy as np
    import torch
    from monai.losses import DiceCELoss
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(spatial_dims=dims, **MONAI_KW)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(softmax=True, to_onehot_y=True)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(data["image"], -1, 1)))
    y = torch.from_numpy(data["label"][:, None].astype(np.int64))
    xi = x if infer_data is None else torch.from_numpy(np.ascontiguousarray(np.moveaxis(infer_data["image"], -1, 1)))
    if dtype not in ("float32", "bfloat16"):
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")

    def precision():
        return torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext()

    def train():
        net.train()
        opt.zero_grad(set_to_none=True)
        with precision():
            loss = loss_fn(net(x).float(), y)
        loss.backward()
        opt.step()
        return loss

    def infer():
        net.eval()
        with torch.inference_mode(), precision():
            return net(xi)

    return train, infer, int(sum(p.numel() for p in net.parameters()))


def compare(dims: int = 2, batch: int = 8, size: int = 128, rounds: int = 3, repeats: int = 2, number: int = 2,
            warmup: int = 1, lowerings=("auto",), torch_threads: int | None = None,
            models=("residual_unet", "unet"), devices=(1,), dtype: str = "float32",
            infer_batch: int | None = None) -> dict:
    """Time MONAI and our U-Nets (one entry per model, conv lowering and device count) interleaved; return
    medians and ratios. ``devices``: data-parallel over that many JAX devices (on a CPU host: fake devices,
    see :func:`main`'s ``--devices``). ``dtype``: ``bfloat16`` runs ours with ``dtype=bfloat16`` and MONAI under
    autocast. ``infer_batch``: inference on a batch of that size (default: the train batch)."""
    import jax
    import torch

    from benchmarks import common
    from kernels import conv, native
    from zoo import sharding

    torch.set_num_threads(torch_threads or os.cpu_count() or 1)
    data = common.make_batch(batch, (size,) * dims, seed=0)
    infer_batch = infer_batch or batch
    infer_data = data if infer_batch == batch else common.make_batch(infer_batch, (size,) * dims, seed=1)
    contenders = {}
    compile_s = {}
    if max(devices) > len(jax.devices()) or batch % max(devices):
        raise ValueError(f"devices {list(devices)}: {len(jax.devices())} JAX devices available and the batch "
                         f"{batch} must divide over each count")
    for model_name in models:
        for low in lowerings:
            for n in devices:
                mesh = sharding.make_mesh((n, 1), devices=jax.devices()[:n])
                # "cpu-xla": the cpu lowering with its 3D convolutions on the XLA rewrites instead of oneDNN
                with conv.conv_lowering("cpu" if low == "cpu-xla" else low), \
                        conv.use_onednn(False if low == "cpu-xla" else None):
                    resolved = conv.resolve_conv_lowering()
                    if resolved == "cpu" and low != "cpu-xla" and dims >= 2 and dtype == "float32" \
                            and native.available("dnnl_conv"):
                        resolved = "cpu+onednn"
                    name = f"{model_name}[{resolved}]" + (f" x{n} dev" if n > 1 else "")
                    model = common.build_model(model_name, dims, dtype)
                    steps = common.build_jax_steps(model, "segmentation", data, mesh=mesh)
                    infer = steps if infer_data is data else common.build_jax_steps(
                        model, "segmentation", infer_data, mesh=mesh, train=False)
                contenders[name] = (steps.train, infer.infer, steps.num_params)
                compile_s[name] = {"train": steps.compile_train_s, "infer": infer.compile_infer_s}
    t0 = time.perf_counter()
    contenders["monai"] = build_monai(dims, data, infer_data, dtype)
    compile_s["monai"] = {"build": time.perf_counter() - t0}
    sync = {"monai": lambda out: out}
    samples = {k: {"train": [], "infer": []} for k in contenders}
    reps = dict(warmup=warmup, repeats=repeats, number=number)
    for r in range(rounds):
        for name, (train, infer, _) in contenders.items():
            s = sync.get(name, jax.block_until_ready)
            samples[name]["train"].append(common.time_calls(train, sync=s, **reps)["median_s"])
            samples[name]["infer"].append(common.time_calls(infer, sync=s, **reps)["median_s"])
        print(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{k} train {batch / v['train'][-1]:.2f} img/s infer {infer_batch / v['infer'][-1]:.2f} img/s"
            for k, v in samples.items()), flush=True)
    out = {"dims": dims, "batch": batch, "infer_batch": infer_batch, "size": size, "dtype": dtype,
           "rounds": rounds, "env": common.env_info(),
           "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "results": {}}
    for name, (_, _, n_params) in contenders.items():
        tr, inf = statistics.median(samples[name]["train"]), statistics.median(samples[name]["infer"])
        out["results"][name] = {"params": n_params, "train_s": tr, "train_steps_per_s": 1 / tr,
                                "infer_s": inf, "infer_images_per_s": infer_batch / inf,
                                "train_samples_s": samples[name]["train"], "infer_samples_s": samples[name]["infer"],
                                "compile_s": compile_s[name]}
    theirs = out["results"]["monai"]
    for name, res in out["results"].items():
        res["train_ratio_vs_monai"] = theirs["train_s"] / res["train_s"]
        res["infer_ratio_vs_monai"] = theirs["infer_s"] / res["infer_s"]
    return out


def format_table(out: dict) -> str:
    d = out["dims"]
    lines = [f"U-Net {d}D, batch {out['batch']} (inference {out.get('infer_batch', out['batch'])}) x "
             f"{'x'.join([str(out['size'])] * d)}, {out.get('dtype', 'float32')}, "
             f"{out['env']['device_kind']}, jax {out['env']['jax']}, torch {out['torch']} "
             f"({out['torch_threads']} threads), median of {out['rounds']} interleaved rounds", "",
             "| implementation | params | train steps/s | inference img/s | train ratio (ours/MONAI) | "
             "inference ratio (ours/MONAI) |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in out["results"].items():
        lines.append(f"| {name} | {r['params']:,} | {r['train_steps_per_s']:.3f} | {r['infer_images_per_s']:.2f} | "
                     f"{r['train_ratio_vs_monai']:.2f}x | {r['infer_ratio_vs_monai']:.2f}x |")
    return "\n".join(lines) + "\n"


# The shapes of the comparison (issue #25's harness), per spatial dims: (train batch, inference batch, side).
SUITE_SHAPES = {2: (8, 16, 128), 3: (2, 2, 64)}
SUITE_QUICK = {2: (2, 4, 64), 3: (1, 1, 32)}
ELASTIC = {2: (32, 256), 3: (2, 96)}  # (batch, side)
ELASTIC_QUICK = {2: (4, 64), 3: (1, 32)}


def suite(rounds: int = 3, quick: bool = False, dtypes=("float32", "bfloat16"), elastic_repeats: int = 5) -> dict:
    """Every row: residual U-Net train/inference 2D and 3D per dtype against MONAI, elastic 2D/3D against scipy."""
    from benchmarks import elastic

    rows, runs = [], []
    for dims in (2, 3):
        batch, infer_batch, size = (SUITE_QUICK if quick else SUITE_SHAPES)[dims]
        for dtype in dtypes:
            out = compare(dims, batch, size, rounds=rounds, repeats=1 if quick else 2, number=1 if quick else 2,
                          models=("residual_unet",), dtype=dtype, infer_batch=infer_batch)
            runs.append(out)
            ours = next(v for k, v in out["results"].items() if k != "monai")
            theirs = out["results"]["monai"]
            shape = "x".join([str(size)] * dims)
            rows.append({"work": f"{dims}D train step, {batch}x1x{shape}", "dtype": dtype, "unit": "steps/s",
                         "theirs_name": "PyTorch + MONAI", "theirs": theirs["train_steps_per_s"],
                         "ours": ours["train_steps_per_s"], "ratio": ours["train_ratio_vs_monai"]})
            unit = "img/s" if dims == 2 else "vol/s"
            rows.append({"work": f"{dims}D inference, {infer_batch}x1x{shape}", "dtype": dtype, "unit": unit,
                         "theirs_name": "PyTorch + MONAI", "theirs": theirs["infer_images_per_s"],
                         "ours": ours["infer_images_per_s"], "ratio": ours["infer_ratio_vs_monai"]})
    elastic = []
    for dims in (2, 3):
        batch, size = (ELASTIC_QUICK if quick else ELASTIC)[dims]
        r = elastic.run_case(dims, size, batch, 1 if quick else elastic_repeats, alpha=34.0, sigma=4.0,
                             controls=("bspline",))
        elastic.append(r)
        rows.append({"work": f"elastic deformation {dims}D, {batch}x{'x'.join([str(size)] * dims)} (+ label map)",
                     "dtype": "float32", "unit": "img/s" if dims == 2 else "vol/s", "theirs_name": "scipy loop",
                     "theirs": r["scipy_per_s"], "ours": r["jax_per_s"], "ratio": r["ratio_vs_scipy"],
                     "note": f"{r['warp_backend']} warp" + (
                         f"; XLA gathers {r['jax_bspline_xla_per_s']:.3g} ({r['jax_bspline_xla_per_s'] / r['scipy_per_s']:.1f}x)"
                         if "jax_bspline_xla_per_s" in r else "")})
    import jax
    import torch

    from benchmarks import common
    from kernels import conv

    return {"rows": rows, "runs": runs, "elastic": elastic, "env": common.env_info(), "jax": jax.__version__,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "conv_lowering": conv.resolve_conv_lowering(), "quick": quick, "rounds": rounds}


def format_suite(out: dict) -> str:
    lines = [f"residual U-Net vs PyTorch {out['torch']} + MONAI ({out['torch_threads']} threads), jax {out['jax']} "
             f"(conv lowering {out['conv_lowering']}), {out['env']['device_kind']}; median of {out['rounds']} "
             f"interleaved rounds{' (quick shapes)' if out['quick'] else ''}", "",
             "| work | dtype | theirs | ours | ratio (ours/theirs) | note |", "|---|---|---:|---:|---:|---|"]
    for r in out["rows"]:
        lines.append(f"| {r['work']} | {r['dtype']} | {r['theirs_name']} {r['theirs']:.3g} {r['unit']} | "
                     f"{r['ours']:.3g} {r['unit']} | {r['ratio']:.2f}x | {r.get('note', '')} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.compare_torch", __doc__,
                       out="write the result JSON here (--suite: and a .md table beside it)")
    p.add_argument("--dims", type=int, default=2, choices=(2, 3))
    p.add_argument("--batch", type=int, default=None, help="default 8 (2D) / 2 (3D); quick 4 / 1")
    p.add_argument("--size", type=int, default=None, help="spatial side; default 128 (2D) / 64 (3D); quick 64 / 32")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--number", type=int, default=2)
    p.add_argument("--lowerings", default="auto", help="our conv lowerings to time, e.g. lax,cpu (default auto); "
                   "cpu-xla: the cpu lowering without oneDNN (its 3D convolutions on the XLA rewrites)")
    p.add_argument("--models", default="residual_unet,unet",
                   help="zoo models to time against MONAI (residual_unet: the same network; unet: the plain U-Net)")
    p.add_argument("--devices", default="1",
                   help="JAX device counts to time ours on, e.g. 1,2: on a CPU host this process fakes that many "
                        "XLA CPU devices (one per core is the useful setting) and shards the batch over them")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="bfloat16: ours with dtype=bfloat16, MONAI under torch.autocast (CPU)")
    p.add_argument("--infer_batch", type=int, default=None, help="inference batch (default: --batch)")
    p.add_argument("--suite", action="store_true",
                   help="every row in one run: 2D/3D train and inference in float32 and bfloat16, elastic 2D/3D")
    p.add_argument("--quick", action="store_true")
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


def _run(args) -> int:
    missing = torch_missing()
    if missing:
        print(f"skipped: PyTorch/MONAI not installed ({missing} missing); "
              f"install them with: pip install -e \".[compare]\"", flush=True)
        return 0
    if args.suite:
        if min(args.rounds, args.repeats, args.number) < 1:
            raise ValueError("--rounds/--repeats/--number must be >= 1")
        out = suite(rounds=1 if args.quick else args.rounds, quick=args.quick)
        table = format_suite(out)
        print("\n" + table)
        if args.out:
            _write(args.out, out)
            _write(os.path.splitext(args.out)[0] + ".md", table)
        return 0
    lowerings = [v.strip() for v in args.lowerings.split(",") if v.strip()]
    bad = [v for v in lowerings if v not in ("auto", "lax", "cpu", "cpu-xla")]
    models = [v.strip() for v in args.models.split(",") if v.strip()]
    if bad or not lowerings or min(args.rounds, args.repeats, args.number) < 1 or not models or \
            any(m not in ("residual_unet", "unet") for m in models):
        raise ValueError(f"--lowerings must be from auto,lax,cpu,cpu-xla (got {args.lowerings!r}), --models from "
                         f"residual_unet,unet (got {args.models!r}) and --rounds/--repeats/--number >= 1")
    try:
        devices = sorted({int(v) for v in args.devices.split(",") if v.strip()})
    except ValueError:
        devices = []
    if not devices or devices[0] < 1:
        raise ValueError(f"--devices must be comma-separated positive ints, got {args.devices!r}")
    quick = {2: (4, 64), 3: (1, 32)} if args.quick else {2: (8, 128), 3: (2, 64)}
    batch = args.batch or quick[args.dims][0]
    size = args.size or quick[args.dims][1]
    if batch < 1 or size < 16 or size % 16 or (args.infer_batch is not None and args.infer_batch < 1):
        raise ValueError(f"--batch and --infer_batch must be >= 1 and --size a multiple of 16 (four 2x poolings); "
                         f"got {batch}, {args.infer_batch}, {size}")
    flags = os.environ.get("XLA_FLAGS")
    if devices[-1] > 1:  # fake CPU devices: asked for before jax starts its backend (in compare), this run only
        os.environ["XLA_FLAGS"] = xla_flags_with_cpu_devices(flags or "", devices[-1])
    try:
        out = compare(args.dims, batch, size, rounds=1 if args.quick else args.rounds,
                      repeats=1 if args.quick else args.repeats, number=1 if args.quick else args.number,
                      lowerings=lowerings, models=models, devices=devices, dtype=args.dtype,
                      infer_batch=args.infer_batch)
    finally:
        if flags is None:
            os.environ.pop("XLA_FLAGS", None)
        else:
            os.environ["XLA_FLAGS"] = flags
    print("\n" + format_table(out))
    if args.out:
        _write(args.out, out)
    return 0


def _write(path: str, content) -> None:
    """Write ``content`` (a dict as strict JSON, or text) atomically (``data_pipelines.atomic``)."""
    from data_pipelines import atomic

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if isinstance(content, str):
        atomic.write_text(path, content)
    else:
        atomic.write_json(path, content)
    print(f"wrote {path}")


if __name__ == "__main__":
    sys.exit(main())
