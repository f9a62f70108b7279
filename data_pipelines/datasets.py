"""One entry point from a data config to in-memory train/val arrays.

``load_dataset(cfg)`` returns ``(train, val, info)`` where ``train``/``val`` are dicts of numpy
arrays (``image [N, *S, C] float32``, ``label [N, *S] int32``, ...) and ``info`` describes
channels and classes. Real data sets are read from ``cfg.data_dir``; phantoms are generated.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines import phantoms

__all__ = ["DatasetInfo", "load_dataset", "DATASETS"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    channel_names: tuple[str, ...]
    class_names: tuple[str, ...]
    spatial_dims: int

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)


def _load_phantoms(cfg):
    size = tuple(int(s) for s in cfg.image_size)
    if len(size) != cfg.spatial_dims:
        raise ValueError(f"data.image_size {size} does not have data.spatial_dims={cfg.spatial_dims} entries")
    pc = phantoms.PhantomConfig(kind=cfg.kind, shape=size, channels=cfg.channels or None, seed=cfg.seed)
    train = phantoms.PhantomSource(pc, cfg.num_train, offset=0).arrays()
    val = phantoms.PhantomSource(pc, cfg.num_val, offset=cfg.num_train).arrays()
    info = DatasetInfo(f"phantoms/{cfg.kind}", pc.num_classes,
                       phantoms.CHANNEL_NAMES[cfg.kind][:pc.num_channels], phantoms.CLASS_NAMES[cfg.kind],
                       cfg.spatial_dims)
    return train, val, info


DATASETS = {"phantoms": _load_phantoms}

# Real data sets read from cfg.data_dir (data_pipelines.real): BraTS, ISIC/PH2, LUNA16-style CT,
# and generic 2D image/mask folders.
from data_pipelines import real as _real  # noqa: E402

DATASETS.update(_real.DATASETS)


def load_dataset(cfg):
    """``cfg``: the ``data`` section of a training config."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; expected one of {sorted(DATASETS)}")
    if cfg.name != "phantoms":
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
