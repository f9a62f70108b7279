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

The library behind this command line is ``zoo.export_writer``; the runtime copied into every folder is
``zoo.export_runtime``.
"""

from __future__ import annotations

import os
import sys

from zoo.cli import command_parser, run_command
from zoo.export_runtime import ARTIFACT
from zoo.export_writer import RUNTIME, export_onnx, export_stablehlo, export_with_preprocessing

__all__ = ["main"]


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
            print(f"wrote {os.path.join(args.out, ARTIFACT)} (inputs {m['inputs']})")
        return 0

    return run_command(p, sys.argv[1:] if argv is None else argv, run)


if __name__ == "__main__":
    sys.exit(main())
