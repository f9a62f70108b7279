"""Outcome entry point: ``python -m zoo.outcome --config=outcome_smoke [--workdir=DIR] [--config.a.b=v ...]``.

Trains the multimodal outcome net (image + covariates) and its image-only / covariates-only ablations on the
phantom outcome cohort, compares them with logistic regressions on the covariates plus the image-derived
tumour volume (and on each alone), and prints accuracy, precision, recall (sensitivity), specificity and
AUC-ROC on the patient-level validation split: :func:`zoo.outcome.run.run_outcome`, which writes
``<workdir>/<variant>`` work directories and ``<workdir>/metrics.json``. Bad input: ``error: ...``, exit 2.
"""

from __future__ import annotations

import os
import sys

from zoo.cli import default_workdir, resolve_config, run_command, run_parser
from zoo.outcome.run import run_outcome
from zoo.training import PREEMPTED_EXIT_CODE, format_outcome_table


def _run(known) -> int:
    config = resolve_config(known, known.overrides)
    if "outcome" not in config:
        raise ValueError(f"config {known.config!r} has no 'outcome' section; use an outcome recipe "
                         f"(e.g. outcome_smoke)")
    workdir = default_workdir(known, config)
    print(f"workdir: {workdir}", flush=True)
    results = run_outcome(config, workdir, progress=not known.no_progress)
    if results.get("preempted"):
        print(f"preempted while training {results['variant']}; rerun the same command to resume", flush=True)
        return PREEMPTED_EXIT_CODE
    d = results["data"]
    print(f"\nvalidation ({d['num_val']} patients, prevalence {d['val_prevalence']:.2f}; "
          f"train {d['num_train']}):")
    print(format_outcome_table(results["models"]))
    print(f"\nmetrics: {os.path.join(workdir, 'metrics.json')}")
    return 0


def main(argv=None) -> int:
    parser = run_parser("python -m zoo.outcome", __doc__, default_config="outcome_smoke")
    return run_command(parser, sys.argv[1:] if argv is None else argv, _run)


if __name__ == "__main__":
    sys.exit(main())
