"""The ``tfds`` data family: a prepared TFDS array_record data set read record by record from disk.

``data.data_dir`` is the prepared folder ``<data_dir>/<builder>/<config>/<version>``
(``data_pipelines.tfds_builders.prepare`` writes it); splits ``data.train_split`` / ``data.val_split``
(default ``train`` / ``val``). A data set larger than memory trains, because nothing is loaded up front.
Records of 8-bit images reach the trainer divided by 255 (``data_pipelines.loader.to_batch_dict``), which the
run records as its intensity scaling (``{"kind": "unit_range"}``); other images as stored (``{"kind": "none"}``).
"""

from __future__ import annotations

import os

import numpy as np

from data_pipelines.info import DatasetInfo

__all__ = ["tfds_info", "open_tfds"]


def tfds_info(builder, first_record, class_names=(), channel_names=()) -> DatasetInfo:
    """:class:`DatasetInfo` of a prepared TFDS builder: shapes from ``first_record``, names from ``class_names``
    / ``channel_names`` when given, else from the builder's metadata (``class_names``, ``channel_names``)."""
    if "image" not in first_record or "label" not in first_record:
        raise ValueError(f"TFDS data set {builder.info.full_name} needs 'image' and 'label' features, "
                         f"has {sorted(first_record)}")
    shape = tuple(np.shape(first_record["image"]))
    meta = dict(builder.info.metadata or {})
    classes = tuple(class_names) or tuple(meta.get("class_names", ()))
    if len(classes) < 2:
        raise ValueError(f"TFDS data set {builder.info.full_name} does not name its classes (no 'class_names' "
                         f"metadata): set --config.data.class_names='(\"background\", \"lesion\")'")
    channels = tuple(channel_names) or tuple(meta.get("channel_names", ())) or tuple(
        f"channel{i}" for i in range(shape[-1]))
    if len(channels) != shape[-1]:
        raise ValueError(f"{len(channels)} channel names {channels} for images with {shape[-1]} channels")
    scaling = {"kind": "unit_range" if np.asarray(first_record["image"]).dtype == np.uint8 else "none"}
    return DatasetInfo(name=f"tfds/{builder.info.full_name}", num_classes=len(classes), channel_names=channels,
                       class_names=classes, spatial_dims=len(shape) - 1, extra={"intensity_scaling": scaling})


def open_tfds(cfg):
    """``(train_source, val_source, info)`` of the prepared TFDS data set ``cfg.data_dir``."""
    import tensorflow_datasets as tfds

    path = cfg.get("data_dir", "")
    if not path or not os.path.isdir(path):
        raise ValueError(f"data.name='tfds' needs data.data_dir, the prepared folder <data_dir>/<name>/<config>/"
                         f"<version>; got {path!r}")
    try:
        builder = tfds.builder_from_directory(os.fspath(path))
    except Exception as e:  # TFDS raises several types for a folder that holds no prepared data set
        raise ValueError(f"data.data_dir {path!r} is not a prepared TFDS data set ({type(e).__name__}: {e})") \
            from None
    splits = {}
    for role in ("train", "val"):
        split = cfg.get(f"{role}_split", role)
        if split not in builder.info.splits:
            raise ValueError(f"TFDS data set {builder.info.full_name} has no split {split!r} "
                             f"(splits: {sorted(builder.info.splits)})")
        splits[role] = builder.as_data_source(split=split)
    info = tfds_info(builder, splits["train"][0], cfg.get("class_names", ()), cfg.get("channel_names", ()))
    return splits["train"], splits["val"], info
