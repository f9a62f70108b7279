"""Shared pieces of the TFDS builders: feature helpers, a safe ``prepare`` and ``load``.

The builders write ``array_record`` and need no TensorFlow: encoding/decoding of ``Tensor``
features is numpy-only and reading goes through ``tfds.data_source`` (random access, usable as a
grain data source).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import tensorflow_datasets as tfds

__all__ = ["volume", "scalar", "geometry_features", "prepare", "load", "FILE_FORMAT", "ArrayRecordByDefault"]

FILE_FORMAT = "array_record"


class ArrayRecordByDefault:
    """Mixin: write array_record unless told otherwise (TFDS's default, tfrecord, needs TensorFlow)."""

    def __init__(self, *args, file_format=None, **kwargs):
        super().__init__(*args, file_format=file_format or FILE_FORMAT, **kwargs)


def volume(ndim: int, dtype, last: int | None = None):
    """A variable-shape array feature (zlib-compressed bytes: numpy only, any number of unknown dims)."""
    shape = (None,) * ndim + (() if last is None else (last,))
    return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.ZLIB)


def scalar(dtype):
    return tfds.features.Tensor(shape=(), dtype=dtype)


def geometry_features(nd: int = 3) -> dict:
    """``spacing`` (mm), ``origin`` (mm, LPS), ``direction`` (row-major ``[nd*nd]``)."""
    return {"spacing": tfds.features.Tensor(shape=(nd,), dtype=np.float32),
            "origin": tfds.features.Tensor(shape=(nd,), dtype=np.float32),
            "direction": tfds.features.Tensor(shape=(nd * nd,), dtype=np.float32)}


def geometry_values(meta) -> dict:
    return {"spacing": np.asarray(meta.spacing, np.float32), "origin": np.asarray(meta.origin, np.float32),
            "direction": np.asarray(meta.direction, np.float32).reshape(-1)}


def _snapshot(root: str) -> set[str]:
    if not os.path.isdir(root):
        return set()
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        out.add(dirpath)
        out.update(os.path.join(dirpath, f) for f in filenames)
    return out


def prepare(name: str, data_dir: str, manual_dir: str | None = None, config=None, **kwargs):
    """Build data set ``name`` (``config``: a config name or a BuilderConfig) into ``data_dir``.

    Returns the prepared builder. On any error nothing this call wrote is left behind in
    ``data_dir`` (TFDS writes into an ``incomplete.*`` folder; the folders and metadata files it
    created around it are removed here), and the original ``ValueError`` propagates.
    """
    # The builders are registered: importing this module ran data_pipelines.tfds_builders/__init__.py,
    # which imports every builder module.
    if manual_dir is not None and not os.path.isdir(manual_dir):
        raise ValueError(f"manual_dir {manual_dir!r} is not a directory")
    data_dir = os.fspath(data_dir)
    before = _snapshot(data_dir)
    existed = os.path.isdir(data_dir)
    cls = tfds.builder_cls(name)
    builder = cls(data_dir=data_dir, config=config, file_format=FILE_FORMAT, **kwargs)
    dl = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir is not None else None
    try:
        builder.download_and_prepare(download_config=dl)
    except BaseException:
        created = sorted(_snapshot(data_dir) - before, key=len, reverse=True)
        for p in created:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.remove(p)
        if not existed and os.path.isdir(data_dir) and not os.listdir(data_dir):
            os.rmdir(data_dir)
        raise
    return builder


def load(path_or_builder, split: str = "train"):
    """Random-access source of a prepared split: a builder, or the folder
    ``<data_dir>/<name>/<config>/<version>`` (no builder class needed)."""
    if isinstance(path_or_builder, (str, os.PathLike)):
        builder = tfds.builder_from_directory(os.fspath(path_or_builder))
    else:
        builder = path_or_builder
    return builder.as_data_source(split=split)
