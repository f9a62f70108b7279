"""Export a trained model's inference function: ``python -m zoo.export --model NAME_OR_PATH --out DIR
[--format stablehlo|onnx]``.

``stablehlo`` (default): ``jax.export`` of ``task.predict_proba`` with the weights as constants and a
symbolic batch dimension, serialized to ``DIR/model.stablehlo``; beside it ``exported.json`` (input shapes,
``null`` = any batch; task; data contract; config), ``card.json``, ``plan.json`` (when the run has a plan) and
``load_exported.py`` (a copy of ``zoo.exported``: jax + numpy only, no model code).

``onnx``: the same function through ``jax2onnx`` to ``DIR/model.onnx`` (batch dimension named ``N``; a model
whose operations need a static batch, e.g. SegNet's max-pool-with-argmax, is converted for batch 1 and says so
in ``onnx.json``), run by ONNX Runtime; the StableHLO files are written too. Every jax2onnx release that
converts the transposed convolutions of the U-Nets (0.13.1 to 0.17.1 at the time of writing) pins
``orbax-checkpoint<0.11.37``, which pip would satisfy by downgrading this project's Orbax; jax2onnx itself does
not import Orbax, so install it without its dependency list::

    pip install -e ".[onnx]"                      # onnx, onnx-ir, onnxruntime
    pip install --no-deps "jax2onnx==0.17.1"
"""

from __future__ import annotations

import functools
import os
import sys

import numpy as np

from kernels import conv
from zoo import exported as zexported
from zoo import store
from zoo.cli import command_parser, run_command
from data_pipelines.atomic import write_bytes, write_json

__all__ = ["export_stablehlo", "export_onnx", "onnx_model", "inference_function", "main", "ONNX_MANIFEST"]

ONNX_MANIFEST = "onnx.json"


def _input_shapes(pre) -> dict:
    meta = pre.meta
    if "inputs" in meta:
        shapes = {k: tuple(int(s) for s in v) for k, v in meta["inputs"].items()}
    else:
        data = meta["data"]
        shapes = {"image": (1, *meta["config"]["data"]["image_size"], len(data["channel_names"]))}
        if data.get("covariate_names"):
            shapes["covariates"] = (1, len(data["covariate_names"]))
    if pre.task not in ("outcome", "survival"):
        shapes = {"image": shapes["image"]}
    return shapes


def inference_function(pre):
    """``f(inputs) -> probabilities`` with the weights closed over (what is exported)."""
    from zoo.tasks import get_task

    task = get_task(pre.task)
    return functools.partial(task.predict_proba, pre.model, pre.variables)


def _spec(shapes: dict, batch):
    import jax
    import jax.numpy as jnp

    specs = {k: jax.ShapeDtypeStruct((batch, *v[1:]), jnp.float32) for k, v in shapes.items()}
    return specs if len(specs) > 1 or "image" not in specs else specs["image"]


def _card(name_or_path: str, pre) -> dict:
    from zoo.cards import read_card  # the one card reader (the application reads cards with it too)

    return read_card(store.resolve(name_or_path), pre)


