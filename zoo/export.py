"""Export a trained model's inference function: ``python -m zoo.export [NAME_OR_PATH | --model NAME_OR_PATH]
--out DIR [--format stablehlo|onnx | --with-preprocessing]``.

``stablehlo`` (default): ``jax.export`` of ``task.predict_proba`` with the weights as constants and a
symbolic batch dimension, serialized to ``DIR/model.stablehlo``; beside it ``exported.json`` (input shapes,
``null`` = any batch; task; data contract; config), ``card.json``, ``plan.json`` (when the run has a plan) and
``load_exported.py`` (a copy of ``zoo.export_runtime``: jax + numpy only, no model code).

``--with-preprocessing`` (segmentation models): a folder that takes the image as read from disk and returns the
label map on the input's grid, as ``zoo.prediction.predict_case`` does for that model, with jax and numpy alone:
``model.stablehlo`` (the network on windows of the plan's patch, or of the training size for a run without a
plan; symbolic batch), ``preprocessing.json`` (every parameter: orientation, spacing, slice axis, crop rule,
normalisation per channel with its statistics, or the intensity scaling and training size; patch, overlap,
sigma, batch of windows; the mirrorings; class names; interpolation orders; the calibration temperature, which
the program applies to each window when the model has one), ``card.json`` and
``medzoo_runtime.py`` (a copy of ``zoo.export_runtime``: ``load(DIR).predict(image, spacing, direction)`` and
``python medzoo_runtime.py DIR image.npy --spacing ... --out labels.npy``). A plan with N4 bias-field correction or
denoising (SimpleITK filters the runtime does not carry) and models of other tasks are refused.

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
from zoo import export_runtime, store
from zoo.cli import command_parser, run_command
from data_pipelines.atomic import write_bytes, write_json

__all__ = ["export_stablehlo", "export_onnx", "export_with_preprocessing", "preprocessing_spec", "onnx_model",
           "inference_function", "main", "ONNX_MANIFEST", "RUNTIME", "WINDOWS"]

ONNX_MANIFEST = "onnx.json"
RUNTIME = "medzoo_runtime.py"
#: The sliding windows of ``zoo.prediction.predict_case`` (its defaults) and ``kernels.sliding_window``'s Gaussian.
WINDOWS = {"overlap": 0.5, "batch_size": 4, "sigma_scale": 0.125, "blending": "gaussian", "padding": "zeros, symmetric"}


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

    from zoo.pretrained import load_pretrained

    pre = load_pretrained(name_or_path)
    if pre.task not in ("segmentation", "outcome"):
        raise ValueError(f"--model {name_or_path}: exporting {pre.task!r} models is not supported "
                         f"(segmentation and outcome models are)")
    shapes = _input_shapes(pre)
    program = _serialized_program(pre, shapes)
    os.makedirs(out, exist_ok=True)
    write_bytes(os.path.join(out, export_runtime.ARTIFACT), program)
    manifest = {"format": "stablehlo", "task": pre.task, "step": pre.step,
                "inputs": {k: [None, *v[1:]] for k, v in shapes.items()},
                "data": pre.meta["data"], "config": pre.meta["config"], "jax_version": jax.__version__,
                "source": os.path.abspath(store.resolve(name_or_path))}
    write_json(os.path.join(out, export_runtime.MANIFEST), manifest)
    write_json(os.path.join(out, "card.json"), _card(name_or_path, pre))
    plan = (pre.meta["data"].get("extra") or {}).get("plan")
    if plan:
        write_json(os.path.join(out, "plan.json"), plan)
    _copy_runtime(os.path.join(out, "load_exported.py"))
    return manifest


def _serialized_program(pre, shapes: dict, temperature: float | None = None) -> bytes:
    """``jax.export`` of the inference function for inputs ``shapes`` (their batch made symbolic), serialized;
    with ``temperature``, its probabilities tempered (``zoo.inference.tempered``) inside the program."""
    import jax
    from jax import export

    from zoo.inference import tempered

    fn = inference_function(pre)
    if temperature is not None:
        proba = fn

        def fn(inputs):
            return tempered(proba(inputs), temperature)

    (batch,) = export.symbolic_shape("N")
    # Exported programs must run without this machine's native kernels: keep the convolutions in XLA.
    with conv.use_onednn(False):
        exp = export.export(jax.jit(fn))(_spec(shapes, batch))
    return exp.serialize()


def _copy_runtime(path: str) -> None:
    with open(export_runtime.__file__, "rb") as f:
        write_bytes(path, f.read())


def preprocessing_spec(pre, name_or_path: str = "") -> dict:
    """The ``preprocessing.json`` of a segmentation model: what ``zoo.prediction.predict_case`` does for it, as
    data (see the module docstring). Raises ``ValueError`` for a model whose preprocessing the runtime cannot
    carry (another task; a plan with N4 or denoising)."""
    from zoo.prediction import scaling_record

    label = name_or_path or "model"
    if pre.task != "segmentation":
        raise ValueError(f"--with-preprocessing: {label} is a {pre.task!r} model; only segmentation models carry "
                         f"their preprocessing (label maps from sliding windows)")
    data = pre.meta["data"]
    nd = int(data["spatial_dims"])
    plan = (data.get("extra") or {}).get("plan")
    spec = {"format": export_runtime.FORMAT, "version": export_runtime.FORMAT_VERSION, "task": pre.task,
            "channels": list(data["channel_names"]), "class_names": list(data.get("class_names") or
                                                                      [f"class{k}" for k in range(data["num_classes"])]),
            "windows": dict(WINDOWS), "mirroring": {"default": False, "axes": [list(a) for a in
                                                                               export_runtime.mirrorings(nd)[1:]]},
            "orientation": "volumes to LPS by axis permutations and flips (the direction's columns)"}
    if plan:
        from data_pipelines.planner import Plan

        p = Plan.from_dict(plan)
        carried = {k: v for k, v in p.preprocessing.items() if k in ("n4", "denoise") and v}
        if carried:
            raise ValueError(f"--with-preprocessing: {label}'s plan runs {carried} (SimpleITK filters); the "
                             f"jax + numpy runtime cannot reproduce them")
        window = list(p.patch_size)
        spec["mode"] = "plan"
        spec["plan"] = {"spatial_dims": p.spatial_dims, "spacing": None if p.spacing is None else list(p.spacing),
                        "slice_axis": p.slice_axis, "crop": p.preprocessing.get("crop"),
                        "channels": [dict(c) for c in p.channels], "patch_size": window}
        spec["interpolation"] = {"image": "linear (order 1), edge values held", "probabilities":
                                 "linear (order 1) back to the cropped grid; class 0 outside the crop"}
    else:
        window = [int(s) for s in pre.config.data.image_size]
        spec["mode"] = "resize"
        spec["resize"] = {"image_size": window, "intensity_scaling": scaling_record(pre)}
        spec["interpolation"] = {"image": "linear (order 1), antialiased (jax.image.resize)",
                                 "probabilities": "linear (order 1), antialiased (jax.image.resize)"}
    if len(window) != nd:
        raise ValueError(f"--with-preprocessing: {label} windows {window} do not have {nd} axes")
    spec["network"] = {"file": export_runtime.ARTIFACT, "spatial_dims": nd, "window": window,
                       "input": [None, *window, len(spec["channels"])], "output": "probabilities [N, *window, K]",
                       "num_classes": int(data["num_classes"])}
    return spec


def export_with_preprocessing(name_or_path: str, out: str) -> dict:
    """Write the export that carries its preprocessing (module docstring) to ``out``; returns its spec."""
    from zoo.pretrained import load_pretrained

    from zoo.calibration import model_temperature

    pre = load_pretrained(name_or_path)
    spec = preprocessing_spec(pre, name_or_path)
    temperature = model_temperature(name_or_path)  # zoo.predict applies a calibrated model's temperature
    spec["network"]["temperature"] = temperature
    program = _serialized_program(pre, {"image": tuple([1, *spec["network"]["input"][1:]])}, temperature)
    spec["source"] = os.path.abspath(store.resolve(name_or_path))
    os.makedirs(out, exist_ok=True)
    write_bytes(os.path.join(out, export_runtime.ARTIFACT), program)
    write_json(os.path.join(out, export_runtime.PREPROCESSING), spec)
    write_json(os.path.join(out, "card.json"), _card(name_or_path, pre))
    _copy_runtime(os.path.join(out, RUNTIME))
    return spec


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
    p.add_argument("name", nargs="?", default=None, help="model-store name or work directory")
    p.add_argument("--model", default=None, help="model-store name or work directory (or give it as NAME)")
    p.add_argument("--format", default="stablehlo", choices=("stablehlo", "onnx"))
    p.add_argument("--with-preprocessing", action="store_true",
                   help="a folder that takes the image as read from disk and returns the label map on its grid "
                        "(jax + numpy only)")

    def run(args) -> int:
        if (args.name is None) == (args.model is None):
            raise ValueError("name the model once: python -m zoo.export NAME --out DIR (or --model NAME)")
        model = args.name or args.model
        if args.with_preprocessing:
            if args.format != "stablehlo":
                raise ValueError("--with-preprocessing writes StableHLO; it does not combine with --format onnx")
            spec = export_with_preprocessing(model, args.out)
            print(f"wrote {args.out} ({spec['mode']} preprocessing, windows {spec['network']['window']}; "
                  f"run: python {os.path.join(args.out, RUNTIME)} {args.out} image.npy --spacing ... --out labels.npy)")
        elif args.format == "onnx":
            print(f"wrote {export_onnx(model, args.out)}")
        else:
            m = export_stablehlo(model, args.out)
            print(f"wrote {os.path.join(args.out, export_runtime.ARTIFACT)} (inputs {m['inputs']})")
        return 0

    return run_command(p, sys.argv[1:] if argv is None else argv, run)


if __name__ == "__main__":
    sys.exit(main())
