"""HD95 and surface Dice on a CT-sized pair: scoring against MONAI and DeepMind's surface-distance, one run.

``python -m benchmarks.metrics [--shape 512,512,128] [--radius 10] [--spacing 0.7,0.7,2.5] [--repeats 5]
[--peers monai,surface_distance] [--out DIR]`` builds one prediction/reference pair: a small ellipsoidal
structure (``--radius`` voxels in-plane, a lesion or a small organ) and a shifted, slightly smaller
prediction, in a ``--shape`` volume with ``--spacing`` mm. It times, with ``benchmarks.common.time_calls``
(one untimed call, then the median of ``--repeats``; inputs prepared outside the timed region):

* ``hd95`` and ``surface_dice`` (at ``--tolerance`` mm) each on its own, and
* ``both``: HD95 and surface Dice of the pair the way each library offers it: one
  ``scoring.surface_metrics`` call (one distance computation), surface-distance's
  ``compute_surface_distances`` once and its two reductions, MONAI's two calls (MONAI has no shared step).

Peers are optional (``pip install -e ".[metrics-peers]"``); one that cannot be imported is skipped with the
reason. ``ratio`` is the peer's time over scoring's for the same column (> 1: scoring is faster). The values
are printed too: they differ by convention, not by error (MONAI's HD95 is the larger of the two directed
95th percentiles, surface-distance weights surface elements by area; scoring pools both directions as MedPy
does), and surface Dice agrees with MONAI's. Writes ``results.json`` and ``results.md`` into ``--out``.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from benchmarks.common import time_calls
from data_pipelines.atomic import write_json, write_text
from zoo.cli import command_parser, run_command

__all__ = ["make_pair", "run", "main"]

PEERS = ("monai", "surface_distance")


def make_pair(shape, radius: float, spacing) -> tuple[np.ndarray, np.ndarray]:
    """``(prediction, reference)`` bool ``[*shape]``: an ellipsoid of ``radius`` mm-scaled voxels and a
    shifted, smaller copy (one voxel-ish disagreement all round)."""
    centre = np.asarray(shape, np.float64) * np.asarray([0.4, 0.55, 0.5][:len(shape)])
    sp = np.asarray(spacing, np.float64)
    grids = np.ogrid[tuple(slice(0, s) for s in shape)]
    scale = sp / sp.min()  # the structure is round in millimetres
    ref = sum(((g - c) * f) ** 2 for g, c, f in zip(grids, centre, scale)) < radius ** 2
    shift = np.asarray([2, -1, 1][:len(shape)])
    pred = sum(((g - c - s) * f) ** 2 for g, c, s, f in zip(grids, centre, shift, scale)) < (0.9 * radius) ** 2
    return pred, ref


def _ours(pred, ref, spacing, tolerance):
    import scoring

    return {
        "hd95": lambda: scoring.hd95(pred, ref, spacing=spacing),
        "surface_dice": lambda: scoring.surface_dice(pred, ref, spacing=spacing, tolerance=tolerance),
        "both": lambda: tuple(scoring.surface_metrics(pred, ref, ("hd95", "surface_dice"), spacing=spacing,
                                                      tolerance=tolerance).values()),
    }


def _surface_distance(pred, ref, spacing, tolerance):
    import surface_distance as sd

    def both():
        d = sd.compute_surface_distances(ref, pred, spacing)
        return sd.compute_robust_hausdorff(d, 95), sd.compute_surface_dice_at_tolerance(d, tolerance)

    return {
        "hd95": lambda: sd.compute_robust_hausdorff(sd.compute_surface_distances(ref, pred, spacing), 95),
        "surface_dice": lambda: sd.compute_surface_dice_at_tolerance(
            sd.compute_surface_distances(ref, pred, spacing), tolerance),
        "both": both,
    }


def _monai(pred, ref, spacing, tolerance):
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    p, t = torch.from_numpy(pred[None, None]), torch.from_numpy(ref[None, None])
    sp = list(spacing)

    def hd95():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(compute_hausdorff_distance(p, t, include_background=True, percentile=95, spacing=sp))

    def sdice():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(compute_surface_dice(p, t, class_thresholds=[tolerance], include_background=True,
                                              spacing=sp))

    return {"hd95": hd95, "surface_dice": sdice, "both": lambda: (hd95(), sdice())}


_BUILDERS = {"scoring": _ours, "monai": _monai, "surface_distance": _surface_distance}
COLUMNS = ("hd95", "surface_dice", "both")


def _value(x) -> list[float]:
    return [float(v) for v in (x if isinstance(x, tuple) else (x,))]


def run(shape, radius, spacing, tolerance, peers, repeats) -> dict:
    """Time every implementation on one pair → ``{"config", "results": [row per implementation]}``."""
    pred, ref = make_pair(shape, radius, spacing)
    config = {"shape": list(shape), "radius_vox": radius, "spacing_mm": list(spacing), "tolerance_mm": tolerance,
              "ref_voxels": int(ref.sum()), "pred_voxels": int(pred.sum()), "repeats": repeats}
    rows = []
    for name in ("scoring", *peers):
        row = {"implementation": name}
        try:
            fns = _BUILDERS[name](pred, ref, tuple(spacing), tolerance)
        except ImportError as e:
            row["status"] = f"skipped: not importable ({e}); pip install -e '.[metrics-peers]'"
            rows.append(row)
            continue
        row["status"] = "ok"
        for col in COLUMNS:
            t = time_calls(fns[col], warmup=1, repeats=repeats, sync=lambda r: r)
            row[f"{col}_s"] = t["median_s"]
            row[f"{col}_value"] = _value(t["last"])
        rows.append(row)
    ours = rows[0]
    for row in rows[1:]:
        if row["status"] == "ok":
            for col in COLUMNS:
                row[f"{col}_ratio"] = row[f"{col}_s"] / ours[f"{col}_s"]
    return {"config": config, "results": rows}


def markdown(result: dict) -> str:
    c = result["config"]
    lines = [f"HD95 + surface Dice (tol {c['tolerance_mm']} mm) on a {'x'.join(map(str, c['shape']))} pair, "
             f"spacing {c['spacing_mm']} mm, reference {c['ref_voxels']} voxels, prediction {c['pred_voxels']}; "
             f"median of {c['repeats']} (ratio: peer time / scoring time).", "",
             "| implementation | hd95 s | surface_dice s | both s | ratio hd95 | ratio surface_dice | ratio both "
             "| HD95 value (mm) | surface Dice value |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        if r["status"] != "ok":
            lines.append(f"| {r['implementation']} | {r['status']} | | | | | | | |")
            continue
        ratios = [f"{r[c + '_ratio']:.1f}x" if c + "_ratio" in r else "1x" for c in COLUMNS]
        lines.append(f"| {r['implementation']} | {r['hd95_s']:.4f} | {r['surface_dice_s']:.4f} | {r['both_s']:.4f} | "
                     f"{' | '.join(ratios)} | {r['hd95_value'][0]:.4f} | {r['surface_dice_value'][0]:.4f} |")
    return "\n".join(lines) + "\n"


def _floats(text: str, flag: str, n: int | None = None, kind=float) -> tuple:
    try:
        v = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated numbers, got {text!r}") from None
    if (n is not None and len(v) != n) or not v or min(v) <= 0:
        raise ValueError(f"{flag} expects {n or 'some'} positive values, got {text!r}")
    return v


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.metrics", __doc__, out="output folder (default workdirs/bench-metrics)",
                       out_default=os.path.join("workdirs", "bench-metrics"))
    p.add_argument("--shape", default="512,512,128")
    p.add_argument("--radius", type=float, default=10.0, help="structure radius in voxels of the finest axis")
    p.add_argument("--spacing", default="0.7,0.7,2.5", help="mm per axis")
    p.add_argument("--tolerance", type=float, default=1.0, help="surface Dice tolerance, mm")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)} "
                                                            "(empty: scoring only)")
    return run_command(p, argv, _run)


def _run(args) -> int:
    shape = _floats(args.shape, "--shape", kind=int)
    spacing = _floats(args.spacing, "--spacing", len(shape))
    peers = tuple(x.strip() for x in args.peers.split(",") if x.strip())
    unknown = [x for x in peers if x not in PEERS]
    if unknown:
        raise ValueError(f"--peers: unknown {unknown}; expected some of {list(PEERS)}")
    if args.repeats < 1 or args.radius <= 0 or args.tolerance < 0:
        raise ValueError(f"need --repeats >= 1, --radius > 0, --tolerance >= 0; got {args.repeats}, "
                         f"{args.radius}, {args.tolerance}")
    if "surface_distance" in peers and len(shape) not in (2, 3):
        raise ValueError("surface-distance needs a 2D or 3D --shape")
    result = run(shape, args.radius, spacing, args.tolerance, peers, args.repeats)
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "results.json"), result)
    md = markdown(result)
    write_text(os.path.join(args.out, "results.md"), md)
    print(md, end="")
    for r in result["results"]:
        if r["status"] != "ok":
            print(f"{r['implementation']}: {r['status']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
