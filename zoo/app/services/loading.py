"""Model loading: a store entry, work directory or export folder becomes a :class:`ServedModel`, compiled by one
warm-up run before the first request; the models a server starts with (:func:`load_models`: the named ones, or
the whole store, plus the store's outcome model when none of them is one)."""

from __future__ import annotations

import os

from zoo import exported, store
from zoo.app.services.outcome import default_covariates, fit_interval, outcome_proba, survival_curve
from zoo.app.services.served import OUTCOME_TASKS, SEGMENTATION_TASKS, ServedModel, is_real_data, phantom_sample
from zoo.calibration import model_temperature
from zoo.cards import read_card
from zoo.outcome import survival
from zoo.prediction import predict_case_proba
from zoo.pretrained import load_pretrained

__all__ = ["survival_card", "load_model", "store_outcome_entry", "load_models"]


def survival_card(path: str, sm) -> dict:
    """The card of a time-to-event model (``sm``: a ``zoo.outcome.survival.SurvivalModel`` loaded from ``path``)."""
    meta, cfg = sm.meta, sm.pretrained.meta.get("config", {})
    extra = meta.get("extra") or {}
    card = {"model": cfg.get("model", {}).get("name", "?"), "task": "survival", "head": meta["head"],
            "data": {"name": extra.get("cohort", cfg.get("data", {}).get("name", "?")),
                     "covariates": list(meta["covariate_names"]), "time_unit": extra.get("time_unit", "")},
            "metrics": {"harrell_c": meta.get("best_harrell_c_val"), "split": extra.get(
                "inner_validation", "validation split (patients unseen in training)")},
            "intended_use": extra.get("intended_use", "research: survival curves from the covariates"),
            "data_licence": extra.get("data_licence", "-"), "source": os.path.abspath(path)}
    return card


def load_model(name_or_path: str, warm: bool = True) -> ServedModel:
    """Load a store entry, work directory or exported folder (``zoo.export``) and run it once. A work
    directory written by ``zoo.outcome.survival.fit_deep_survival`` (it holds ``survival.json``) is served as a
    time-to-event model with its survival curves."""
    path = store.resolve(name_or_path)
    if exported.is_exported(path):
        pre = exported.ExportedModel.load(path)
        served = ServedModel(name=_display_name(name_or_path), pre=pre, card=pre.card, exported=True)
    elif os.path.isfile(os.path.join(path, survival.SURVIVAL_FILE)):
        sm = survival.SurvivalModel.load(path)
        served = ServedModel(name=_display_name(name_or_path), pre=sm.pretrained, card=survival_card(path, sm),
                             survival=sm)
    else:
        pre = load_pretrained(path)
        served = ServedModel(name=_display_name(name_or_path), pre=pre, card=read_card(path, pre),
                             temperature=model_temperature(path) if pre.task in SEGMENTATION_TASKS else None)
    served.source = name_or_path
    if served.task == "outcome" or served.survival is not None:
        served.interval, served.interval_note = fit_interval(served)
    if warm:  # compile every program a request will run, before the first request
        image, meta, _ = phantom_sample(served, 0) if served.data.get("channel_names") else (None, None, None)
        if served.task in SEGMENTATION_TASKS:  # the page's path: probabilities, with the stored temperature
            predict_case_proba(served.pre, image, meta, temperature=served.temperature)
        elif served.task == "outcome":
            outcome_proba(served, image, default_covariates(served)[None])
        elif served.survival is not None:
            survival_curve(served, default_covariates(served), image)
    return served


def _display_name(name_or_path: str) -> str:
    return os.path.basename(os.path.normpath(name_or_path)) if os.path.exists(name_or_path) else name_or_path


def store_outcome_entry(entries: list, exclude=()) -> str | None:
    """The name of the store's outcome model a server adds by default: among ``entries``
    (``zoo.store.list_pretrained()``) whose card's task is an outcome or survival one and whose name is not in
    ``exclude``, the first real-data one (``zoo.app.services.served.is_real_data``), else the first; ``None``
    when there is none."""
    kind = [e for e in entries if e.card.get("task") in OUTCOME_TASKS and e.name not in set(exclude)]
    real = [e for e in kind if is_real_data(e.card)]
    return (real or kind)[0].name if kind else None


def load_models(names: list[str] | None, with_outcome: bool = True) -> dict:
    """``{name: ServedModel}`` for ``names`` (default: every store entry), loaded and compiled; with
    ``with_outcome``, when none of them is an outcome model, the store's own (:func:`store_outcome_entry`) is
    added, so the page's outcome panel has a model whenever the store holds one."""
    entries = store.list_pretrained()
    names = names or [e.name for e in entries]
    if not names:
        raise ValueError(f"--models: the model store is empty ($ZOO_HOME={store.store_home()}); name a work "
                         f"directory, an export folder or a store entry")
    out = {}
    for n in names:
        m = load_model(n)
        out[m.name] = m
        print(f"loaded {m.name} ({m.task}{', exported' if m.exported else ''})", flush=True)
    if with_outcome and not any(m.task in OUTCOME_TASKS or m.survival is not None for m in out.values()):
        extra = store_outcome_entry(entries, exclude=list(names) + list(out))
        if extra is not None:
            m = load_model(extra)
            out[m.name] = m
            print(f"loaded {m.name} ({m.task}; the store's outcome model, served by default)", flush=True)
    return out
