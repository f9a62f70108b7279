"""The study's ablations as config variants: ``python -m eval.studies.ablate [--quick] [--only skips,loss] --out DIR``.

Each ablation (``eval.studies.ablations.ABLATIONS``: skips, attention, augmentation, normalisation, loss)
trains a reference and a treatment run with ``python -m zoo.train`` in a subprocess (runs shared between
ablations once; a finished run is reused), evaluates both on the same validation cases through the store and
the prediction path (``eval.checkpoints.evaluate_workdir``) and reports the paired per-case delta
``treatment - reference`` with a bootstrap 95% CI (``eval.deltas.paired_deltas``) next to the study's claim, in
``ablation.md``, ``ablation.json`` and ``ablation.csv`` (``--out``, default ``workdirs/ablate-<config>``).
``--quick`` uses the smoke recipe with few steps: it checks the machinery, its deltas mean nothing. Exit 1 when
a run failed, 2 (``error: <message>``) on bad input.
"""

from __future__ import annotations

import os
import sys

from data_pipelines.atomic import write_json, write_text
from eval.checkpoints import evaluate_workdir
from eval.deltas import DELTA_METRICS, CaseValues, paired_deltas
from eval.studies.ablations import ABLATIONS, ablation_markdown, plan, train_run
from data_pipelines.atomic import write_csv
from zoo.cli import command_parser, run_command
from zoo.configs import apply_overrides, load_config
from zoo.registry import list_models

__all__ = ["main"]


def _parser():
    p = command_parser("python -m eval.studies.ablate", __doc__,
                       out="output folder (default: workdirs/ablate-<config>)")
    p.add_argument("--config", default="default", help="recipe to ablate (default: default)")
    p.add_argument("--quick", action="store_true", help="smoke recipe, few steps: checks the machinery")
    p.add_argument("--steps", type=int, default=None, help="train.steps for every run (quick: 4)")
    p.add_argument("--only", default=",".join(ABLATIONS), help=f"comma-separated subset of {list(ABLATIONS)}")
    p.add_argument("--set", action="append", default=[], help="FIELD=VALUE override for every run (repeatable)")
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=8)
    return p


def _run(args) -> int:
    config = "smoke" if args.quick else args.config
    steps = args.steps if args.steps is not None else (4 if args.quick else None)
    extra = {}
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        extra[k.removeprefix("config.")] = v
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    base = apply_overrides(load_config(config), extra)
    runs, pairs, skipped = plan(names, available_models=set(list_models()), base_config=base)
    out = os.path.abspath(args.out or os.path.join("workdirs", f"ablate-{config}"))
    os.makedirs(out, exist_ok=True)
    evals, info = {}, {}
    for name, overrides in runs.items():
        wd = os.path.join(out, "runs", name)
        print(f"[ablate] training {name} ({overrides or 'recipe'})", flush=True)
        res = train_run(config, wd, overrides, steps=steps, extra=extra)
        info[name] = {"overrides": overrides, **res}
        if res["rc"] != 0:
            print(f"[ablate] run {name} failed (exit {res['rc']}); see {res['log']}", file=sys.stderr)
            continue
        ev, _, _ = evaluate_workdir(wd, "val", metrics=DELTA_METRICS, batch_size=args.batch_size, label=name,
                                    with_auc=False)
        evals[name] = CaseValues.of_eval(ev)
    rows = paired_deltas(evals, pairs, n_boot=args.n_boot)
    md = ablation_markdown(rows, skipped, info, title=f"Ablations of {config}" + (" (quick)" if args.quick else ""))
    write_text(os.path.join(out, "ablation.md"), md)
    write_json(os.path.join(out, "ablation.json"), {"rows": rows, "skipped": skipped, "runs": info}, indent=1)
    good = [r for r in rows if "error" not in r]
    if good:
        write_csv(os.path.join(out, "ablation.csv"), good)
    print(md)
    return 0 if all("error" not in r for r in rows) else 1


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
