"""Where a run's records come from: ``open_sources(data_cfg) -> (train, val, info)``.

Every data set reaches the trainer as two random-access sources of records (``len`` + ``[i]`` -> dict),
consumed through grain (:func:`data_pipelines.loader.make_batch_dataset`):

* ``data.name = "tfds"``: a prepared TFDS array_record data set, read record by record from disk, so a data
  set larger than memory trains. ``data.data_dir`` is the prepared folder
  ``<data_dir>/<builder>/<config>/<version>`` (``data_pipelines.tfds_builders.prepare`` writes it);
  splits ``data.train_split`` / ``data.val_split`` (default ``train`` / ``val``).
* every other name (phantoms, BraTS, image/mask folders, CT, the outcome cohort): the arrays of
  ``data_pipelines.datasets.load_dataset`` behind an :class:`~data_pipelines.loader.ArraysSource`.
* patch training (``data.patch_size`` non-empty or ``data.plan`` a plan file; phantoms, brats, isic, folder,
  luna16): the cases at full resolution, split by patient, preprocessed with a :class:`~data_pipelines.
  planning.Plan` (``data.plan``, or made from the training cases' fingerprint with ``data.modality``,
  ``data.spatial_dims``, ``data.memory_budget``, ``data.denoise``, ``data.n4``, ``data.crop``; a non-empty
  ``data.patch_size`` replaces the plan's patch), behind :class:`~data_pipelines.patches.PatchSource`s:
  train ``data.samples_per_epoch`` random patches with ``data.oversample_foreground``, val a fixed set of
  ``data.val_samples`` patches (0: two per case, one random and one foreground-centred). The plan goes to the
  run as ``info.extra["plan"]`` (a dict; ``Plan.from_dict`` reads it back). ``data.image_size`` is then only
  the phantoms' generated size (real cases keep their own, at the plan's spacing).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines import planning
from data_pipelines.cases import check_channels, split_cases
from data_pipelines.datasets import load_dataset
from data_pipelines.info import DatasetInfo
from data_pipelines.loader import ArraysSource
from data_pipelines.patches import PatchSource
from data_pipelines.phantoms import load_phantoms
from data_pipelines.readers import ImageMeta

__all__ = ["open_sources", "tfds_info", "wants_patches", "plan_for"]


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
    return DatasetInfo(name=f"tfds/{builder.info.full_name}", num_classes=len(classes), channel_names=channels,
                       class_names=classes, spatial_dims=len(shape) - 1)


def _open_tfds(cfg):
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


_PATCH_DATASETS = ("phantoms", "brats", "isic", "folder", "luna16")
_PHANTOM_MODALITY = {"brain": "MR", "lung": "CT", "skin": "RGB"}


def wants_patches(cfg) -> bool:
    """Whether a ``data`` section asks for patch training (``patch_size`` non-empty or a ``plan`` file)."""
    return bool(tuple(cfg.get("patch_size", ()) or ())) or bool(cfg.get("plan", "") or "")


def _optional(cfg, key, choices):
    value = cfg.get(key, None) or None  # "" and None: off
    if value not in choices:
        raise ValueError(f"data.{key} must be one of {[c for c in choices if c]} or empty, got {value!r}")
    return value


def _full_cases(cfg):
    """``(train_cases, val_cases, info)``: ``{"patient_id", "image", "label", "meta"}`` at full resolution."""
    if cfg.name == "phantoms":
        train, val, info = load_phantoms(cfg)
        nd = int(cfg.spatial_dims)
        meta = ImageMeta((1.0,) * nd, (0.0,) * nd, tuple(tuple(float(i == j) for j in range(nd)) for i in range(nd)),
                         "", "phantom")

        def cases(arrays):
            return [{"patient_id": arrays["patient_id"][i], "image": arrays["image"][i], "label": arrays["label"][i],
                     "meta": meta} for i in range(len(arrays["image"]))]

        return cases(train), cases(val), info
    cases, channel_names, class_names = planning.read_cases(
        cfg.name, cfg.get("data_dir", ""), modalities=cfg.get("modalities", None),
        mask_foreground=cfg.get("mask_foreground", "nonzero") or "nonzero",
        allow_unpaired=bool(cfg.get("allow_unpaired", False)))
    n = check_channels(cfg, channel_names)
    for c in cases:
        c["image"] = np.ascontiguousarray(c["image"][..., :n], dtype=np.float32)
    train_ids, val_ids = split_cases([c["patient_id"] for c in cases], cfg)
    by_id = {c["patient_id"]: c for c in cases}
    info = DatasetInfo(cfg.name, len(class_names), tuple(channel_names[:n]), tuple(class_names),
                       int(cfg.spatial_dims))
    return [by_id[p] for p in train_ids], [by_id[p] for p in val_ids], info


def plan_for(cfg, train_cases, channel_names) -> planning.Plan:
    """The run's plan: ``data.plan`` when set, else made from the training cases' fingerprint; a non-empty
    ``data.patch_size`` replaces its patch size."""
    nd = int(cfg.spatial_dims)
    path = cfg.get("plan", "") or ""
    if path:
        plan = planning.Plan.load(path)
    else:
        fp = planning.fingerprint((c["image"], c["label"], c["meta"]) for c in train_cases)
        modality = cfg.get("modality", "") or (_PHANTOM_MODALITY[cfg.kind] if cfg.name == "phantoms"
                                               else planning.DATASET_MODALITY[cfg.name])
        budget = int(cfg.get("memory_budget", 0) or 0) or None
        plan = planning.make_plan(fp, modality=modality, spatial_dims=nd, memory_budget=budget,
                                  channel_names=channel_names,
                                  denoise=_optional(cfg, "denoise", planning.DENOISERS),
                                  n4=bool(cfg.get("n4", False)), crop=_optional(cfg, "crop", planning.CROPS))
    if plan.spatial_dims != nd:
        raise ValueError(f"data.plan {path} is {plan.spatial_dims}D but data.spatial_dims={nd}")
    if plan.num_channels != len(channel_names):
        raise ValueError(f"data.plan {path} normalises {plan.num_channels} channels, the data have "
                         f"{len(channel_names)} {tuple(channel_names)}")
    patch = tuple(int(p) for p in (cfg.get("patch_size", ()) or ()))
    if patch:
        if len(patch) != nd or any(p < 1 for p in patch):
            raise ValueError(f"data.patch_size {patch} must be {nd} positive sizes (data.spatial_dims={nd})")
        plan = dataclasses.replace(plan, patch_size=patch)
    return plan


def _open_patches(cfg):
    if cfg.name not in _PATCH_DATASETS:
        raise ValueError(f"patch training (data.patch_size / data.plan) supports data.name in {_PATCH_DATASETS}, "
                         f"got {cfg.name!r}")
    train_cases, val_cases, info = _full_cases(cfg)
    if not train_cases or not val_cases:
        raise ValueError(f"{cfg.name}: {len(train_cases)} training and {len(val_cases)} validation cases; "
                         f"patch training needs at least one of each (data.val_fraction)")
    plan = plan_for(cfg, train_cases, info.channel_names)

    def prepare(cases):
        out = []
        for c in cases:
            x, ctx = planning.preprocess_case(c["image"], c["meta"], plan)
            y = planning.preprocess_label(c["label"], c["meta"], plan, ctx)
            out.append({"patient_id": c["patient_id"], "image": x, "label": y})
        return out

    seed = int(cfg.get("seed", 0))
    samples = int(cfg.get("samples_per_epoch", 512) or 512)
    val_n = int(cfg.get("val_samples", 0) or 0) or 2 * len(val_cases)
    pad = float(cfg.get("pad_value", 0.0) or 0.0)
    train = PatchSource(prepare(train_cases), plan.patch_size, samples_per_epoch=samples,
                        oversample_foreground=float(cfg.get("oversample_foreground", 1 / 3)), seed=seed,
                        pad_value=pad)
    val = PatchSource(prepare(val_cases), plan.patch_size, samples_per_epoch=val_n, oversample_foreground=0.5,
                      seed=seed + 1, pad_value=pad)
    info = dataclasses.replace(info, spatial_dims=plan.spatial_dims, extra={**info.extra, "plan": plan.to_dict()})
    return train, val, info


def open_sources(cfg):
    """``(train_source, val_source, info)`` for a run's ``data`` config section."""
    if cfg.name == "tfds":
        return _open_tfds(cfg)
    if wants_patches(cfg):
        return _open_patches(cfg)
    train, val, info = load_dataset(cfg)
    return ArraysSource(train), ArraysSource(val), info
