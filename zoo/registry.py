"""Model registry: the one place that maps a model name to its constructor and card.

Follows timm's ``@register_model``: a duplicate name raises, an unknown name raises
``ValueError`` listing the close matches, and :func:`list_models` is the source of
truth that the tests loop over.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import typing
from typing import Any, Callable

__all__ = ["ModelSpec", "register", "create_model", "list_models", "get_spec", "model_card"]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model.

    Attributes:
      name: registry name.
      factory: ``factory(spatial_dims=, in_channels=, num_classes=, **cfg) -> flax.linen.Module``.
      card: a :class:`zoo.cards.ModelCard` (or ``None`` until one is written).
      task: name of the training task (``"segmentation"`` or ``"instance"``): how
        ``zoo.train`` turns a batch into a loss and a label map.
      summary: one line for tables.
    """

    name: str
    factory: Callable[..., Any]
    card: Any = None
    task: str = "segmentation"
    summary: str = ""


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, *, card: Any = None, task: str = "segmentation", summary: str = ""):
    """Decorator registering a model factory (a function or a Module class) under ``name``."""

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered (by {_REGISTRY[name].factory!r})")
        _REGISTRY[name] = ModelSpec(name=name, factory=factory, card=card, task=task, summary=summary)
        return factory

    return deco


def _ensure_builtin_models_loaded() -> None:
    # Importing zoo.models registers every built-in architecture.
    import zoo.models  # noqa: F401


def get_spec(name: str) -> ModelSpec:
    _ensure_builtin_models_loaded()
    if not isinstance(name, str) or name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def create_model(name: str, **cfg):
    """Build the model registered as ``name``.

    Common arguments: ``spatial_dims`` (2 or 3), ``in_channels``, ``num_classes``; the rest
    is model specific. The returned Flax module maps ``x: [B, *S, C]`` to logits ``[B, *S, K]``.
    """
    spec = get_spec(name)
    try:
        return spec.factory(**cfg)
    except TypeError as e:
        if "unexpected keyword" not in str(e):
            raise
        accepted = _accepted_args(spec.factory)
        bad = sorted(k for k in cfg if accepted and k not in accepted)
        raise ValueError(f"model {name!r} got unknown argument(s) {bad or str(e)}; "
                         f"it accepts: {', '.join(sorted(accepted)) or '?'}") from None


def _accepted_args(factory) -> set[str]:
    target = factory
    # Factories usually return a dataclass Module; look at its fields when the factory takes **cfg.
    try:
        ann = typing.get_type_hints(factory).get("return")
    except Exception:  # unresolvable annotations: fall back to the signature
        ann = None
    if isinstance(ann, type) and dataclasses.is_dataclass(ann):
        target = ann
    if isinstance(target, type) and dataclasses.is_dataclass(target):
        return {f.name for f in dataclasses.fields(target) if f.init and f.name not in ("parent", "name")}
    return {p for p in inspect.signature(target).parameters if p not in ("args", "kwargs")}


def list_models() -> list[str]:
    """Sorted names of all registered models."""
    _ensure_builtin_models_loaded()
    return sorted(_REGISTRY)


def model_card(name: str):
    """The model card of ``name`` (see :mod:`zoo.cards`)."""
    return get_spec(name).card
