"""Hyperparameter search: ``python -m zoo.hparam --config=NAME --search=grid|random --param=FIELD=V1,V2,... ...``.

Each ``--param`` names a config field and its values (``--param=train.learning_rate=1e-3,3e-3``,
``--param=seed=0,1,2``); random search also takes ranges ``FIELD=loguniform:LO:HI`` or
``uniform:LO:HI`` and ``--trials=N``. Trials that differ only in ``seed`` and
``train.learning_rate`` share shapes and program, so they run together as **one** vmapped
computation on one device. Results: ``<workdir>/results.csv`` and ``results.md`` (one row per trial,
sorted by validation Dice). Only the command line lives here; the search is :mod:`zoo.hparam_search`.
"""

from __future__ import annotations

import sys

from zoo.cli import default_workdir, resolve_config, run_command, run_parser
from zoo.hparam_search import format_results, parse_param, search

__all__ = ["main"]


def _run(args) -> int:
    if not args.param:
        raise ValueError("give at least one --param=FIELD=V1,V2,...")
    space = dict(parse_param(t) for t in args.param)
    config = resolve_config(args, args.overrides)
    workdir = default_workdir(args, config, prefix="hparam-")
    print(f"workdir: {workdir}", flush=True)
    rows = search(config, space, workdir, args.search, args.trials, args.search_seed)
    print(format_results(rows))
    return 0


def main(argv=None) -> int:
    p = run_parser("python -m zoo.hparam", __doc__)
    p.add_argument("--search", default="grid", help="grid | random (default grid)")
    p.add_argument("--param", action="append", default=[],
                   help="FIELD=V1,V2,... or FIELD=loguniform:LO:HI / uniform:LO:HI (repeatable)")
    p.add_argument("--trials", type=int, default=None, help="random search: number of trials")
    p.add_argument("--search_seed", type=int, default=0, help="random search: seed of the draws (default 0)")
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


if __name__ == "__main__":
    sys.exit(main())
