"""Single convolution ops at U-Net layer shapes: the ``lax`` reference against the rewritten CPU forms
of ``kernels.conv`` (forward, and the gradient of ``sum(op(x, w) ** 2)`` w.r.t. ``x`` and ``w``).

    python -m benchmarks.conv_ops [CASE ...]          # default: all cases

Both contenders are timed interleaved, ``--rounds`` rounds; prints medians and lax/rewritten speedups.
These numbers chose the per-case ``"cpu"`` lowering (docs/performance.md).
"""

from __future__ import annotations

import statistics
import sys

from zoo.cli import command_parser, run_command

__all__ = ["CASES", "main"]

# name -> (op, x shape, w shape, strides)
CASES = {
    "2d_conv_s2": ("conv", (8, 64, 64, 16), (3, 3, 16, 32), 2),
    "2d_convT_s2": ("transpose", (8, 32, 32, 32), (2, 2, 32, 16), 2),
    "3d_conv_s1": ("conv", (1, 32, 32, 32, 16), (3, 3, 3, 16, 16), 1),
    "3d_conv_s2": ("conv", (1, 32, 32, 32, 16), (3, 3, 3, 16, 32), 2),
    "3d_convT_s2": ("transpose", (1, 16, 16, 16, 32), (2, 2, 2, 32, 16), 2),
}


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.conv_ops", __doc__)
    p.add_argument("cases", nargs="*", help=f"subset of {', '.join(CASES)}")
    p.add_argument("--rounds", type=int, default=5)
    return run_command(p, sys.argv[1:] if argv is None else argv, _run)


def _run(args) -> int:
    bad = [c for c in args.cases if c not in CASES]
    if bad or args.rounds < 1:
        raise ValueError(f"unknown case(s) {bad} (known: {', '.join(CASES)}) or --rounds < 1")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from benchmarks.common import time_calls
    from kernels import conv as C

    rng = np.random.default_rng(0)
    for name in args.cases or list(CASES):
        op, xs, ws, st = CASES[name]
        x = jnp.asarray(rng.normal(size=xs), jnp.float32)
        w = jnp.asarray(rng.normal(size=ws), jnp.float32)
        pair = ((C.conv_nd_reference, C.conv_nd_cpu) if op == "conv"
                else (C.conv_transpose_nd_reference, C.conv_transpose_nd_cpu))
        fns = {}
        for tag, f in zip(("lax", "rewritten"), pair):
            g = (lambda f: lambda x, w: f(x, w, st))(f)
            fwd = jax.jit(g)
            bwd = jax.jit(jax.grad((lambda g: lambda x, w: jnp.sum(g(x, w) ** 2))(g), (0, 1)))
            jax.block_until_ready((fwd(x, w), bwd(x, w)))
            fns[tag] = (fwd, bwd)
        samples = {k: ([], []) for k in fns}
        for _ in range(args.rounds):
            for k, (fwd, bwd) in fns.items():
                samples[k][0].append(time_calls(lambda: fwd(x, w), warmup=1, repeats=1, number=3)["median_s"])
                samples[k][1].append(time_calls(lambda: bwd(x, w), warmup=1, repeats=1, number=3)["median_s"])
        m = {k: (statistics.median(a) * 1e3, statistics.median(b) * 1e3) for k, (a, b) in samples.items()}
        print(f"{name} x{xs} w{ws} s{st}: forward lax {m['lax'][0]:.1f} ms, rewritten {m['rewritten'][0]:.1f} ms "
              f"({m['lax'][0] / m['rewritten'][0]:.2f}x); grad lax {m['lax'][1]:.1f} ms, rewritten "
              f"{m['rewritten'][1]:.1f} ms ({m['lax'][1] / m['rewritten'][1]:.2f}x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
