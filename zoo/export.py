"""Export a trained model's inference function: ``python -m zoo.export --model NAME_OR_PATH --out DIR
[--format stablehlo|onnx]``.

``stablehlo`` (default): ``jax.export`` of ``task.predict_proba`` with the weights as constants and a
symbolic batch dimension, serialized to ``DIR/model.stablehlo``; beside it ``exported.json`` (input shapes,
``null`` = any batch; task; data contract; config), ``card.json``, ``plan.json`` (when the run has a plan) and
``load_exported.py`` (a copy of ``zoo.exported``: jax + numpy only, no model code).

``onnx``: the same function through ``jax2onnx`` (optional: ``pip install jax2onnx onnxruntime``) to
``DIR/model.onnx`` (batch dimension named ``N``), run by ONNX Runtime; the StableHLO files are written too.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import sys

import numpy as np

from zoo import exported as zexported
from zoo import store
from zoo.cli import run_cli
from zoo.provenance import write_json

__all__ = ["export_stablehlo", "export_onnx", "inference_function", "main"]


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
    path = store.resolve(name_or_path)
    card_path = os.path.join(path, "card.json")
    if os.path.isfile(card_path):
        import json

        with open(card_path, encoding="utf-8") as f:
            return json.load(f)
    cfg = pre.meta["config"]
    return {"model": cfg["model"]["name"], "task": pre.task, "data": {"name": cfg["data"]["name"]},
            "source": os.path.abspath(path), "step": pre.step}


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
    exp = export.export(jax.jit(inference_function(pre)))(_spec(shapes, batch))
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, ".tmp-" + zexported.ARTIFACT)
    with open(tmp, "wb") as f:
        f.write(exp.serialize())
    os.replace(tmp, os.path.join(out, zexported.ARTIFACT))
    manifest = {"format": "stablehlo", "task": pre.task, "step": pre.step,
                "inputs": {k: [None, *v[1:]] for k, v in shapes.items()},
                "data": pre.meta["data"], "config": pre.meta["config"], "jax_version": jax.__version__,
                "source": os.path.abspath(store.resolve(name_or_path))}
    write_json(os.path.join(out, zexported.MANIFEST), manifest)
    write_json(os.path.join(out, "card.json"), _card(name_or_path, pre))
    plan = (pre.meta["data"].get("extra") or {}).get("plan")
    if plan:
        write_json(os.path.join(out, "plan.json"), plan)
    shutil.copyfile(zexported.__file__, os.path.join(out, "load_exported.py"))
    return manifest


def export_onnx(name_or_path: str, out: str) -> str:
    """Write ``out/model.onnx`` with jax2onnx (and the StableHLO files); returns its path."""
    try:
        from jax2onnx import to_onnx
    except ImportError as e:
        raise ValueError(f"--format onnx needs the optional jax2onnx package ({e}); "
                         f"pip install jax2onnx onnxruntime") from None
    from zoo.pretrained import load_pretrained

    export_stablehlo(name_or_path, out)
    pre = load_pretrained(name_or_path)
    shapes = _input_shapes(pre)
    if len(shapes) != 1:
        raise ValueError("--format onnx: only image-only (segmentation) models are converted")
    fn = inference_function(pre)
    path = os.path.join(out, "model.onnx")
    try:
        model = to_onnx(fn, [("N", *shapes["image"][1:])], model_name="medzoo")
    except Exception as e:  # jax2onnx raises for primitives it has no rule for
        raise ValueError(f"--format onnx: jax2onnx cannot convert this model ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    import onnx

    onnx.save_model(model, path)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.export", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="model-store name or work directory")
    p.add_argument("--out", required=True, help="folder to write the export to")
    p.add_argument("--format", default="stablehlo", choices=("stablehlo", "onnx"))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        if args.format == "onnx":
            print(f"wrote {export_onnx(args.model, args.out)}")
        else:
            m = export_stablehlo(args.model, args.out)
            print(f"wrote {os.path.join(args.out, zexported.ARTIFACT)} (inputs {m['inputs']})")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