def export_stablehlo(name_or_path: str, out: str) -> dict:
    """Write the StableHLO export of ``name_or_path`` to ``out``; returns the manifest."""
    import jax
    from jax import export

    from zoo.pretrained import load_pretrained

    pre = load_pretrained(name_or_path)
    if pre.task not in ("segmentation", "outcome"):
        raise ValueError(f"--model {name_or_path}: exporting {pre.task!r} models is not supported "
                         f"(segmentation and outcome models are)")
    shapes = _input_shapes(pre)
    (batch,) = export.symbolic_shape("N")
    # Exported programs must run without this machine's native kernels: keep the convolutions in XLA.
    with conv.use_onednn(False):
        exp = export.export(jax.jit(inference_function(pre)))(_spec(shapes, batch))
    os.makedirs(out, exist_ok=True)
    write_bytes(os.path.join(out, zexported.ARTIFACT), exp.serialize())
    manifest = {"format": "stablehlo", "task": pre.task, "step": pre.step,
                "inputs": {k: [None, *v[1:]] for k, v in shapes.items()},
                "data": pre.meta["data"], "config": pre.meta["config"], "jax_version": jax.__version__,
                "source": os.path.abspath(store.resolve(name_or_path))}
    write_json(os.path.join(out, zexported.MANIFEST), manifest)
    write_json(os.path.join(out, "card.json"), _card(name_or_path, pre))
    plan = (pre.meta["data"].get("extra") or {}).get("plan")
    if plan:
        write_json(os.path.join(out, "plan.json"), plan)
    with open(zexported.__file__, "rb") as f:
        write_bytes(os.path.join(out, "load_exported.py"), f.read())
    return manifest


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def onnx_model(fn, input_shape: tuple, name: str = "medzoo"):
    """``(onnx.ModelProto, batch)``: ``fn`` on one float32 input of ``input_shape`` (``[1, *S, C]``) through
    jax2onnx, with a symbolic batch ``N`` when the model's operations allow one, else for batch 1. Raises
    ``ValueError`` naming what jax2onnx could not convert, or that it is not installed."""
    try:
        from jax2onnx import to_onnx
    except ImportError as e:
        raise ValueError(f"--format onnx needs the optional jax2onnx package ({e}); pip install -e \".[onnx]\" "
                         f"&& pip install --no-deps jax2onnx==0.17.1") from None
    errors = []
    for batch in ("N", 1):
        try:
            with conv.use_onednn(False):  # ONNX has no oneDNN custom calls: keep the convolutions in XLA
                model = to_onnx(fn, [(batch, *input_shape[1:])], model_name=name)
        except Exception as e:  # jax2onnx raises its own types for primitives or shapes it cannot convert
            errors.append(f"batch {batch}: {_first_line(e)}")
            continue
        return model, batch
    raise ValueError("jax2onnx cannot convert this model (" + "; ".join(errors) + ")")


def export_onnx(name_or_path: str, out: str) -> str:
    """Write ``out/model.onnx`` with jax2onnx (and the StableHLO files, and ``onnx.json``); returns its path."""
    from zoo.pretrained import load_pretrained

    pre = load_pretrained(name_or_path)
    shapes = _input_shapes(pre)
    if pre.task != "segmentation" or len(shapes) != 1:
        raise ValueError(f"--format onnx: only image-only segmentation models are converted ({name_or_path} is a "
                         f"{pre.task} model)")
    model, batch = onnx_model(inference_function(pre), shapes["image"])
    try:  # what a hospital deploys it with must accept it (jax2onnx can write a graph whose shapes disagree)
        import onnxruntime
    except ImportError:
        onnxruntime = None
    if onnxruntime is not None:
        try:
            onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ValueError(f"--format onnx: ONNX Runtime refuses the graph jax2onnx wrote ({_first_line(e)})") from None
    export_stablehlo(name_or_path, out)
    path = os.path.join(out, "model.onnx")
    write_bytes(path, model.SerializeToString())
    from importlib import metadata

    write_json(os.path.join(out, ONNX_MANIFEST), {
        "input": [batch if batch == 1 else None, *shapes["image"][1:]], "output": "probabilities [N, *S, K]",
        "batch": "any" if batch == "N" else "1 (the model's operations need a static batch)",
        "jax2onnx_version": metadata.version("jax2onnx")})
    return path


def main(argv=None) -> int:
    p = command_parser("python -m zoo.export", __doc__, out="folder to write the export to", out_required=True)
    p.add_argument("--model", required=True, help="model-store name or work directory")
    p.add_argument("--format", default="stablehlo", choices=("stablehlo", "onnx"))

    def run(args) -> int:
        if args.format == "onnx":
            print(f"wrote {export_onnx(args.model, args.out)}")
        else:
            m = export_stablehlo(args.model, args.out)
            print(f"wrote {os.path.join(args.out, zexported.ARTIFACT)} (inputs {m['inputs']})")
        return 0

    return run_command(p, sys.argv[1:] if argv is None else argv, run)


if __name__ == "__main__":
    sys.exit(main())
