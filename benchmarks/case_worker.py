"""Whole cases through the prediction path with each phase timed, in its own process (``benchmarks.case_latency``).

    python -m benchmarks.case_worker --model NAME_OR_PATH --input CASE [CASE ...] --output LABELS [--tta]

The steps are ``python -m zoo.predict``'s (load the model, read the case, predict: preprocess + sliding window +
restore, write the label map), timed from this module's first line: ``import_s`` (the imports, jax and the zoo),
``load_s``, ``read_s``, ``predict_s``, ``write_s``; ``compile_s`` is the part of load and predict that jax spent
getting executables (compiling them, or loading them from the persistent cache: ``programs_compiled`` /
``programs_loaded``). Each further ``--input`` case is predicted in the same process, as ``python -m zoo.predict``
predicts several cases (the model loaded and its programs compiled once): its ``read_s``, ``predict_s``,
``write_s``, ``compile_s`` and program counts are listed in ``next`` (each case overwrites ``LABELS``). Prints one
line ``RESULT {json}``. The compilation cache is on as in every command line.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before the imports: import_s counts them

import json  # noqa: E402
import sys  # noqa: E402

from benchmarks.frameworks import RESULT_PREFIX  # noqa: E402
from zoo.cli import command_parser, run_command  # noqa: E402
from zoo.compilation_cache import compile_counter  # noqa: E402
from zoo.prediction import predict_case_proba, read_case, write_label  # noqa: E402
from zoo.pretrained import load_pretrained  # noqa: E402

__all__ = ["main"]


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.case_worker", __doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True, nargs="+")
    p.add_argument("--output", required=True)
    p.add_argument("--tta", action="store_true")
    p.add_argument("--overlap", type=float, default=0.5)
    p.add_argument("--batch_size", type=int, default=4)
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


def _run(args) -> int:
    t = {"import_s": time.perf_counter() - T0}
    with compile_counter() as c:
        t0 = time.perf_counter()
        pre = load_pretrained(args.model)
        t["load_s"] = time.perf_counter() - t0
        t.update(_case(args, pre, args.input[0]))
    t.update(compile_s=c.backend_s, programs_compiled=c.compiled, programs_loaded=c.loaded)
    nxt = []
    for path in args.input[1:]:
        with compile_counter() as c:
            row = _case(args, pre, path)
        nxt.append(dict(row, compile_s=c.backend_s, programs_compiled=c.compiled, programs_loaded=c.loaded))
    t.update(inside_s=time.perf_counter() - T0, next=nxt)
    print(RESULT_PREFIX + json.dumps(t), flush=True)
    return 0


def _case(args, pre, path: str) -> dict:
    """One case's read, predict and write seconds (and its shape)."""
    import numpy as np

    t = {}
    t0 = time.perf_counter()
    image, meta, files = read_case(path, pre)
    t["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    case = predict_case_proba(pre, image, meta, tta=args.tta, overlap=args.overlap, batch_size=args.batch_size)
    t["predict_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_label(case.proba.argmax(-1).astype(np.int32), meta, files[0], args.output,
                int(pre.meta["data"]["num_classes"]))
    t["write_s"] = time.perf_counter() - t0
    return dict(t, shape=list(image.shape))


if __name__ == "__main__":
    sys.exit(main())
