"""``DatasetInfo``: what a loaded data set holds (channels, classes, covariates, source metadata)."""

from __future__ import annotations

import dataclasses

__all__ = ["DatasetInfo"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Description of ``(train, val)`` arrays from ``data_pipelines.datasets.load_dataset``.

    ``covariate_names`` names the columns of ``covariates [N, F]`` (empty when the data set has none);
    ``extra`` holds source-specific metadata (e.g. the outcome cohort's risk model).
    """

    name: str
    num_classes: int
    channel_names: tuple[str, ...]
    class_names: tuple[str, ...]
    spatial_dims: int
    covariate_names: tuple[str, ...] = ()
    extra: dict = dataclasses.field(default_factory=dict, hash=False)  # a dict is unhashable

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)
