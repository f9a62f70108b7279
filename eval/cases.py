"""What the evaluation of a run shares about its cases: its data split, structures and inputs.

``eval.checkpoints`` (the report's evaluation) and ``eval.error_analysis`` both import this module, so the
dependency runs one way: ``cases`` ← ``checkpoints`` / ``error_analysis`` ← ``tables`` ← the command lines.
"""

from __future__ import annotations

import numpy as np

import scoring as M

__all__ = ["BRAIN_CLASSES", "load_split", "structures_for", "model_inputs", "case_ids", "TASKS"]

BRAIN_CLASSES = ("necrosis", "oedema", "enhancing")
#: Tasks a ``zoo.load_pretrained`` run can have.
TASKS = ("segmentation", "instance", "outcome")


def load_split(config, split: str, data_overrides: dict | None = None):
    """``(arrays, info)`` of ``split`` (``train``/``val``) rebuilt from a run's config, from the same record
    sources the run trained on (``data_pipelines.sources.open_sources``: in-memory data sets, TFDS
    array_record, patch sources), so every run a trainer writes can be evaluated.

    ``data_overrides`` (``{"seed": "7", ...}``, fields of the config's ``data`` section) selects
    another data set, e.g. an external validation split.
    """
    from data_pipelines import loader
    from data_pipelines.sources import open_sources

    if split not in ("train", "val"):
        raise ValueError(f"split must be train or val, got {split!r}")
    if data_overrides:
        from zoo.configs import apply_overrides

        config = apply_overrides(config, {f"data.{k}" if not k.startswith("data.") else k: v
                                          for k, v in data_overrides.items()})
    train, val, info = open_sources(config.data)
    source = train if split == "train" else val
    if isinstance(source, loader.ArraysSource):
        return source.arrays, info
    return loader.gather(source, np.arange(len(source))), info


def structures_for(class_names) -> dict | None:
    """BraTS regions for brain label maps (0 background, 1 NCR, 2 ED, 3 ET), else ``None`` (classes)."""
    names = tuple(str(c).lower() for c in class_names)
    if len(names) == 4 and names[1:] == BRAIN_CLASSES:
        return dict(M.BRATS_REGIONS)
    return None


def model_inputs(arrays: dict, task: str):
    """What ``Pretrained.predict``/``iter_proba`` take: images, or ``{image, covariates}`` for outcome runs."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    if task == "outcome":
        missing = [k for k in ("image", "covariates", "outcome") if k not in arrays]
        if missing:
            raise ValueError(f"outcome split lacks {missing}; has {sorted(arrays)}")
        return {"image": arrays["image"], "covariates": arrays["covariates"]}
    return arrays["image"]


def case_ids(arrays: dict, start: int, n: int) -> list:
    """Case identifiers of rows ``start:start+n``: ``patient_id`` as strings, else the row numbers."""
    ids = arrays.get("patient_id")
    if ids is None:
        return list(range(start, start + n))
    return [str(i) for i in np.asarray(ids)[start:start + n]]
