"""The one registry from a data config to in-memory train/val arrays.

``load_dataset(cfg)`` returns ``(train, val, info)`` where ``train``/``val`` are dicts of numpy
arrays (``image [N, *S, C] float32``, ``label [N, *S] int32``, ...) and ``info`` is a
``DatasetInfo`` (channels, classes, covariates). Each data source lives in its own module and
knows nothing of this registry: generated phantoms (``phantoms``), the outcome cohort
(``outcome_data``; adds ``covariates`` and ``outcome``), and real data read from ``cfg.data_dir``:
BraTS (``brats``), ISIC/PH2 and generic 2D image/mask folders (``image_folders``), LUNA16-style CT
(``ct``). Real sources cache per-case arrays only when ``cfg.cache_dir`` is set (``cache``).
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines.brats import load_brats
from data_pipelines.ct import load_luna16
from data_pipelines.image_folders import load_folder, load_isic
from data_pipelines.info import DatasetInfo
from data_pipelines.outcome_data import load_outcome_phantoms
from data_pipelines.phantoms import load_phantoms

__all__ = ["DatasetInfo", "load_dataset", "DATASETS"]

DATASETS = {"phantoms": load_phantoms, "outcome_phantoms": load_outcome_phantoms, "brats": load_brats,
            "isic": load_isic, "luna16": load_luna16, "folder": load_folder}
_GENERATED = ("phantoms", "outcome_phantoms")  # no data_dir


def load_dataset(cfg):
    """``cfg``: the ``data`` section of a training config."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; expected one of {sorted(DATASETS)}")
    if cfg.name not in _GENERATED:
        if not cfg.data_dir:
            raise ValueError(f"dataset {cfg.name!r} needs --data_dir")
        if not os.path.isdir(cfg.data_dir):
            raise ValueError(f"data_dir {cfg.data_dir!r} does not exist or is not a directory")
    train, val, info = DATASETS[cfg.name](cfg)
    for split, arrays in (("train", train), ("val", val)):
        img = arrays["image"]
        if not np.all(np.isfinite(img)):
            raise ValueError(f"{cfg.name}/{split}: images contain NaN or Inf")
    return train, val, info
