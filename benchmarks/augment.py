"""Elastic + affine augmentation throughput: our jitted, vmapped pipeline vs a scipy.ndimage loop
(and MONAI Rand2DElastic / Rand3DElastic when the optional ``[compare]`` extra is installed).

    python -m benchmarks.augment            # 2D 32 x 256^2 and 3D 2 x 128^3
    python -m benchmarks.augment --quick    # small shapes, one repeat (a smoke run)
    python -m benchmarks.augment --train_step   # + cost of elastic+affine inside a U-Net train step

Every case does the same work per sample: a random rotation (15 deg) and scale (0.85-1.15) about the
centre, composed with an elastic field (alpha, sigma), linear resampling of a 1-channel image and
nearest resampling of its label map. The scipy loop is the classic Simard recipe (full-resolution
``gaussian_filter`` of uniform noise + ``map_coordinates``). Results are medians over ``--repeats``,
printed as throughput and as ratios within this one run, and written as JSON (``--json``).
"""

from __future__ import annotations

import json
import platform
import sys

import jax
import scipy

from benchmarks.elastic import ALPHA, SIGMA, run_case, train_step_overhead
from data_pipelines.atomic import write_json
from zoo.cli import command_parser, run_command

__all__ = ["main"]  # the measurements live in benchmarks.elastic


def main(argv=None) -> int:
    """The results (a dict; they are printed, or written to ``--json``), or exit status 2 on bad input."""
    p = command_parser("python -m benchmarks.augment", __doc__)
    p.add_argument("--quick", action="store_true", help="small shapes, one repeat")
    p.add_argument("--size2d", type=int)
    p.add_argument("--batch2d", type=int)
    p.add_argument("--size3d", type=int)
    p.add_argument("--batch3d", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--alpha", type=float, default=ALPHA)
    p.add_argument("--sigma", type=float, default=SIGMA)
    p.add_argument("--controls", default="bspline,gaussian", help="comma-separated elastic control modes")
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--train_step", action="store_true",
                   help="also time a U-Net train step with and without the augmentation inside it")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds for --train_step")
    return run_command(p, argv, _run)


def _run(a) -> None:
    quick = {"size2d": 64, "batch2d": 4, "size3d": 24, "batch3d": 1, "repeats": 1}
    full = {"size2d": 256, "batch2d": 32, "size3d": 128, "batch3d": 2, "repeats": 5}
    for k, v in (quick if a.quick else full).items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    controls = [c.strip() for c in a.controls.split(",") if c.strip()]
    for c in controls:
        if c not in ("bspline", "gaussian"):
            raise ValueError(f"--controls: unknown control {c!r} (bspline | gaussian)")
    result = {"backend": jax.default_backend(), "devices": [str(x) for x in jax.devices()],
              "jax": jax.__version__, "scipy": scipy.__version__, "python": platform.python_version(),
              "2d": run_case(2, a.size2d, a.batch2d, a.repeats, a.alpha, a.sigma, controls),
              "3d": run_case(3, a.size3d, a.batch3d, a.repeats, a.alpha, a.sigma, controls)}
    if a.train_step:
        # The throughput benchmark's U-Net shapes (2D 8 x 128^2, 3D 2 x 64^3; --quick: tiny) and the
        # smoke recipe's U-Net (features 8, depth 3, 8 x 32^2) where the network is cheapest.
        cases = {"2d": (2, 64, 2, None), "3d": (3, 32, 1, None)} if a.quick else \
            {"2d": (2, 128, 8, None), "3d": (3, 64, 2, None), "2d_smoke": (2, 32, 8, {"features": 8, "depth": 3})}
        result["train_step"] = {k: train_step_overhead(d, s, b, a.rounds, a.alpha, a.sigma, kw)
                                for k, (d, s, b, kw) in cases.items()}
        for k, r in result["train_step"].items():
            print(f"train step {k} {r['batch']}x{'x'.join(map(str, r['shape']))}: plain "
                  f"{r['plain_steps_per_s']:.2f} steps/s, with elastic+affine {r['augmented_steps_per_s']:.2f} "
                  f"steps/s -> augmentation adds {100 * r['overhead']:.0f}%")
    for case, unit in (("2d", "images/s"), ("3d", "volumes/s")):
        r = result[case]
        line = f"{case} {r['batch']}x{'x'.join(map(str, r['shape']))}: scipy {r['scipy_per_s']:.1f} {unit}"
        for c in controls:
            line += f" | jax[{c}] {r[f'jax_{c}_per_s']:.1f} ({r[f'ratio_{c}_vs_scipy']:.1f}x scipy"
            line += f", {r[f'ratio_{c}_vs_monai']:.1f}x MONAI)" if "monai_per_s" in r else ")"
            if f"jax_{c}_xla_per_s" in r:
                line += f" [{r['warp_backend']} warp; XLA gathers {r[f'jax_{c}_xla_per_s']:.1f}]"
        if "monai_per_s" in r:
            line += f" | MONAI {r['monai_per_s']:.1f}"
        print(line)
    if a.json:
        write_json(a.json, result)
    else:
        print(json.dumps(result))


if __name__ == "__main__":
    rc = main()
    sys.exit(rc if isinstance(rc, int) else 0)
