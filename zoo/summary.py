"""The architecture table: every registered segmentation model with its parameters and FLOPs.

``python -m zoo.summary`` prints it as markdown (the table in docs/models.md is its output).
Numbers are for each model's default configuration with 1 input channel and 2 classes, batch 1,
one forward pass in eval mode; FLOPs come from XLA's cost analysis (:func:`zoo.cards.count_flops`).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from zoo.cards import complexity, size_key
from zoo.registry import get_spec, list_models

__all__ = ["models_table", "format_count", "main"]

SIZES = ((256, 256), (128, 128, 128))


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
    p = argparse.ArgumentParser(prog="python -m zoo.summary", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="", help="comma-separated names (default: every segmentation model)")
    p.add_argument("--in_channels", type=int, default=1)
    p.add_argument("--num_classes", type=int, default=2)
    a = p.parse_args(argv)
    try:
        names = [n for n in a.models.split(",") if n] or None
        print(f"Default configurations, {a.in_channels} input channel(s), {a.num_classes} classes, batch 1, "
              "eval-mode forward; FLOPs from XLA cost analysis (2 per multiply-add).\n")
        print(models_table(names, in_channels=a.in_channels, num_classes=a.num_classes))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
