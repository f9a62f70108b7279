"""A served model: what the application holds for each model it loaded, what it tells the page about it (the
card as readable fields, which model the page starts on), and the bundled phantom samples of its kind."""

from __future__ import annotations

import dataclasses

from data_pipelines import ehr, phantoms, readers
from zoo import prediction
from zoo.cards import cross_validation_lines

__all__ = ["ServedModel", "SEGMENTATION_TASKS", "OUTCOME_TASKS", "is_real_data", "card_fields", "default_models",
           "model_info", "image_size", "phantom_sample"]

SEGMENTATION_TASKS = ("segmentation", "instance")
OUTCOME_TASKS = ("outcome", "survival")


@dataclasses.dataclass
class ServedModel:
    """A model loaded (and compiled) once at start-up: ``pre`` is a ``zoo.Pretrained`` or an exported model
    (``zoo.exported.ExportedModel``) with the same ``meta`` / ``config`` / ``task`` / ``predictor``."""

    name: str
    pre: object
    card: dict
    exported: bool = False
    survival: object = None  # a zoo.outcome.survival.SurvivalModel (time-to-event models: curves from survival.json)
    #: outcome models: what their risk intervals are made from (``zoo.app.services.outcome.fit_interval``) and,
    #: where there is nothing, why
    interval: object = None
    interval_note: str = ""
    #: segmentation models: the softmax temperature of their calibration record (``zoo.calibration``), or None
    temperature: float | None = None
    #: what it was loaded from (a store name, work directory or export folder): what a worker process loads
    source: str = ""

    @property
    def task(self) -> str:
        return self.pre.task

    @property
    def data(self) -> dict:
        return self.pre.meta["data"]


def is_real_data(card: dict) -> bool:
    """Whether a card's model was trained on real data: its data set's name names no phantom (the embedded
    synthetic data: ``phantoms/brain``, ``outcome_phantoms``...)."""
    data = card.get("data") or {}
    name = str(data.get("name", "") if isinstance(data, dict) else data).strip().lower()
    return bool(name) and name != "?" and "phantom" not in name


def default_models(models: dict) -> set:
    """The names the page starts on: per kind (segmentation, outcome), the first real-data model
    (:func:`is_real_data`) in ``models``' order, else the first of that kind."""
    out = set()
    for tasks in (SEGMENTATION_TASKS, OUTCOME_TASKS):
        kind = [m for m in models.values() if m.task in tasks]
        real = [m for m in kind if is_real_data(m.card)]
        if kind:
            out.add((real or kind)[0].name)
    return out


def _number(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _preprocessing(m: ServedModel) -> str:
    """The preprocessing a model's input gets, in words: its plan (spacing, patch, normalisation), else the
    resize and the intensity scaling its run recorded."""
    extra = m.data.get("extra") or {}
    plan = m.card.get("plan") or extra.get("plan")
    if isinstance(plan, dict) and plan.get("patch_size"):
        spacing = plan.get("spacing")
        schemes = ", ".join(str(c.get("scheme", "?")) for c in plan.get("channels") or ()) or "?"
        where = f"resampled to {' x '.join(f'{float(s):g}' for s in spacing)} mm" if spacing else "kept at its grid"
        return (f"plan: {where}, {plan.get('spatial_dims')}D patches of "
                f"{' x '.join(str(int(p)) for p in plan['patch_size'])}, normalisation {schemes}, "
                f"Gaussian sliding windows, label map resampled back to the input grid")
    steps = []
    size = (m.pre.config.data.get("image_size") if m.pre.config is not None else None) or ()
    if size:
        steps.append(f"resized to {' x '.join(str(int(s)) for s in size)} (label map resized back)")
    if m.task in SEGMENTATION_TASKS:
        scaling = prediction.scaling_record(m.pre)  # the run's record (old runs: the rule of their time)
        steps.append(f"intensity scaling: {scaling.get('kind', '?')}"
                     + (f" {scaling['window']}" if scaling.get("window") else ""))
    covariates = m.data.get("covariate_names") or ()
    if covariates:
        steps.append(f"{len(covariates)} covariates standardised on the training rows")
    return "; ".join(steps) or "none recorded"


def card_fields(m: ServedModel) -> list[dict]:
    """The card as the page shows it: ``[{"label", "value"}]`` in reading order (what the model is, intended
    use, training data, licence, validated metrics with their split, preprocessing, classes/covariates,
    where it came from)."""
    c, d = m.card, m.data
    data = c.get("data") if isinstance(c.get("data"), dict) else {"name": c.get("data", "?")}
    fields = [("model", f"{c.get('model', '?')} ({m.task}, {int(d.get('spatial_dims', 2))}D"
                        f"{', exported' if m.exported else ''})"),
              ("intended use", c.get("intended_use") or "not stated on the card"),
              ("training data", f"{data.get('name', '?')} ({'real data' if is_real_data(c) else 'synthetic phantoms'})"
               + (f", time in {data['time_unit']}" if data.get("time_unit") else "")),
              ("licence", c.get("data_licence") or c.get("licence") or "not stated on the card")]
    metrics = c.get("metrics") or {}
    shown = [f"{k} {_number(v)}" for k, v in metrics.items() if k != "split" and isinstance(v, (int, float))]
    split = f"; measured on: {metrics['split']}" if metrics.get("split") else "; the split is not stated"
    fields.append(("validated metrics", ", ".join(shown) + split if shown else "none recorded"))
    cv = cross_validation_lines(c)  # a refit after cross-validation: the folds' numbers it came from
    if cv:
        fields.append(("cross-validation", "; ".join(cv)))
    fields.append(("preprocessing", _preprocessing(m)))
    if d.get("channel_names"):
        fields.append(("input channels", ", ".join(d["channel_names"])))
    if d.get("class_names") and m.task in SEGMENTATION_TASKS:
        fields.append(("classes", ", ".join(d["class_names"])))
    if d.get("covariate_names"):
        fields.append(("covariates", ", ".join(d["covariate_names"])))
    for key, label in (("recipe", "trained by"), ("created", "created"), ("source", "loaded from")):
        if c.get(key):
            fields.append((label, str(c[key])))
    return [{"label": k, "value": str(v)} for k, v in fields]


def model_info(m: ServedModel, default: bool = False) -> dict:
    """What the page and ``GET /api/models`` show of ``m`` (``zoo.app.schemas.ModelInfo``); ``default``: the page
    starts on it (:func:`default_models`)."""
    d = m.data
    defaults = [float(v) for v in m.survival.mean] if m.survival is not None else None
    return {"name": m.name, "task": m.task, "exported": m.exported, "card": m.card, "card_fields": card_fields(m),
            "default": bool(default), "real_data": is_real_data(m.card),
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

