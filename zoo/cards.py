"""Model cards: what a model expects and what it was trained on (timm PretrainedCfg / MONAI bundle metadata).

Plain data: this module imports nothing of the project. Parameter and FLOP counts of a registered model come
from :func:`zoo.summary.complexity`, which sits above the registry. :func:`read_card` is the one reader of a
trained model's card (``card.json`` of a store entry or export; a card made from the run's metadata for a bare
work directory), used by the application (``zoo.app``) and ``zoo.export``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

__all__ = ["ModelCard", "CARD_FILE", "read_card"]

CARD_FILE = "card.json"


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Input contract and provenance of a model.

    ``input_contract`` states layout, channels and intensity normalisation; ``spatial_dims`` the
    numbers of spatial dims the model accepts; ``classes`` names the output classes where they are
    fixed. ``params`` / ``flops`` / ``complexity_config`` stay empty unless a card states them
    (:func:`zoo.summary.complexity` computes them by name).
    """

    name: str
    summary: str = ""
    reference: str = ""
    input_contract: str = "x: [B, *S, C] float32, channels-last"
    spatial_dims: tuple[int, ...] = (2, 3)
    classes: tuple[str, ...] = ()
    licence: str = "Apache-2.0 (code)"
    params: dict[str, int] = dataclasses.field(default_factory=dict)
    flops: dict[str, float] = dataclasses.field(default_factory=dict)
    complexity_config: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_card(path: str, pre) -> dict:
    """The card of the trained model in folder ``path`` (a resolved store entry, work directory or export):
    ``path/card.json``, else the one in its parent folder (a run trained inside a study's folder), else a card
    made from ``pre``'s metadata (``pre``: the loaded model, with ``meta``, ``task`` and ``step``)."""
    for folder in (path, os.path.dirname(os.path.abspath(path))):
        card_path = os.path.join(folder, CARD_FILE)
        if os.path.isfile(card_path):
            with open(card_path, encoding="utf-8") as f:
                return json.load(f)
    cfg = pre.meta.get("config", {})
    return {"model": cfg.get("model", {}).get("name", "?"), "task": pre.task,
            "data": {"name": cfg.get("data", {}).get("name", "?")}, "source": os.path.abspath(path),
            "step": getattr(pre, "step", None), "note": "work directory (no store card)"}
