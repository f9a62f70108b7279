"""One framework's timing run in its own process, started by ``python -m benchmarks.compare_torch``.

    python -m benchmarks.framework_worker '{"framework": "monai", "dims": 2, ...}'

The one argument is the spec of :func:`benchmarks.frameworks.run_spec`; the result is printed as one line
``RESULT {json}`` on stdout. This worker deliberately does not declare itself through ``zoo.cli``: importing the
zoo imports JAX, and a PyTorch (or scipy) worker must not have JAX in its process (``frameworks.refuse_mixed``). Its
error boundary is the same: bad input ends with one line ``error: <message>`` on stderr and exit status 2. The zoo's
worker turns on the persistent compilation cache as every command line does (compile time is reported apart).
"""

from __future__ import annotations

import json
import sys

from benchmarks import frameworks


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if len(argv) != 1:
            raise ValueError("usage: python -m benchmarks.framework_worker SPEC_JSON")
        try:
            spec = json.loads(argv[0])
        except json.JSONDecodeError as e:
            raise ValueError(f"the spec is not JSON: {e}") from None
        if not isinstance(spec, dict):
            raise ValueError("the spec must be a JSON object")
        frameworks.refuse_mixed(spec.get("framework"))
        if spec["framework"] == "zoo":
            from zoo import compilation_cache

            compilation_cache.enable()
        out = frameworks.run_spec(spec)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(frameworks.RESULT_PREFIX + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
