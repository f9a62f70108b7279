"""Patient-level k-fold cross-validation: ``python -m zoo.cv --config=NAME --folds=K [--ensemble] [--refit
[--store NAME [--overwrite]]] [--config.x=v]``.

The training split of ``config.data`` is divided into ``K`` folds by patient (every case of a
patient lands in the same fold, so no patient is in both training and validation). Fold ``i``
trains on the other ``K-1`` folds in ``<workdir>/fold<i>`` (its own checkpoints, best-by-Dice
checkpoint and metrics) and is validated on fold ``i``. The aggregate is the mean ± sample std
over folds. ``--ensemble`` averages the softmax of the folds' best checkpoints on the held-out
test split (the data set's validation split, which no fold saw) and reports its Dice. ``--refit`` then
trains the recipe on every training patient for the folds' mean steps (``<workdir>/refit``, no validation
split); ``--store NAME`` saves that refit into the model store (``$ZOO_HOME``) with a card holding the
cross-validated metrics (per fold and mean ± std), the folds' patients, the splitter and seed
(``python -m zoo.store_cli show NAME`` prints them). Rerunning in the same ``--workdir`` reuses finished folds.
Only the command line lives here; the work is :func:`zoo.crossval.cross_validate`.
"""

from __future__ import annotations

import sys

from zoo.cli import default_workdir, resolve_config, run_command, run_parser
from zoo.crossval import cross_validate, format_cv_table

__all__ = ["main"]


def _run(args) -> int:
    try:
        folds = int(args.folds)
    except ValueError:
        raise ValueError(f"--folds must be an integer, got {args.folds!r}") from None
    config = resolve_config(args, args.overrides)
    workdir = default_workdir(args, config, prefix="cv-")
    print(f"workdir: {workdir}", flush=True)
    if args.store is None and args.overwrite:
        raise ValueError("--overwrite replaces a model store entry; give --store NAME")
    card = {"recipe": args.config}
    if "phantom" not in str(config.data.name):  # real data: its own licence applies, which the store cannot know
        card["data_licence"] = (f"not stated: the licence of data set {config.data.name!r} "
                                f"({config.data.get('data_dir', '') or 'default location'}) applies")
    result = cross_validate(config, workdir, folds, ensemble=args.ensemble, progress=not args.no_progress,
                            refit=args.refit, store=args.store, overwrite=args.overwrite, card=card)
    if result.get("preempted"):
        print(f"preempted during fold {result['fold']}; rerun the same command to resume", flush=True)
        return 143
    print(f"\n{folds}-fold patient-level cross-validation ({config.model.name}, {config.data.name}):")
    print(format_cv_table(result))
    return 0


def main(argv=None) -> int:
    p = run_parser("python -m zoo.cv", __doc__)
    p.add_argument("--folds", default="5", help="number of patient-level folds (default 5)")
    p.add_argument("--ensemble", action="store_true",
                   help="also score the mean of the folds' best checkpoints on the held-out test split")
    p.add_argument("--refit", action="store_true",
                   help="then train on every training patient for the folds' mean steps (no validation split)")
    p.add_argument("--store", default=None, metavar="NAME",
                   help="save the refit as this model-store entry, its card holding the cross-validated metrics")
    p.add_argument("--overwrite", action="store_true", help="with --store: replace an existing entry")
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


if __name__ == "__main__":
    sys.exit(main())
