"""Writing export folders (the library behind ``python -m zoo.export``): a bare network (:func:`export_stablehlo`,
:func:`export_onnx`) or a network that carries its preprocessing (:func:`export_with_preprocessing`,
:func:`preprocessing_spec`). The folders' layouts and the runtime that reads them: ``zoo.export_runtime``; the
command line and its options: ``zoo.export``.
"""

from __future__ import annotations

import functools
import os

from kernels import conv
from zoo import export_runtime, store
from data_pipelines.atomic import write_bytes, write_json

__all__ = ["export_stablehlo", "export_onnx", "export_with_preprocessing", "preprocessing_spec", "plan_record",
           "onnx_model", "inference_function", "ONNX_MANIFEST", "RUNTIME", "WINDOWS"]

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


def plan_record(plan) -> dict:
    """A ``data_pipelines.planner.Plan`` as ``preprocessing.json`` keeps it (what ``export_runtime.plan_forward``
    reads): spatial dims, spacing, slice axis, crop rule, channels' normalisation, patch."""
    return {"spatial_dims": plan.spatial_dims, "spacing": None if plan.spacing is None else list(plan.spacing),
            "slice_axis": plan.slice_axis, "crop": plan.preprocessing.get("crop"),
            "channels": [dict(c) for c in plan.channels], "patch_size": list(plan.patch_size)}


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
        spec["plan"] = plan_record(p)
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
