"""Name → function tables of the binary-mask metrics and :func:`binary_metrics` (many metrics of one pair)."""

from __future__ import annotations

from scoring import surface as _surface
from scoring._inputs import mask_pair as _pair
from scoring.overlap import CONFUSION_METRICS
from scoring.surface import assd, hausdorff, hd95, surface_dice

__all__ = ["CONFUSION_METRICS", "SURFACE_METRICS", "METRICS", "binary_metrics"]

SURFACE_METRICS = {"hd95": hd95, "hausdorff": hausdorff, "assd": assd, "surface_dice": surface_dice}
METRICS = {**CONFUSION_METRICS, **SURFACE_METRICS}


def binary_metrics(pred, target, metrics=("dice", "jaccard", "accuracy", "sensitivity", "specificity"), *,
                   spacing=None, tolerance: float = 1.0, one_empty_distance: float = float("inf")) -> dict:
    """Several metrics of one binary pair at once (validation done once, surface distances computed once).

    ``tolerance`` goes to ``surface_dice``; ``one_empty_distance`` is what the distance metrics
    return when exactly one mask is empty (e.g. the image diagonal, to keep means finite).
    """
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {sorted(METRICS)}")
    p, t = _pair(pred, target)
    surf = [m for m in metrics if m in SURFACE_METRICS]
    surf_values = (_surface.surface_metrics(p, t, surf, spacing=spacing, tolerance=tolerance,
                                            one_empty_distance=one_empty_distance) if surf else {})
    return {m: surf_values[m] if m in SURFACE_METRICS else METRICS[m](p, t) for m in metrics}
