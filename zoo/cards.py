"""Model cards: what a model expects and what it was trained on (timm PretrainedCfg / MONAI bundle metadata).

Plain data: this module imports nothing of the project. Parameter and FLOP counts are filled in by
:func:`zoo.summary.with_complexity`, which sits above the registry.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Input contract and provenance of a model.

    ``input_contract`` states layout, channels and intensity normalisation; ``spatial_dims`` the
    numbers of spatial dims the model accepts; ``classes`` names the output classes where they are
    fixed. ``params`` / ``flops`` / ``complexity_config`` stay empty until
    :func:`zoo.summary.with_complexity` fills them in.
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
