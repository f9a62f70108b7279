"""Evaluate trained checkpoints and write the study's tables: ``python -m eval.report --workdir DIR ...``.

For each work directory (a ``zoo.train`` or ``zoo.outcome`` run; ``--workdir`` repeatable) the model is
restored with ``zoo.load_pretrained`` and the chosen split predicted through the run's one prediction path
(``eval.checkpoints.evaluate_workdir``: segmentation, instance and outcome runs each by their task); with
``--external FIELD=VALUE`` each model is also evaluated on that external data set. ``eval.tables.write_report``
writes ``report.md`` (Table 1 in the study's layout, Table 2 with bootstrap 95% CIs, Table 3 per structure,
Table 4 voxel AUCs, Table 5 patient-level outcome metrics, the external validation), ``report.csv``,
``report.json`` and the box plots and best/worst overlays into ``--out`` (default ``<first workdir>/report``).
Bad input: ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import scoring as M
from eval.checkpoints import DEFAULT_METRICS, ModelEval, OutcomeEval, evaluate_workdir
from eval.tables import write_report
from zoo.cli import command_parser, run_command

__all__ = ["main"]


def _parse_kv(items) -> dict:
    out = {}
    for it in items or []:
        if "=" not in it:
            raise ValueError(f"--external expects FIELD=VALUE (a data config field), got {it!r}")
        k, v = it.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parser():
    p = command_parser("python -m eval.report", __doc__, out="output folder (default: <first workdir>/report)")
    p.add_argument("--workdir", action="append", required=True, help="a zoo.train work directory (repeatable)")
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma-separated metric names")
    p.add_argument("--spacing", default="", help="voxel spacing, e.g. 1,1 or 1.0,0.5,0.5 (default 1 per axis)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no_auc", action="store_true", help="skip voxel-wise AUC-ROC / AUPRC")
    p.add_argument("--structures", default="auto", choices=("auto", "classes", "regions"),
                   help="auto: BraTS regions WT/TC/ET for brain label maps, else foreground classes")
    p.add_argument("--external", action="append", default=None,
                   help="FIELD=VALUE override of the data config for an external split (repeatable); "
                        "each model is then also evaluated there")
    return p


def _run(args) -> int:
    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip())
    unknown = [m for m in metrics if m not in M.METRICS]
    if unknown:
        raise ValueError(f"--metrics: unknown {unknown}; expected some of {sorted(M.METRICS)}")
    spacing = tuple(float(s) for s in args.spacing.split(",")) if args.spacing else None
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    external = _parse_kv(args.external)
    out = args.out or os.path.join(args.workdir[0], "report")
    evals, plot_inputs, pairs, seen = [], {}, [], set()
    for wd in args.workdir:
        ev, arrays, pre = evaluate_workdir(wd, args.split, metrics=metrics, batch_size=args.batch_size,
                                           spacing=spacing, with_auc=not args.no_auc, keep_arrays=True,
                                           structures=args.structures)
        if ev.label in seen:  # two work directories with the same name
            ev.label = f"{ev.label} #{len(evals) + 1}"
        seen.add(ev.label)
        evals.append(ev)
        if isinstance(ev, ModelEval):
            plot_inputs[ev.label] = (arrays, pre.predict)
        if external:
            ex, _, _ = evaluate_workdir(wd, args.split, metrics=metrics, batch_size=args.batch_size,
                                        spacing=spacing, with_auc=not args.no_auc, data_overrides=external,
                                        keep_arrays=False, structures=args.structures)
            ex.dataset = f"{ex.dataset} [external: {', '.join(f'{k}={v}' for k, v in external.items())}]"
            ex.label, ex.external = ev.label, True
            evals.append(ex)
            pairs.append((ev, ex))
        if isinstance(ev, OutcomeEval):
            m = ev.metrics()
            print(f"evaluated {ev.label}: {len(ev.y_true)} patients, accuracy {m['accuracy']:.4f}, "
                  f"AUC-ROC {m['auc_roc']:.4f}", flush=True)
        else:
            print(f"evaluated {ev.label}: {len(ev.acc)} cases, mean Dice "
                  f"{np.nanmean(ev.per_case('dice')) if 'dice' in metrics else float('nan'):.4f}", flush=True)
    res = write_report(evals, out, n_boot=args.n_boot, seed=args.seed, plot_inputs=plot_inputs,
                       external_pairs=pairs)
    with open(res["files"]["md"], encoding="utf-8") as f:
        print(f.read())
    print(f"wrote {res['files']['md']}, {res['files']['csv']}, {res['files']['json']} and "
          f"{len(res['files']['png'])} PNG file(s) in {out}")
    return 0


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
