"""Outcomes after kidney-tumour surgery from the preoperative CT's segmentation and the EHR (KiTS23, issue 32).

``python -m eval.studies.kidney_outcomes --cohort DEV_DIR --external EXT_DIR --out OUT [--quick] [--folds 5]
[--deep_steps N] [--n_boot N] [--seed S] [--explain OUTCOME|none]`` develops every model on one folder in the KiTS
layout (``clinical.json`` + ``case_XXXXX/segmentation.nii.gz``; e.g. ``kits23/development``), cross-validated on the
same patient-level folds, and validates them on another (e.g. ``kits23/validation``; any folder in the layout).
Models, outcomes, metrics and outputs: :mod:`eval.studies.kidney_models`. Progress lines go to stderr; the
command prints the external (else cross-validated) AUC / C of every model. ``--quick``: 2 folds, 20 resamples,
a handful of deep steps (a check of the machinery, not a result). ``--explain``: Grad-CAM and covariate SHAP of the
deep model for one binary outcome (``gradcam_*.png``, ``shap_*.png``, ``mean_abs_shap`` rows with a ``feature``).
Bad input: ``error: ...``, exit 2.
"""

from __future__ import annotations

import os
import sys

from eval.studies.kidney_models import Settings, check_external, load_kidney_data, quick_settings, run_kidney_report
from zoo.cli import command_parser, run_command
from zoo.outcome import kits


#: ``(flag, default, minimum, help)`` of the numeric flags; each is checked against its minimum.
NUMBERS = (("folds", 5, 2, "patient-level cross-validation folds on the development folder"),
           ("n_boot", 200, 1, "bootstrap resamples of the test patients"),
           ("deep_steps", 300, 1, "training steps of the deep model"),
           ("crop_pool", 2, 1, "average-pool the 48^3 kidney crop by this factor before the deep model"),
           ("horizon", 730.0, 1e-9, "survival horizon in days (Brier score, calibration, decision curve)"),
           ("seed", 0, 0, "base seed (folds, models)"))


def build_parser():
    p = command_parser("python -m eval.studies.kidney_outcomes", __doc__, out="output folder", out_required=True)
    p.add_argument("--cohort", required=True, help="development folder in the KiTS layout")
    p.add_argument("--external", default="", help="external validation folder in the KiTS layout (optional)")
    for name, default, _, text in NUMBERS:
        p.add_argument(f"--{name}", type=type(default), default=default, help=text)
    p.add_argument("--outcomes", default="", help="comma-separated outcomes (default: all of zoo.outcome.kits)")
    p.add_argument("--learning_curve", default="", help="comma-separated outcomes whose learning curve (the best "
                   "traditional model, gbm_image and the deep model on fractions of each fold's training patients) "
                   "is measured")
    p.add_argument("--curve_fractions", default="0.25,0.5,0.75", help="fractions of the training patients")
    p.add_argument("--no_deep", action="store_true", help="leave the deep model out")
    p.add_argument("--explain", default="", help="binary outcome whose deep model (the external-validation fit) "
                   "gets Grad-CAM pictures of a few external crops and the covariates' mean |SHAP| over the external "
                   "patients (default: stay_gt3 when run; none: no explanations)")
    p.add_argument("--quick", action="store_true", help="2 folds, few resamples / trees / deep steps")
    p.add_argument("--no_progress", action="store_true", help="no per-case progress bars")
    return p


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _settings(args) -> Settings:
    for name, _, low, _ in NUMBERS:
        if getattr(args, name) < low:
            raise ValueError(f"--{name} must be >= {low:g}, got {getattr(args, name)}")
    try:
        fractions = tuple(float(x) for x in args.curve_fractions.split(",") if x.strip())
    except ValueError as e:
        raise ValueError(f"--curve_fractions must be numbers, got {args.curve_fractions!r}") from e
    if not fractions or any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"--curve_fractions must each lie in (0, 1), got {args.curve_fractions!r}")
    explain = args.explain.strip()
    binary = [n for n, spec in kits.OUTCOMES.items() if spec["kind"] == "binary"]
    if explain not in ("", "none", *binary):
        raise ValueError(f"--explain must be a binary outcome ({', '.join(binary)}) or none, got {explain!r}")
    s = Settings(learning_curve=_names(args.learning_curve), curve_fractions=fractions, seed=args.seed,
                 folds=args.folds, n_boot=args.n_boot, deep_steps=args.deep_steps,
                 crop_pool=args.crop_pool, horizon=args.horizon, deep=not args.no_deep, explain=explain,
                 outcomes=_names(args.outcomes),
                 progress=not args.no_progress)
    return quick_settings(s) if args.quick else s


def _line(r) -> str:
    ci = "" if r["ci_low"] is None else f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    value = "-" if r["value"] is None else f"{r['value']:.3f}"
    return f"{r['outcome']:22s} {r['model']:15s} {r['split']:8s} {r['metric']:15s} {value}{ci}"


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
        validated = {o["outcome"] for o in res["outcomes"] if "n_external" in o}
        for r in res["rows"]:
            if r["metric"] in ("auc", "harrell_c", "delta_auc", "delta_harrell_c") and \
                    r["split"] == ("external" if r["outcome"] in validated else "cv"):
                print(_line(r))
        print(f"report: {os.path.join(args.out, 'report.md')}")
        return 0

    return run_command(build_parser(), sys.argv[1:] if argv is None else argv, body)


if __name__ == "__main__":
    sys.exit(main())
