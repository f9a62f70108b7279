"""Evaluate a folder of predicted label maps against a folder of references (nnU-Net's ``evaluate_folder``).

``python -m eval.evaluate --pred DIR --ref DIR [--labels 1,2,3 | --regions brats] [--metrics dice,hd95,...]
[--workers N] [--allow_missing] --out DIR`` scores the predictions of any tool and writes ``per_case.csv``,
``summary.json``, ``summary.md`` and ``boxplots.png``; the rules (case ids, missing cases, geometry,
structures, outputs) are ``eval.folders``'. Bad input: ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

import scoring as M
from eval.folders import DEFAULT_METRICS, config_number, evaluate_folder, summarize, write_outputs
from zoo.cli import command_parser, run_command

__all__ = ["main"]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers, got {text!r}") from None
    if not values or len(set(values)) != len(values) or min(values) < 1:
        raise ValueError(f"{flag} expects distinct positive labels, got {text!r}")
    return values


def _parser():
    p = command_parser("python -m eval.evaluate", __doc__, out="output folder", out_required=True)
    p.add_argument("--pred", required=True, help="folder of predicted label maps")
    p.add_argument("--ref", required=True, help="folder of reference label maps")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--labels", default=None, help="comma-separated labels, each one structure (default: all found)")
    g.add_argument("--regions", default=None, choices=("brats",), help="score the BraTS regions WT/TC/ET")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated, some of {','.join(sorted(M.METRICS))}")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="processes (1: in-process)")
    p.add_argument("--allow_missing", action="store_true",
                   help="score a reference case without prediction as an empty prediction")
    p.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance in mm (default 1)")
    p.add_argument("--one_empty_distance", type=float, default=float("inf"),
                   help="distance metrics' value when exactly one mask is empty (default inf)")
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    return p


def _run(args) -> int:
    labels = _int_list(args.labels, "--labels") if args.labels is not None else None
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    if args.n_boot < 1:
        raise ValueError(f"--n_boot must be >= 1, got {args.n_boot}")
    result = evaluate_folder(args.pred, args.ref, labels=labels, regions=args.regions, metrics=metrics,
                             workers=args.workers, allow_missing=args.allow_missing,
                             tolerance=args.tolerance, one_empty_distance=args.one_empty_distance)
    summary = summarize(result, n_boot=args.n_boot, seed=args.seed)
    config = {"pred": os.path.abspath(args.pred), "ref": os.path.abspath(args.ref), "labels": labels,
              "regions": args.regions, "metrics": list(metrics), "tolerance_mm": args.tolerance,
              "one_empty_distance": config_number(args.one_empty_distance), "allow_missing": args.allow_missing,
              "n_boot": args.n_boot, "seed": args.seed}
    paths = write_outputs(result, summary, args.out, config=config)
    print(f"wrote {paths['csv']}, {paths['md']}, {paths['json']}, {paths['png']}")
    return 0


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
