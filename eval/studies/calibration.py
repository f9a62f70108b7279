"""Calibration (ECE before/after a fitted temperature) and conformal risk control of missed lesion pixels on
held-out folds: ``python -m eval.studies.calibration --data_dir ../shared/data --family isic|cxr --out OUT
[--folds 4] [--alpha 0.1] [--steps 150] [--image_size 64] [--quick]``.

The study is :mod:`eval.studies.calibration_study` (its docstring says what each fold does and what is written).
``--family`` may name both (``isic,cxr``). ``--quick``: 32x32, a 4-feature U-Net, 6 steps (the machinery only).
Bad input (an unknown family, a missing data folder, too few cases for ``--alpha``) is one ``error:`` line, exit 2.
"""

from __future__ import annotations

import os
import sys

from eval.studies.calibration_study import FAMILIES, run_study, write_outputs
from zoo.cli import command_parser, run_command

__all__ = ["main"]


def _parser():
    p = command_parser("python -m eval.studies.calibration", __doc__, out="folder for the results and fold runs",
                       out_required=True)
    p.add_argument("--data_dir", required=True, help="the real-data root (holding isic_like/, cxr/)")
    p.add_argument("--family", required=True, help=f"one of {', '.join(FAMILIES)} (or both, comma-separated)")
    p.add_argument("--folds", type=int, default=4, help="patient-level folds (default 4)")
    p.add_argument("--alpha", type=float, default=0.1, help="tolerated expected missed-lesion fraction (0.1)")
    p.add_argument("--steps", type=int, default=150, help="training steps per fold (default 150)")
    p.add_argument("--image_size", type=int, default=64, help="training resolution (default 64)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few steps: checks the machinery")
    return p


def _run(args) -> int:
    families = [f.strip() for f in args.family.split(",") if f.strip()]
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise ValueError(f"--family {args.family!r}: choose from {', '.join(FAMILIES)}")
    os.makedirs(args.out, exist_ok=True)
    for family in families:
        result = run_study(args.data_dir, family, args.out, folds=args.folds, alpha=args.alpha, steps=args.steps,
                           image_size=args.image_size, quick=args.quick)
        paths = write_outputs(result, args.out)
        s = result["summary"]
        print(f"{family}: ECE {s['ece_before']['mean']:.4f} -> {s['ece_after']['mean']:.4f} (T "
              f"{s['temperature']['mean']:.2f}); miss rate at the conformal threshold {s['miss_rate']['mean']:.3f} "
              f"(alpha {args.alpha}); wrote {', '.join(paths)}")
    return 0


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
