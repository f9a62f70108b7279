"""BraTS evaluation regions (whole tumour, tumour core, enhancing tumour) of label maps and their metrics."""

from __future__ import annotations

import numpy as np

from scoring._inputs import label_map as _label_map
from scoring.binary import METRICS
from scoring.overlap import check_shapes_jax, dice_jax

__all__ = ["BRATS_REGIONS", "brats_regions", "brats_region_channels", "brats_region_metrics",
           "brats_region_dice_jax"]

#: BraTS evaluation regions for label maps with 1 = necrosis/NCR, 2 = oedema/ED, 3 = enhancing/ET.
BRATS_REGIONS = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}


def brats_regions(label_map) -> dict[str, np.ndarray]:
    """Region masks ``{WT, TC, ET}`` ``[*S]`` of a BraTS label map (labels 0..3, see ``BRATS_REGIONS``)."""
    lab = _label_map(label_map, "label_map", 4)
    return {name: np.isin(lab, labels) for name, labels in BRATS_REGIONS.items()}


def brats_region_channels(label_map) -> np.ndarray:
    """The regions as channels: ``[*S, 3]`` uint8 in the order WT, TC, ET (labels 0..3)."""
    regions = brats_regions(label_map)
    return np.stack([regions[name] for name in BRATS_REGIONS], axis=-1).astype(np.uint8)


def brats_region_metrics(pred, target, *, spacing=None, metrics=("dice", "jaccard", "sensitivity",
                                                                   "specificity", "hd95")) -> dict:
    """``{region: {metric: value}}`` for the BraTS regions WT/TC/ET of two label maps ``[*S]``."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; expected some of {sorted(METRICS)}")
    p, t = brats_regions(pred), brats_regions(target)
    if p["WT"].shape != t["WT"].shape:
        raise ValueError(f"prediction shape {p['WT'].shape} != target shape {t['WT'].shape}")
    return {r: {m: METRICS[m](p[r], t[r], spacing=spacing) for m in metrics} for r in BRATS_REGIONS}


def brats_region_dice_jax(pred, target, empty_value: float = float("nan")):
    """Jittable Dice of the regions ``[WT, TC, ET]`` → ``[3]`` float32 from label maps ``[*S]``."""
    import jax.numpy as jnp

    check_shapes_jax(pred, target)
    out = []
    for labels in BRATS_REGIONS.values():
        lab = jnp.asarray(labels)
        out.append(dice_jax(jnp.isin(pred, lab), jnp.isin(target, lab), empty_value=empty_value))
    return jnp.stack(out)
