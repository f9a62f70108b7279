"""Model cards: what a model expects and what it was trained on (timm PretrainedCfg / MONAI bundle metadata)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Input contract and provenance of a model.

    ``input_contract`` states layout, channels and intensity normalisation; ``classes`` names
    the output classes when a card belongs to trained weights; ``metrics`` give numbers together
    with the split they came from.
    """

    name: str
    summary: str = ""
    reference: str = ""
    input_contract: str = "x: [B, *S, C] float32, channels-last"
    layout: str = "channels-last [B, *S, C]"
    spatial_dims: tuple[int, ...] = (2, 3)
    channels: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    spacing_mm: tuple[float, ...] | None = None
    normalisation: str = "per-channel z-score"
    training_data: str = "none (architecture card; weights come from zoo.train checkpoints)"
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    licence: str = "Apache-2.0 (code)"
    checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
