"""Training entry point: ``python -m zoo.train --config=NAME --workdir=DIR [--mesh=D,M] [--config.a.b=value ...]``.

Only the command line lives here (flax examples' ``main.py``): flags are parsed and the training core
:func:`zoo.training.train_and_evaluate` runs. Bad input (unknown model, config field or dataset, missing
data directory, a mesh that does not fit the devices or the batch) ends with one line on stderr and exit
status 2, before anything is compiled. Multi-host: ``--coordinator/--num_processes/--process_id`` (or
``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).
"""

from __future__ import annotations

import os
import sys

import jax

from zoo.cli import default_workdir, resolve_config, run_command, run_parser
from zoo.training import PREEMPTED_EXIT_CODE, format_dice_table, format_outcome_table, prepare_run, train_and_evaluate
from zoo.training.distributed import init_distributed

__all__ = ["parser", "main"]


def parser():
    """The command line: the run flags (``zoo.cli.run_parser``: ``args.overrides`` holds the ``--config.a.b=value``
    overrides and the shortcut flags), multi-host flags and ``--step``."""
    p = run_parser("python -m zoo.train", __doc__)
    p.add_argument("--coordinator", default=None, help="multi-host: coordinator HOST:PORT")
    p.add_argument("--num_processes", default=None, type=int, help="multi-host: number of processes")
    p.add_argument("--process_id", default=None, type=int, help="multi-host: this process's index")
    p.add_argument("--step", default=None, type=int,
                   help="resume from this checkpoint step (default: the newest intact one)")
    return p


def _report(result: dict, workdir: str) -> None:
    if result["task"] == "outcome":
        print(f"\nvalidation after {result['step']} steps ({result['n']} patients):")
        print(format_outcome_table({result.get("model_name", "model"): result}))
    else:
        print(f"\nvalidation Dice after {result['step']} steps ({result['num_cases']} cases):")
        print(format_dice_table(result, result["class_names"]))
    metric = "auc_roc" if result["task"] == "outcome" else "mean_dice"
    if result.get("best_step") is not None:
        label = "AUC" if metric == "auc_roc" else "Dice"
        print(f"best validation {label} {result[f'best_{metric}']:.4f} at step {result['best_step']} "
              f"({os.path.join(workdir, 'best')})")
    print(f"\ncheckpoints: {os.path.join(workdir, 'checkpoints')}\n"
          f"metrics: {os.path.join(workdir, 'metrics.jsonl')}")


def _run(args) -> int:
    config = resolve_config(args, args.overrides)
    init_distributed(args.coordinator, args.num_processes, args.process_id)
    setup = prepare_run(config)  # a mesh that does not fit the devices or the batch: one line, exit 2
    workdir = default_workdir(args, config)
    if jax.process_index() == 0:
        print(f"workdir: {workdir}", flush=True)
    result = train_and_evaluate(config, workdir, progress=not args.no_progress, setup=setup,
                                resume_step=args.step)
    if result.get("preempted"):
        return PREEMPTED_EXIT_CODE
    if jax.process_index() == 0:
        _report(result, workdir)
    return 0


def main(argv=None) -> int:
    return run_command(parser(), sys.argv[1:] if argv is None else argv, _run)


if __name__ == "__main__":
    sys.exit(main())
