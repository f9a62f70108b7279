"""The prepared accelerator check: run it when a GPU is lent (``python -m benchmarks.gpu_check --out DIR``).

It answers, in one process and one short run:

1. **Which convolution lowering the models trace on this backend.** ``kernels.conv`` has CPU lowerings
   (depth taps, few-channel shifted sums, col2im transposes, the last two with a ``jax.custom_vjp``); on an
   accelerator the ``auto`` setting must trace plain ``lax`` convolutions. The check traces one 3D
   ``residual_unet`` loss and its gradient under ``auto`` and under a forced ``lax`` and compares the gradient
   programs; equal programs and no ``custom_vjp`` in the forward program mean the CPU code is not used.
2. **The bf16 train step and its MFU**: the zoo U-Net in MONAI's configuration, 3D, float32 and bfloat16,
   through ``benchmarks.throughput_cases.run_case`` (the trainer's own step; FLOPs from XLA's cost analysis over the
   device's dense peak in ``benchmarks.common.PEAK_TFLOPS``).
3. **The conv lowering is not slower than plain lax there**: the same bf16 train step timed with ``auto`` and
   with ``lax`` forced (and with the CPU lowering forced, for the record), as a ratio in this one run.
4. **The augmentation's resampling**: whether the compiled elastic + affine pipeline calls the native CPU warp
   kernel (``kernels.native``); on an accelerator it must not (XLA gathers there).

On a CPU host the script still runs (``--quick`` for tiny shapes: the test suite does): it then reports the CPU
lowering in use, which is the expected answer there. Writes ``gpu_check.json`` and ``gpu_check.md`` to
``--out``; exit 1 when an accelerator traced the CPU lowering or a case failed.
"""

from __future__ import annotations

import os
import sys

from zoo.cli import command_parser, run_command

SHAPES = {"full": {"size": 128, "batch": 2, "repeats": 5, "number": 2, "warmup": 2},
          "cpu": {"size": 32, "batch": 2, "repeats": 3, "number": 1, "warmup": 1},
          "quick": {"size": 16, "batch": 1, "repeats": 2, "number": 1, "warmup": 1}}


def _primitives(jaxpr) -> dict:
    """``{primitive name: count}`` over a closed jaxpr and every sub-jaxpr (custom_vjp bodies, scans...)."""
    from jax.extend.core import jaxprs_in_params

    counts: dict = {}

    def walk(j):
        for eqn in j.eqns:
            counts[eqn.primitive.name] = counts.get(eqn.primitive.name, 0) + 1
            for sub in jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jaxpr.jaxpr)
    return counts


def lowering_check(size: int) -> dict:
    """Trace one 3D residual_unet loss + gradient under ``auto`` and under ``lax``; compare the programs."""
    import jax
    import jax.numpy as jnp

    from benchmarks import common
    from kernels import conv
    from zoo.training.state import jit_init

    model = common.build_model("residual_unet", 3, "float32")
    x = jnp.zeros((1, size, size, size, 1), jnp.float32)
    # One compiled init (op-by-op eager init compiled every op apart: 139 s against 16 s on a loaded 2-core host).
    variables = jit_init(lambda key: model.init(key, x, train=False))(jax.random.key(0))

    def loss(params):
        y, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.mean(y ** 2)

    grads, forward = {}, {}
    for name in ("auto", "lax"):
        with conv.conv_lowering(name):
            if name == "auto":
                auto_resolved = conv.resolve_conv_lowering()
            grads[name] = str(jax.make_jaxpr(jax.grad(loss))(variables["params"]))
            # The forward program still names the custom VJPs (the gradient program has them resolved).
            forward[name] = jax.make_jaxpr(loss)(variables["params"])
    prims = _primitives(forward["auto"])
    lax_prims = _primitives(forward["lax"])
    return {"backend": jax.default_backend(), "auto_resolves_to": auto_resolved,
            "same_program_as_lax": grads["auto"] == grads["lax"],
            "custom_vjp_calls": sum(v for k, v in prims.items() if k.startswith("custom_vjp")),
            "conv_general_dilated": prims.get("conv_general_dilated", 0),
            "conv_general_dilated_lax": lax_prims.get("conv_general_dilated", 0)}


def _case(dtype: str, lowering: str | None, shape: dict) -> dict:
    from benchmarks import throughput_cases

    case = {"model": "unet", "dims": 3, "dtype": dtype, "devices": 1, "size": shape["size"], "batch": shape["batch"],
            "repeats": shape["repeats"], "number": shape["number"], "warmup": shape["warmup"]}
    if lowering:
        case["conv_lowering"] = lowering
    r = throughput_cases.run_case(case)
    keep = ("status", "error", "dtype", "size", "batch", "train_steps_per_s", "train_tflops_per_s",
            "train_mfu", "infer_images_per_s", "compile_train_s", "final_loss", "peak_bytes")
    out = {k: r.get(k) for k in keep if k in r}
    out["requested"] = lowering or "auto"
    out["lowering"] = (r.get("env") or {}).get("conv_lowering", lowering or "auto")
    out["device_kind"] = (r.get("env") or {}).get("device_kind")
    return out


