"""One framework's timing run in its own process, started by ``python -m benchmarks.compare_torch``.

    python -m benchmarks.framework_worker '{"framework": "monai", "dims": 2, ...}'

The one argument is the spec of :func:`benchmarks.frameworks.run_spec`; the result is printed as one line
``RESULT {json}`` on stdout. This worker deliberately does not declare itself through ``zoo.cli``: importing the
zoo imports JAX, and a PyTorch (or scipy) worker must not have JAX in its process (``frameworks.refuse_mixed``). Its
error boundary is the same: bad input ends with one line ``error: <message>`` on stderr and exit status 2. The zoo's
worker turns on the persistent compilation cache as every command line does (compile time is reported apart).
"""

from __future__ import annotations

import sys

from benchmarks import frameworks, torch_worker


def _run(spec: dict) -> dict:
    if spec["framework"] == "zoo":
        from zoo import compilation_cache

        compilation_cache.enable()
    return frameworks.run_spec(spec)


def main(argv=None) -> int:
    return torch_worker.run("benchmarks.framework_worker", argv, _run, framework=lambda spec: spec.get("framework"))


if __name__ == "__main__":
    sys.exit(main())
