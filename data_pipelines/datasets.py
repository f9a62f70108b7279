"""From a data config to in-memory train/val arrays, through the data families.

``load_dataset(cfg)`` returns ``(train, val, info)`` where ``train``/``val`` are dicts of numpy
arrays (``image [N, *S, C] float32``, ``label [N, *S] int32``, ...) and ``info`` is a
``DatasetInfo`` (channels, classes, covariates), from the loader of the data family ``cfg.name``
(:mod:`data_pipelines.families`: generated phantoms, the outcome cohort, BraTS, ISIC/PH2 and generic 2D
image/mask folders, LUNA16-style CT, and any family registered with ``register_family``). Real sources
cache per-case arrays only when ``cfg.cache_dir`` is set (``cache``). ``read_cases(name, data_dir, ...)``
reads a family's cases at full resolution (planning).
"""

from __future__ import annotations

import ml_collections
import numpy as np

from data_pipelines.families import get_family
from data_pipelines.info import DatasetInfo

__all__ = ["DatasetInfo", "load_dataset", "data_config", "read_cases"]


def load_dataset(cfg):
    """``cfg``: the ``data`` section of a training config."""
    family = get_family(cfg.name)
    if family.load is None and family.cohort is not None:
        raise ValueError(f"data family {cfg.name!r} is a tabular cohort (covariates and outcomes, no images): "
                         f"fit it with python -m eval.studies.outcome_report --cohort {cfg.name}")
    if family.load is None:
        raise ValueError(f"data family {cfg.name!r} has no in-memory loader (it opens record sources: "
                         f"data_pipelines.sources.open_sources)")
    family.check_data_dir(cfg)
    train, val, info = family.load(cfg)
    for split, arrays in (("train", train), ("val", val)):
        img = arrays.get("image")
        if img is not None and not np.all(np.isfinite(img)):
            raise ValueError(f"{cfg.name}/{split}: images contain NaN or Inf")
    return train, val, info


def data_config(name: str, data_dir: str, **options) -> ml_collections.ConfigDict:
    """A ``data`` section naming the family ``name`` and ``data_dir``; ``options`` (``None``: unset) are other
    ``data`` fields (``modalities``, ``mask_foreground``, ``allow_unpaired``, ``hu_window``...)."""
    return ml_collections.ConfigDict({"name": name, "data_dir": data_dir,
                                      **{k: v for k, v in options.items() if v is not None}})


def read_cases(name: str, data_dir: str, **options):
    """``(cases, channel_names, class_names)``: every case of the family ``name`` in ``data_dir`` at full
    resolution (``DataFamily.read_cases``; ``options`` as in :func:`data_config`)."""
    return get_family(name).all_cases(data_config(name, data_dir, **options))
