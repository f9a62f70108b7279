"""The zoo against nnU-Net v2 at the same CPU budget per fold, on the same patient-level folds.

``python -m eval.studies.compare_nnunet --data_dir DIR --family brats|isic --budget_min N [--clock wall|cpu]
[--folds K] [--fold_ids 0,1] [--configs 2d[,3d_fullres]] [--model unet] [--mirroring] [--threads T] [--quick] --out OUT``

Converts the family's cases into nnU-Net's raw layout under ``OUT/nnUNet_raw``, runs nnU-Net's fingerprint,
planning and preprocessing, then per fold trains and predicts with both tools for ``--budget_min`` minutes each
(on ``--clock``: wall seconds, or each tool's training process's CPU seconds, fair on a shared machine)
and scores both with the same call (``eval.studies.nnunet_study``). A rerun with the same ``--out`` skips every
fold whose ``done.json`` exists. Writes ``OUT/table.md`` and ``OUT/table.json``. Needs the ``nnunet`` extra
(``pip install -e ".[nnunet]"``). Bad input: ``error: <message>``, exit 2.
"""

from __future__ import annotations

import sys

from eval.studies.nnunet_study import CLOCKS, CONFIGS, run_study, table_markdown
from zoo.cli import command_parser, run_command

__all__ = ["main"]

DEFAULT_FOLDS = {"brats": 4, "isic": 2}  # BraTS: leave one patient out (4 patients)


def _parser():
    p = command_parser("python -m eval.studies.compare_nnunet", __doc__, out="output folder (resumable)",
                       out_required=True)
    p.add_argument("--data_dir", required=True, help="the family's case folder (e.g. ../shared/data/isic_like)")
    p.add_argument("--family", required=True, help="data family: brats or isic (any paper family with cases)")
    p.add_argument("--budget_min", type=float, required=True, help="training minutes per fold per tool")
    p.add_argument("--clock", default="wall", help=f"the budget's clock, one of {','.join(CLOCKS)}: wall seconds, "
                   "or each tool's training process's CPU seconds (fair on a loaded machine)")
    p.add_argument("--folds", type=int, default=None, help="k of the patient-level k-fold (brats 4, isic 2)")
    p.add_argument("--fold_ids", default="", help="comma list of the folds to run now (default: all)")
    p.add_argument("--configs", default="2d", help=f"nnU-Net configurations, some of {','.join(CONFIGS)}")
    p.add_argument("--model", default="unet", help="the zoo's model (its paper recipe for the family)")
    p.add_argument("--mirroring", action="store_true", help="nnU-Net predicts with test-time mirroring")
    p.add_argument("--threads", type=int, default=None, help="torch threads for nnU-Net (default: all cores)")
    p.add_argument("--dataset_id", type=int, default=500, help="nnU-Net's dataset id (1..999)")
    p.add_argument("--quick", action="store_true", help="tiny zoo recipe: checks the machinery only")
    return p


def _ints(text: str, flag: str) -> list[int] | None:
    if not text.strip():
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _body(args) -> int:
    folds = args.folds or DEFAULT_FOLDS.get(args.family, 2)
    result = run_study(args.data_dir, args.family, args.out, budget_min=args.budget_min, folds=folds,
                       fold_ids=_ints(args.fold_ids, "--fold_ids"),
                       configs=tuple(c.strip() for c in args.configs.split(",") if c.strip()), arch=args.model,
                       dataset_id=args.dataset_id, mirroring=args.mirroring, threads=args.threads, quick=args.quick,
                       clock=args.clock)
    print(table_markdown(result), end="")
    return 0


def main(argv=None) -> int:
    return run_command(_parser(), argv, _body)


if __name__ == "__main__":
    sys.exit(main())
