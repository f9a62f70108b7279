"""A served model: what the application holds for each model it loaded, what it tells the page about it, and the
bundled phantom samples of its kind."""

from __future__ import annotations

import dataclasses

from data_pipelines import ehr, phantoms, readers

__all__ = ["ServedModel", "model_info", "image_size", "phantom_sample"]


@dataclasses.dataclass
class ServedModel:
    """A model loaded (and compiled) once at start-up: ``pre`` is a ``zoo.Pretrained`` or an exported model
    (``zoo.exported.ExportedModel``) with the same ``meta`` / ``config`` / ``task`` / ``predictor``."""

    name: str
    pre: object
    card: dict
    exported: bool = False
    survival: object = None  # a zoo.outcome.survival.SurvivalModel (time-to-event models: curves from survival.json)

    @property
    def task(self) -> str:
        return self.pre.task

    @property
    def data(self) -> dict:
        return self.pre.meta["data"]


def model_info(m: ServedModel) -> dict:
    """What the page and ``GET /api/models`` show of ``m`` (``zoo.app.schemas.ModelInfo``)."""
    d = m.data
    defaults = [float(v) for v in m.survival.mean] if m.survival is not None else None
    return {"name": m.name, "task": m.task, "exported": m.exported, "card": m.card,
            "channel_names": list(d.get("channel_names") or ()), "class_names": list(d.get("class_names") or ()),
            "spatial_dims": int(d.get("spatial_dims", 2)), "covariate_names": list(d.get("covariate_names") or ()),
            "ehr_form": tuple(d.get("covariate_names") or ()) == ehr.COVARIATE_NAMES,
            "covariate_defaults": defaults,
            "time_unit": (m.survival.meta.get("extra") or {}).get("time_unit", "") if m.survival is not None else ""}


def image_size(m: ServedModel) -> tuple:
    """The spatial input size of the model's image (``data.image_size``, else the saved input shape)."""
    cfg = m.pre.config.data
    if cfg.get("image_size"):
        return tuple(int(s) for s in cfg.image_size)
    inputs = m.pre.meta.get("inputs") or {}
    if "image" in inputs:  # models trained on in-memory arrays (e.g. survival): the saved input shape
        return tuple(int(s) for s in inputs["image"][1:-1])
    raise ValueError(f"model {m.name!r} takes no image")


def phantom_sample(m: ServedModel, index: int):
    """A bundled phantom of the model's kind, channels and input size: ``(image, meta, label)`` (1 mm voxels)."""
    if not 0 <= int(index) < 64:
        raise ValueError(f"sample must be 0..63, got {index}")
    cfg = m.pre.config.data
    channels = len(m.data.get("channel_names") or ()) or None
    shape = image_size(m)
    pc = phantoms.PhantomConfig(kind=str(cfg.get("kind", "brain") or "brain"), shape=shape, channels=channels,
                                seed=1000)  # not the training seed: samples are unseen cases
    s = phantoms.make_phantom(pc, int(index))
    d = len(shape)
    meta = readers.ImageMeta(spacing=(1.0,) * d, origin=(0.0,) * d,
                             direction=tuple(tuple(float(i == j) for j in range(d)) for i in range(d)),
                             path=f"phantom-{index}", format="phantom")
    return s["image"], meta, s["label"]

