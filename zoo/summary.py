"""Model complexity (parameters, FLOPs) and the architecture table of every registered segmentation model.

``python -m zoo.summary`` prints the table as markdown (the table in docs/models.md is its output).
Numbers are for each model's default configuration with 1 input channel and 2 classes, batch 1,
one forward pass in eval mode; FLOPs come from XLA's cost analysis (:func:`count_flops`).
This module sits above the registry (it builds models by name); :mod:`zoo.cards` stays plain data.
"""

from __future__ import annotations

import functools
import sys
from typing import Sequence

import jax
import jax.numpy as jnp

from zoo.cli import command_parser, run_command
from zoo.registry import create_model, get_spec, list_models

__all__ = ["models_table", "format_count", "main", "complexity", "count_params", "count_flops", "size_key"]

SIZES = ((256, 256), (128, 128, 128))


def size_key(size: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in size)


def _abstract_variables(model, x):
    return jax.eval_shape(lambda v: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, v), x)


def count_params(model, input_shape: Sequence[int]) -> int:
    """Number of trainable parameters of ``model`` for inputs ``[B, *S, C] = input_shape`` (nothing is allocated)."""
    variables = _abstract_variables(model, jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32))
    return int(sum(int(p.size) for p in jax.tree.leaves(variables.get("params", {}))))


def count_flops(model, input_shape: Sequence[int]) -> float:
    """FLOPs of one eval-mode forward pass on ``input_shape``, from XLA's HLO cost analysis (no compile, no data).

    Convolutions count 2 FLOPs per multiply-add; element-wise ops, norms and resizes are included. Traced with
    the convolutions in XLA (``kernels.conv.use_onednn(False)``): XLA counts nothing inside a native kernel.
    """
    from kernels import conv

    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    variables = _abstract_variables(model, x)
    with conv.use_onednn(False):
        lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
        cost = cost[0]
    return float(cost["flops"])


@functools.lru_cache(maxsize=None)
def _complexity(name: str, sizes: tuple, in_channels: int, num_classes: int, cfg: tuple) -> dict:
    out = {"params": {}, "flops": {}}
    for size in sizes:
        model = create_model(name, spatial_dims=len(size), in_channels=in_channels, num_classes=num_classes,
                             **dict(cfg))
        shape = (1,) + tuple(size) + (in_channels,)
        out["params"].setdefault(f"{len(size)}D", count_params(model, shape))
        out["flops"][size_key(size)] = count_flops(model, shape)
    return out


def complexity(name: str, sizes: Sequence[Sequence[int]] = SIZES, in_channels: int = 1,
               num_classes: int = 2, **cfg) -> dict:
    """``{"params": {"2D": int, "3D": int}, "flops": {"256x256": float, "128x128x128": float}}`` for a
    registered model built with its defaults plus ``cfg``. Cached per arguments; returns the cached dict."""
    sizes = tuple(tuple(int(s) for s in size) for size in sizes)
    if not sizes or any(len(s) not in (2, 3) for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of 2- or 3-entry spatial sizes, got {sizes!r}")
    return _complexity(name, sizes, int(in_channels), int(num_classes), tuple(sorted(cfg.items())))


def format_count(n: float | None) -> str:
    """``1234567 -> '1.23 M'``; ``None`` -> ``'n/a'``."""
    if n is None:
        return "n/a"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def models_table(names: Sequence[str] | None = None, tasks: Sequence[str] = ("segmentation",),
                 in_channels: int = 1, num_classes: int = 2) -> str:
    """Markdown table: name | params 2D | params 3D | FLOPs @ 256² | FLOPs @ 128³ | summary."""
    if names is None:
        names = [n for n in list_models() if get_spec(n).task in tasks]
    rows = ["| model | params (2D) | params (3D) | FLOPs @ 256² | FLOPs @ 128³ | summary |",
            "|---|---:|---:|---:|---:|---|"]
    for name in names:
        spec = get_spec(name)
        c = complexity(name, SIZES, in_channels=in_channels, num_classes=num_classes)
        summary = spec.summary or (spec.card.summary if spec.card is not None else "")
        rows.append(f"| `{name}` | {format_count(c['params'].get('2D'))} | {format_count(c['params'].get('3D'))} | "
                    f"{format_count(c['flops'].get(size_key(SIZES[0])))} | "
                    f"{format_count(c['flops'].get(size_key(SIZES[1])))} | {summary} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    p = command_parser("python -m zoo.summary", __doc__)
    p.add_argument("--models", default="", help="comma-separated names (default: every segmentation model)")
    p.add_argument("--in_channels", type=int, default=1)
    p.add_argument("--num_classes", type=int, default=2)

    def run(a) -> None:
        names = [n for n in a.models.split(",") if n] or None
        print(f"Default configurations, {a.in_channels} input channel(s), {a.num_classes} classes, batch 1, "
              "eval-mode forward; FLOPs from XLA cost analysis (2 per multiply-add).\n")
        print(models_table(names, in_channels=a.in_channels, num_classes=a.num_classes))

    return run_command(p, argv, run)


if __name__ == "__main__":
    sys.exit(main())
