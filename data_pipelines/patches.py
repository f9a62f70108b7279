"""Random patches of preprocessed cases, with nnU-Net's foreground oversampling, as a random-access source.

``PatchSource(cases, patch_size, samples_per_epoch=N)`` has ``len`` N and record ``i`` is a pure function of
``(seed, i)``, so grain (``loader.make_batch_dataset`` / ``zoo.training.data.TrainBatches``) reads it like any
other source, resumably and identically on every host.

Record ``i`` (``n`` cases, round ``r = i // n``):

* comes from case ``i % n`` (every case equally often);
* is **foreground-centred** when ``floor((r + 1) * p) > floor(r * p)`` with ``p = oversample_foreground``: an
  exact, evenly spread ``p`` of each case's records (``floor(R * p)`` of its first ``R``), nnU-Net's "a third
  of the batch" decided per index instead of per batch position. Such a patch is centred on a labelled voxel:
  a foreground class drawn uniformly among the case's classes, then one of its voxels (nnU-Net's rule); near
  the border the patch is shifted to stay inside the (padded) case, so it still contains that voxel. A case
  without foreground gives a random patch;
* otherwise the patch's corner is uniform over the positions inside the (padded) case.

Cases smaller than the patch along an axis are padded symmetrically (``pad_value`` for the image, 0 for label
maps). ``len(patch_size) == D - 1`` for ``D``-dimensional cases draws 2D patches of volumes: a slice across the
last axis (the ``preprocessing`` convention: ``array[:, :, z]``), chosen as above, then a 2D patch of it.

Records: ``image [*P, C] float32``, ``label [*P] int32``, every other per-voxel array of the case
(``instances``, ``regions``...) cut the same way, the case's ``patient_id``, ``case_index``, ``corner`` (the
patch's first voxel in the case's unpadded coordinates, may be negative) and ``foreground`` (1 when the
record was drawn foreground-centred).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["PatchSource", "is_foreground_index"]


def is_foreground_index(i: int, num_cases: int, oversample_foreground: float) -> bool:
    """Whether record ``i`` is drawn centred on foreground (the per-index rule of the module docstring)."""
    r = int(i) // int(num_cases)
    p = float(oversample_foreground)
    return int(np.floor((r + 1) * p + 1e-9)) > int(np.floor(r * p + 1e-9))


class PatchSource:
    """Random-access source of patches (``len`` + ``[i]`` -> record dict); see the module docstring."""

    def __init__(self, cases: list[dict], patch_size: Sequence[int], *, samples_per_epoch: int,
                 oversample_foreground: float = 1 / 3, seed: int = 0, pad_value=0.0):
        if not cases:
            raise ValueError("PatchSource: no cases")
        self.patch_size = tuple(int(p) for p in patch_size)
        if not self.patch_size or any(p < 1 for p in self.patch_size):
            raise ValueError(f"PatchSource: patch_size must be positive sizes, got {tuple(patch_size)}")
        if int(samples_per_epoch) < 1:
            raise ValueError(f"PatchSource: samples_per_epoch must be >= 1, got {samples_per_epoch}")
        p = float(oversample_foreground)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"PatchSource: oversample_foreground must be in [0, 1], got {oversample_foreground}")
        self.samples_per_epoch, self.oversample_foreground = int(samples_per_epoch), p
        self.seed, self.pad_value = int(seed), float(pad_value)
        self.cases = list(cases)
        self._spatial = None
        self._fg = []  # per case: [(class, flat indices of its voxels)] for each foreground class present
        for k, case in enumerate(self.cases):
            if "image" not in case or "label" not in case:
                raise ValueError(f"PatchSource: case {k} needs 'image' and 'label', has {sorted(case)}")
            image, label = np.asarray(case["image"]), np.asarray(case["label"])
            if image.shape[:-1] != label.shape:
                raise ValueError(f"PatchSource: case {k} image {image.shape} is not [*S, C] over label {label.shape}")
            if self._spatial is None:
                self._spatial, self._channels = label.ndim, image.shape[-1]
            elif label.ndim != self._spatial or image.shape[-1] != self._channels:
                raise ValueError(f"PatchSource: case {k} is {label.ndim}D with {image.shape[-1]} channels, case 0 "
                                 f"is {self._spatial}D with {self._channels}")
            flat = label.reshape(-1)
            fg = np.flatnonzero(flat > 0)
            vals = flat[fg]
            order = np.argsort(vals, kind="stable")
            fg, vals = fg[order], vals[order]
            classes, starts = np.unique(vals, return_index=True)
            bounds = list(starts) + [len(vals)]
            self._fg.append([(int(c), fg[bounds[j]:bounds[j + 1]]) for j, c in enumerate(classes)])
        if len(self.patch_size) not in (self._spatial, self._spatial - 1):
            raise ValueError(f"PatchSource: patch_size {self.patch_size} for {self._spatial}D cases needs "
                             f"{self._spatial} entries (or {self._spatial - 1}: 2D patches of volumes)")
        self._slices = len(self.patch_size) == self._spatial - 1
        self._full_patch = self.patch_size + ((1,) if self._slices else ())

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __repr__(self):
        return (f"PatchSource(cases={len(self.cases)}, patch_size={self.patch_size}, "
                f"samples_per_epoch={self.samples_per_epoch}, oversample_foreground={self.oversample_foreground})")

    def __getitem__(self, i) -> dict:
        i = int(i)
        if not 0 <= i < self.samples_per_epoch:
            raise IndexError(i)
        k = i % len(self.cases)
        case = self.cases[k]
        label = np.asarray(case["label"])
        shape = label.shape
        patch = self._full_patch
        rng = np.random.default_rng([self.seed, i])
        # padded extent: the case centred in max(shape, patch)
        pad_lo = [max(p - s, 0) // 2 for s, p in zip(shape, patch)]
        hi_corner = [max(s - p, 0) for s, p in zip(shape, patch)]  # in padded coordinates
        fg = is_foreground_index(i, len(self.cases), self.oversample_foreground) and bool(self._fg[k])
        if fg:
            _, voxels = self._fg[k][int(rng.integers(len(self._fg[k])))]
            v = np.unravel_index(int(voxels[int(rng.integers(len(voxels)))]), shape)
            corner = [int(np.clip(v[a] + pad_lo[a] - patch[a] // 2, 0, hi_corner[a])) for a in range(len(shape))]
        else:
            corner = [int(rng.integers(0, h + 1)) for h in hi_corner]
        start = [c - lo for c, lo in zip(corner, pad_lo)]  # in the case's own coordinates
        rec = {}
        for key, value in case.items():
            arr = np.asarray(value) if not isinstance(value, str) else value
            if isinstance(arr, np.ndarray) and arr.shape[:len(shape)] == shape and arr.ndim >= len(shape):
                fill = self.pad_value if key == "image" else 0
                out = _cut(arr, start, patch, fill)
                if self._slices:
                    out = np.take(out, 0, axis=len(shape) - 1)
                rec[key] = out.astype(np.float32) if key == "image" else out.astype(
                    np.int32 if key == "label" else arr.dtype)
            elif isinstance(value, (str, int, float, np.integer, np.floating)):
                rec[key] = value  # patient_id and other per-case scalars
        rec["case_index"] = np.int32(k)
        rec["corner"] = np.asarray(start, np.int32)
        rec["foreground"] = np.int32(fg)
        return rec


def _cut(arr: np.ndarray, start, size, fill) -> np.ndarray:
    """``arr[start : start + size]`` on the leading axes, filled with ``fill`` where it leaves the array."""
    nd = len(size)
    out = np.full(tuple(size) + arr.shape[nd:], fill, arr.dtype)
    src, dst = [], []
    for a in range(nd):
        lo, hi = max(start[a], 0), min(start[a] + size[a], arr.shape[a])
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(lo - start[a], lo - start[a] + max(hi - lo, 0)))
    out[tuple(dst)] = arr[tuple(src)]
    return out
