"""The reference study's table on the real samples: ``python -m eval.studies.paper_table --data_root ../shared/data
--out DIR [--quick] [--budget_minutes 60] [--folds K] [--models cnn,unet] [--families isic,brats] [--steps N]
[--ablations skips,attention | all | none] [--postprocess none|lcc|brain|brain_lcc] [--no_store] [--dry_run]``.

Every model x family trained with patient-level k-fold CV, each fold's held-out patients predicted from their
original files and scored at native resolution, the ablations as paired deltas, the runs' fold-0 models into the
model store: ``eval.studies.reference_table`` (what each flag does, the budget, the outputs). ``--quick`` checks
the machinery in a few minutes; its numbers mean nothing. Bad input: ``error: <message>`` and exit 2.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

from data_pipelines.atomic import dumps
from eval.studies.ablations import ABLATIONS
from eval.studies.reference_table import run_table, table_markdown
from zoo.cli import command_parser, run_command
from zoo.configs import paper

__all__ = ["main"]


def _parser():
    p = command_parser("python -m eval.studies.paper_table", __doc__, out="output folder (a new one)",
                       out_required=True)
    p.add_argument("--data_root", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budget_minutes", type=float, default=60.0)
    p.add_argument("--folds", type=int, default=None,
                   help="folds for every family (default: brats 4 = leave one patient out, isic, cxr and lung 2)")
    p.add_argument("--models", default="", help="these models on every family (default: cnn,fcn,unet,segnet "
                                                "everywhere, attention_unet,deeplabv3plus,mask_rcnn on isic)")
    p.add_argument("--families", default="")
    p.add_argument("--steps", type=int, default=None, help="a fixed step count per fold instead of training by time")
    p.add_argument("--ablations", default="", help="comma list, 'all' or 'none' (default: skips,attention)")
    p.add_argument("--ablation_family", default="isic")
    p.add_argument("--postprocess", default=None,
                   help="the table's post-processing for every family (default: per family, POSTPROCESS_DEFAULT)")
    p.add_argument("--no_store", action="store_true")
    p.add_argument("--dry_run", action="store_true", help="print the runs and their reserved seconds, train nothing")
    return p


def _run(args) -> int:
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    archs = split(args.models) or (["cnn", "unet"] if args.quick else None)
    families = split(args.families) or (["isic", "cxr"] if args.quick else list(paper.FAMILIES))
    if args.ablations == "none":
        abl = []
    elif args.ablations == "all":
        abl = list(ABLATIONS)
    else:
        abl = split(args.ablations) or (["loss"] if args.quick else ["skips", "attention"])
    steps = args.steps if args.steps is not None else (8 if args.quick else None)
    if args.folds is not None and args.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {args.folds}")
    if args.budget_minutes <= 0 or not np.isfinite(args.budget_minutes):
        raise ValueError(f"--budget_minutes must be positive, got {args.budget_minutes}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = run_table(args.data_root, os.path.abspath(args.out), archs=archs, families=families,
                           folds=args.folds, budget_minutes=args.budget_minutes, quick=args.quick, steps=steps,
                           ablations=abl, ablation_family=args.ablation_family, store=not args.no_store,
                           postprocess=args.postprocess, dry_run=args.dry_run)
    if args.dry_run:
        print(dumps(result, indent=1))
        return 0
    print(table_markdown(result))
    return 0


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
