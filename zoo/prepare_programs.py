"""Compile a store entry's prediction programs into the entry: ``python -m zoo.prepare_programs --model NAME
--input CASE [--input CASE ...] [--tta both|on|off] [--batch_size 4] [--overlap 0.5]``.

Each ``--input`` (a case as ``zoo.predict`` takes it: an image file, DICOM folder or case folder) is read and
predicted as ``zoo.predict`` would, with a fresh private cache; the programs that compiled are kept in the entry's
``programs/`` (:mod:`zoo.executables`), so that on a host of the same type (jaxlib, CPU model and flags) the entry's
first prediction of a case of those shapes compiles nothing. Programs made on another host type are ignored with a
notice. ``--model`` must be a store entry (a folder with ``card.json``), by name or path.
"""

from __future__ import annotations

import os
import sys

from zoo import executables
from zoo.cli import command_parser, run_command
from zoo.prediction import predict_case_proba, read_case
from zoo.pretrained import load_pretrained
from zoo.store import resolve

__all__ = ["main"]


def main(argv=None) -> int:
    p = command_parser("python -m zoo.prepare_programs", __doc__)
    p.add_argument("--model", required=True, help="model-store entry (name or folder)")
    p.add_argument("--input", required=True, action="append", help="a case to predict (repeat for more shapes)")
    p.add_argument("--tta", default="both", choices=("both", "on", "off"),
                   help="prepare the mirrored prediction (--tta of zoo.predict), the plain one, or both")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--batch_size", type=int, default=4)
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


def _run(args) -> int:
    entry = resolve(args.model)
    for case in args.input:
        if not os.path.exists(case):
            raise FileNotFoundError(f"--input {case} does not exist")
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.tta]

    def run():
        pre = load_pretrained(entry)
        for case in args.input:
            image, meta, _ = read_case(case, pre)
            for tta in modes:
                predict_case_proba(pre, image, meta, tta=tta, overlap=args.overlap, batch_size=args.batch_size)

    n = executables.prepare(entry, run, note={"inputs": [os.path.basename(c) for c in args.input],
                                              "tta": list(modes), "overlap": args.overlap,
                                              "batch_size": args.batch_size})
    print(f"{entry}: {n} compiled programs kept for {executables.host_key()['cpu_model']} "
          f"(jaxlib {executables.host_key()['jaxlib']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
