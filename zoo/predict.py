"""Prediction in the input's geometry: ``python -m zoo.predict --model NAME_OR_PATH --input PATH --output PATH
[--tta] [--overlay PNG] [--uncertainty PATH] [--overlap 0.5] [--batch_size 4]``, or several cases in one process
(the model loaded and its programs compiled once, as nnU-Net predicts a folder): ``--input CASE [CASE ...]
--output FOLDER``, each label map named after its case (``zoo.prediction.output_name``: ``<case>.nii.gz``, a
picture's ``<name>.png``); a case that fails stops the run with its error line, the cases before it kept.

``--output seg.dcm`` writes a DICOM Segmentation of a DICOM series input (``zoo.dicom.write_seg``: one segment
per foreground class, coded as the model card says, each frame on its source slice); with ``--fractional`` a
FRACTIONAL SEG of the class probabilities.

``--model``: a model-store name (``zoo.list_pretrained``) or a work directory. ``--input``: one image file
(NIfTI, NRRD, MHD/MHA, a DICOM folder, PNG/JPEG/BMP/TIFF) or a case folder holding one file per modality,
matched by the patterns the model was trained with (``data.patterns``, else its data family's: BraTS names;
label files in the folder are ignored).

The library is :mod:`zoo.prediction`; the case goes through the run's own preprocessing and comes back on the
input's grid:

* a run trained with a plan (``data_pipelines.planner``): ``preprocess_case`` (orientation, crop, spacing,
  normalisation exactly as in training), Gaussian-weighted sliding windows of the plan's patch
  (``zoo.inference.Predictor.sliding_window_proba``; 2D plans slice by slice), then ``restore_case``;
* a run without a plan (images resized to ``data.image_size`` by its loader): the intensity scaling that
  loader applied, as the run recorded it (pictures to [0, 1], CT through its HU window), axial slices of
  volumes in LPS orientation, each resized to the training size and its probabilities resized back (slices
  without a body voxel are not predicted: background, as outside a plan's nonzero crop);
* ``--tta``: the probabilities averaged over every mirroring of the spatial axes;
* a model with a calibration record (``calibration.json``, ``zoo.calibration``): each window's logits divided by
  its temperature before the softmax.

``--uncertainty PATH`` (:mod:`zoo.uncertainty`) also writes the predictive entropy divided by ``log K`` (in
[0, 1]) in the same geometry (float32 NIfTI/NRRD/MHA, or an 8-bit PNG for pictures) and, with ``--tta``, the
mutual information of the mirrored members beside it (``PATH`` with ``_mi`` before the suffix).

The label map is written with the input's exact shape, spacing, origin and direction (a NIfTI input keeps its
affine and header), or as a PNG mask of the input's height and width. Bad input (unknown model, wrong number
of modalities, unreadable file, an output format that cannot hold the geometry) ends with one line and exit
2, with nothing written.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from zoo import dicom
from zoo.cards import read_card
from zoo.cli import command_parser, run_command
from zoo.calibration import model_temperature
from zoo.prediction import (output_format, output_name, predict_case_proba, read_case, write_label, write_map,
                            write_overlay)
from zoo.pretrained import load_pretrained
from zoo.store import resolve
from zoo.uncertainty import mutual_information_path, uncertainty_maps

__all__ = ["main"]


def main(argv=None) -> int:
    p = command_parser("python -m zoo.predict", __doc__)
    p.add_argument("--model", required=True, help="model-store name or work directory")
    p.add_argument("--input", required=True, nargs="+",
                   help="image file, DICOM folder or case folder; several: one process predicts them in turn")
    p.add_argument("--output", required=True,
                   help="label map to write (.nii.gz, .nrrd, .mha, .png; .dcm: DICOM SEG); with several --input "
                        "cases, a folder that exists")
    p.add_argument("--fractional", action="store_true",
                   help="with --output ….dcm: a FRACTIONAL SEG of the class probabilities instead of a BINARY one")
    p.add_argument("--tta", action="store_true", help="average over mirrored copies (test-time augmentation)")
    p.add_argument("--overlay", default=None, help="also write a PNG of the image with the contours")
    p.add_argument("--uncertainty", default=None,
                   help="also write the entropy map (with --tta also the mutual information, PATH_mi)")
    p.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap (default 0.5)")
    p.add_argument("--batch_size", type=int, default=4, help="windows per forward pass (default 4)")
    return run_command(p, argv, _run)


def _outputs(args) -> list[str]:
    """The label map of each ``--input`` case: ``--output`` itself for one case; for several, a file named after
    each case in the ``--output`` folder (:func:`zoo.prediction.output_name`). Checked before any work."""
    if len(args.input) == 1:
        return [args.output]
    for flag in ("overlay", "uncertainty"):
        if getattr(args, flag):
            raise ValueError(f"--{flag} takes one --input case; got {len(args.input)}")
    if args.output.lower().endswith(dicom.SEG_SUFFIX) or args.fractional:
        raise ValueError(f"a DICOM SEG (--output ….dcm, --fractional) takes one --input case; got {len(args.input)}")
    if not os.path.isdir(args.output):
        raise FileNotFoundError(f"--output {args.output}: with {len(args.input)} --input cases, --output is a "
                                f"folder that exists")
    missing = [p for p in args.input if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"--input {missing[0]}: no such file or folder")
    outputs = [os.path.join(args.output, output_name(p)) for p in args.input]
    if len(set(outputs)) < len(outputs):
        same = sorted({o for o in outputs if outputs.count(o) > 1})
        raise ValueError(f"--input: several cases would be written to {same[0]}; give cases with distinct names")
    return outputs


def _run(args) -> int:
    outputs = _outputs(args)
    seg = args.output.lower().endswith(dicom.SEG_SUFFIX)  # a DICOM SEG of a DICOM series (zoo.dicom)
    if args.fractional and not seg:
        raise ValueError(f"--fractional writes a FRACTIONAL DICOM SEG; give --output ….dcm (got {args.output})")
    sources = dicom.series_headers(args.input[0]) if seg else None  # not a DICOM image series: fails before any work
    for flag, path in (("--output", outputs[0]), ("--uncertainty", args.uncertainty)):
        if path is None:
            continue
        if not (seg and flag == "--output"):
            output_format(path) if flag == "--output" else mutual_information_path(path)  # bad names fail first
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{flag} {path}: folder {folder} does not exist")
    pre = load_pretrained(args.model)
    temperature = model_temperature(args.model)
    for path, output in zip(args.input, outputs):  # one process: the model loads and compiles once
        _predict(args, pre, temperature, path, output, sources if seg else None)
    return 0


def _predict(args, pre, temperature, path: str, output: str, sources) -> None:
    """Predict the case ``path`` and write its label map to ``output`` (and the requested extras)."""
    image, meta, files = read_case(path, pre)
    case = predict_case_proba(pre, image, meta, tta=args.tta, overlap=args.overlap, batch_size=args.batch_size,
                              temperature=temperature, members=bool(args.uncertainty and args.tta))
    labels = case.proba.argmax(-1).astype(np.int32)
    num_classes = int(pre.meta["data"]["num_classes"])
    if sources is not None:
        dicom.write_seg(labels, meta, sources, read_card(resolve(args.model), pre), output,
                        fractional=case.proba if args.fractional else None)
    else:
        write_label(labels, meta, files[0], output, num_classes)
    if args.uncertainty:
        maps = uncertainty_maps(case)
        write_map(maps["entropy"], meta, files[0], args.uncertainty)
        if "mutual_information" in maps:
            write_map(maps["mutual_information"], meta, files[0], mutual_information_path(args.uncertainty))
    if args.overlay:
        write_overlay(image, labels, args.overlay)
    counts = np.bincount(labels.reshape(-1), minlength=num_classes)
    names = pre.meta["data"]["class_names"]
    voxel = float(np.prod(meta.spacing))
    print(f"wrote {output} ({'x'.join(map(str, labels.shape))}); " + ", ".join(
        f"{names[k]}: {counts[k]} voxels ({counts[k] * voxel / 1000.0:.2f} mL)" for k in range(1, num_classes)),
        flush=True)


if __name__ == "__main__":
    sys.exit(main())
