"""Outcomes after kidney-tumour surgery from the preoperative CT's segmentation and the EHR (KiTS23, issue 32).

``python -m eval.studies.kidney_outcomes --cohort DEV_DIR --external EXT_DIR --out OUT [--quick] [--folds 5]
[--deep_steps N] [--n_boot N] [--seed S]`` develops every model on one folder in the KiTS layout
(``clinical.json`` + ``case_XXXXX/segmentation.nii.gz``; e.g. ``kits23/development``), cross-validated on the
same patient-level folds, and validates them on another (e.g. ``kits23/validation``; any folder in the layout).
Models, outcomes, metrics and outputs: :mod:`eval.studies.kidney_models`. Progress lines go to stderr; the
command prints the external (else cross-validated) AUC / C of every model. ``--quick``: 2 folds, 20 resamples,
a handful of deep steps (a check of the machinery, not a result). Bad input: ``error: ...``, exit 2.
"""

from __future__ import annotations

import dataclasses
import os
import sys

from eval.studies.kidney_models import Settings, check_external, load_kidney_data, quick_settings, run_kidney_report
from zoo.cli import command_parser, run_command


def build_parser():
    p = command_parser("python -m eval.studies.kidney_outcomes", __doc__, out="output folder", out_required=True)
    p.add_argument("--cohort", required=True, help="development folder in the KiTS layout")
    p.add_argument("--external", default="", help="external validation folder in the KiTS layout (optional)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--n_boot", type=int, default=200)
    p.add_argument("--deep_steps", type=int, default=300)
    p.add_argument("--crop_pool", type=int, default=2, help="average-pool the 48^3 kidney crop by this factor")
    p.add_argument("--horizon", type=float, default=730.0, help="survival horizon in days (Brier, calibration)")
    p.add_argument("--outcomes", default="", help="comma-separated outcomes (default: all of zoo.outcome.kits)")
    p.add_argument("--no_deep", action="store_true", help="leave the deep model out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="2 folds, few resamples / trees / deep steps")
    p.add_argument("--no_progress", action="store_true")
    return p


def _settings(args) -> Settings:
    for name in ("n_boot", "deep_steps", "crop_pool"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {args.folds}")
    if not args.horizon > 0:
        raise ValueError(f"--horizon must be > 0, got {args.horizon}")
    s = Settings(seed=args.seed, folds=args.folds, n_boot=args.n_boot, deep_steps=args.deep_steps,
                 crop_pool=args.crop_pool, horizon=args.horizon, deep=not args.no_deep,
                 outcomes=tuple(x.strip() for x in args.outcomes.split(",") if x.strip()),
                 progress=not args.no_progress)
    return quick_settings(s) if args.quick else dataclasses.replace(s)


def main(argv=None) -> int:
    def body(args) -> int:
        settings = _settings(args)
        if os.path.exists(args.out) and not os.path.isdir(args.out):
            raise ValueError(f"--out {args.out}: exists and is not a folder")
        dev = load_kidney_data(args.cohort, settings)
        ext = load_kidney_data(args.external, settings) if args.external else None
        if ext is not None:
            check_external(dev, ext)
        res = run_kidney_report(dev, ext, settings, args.out)
        split = "external" if ext is not None else "cv"
        for r in res["rows"]:
            if r["metric"] in ("auc", "harrell_c", "delta_auc", "delta_harrell_c") and (
                    r["split"] == split or r["outcome"] in ("clavien_ge2", "clavien_ge3a")):
                print(f"{r['outcome']:22s} {r['model']:15s} {r['split']:8s} {r['metric']:15s} "
                      f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None else
                      f"{r['outcome']:22s} {r['model']:15s} {r['split']:8s} {r['metric']:15s} {r['value']}")
        print(f"report: {os.path.join(args.out, 'report.md')}")
        return 0

    return run_command(build_parser(), sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
    sys.exit(main())
