"""Seg-Grad-CAM overlays of a checkpoint on its validation cases.

``python -m eval.interpret --workdir DIR [--layer NAME] [--target_class K] [--cases N] [--out DIR]
[--list_layers]``.

A thin entry point over the explainers in ``zoo.explain`` (Grad-CAM, SHAP), which live in ``zoo`` beside the
models they read; nothing imports this module.
"""

from __future__ import annotations

import os
import sys

from zoo.cli import command_parser, run_command

__all__ = ["main"]


def _overlays(args) -> int:
    from eval.cases import load_split
    from zoo import load_pretrained
    from zoo.explain import gradcam, gradcam_overlay, layer_names

    pre = load_pretrained(args.workdir)
    if pre.task != "segmentation":
        raise ValueError(f"{args.workdir}: Grad-CAM overlays need a segmentation run, not {pre.task!r}")
    val, info = load_split(pre.config, "val")
    images = val["image"][:max(args.cases, 1)]
    names = layer_names(pre.model, pre.variables, images[:1])
    if args.list_layers:
        print("\n".join(names))
        return 0
    layer = args.layer or next((n for n in reversed(names) if n.startswith("enc") and "/" not in n), names[-1])
    cam = gradcam(pre.model, pre.variables, images, layer=layer, target_class=args.target_class)
    out = args.out or os.path.join(args.workdir, "gradcam")
    os.makedirs(out, exist_ok=True)
    cls = info.class_names[args.target_class]
    for i in range(len(images)):
        path = gradcam_overlay(images[i], cam[i], os.path.join(out, f"gradcam_{i}.png"),
                               title=f"Grad-CAM {layer} → {cls}, case {i}",
                               mask=val["label"][i] == args.target_class)
        print(path)
    return 0


def main(argv=None) -> int:
    p = command_parser("python -m eval.interpret", __doc__, out="output folder (default: <workdir>/gradcam)",
                       out_default="")
    p.add_argument("--workdir", required=True)
    p.add_argument("--layer", default="", help="module path (default: the deepest encoder block); "
                   "--list_layers shows them")
    p.add_argument("--target_class", type=int, default=1)
    p.add_argument("--cases", type=int, default=4)
    p.add_argument("--list_layers", action="store_true")
    return run_command(p, sys.argv[1:] if argv is None else argv, _overlays)


if __name__ == "__main__":
    raise SystemExit(main())
