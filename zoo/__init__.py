"""medzoo models: registry, architectures, training entry point (``python -m zoo.train``)."""

from zoo.registry import create_model, get_spec, list_models, model_card, register
from zoo.pretrained import load_pretrained
from zoo.store import list_pretrained, save_pretrained
from zoo.outcome import families as _outcome_families  # noqa: F401  registers the outcome home's data families

__all__ = ["create_model", "list_models", "register", "model_card", "get_spec", "load_pretrained", "list_pretrained",
           "save_pretrained"]
