"""Where a run's records come from: ``open_sources(data_cfg) -> (train, val, info)``.

Every data set reaches the trainer as two random-access sources of records (``len`` + ``[i]`` -> dict),
consumed through grain (:func:`data_pipelines.loader.make_batch_dataset`):

* a data family that opens record sources (``DataFamily.open_sources``; ``data.name = "tfds"``: a prepared
  TFDS array_record data set, read record by record from disk, :mod:`data_pipelines.tfds_records`): those.
* every other family (phantoms, BraTS, image/mask folders, CT, the outcome cohort, ...): the arrays of
  ``data_pipelines.datasets.load_dataset`` behind an :class:`~data_pipelines.loader.ArraysSource`.
* patch training (``data.patch_size`` non-empty or ``data.plan`` a plan file; a family with full-resolution
  cases: phantoms, brats, isic, folder, luna16): the family's cases at full resolution
  (``DataFamily.full_cases``), split by patient, preprocessed with a :class:`~data_pipelines.planner.Plan`
  (``data.plan``, or made from the training cases' fingerprint with ``data.modality`` (default: the family's),
  ``data.spatial_dims``, ``data.memory_budget``, ``data.denoise``, ``data.n4``, ``data.crop``; a non-empty
  ``data.patch_size`` replaces the plan's patch), behind :class:`~data_pipelines.patches.PatchSource`s:
  train ``data.samples_per_epoch`` random patches with ``data.oversample_foreground``, val a fixed set of
  ``data.val_samples`` patches (0: two per case, one random and one foreground-centred). The plan goes to the
  run as ``info.extra["plan"]`` (a dict; ``Plan.from_dict`` reads it back). ``data.image_size`` is then only
  the phantoms' generated size (real cases keep their own, at the plan's spacing).
"""

from __future__ import annotations

import dataclasses

from data_pipelines import preprocessing
from data_pipelines.datasets import load_dataset
from data_pipelines.families import get_family, list_families
from data_pipelines.fingerprint import fingerprint
from data_pipelines.loader import ArraysSource
from data_pipelines.patches import PatchSource
from data_pipelines.planner import CROPS, DENOISERS, Plan, make_plan

__all__ = ["open_sources", "wants_patches", "plan_for", "patch_sources"]


def wants_patches(cfg) -> bool:
    """Whether a ``data`` section asks for patch training (``patch_size`` non-empty or a ``plan`` file)."""
    return bool(tuple(cfg.get("patch_size", ()) or ())) or bool(cfg.get("plan", "") or "")


def _optional(cfg, key, choices):
    value = cfg.get(key, None) or None  # "" and None: off
    if value not in choices:
        raise ValueError(f"data.{key} must be one of {[c for c in choices if c]} or empty, got {value!r}")
    return value


def plan_for(cfg, train_cases, channel_names) -> Plan:
    """The run's plan: ``data.plan`` when set, else made from the training cases' fingerprint; a non-empty
    ``data.patch_size`` replaces its patch size."""
    nd = int(cfg.spatial_dims)
    path = cfg.get("plan", "") or ""
    if path:
        plan = Plan.load(path)
    else:
        fp = fingerprint((c["image"], c["label"], c["meta"]) for c in train_cases)
        modality = cfg.get("modality", "") or get_family(cfg.name).default_modality(cfg)
        budget = int(cfg.get("memory_budget", 0) or 0) or None
        plan = make_plan(fp, modality=modality, spatial_dims=nd, memory_budget=budget, channel_names=channel_names,
                         denoise=_optional(cfg, "denoise", DENOISERS), n4=bool(cfg.get("n4", False)),
                         crop=_optional(cfg, "crop", CROPS))
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


def _open_patches(cfg, family):
    if not family.has_cases:
        able = tuple(f.name for f in list_families() if f.has_cases)
        raise ValueError(f"patch training (data.patch_size / data.plan) supports data.name in {able}, "
                         f"got {cfg.name!r}")
    train_cases, val_cases, info = family.full_cases(cfg)
    return patch_sources(cfg, train_cases, val_cases, info)


def patch_sources(cfg, train_cases, val_cases, info):
    """``(train, val, info)`` patch sources of full-resolution cases already split (a study's own folds): the
    plan from the training cases (:func:`plan_for`), each case preprocessed with it."""
    if not train_cases or not val_cases:
        raise ValueError(f"{cfg.name}: {len(train_cases)} training and {len(val_cases)} validation cases; "
                         f"patch training needs at least one of each (data.val_fraction)")
    plan = plan_for(cfg, train_cases, info.channel_names)

    def prepare(cases):
        out = []
        for c in cases:
            x, ctx = preprocessing.preprocess_case(c["image"], c["meta"], plan)
            y = preprocessing.preprocess_label(c["label"], c["meta"], plan, ctx)
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
    family = get_family(cfg.name)
    if family.open_sources is not None:
        return family.open_sources(cfg)
    if wants_patches(cfg):
        return _open_patches(cfg, family)
    train, val, info = load_dataset(cfg)
    return ArraysSource(train), ArraysSource(val), info
