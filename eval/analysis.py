"""Error and subgroup analysis of a checkpoint: structure size, boundary bands, class imbalance, worst cases.

``python -m eval.analysis --workdir DIR [--split val] [--metadata CSV] [--min_n 10] [--n_boot 2000] [--out DIR]``
streams the run's predictions once (``eval.error_analysis.analyse_workdir``) and writes ``analysis.md`` and
``analysis.json`` (strict JSON) into ``--out`` (default ``<workdir>/analysis``). Bad input: ``error: <message>``
on stderr and exit status 2.
"""

from __future__ import annotations

import os
import sys

from data_pipelines.atomic import write_json, write_text
from eval.error_analysis import analyse_workdir, analysis_markdown
from zoo.cli import command_parser, run_command

__all__ = ["main"]


def _parser():
    p = command_parser("python -m eval.analysis", __doc__, out="output folder (default: <workdir>/analysis)")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="val", choices=("train", "val"))
    p.add_argument("--metadata", default=None, help="CSV with case_id|patient_id and age, sex, site columns")
    p.add_argument("--min_n", type=int, default=10, help="flag subgroups/strata smaller than this")
    p.add_argument("--n_boot", type=int, default=2000)
    return p


def _run(args) -> int:
    out = args.out or os.path.join(args.workdir, "analysis")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a directory")
    res = analyse_workdir(args.workdir, args.split, metadata=args.metadata, min_n=args.min_n, n_boot=args.n_boot)
    os.makedirs(out, exist_ok=True)
    md = analysis_markdown(res)
    write_text(os.path.join(out, "analysis.md"), md)
    write_json(os.path.join(out, "analysis.json"), res, indent=1)
    print(md)
    return 0


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
