"""The boundary of a framework worker process: the PyTorch workers of ``benchmarks.case_latency``
(``benchmarks.monai_case_worker``, ``benchmarks.nnunet_case_worker``) and ``benchmarks.framework_worker`` (every
framework of ``benchmarks.compare_torch``): one JSON spec argument in, one ``RESULT {json}`` line out.

:func:`run` parses the spec, refuses a process that has imported JAX (before and after the work: each framework
is timed in its own process; a JAX worker refuses PyTorch likewise) and prints the body's record; a bad spec or input ends with ``error: <message>`` on
stderr and exit status 2. It does not go through ``zoo.cli``: that would import JAX into PyTorch's process.
"""

from __future__ import annotations

import json
import sys
from typing import Callable

from benchmarks import frameworks

__all__ = ["run"]


def run(prog: str, argv, body: Callable[[dict], dict], framework: str | Callable[[dict], str] = "monai") -> int:
    """``body(spec)`` for the one JSON argument of ``argv`` (default ``sys.argv[1:]``); returns the exit status.
    ``framework``: what this process times (``benchmarks.frameworks.FRAMEWORKS``; the process must not hold the
    others), or a function of the spec naming it (as ``benchmarks.framework_worker`` passes)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) != 1:
            raise ValueError(f"usage: python -m {prog} SPEC_JSON")
        try:
            spec = json.loads(argv[0])
        except json.JSONDecodeError as e:
            raise ValueError(f"the spec is not JSON: {e}") from None
        if not isinstance(spec, dict):
            raise ValueError("the spec must be a JSON object")
        name = framework(spec) if callable(framework) else framework
        frameworks.refuse_mixed(name)
        out = body(spec)
        frameworks.refuse_mixed(name)
    except (ValueError, KeyError, TypeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(frameworks.RESULT_PREFIX + json.dumps(out), flush=True)
    return 0
