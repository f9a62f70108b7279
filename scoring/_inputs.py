"""Input checks shared by the scoring modules (private): binary masks, mask pairs, label maps."""

from __future__ import annotations

import numpy as np

__all__ = ["as_mask", "mask_pair", "label_map"]


def as_mask(x, name: str, threshold: float = 0.5) -> np.ndarray:
    """``x`` (bool, integer 0/1 or float probabilities in [0, 1]) as a boolean mask; bad values raise."""
    a = np.asarray(x)
    if a.dtype == bool:
        return a
    if np.issubdtype(a.dtype, np.integer):
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{name} must be a binary mask (0/1); got integer values in "
                             f"[{a.min()}, {a.max()}] (pass a label map to the per-class functions)")
        return a.astype(bool)
    if np.issubdtype(a.dtype, np.floating):
        if np.isnan(a).any():
            raise ValueError(f"{name} contains NaN")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError(f"{name} holds probabilities outside [0, 1] (range [{a.min()}, {a.max()}])")
        return a >= threshold
    raise ValueError(f"{name} must be bool, integer 0/1 or float probabilities; got dtype {a.dtype}")


def mask_pair(pred, target, threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Two checked boolean masks of one shape (non-empty arrays)."""
    p = as_mask(pred, "pred", threshold)
    t = as_mask(target, "target", threshold)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    if p.size == 0:
        raise ValueError(f"pred and target are empty arrays (shape {p.shape})")
    return p, t


def label_map(x, name: str, num_classes: int) -> np.ndarray:
    """``x`` as an int64 label map with values in ``[0, num_classes)``; bad values raise."""
    a = np.asarray(x)
    if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
        if np.issubdtype(a.dtype, np.floating) and np.isnan(a).any():
            raise ValueError(f"{name} contains NaN")
        if not np.all(a == np.round(a)):
            raise ValueError(f"{name} must be an integer label map; got non-integer {a.dtype} values")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= num_classes):
        raise ValueError(f"{name} labels must be in [0, {num_classes - 1}]; got range [{a.min()}, {a.max()}]")
    return a