def warp_check() -> dict:
    """Compile a small elastic + affine pipeline for the default backend; say whether it calls the CPU kernel."""
    import jax
    import jax.numpy as jnp

    from kernels import augment

    fn = augment.make_batch_pipeline({"rotate": {"max_angle": 10.0}, "elastic": {"alpha": 10.0, "sigma": 3.0}})
    images, labels = jnp.zeros((2, 16, 16, 16, 1), jnp.float32), jnp.zeros((2, 16, 16, 16), jnp.int32)
    text = fn.lower(jax.random.key(0), images, labels).as_text()
    return {"backend": jax.default_backend(), "calls_native_warp": "medzoo_warp" in text}


def run(shape_name: str) -> dict:
    import jax

    from benchmarks import common

    shape = SHAPES[shape_name]
    result = {"env": common.env_info(), "shape": shape_name, **shape}
    result["lowering"] = lowering_check(shape["size"])
    result["warp"] = warp_check()
    cases = [("float32", None), ("bfloat16", None), ("bfloat16", "lax"), ("bfloat16", "cpu")]
    result["cases"] = [_case(dt, low, shape) for dt, low in cases]
    by = {(c["dtype"], c["requested"]): c for c in result["cases"] if c.get("status") == "ok"}
    auto = by.get(("bfloat16", "auto"))
    plain = by.get(("bfloat16", "lax"))
    if auto and plain:
        result["auto_vs_lax_train"] = auto["train_steps_per_s"] / plain["train_steps_per_s"]
    problems = []
    low = result["lowering"]
    if jax.default_backend() != "cpu" and (low["auto_resolves_to"] != "lax" or not low["same_program_as_lax"]
                                           or low["custom_vjp_calls"]):
        problems.append(f"{jax.default_backend()}: auto traced the CPU lowering ({low})")
    if jax.default_backend() != "cpu" and result["warp"]["calls_native_warp"]:
        problems.append(f"{jax.default_backend()}: the augmentation pipeline calls the CPU warp kernel")
    problems += [f"{c['dtype']}/{c['requested']}: {c.get('error')}" for c in result["cases"] if c.get("status") != "ok"]
    result["problems"] = problems
    return result


def markdown(r: dict) -> str:
    env, low = r["env"], r["lowering"]
    lines = [f"# GPU check: {env['device_kind']} ({env['platform']}), jax {env['jax']}, {r['shape']} shapes "
             f"({r['batch']}x1x{r['size']}^3)", "",
             f"- conv lowering under `auto`: **{low['auto_resolves_to']}**; same program as forced `lax`: "
             f"{low['same_program_as_lax']}; custom_vjp calls: {low['custom_vjp_calls']}; conv_general_dilated: "
             f"{low['conv_general_dilated']} (forced lax: {low['conv_general_dilated_lax']})",
             f"- augmentation resampling: {'native CPU kernel' if r['warp']['calls_native_warp'] else 'XLA gathers'}"
             f" on {r['warp']['backend']}", "",
             "| dtype | lowering | train steps/s | TFLOP/s | MFU | infer vol/s | compile s |",
             "|---|---|---:|---:|---:|---:|---:|"]

    def f(v, fmt="{:.3g}"):
        return "-" if v is None else fmt.format(v)

    for c in r["cases"]:
        req = c.get("requested", c["lowering"])
        low = req if req == c["lowering"] else f"{req} ({c['lowering']})"
        if c.get("status") != "ok":
            lines.append(f"| {c['dtype']} | {low} | error: {c.get('error')} | | | | |")
            continue
        lines.append(f"| {c['dtype']} | {low} | {f(c.get('train_steps_per_s'))} | "
                     f"{f(c.get('train_tflops_per_s'))} | {f(c.get('train_mfu'), '{:.1%}')} | "
                     f"{f(c.get('infer_images_per_s'))} | {f(c.get('compile_train_s'), '{:.1f}')} |")
    if "auto_vs_lax_train" in r:
        lines += ["", f"bf16 train step, `auto` / plain `lax`: **{r['auto_vs_lax_train']:.2f}x**"]
    if r["problems"]:
        lines += ["", "Problems:"] + [f"- {p}" for p in r["problems"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.gpu_check", __doc__, out="output folder (default gpu_check)",
                       out_default="gpu_check")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke run; numbers mean nothing)")
    return run_command(p, argv, _run)


def _run(args) -> int:
    import jax

    from data_pipelines.atomic import write_json, write_text

    shape = "quick" if args.quick else ("cpu" if jax.default_backend() == "cpu" else "full")
    r = run(shape)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "gpu_check.json"), r)
    md = markdown(r)
    write_text(os.path.join(args.out, "gpu_check.md"), md)
    print(md)
    return 1 if r["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
