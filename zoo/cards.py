"""Model cards: what a model expects and what it was trained on (timm PretrainedCfg / MONAI bundle metadata)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence


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
    params: dict[str, int] = dataclasses.field(default_factory=dict)
    flops: dict[str, float] = dataclasses.field(default_factory=dict)
    complexity_config: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_complexity(self, sizes: Sequence[Sequence[int]] = ((256, 256), (128, 128, 128)),
                        in_channels: int = 1, num_classes: int = 2, **cfg) -> "ModelCard":
        """This card with ``params`` (per ``"2D"`` / ``"3D"``) and ``flops`` (per ``"HxW"`` / ``"DxHxW"`` input)
        filled in for the registered model of the same name built with its defaults (plus ``cfg``)."""
        c = complexity(self.name, sizes, in_channels=in_channels, num_classes=num_classes, **cfg)
        extra = "".join(f", {k}={v!r}" for k, v in sorted(cfg.items()))
        return dataclasses.replace(
            self, params=c["params"], flops=c["flops"],
            complexity_config=f"defaults{extra}, in_channels={in_channels}, num_classes={num_classes}, batch 1, "
                              "forward pass in eval mode, FLOPs from XLA's cost analysis")


def size_key(size: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in size)


def count_params(model, input_shape: Sequence[int]) -> int:
    """Number of trainable parameters of ``model`` for inputs ``[B, *S, C] = input_shape`` (nothing is allocated)."""
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, v),
                               x)
    return int(sum(int(p.size) for p in jax.tree.leaves(variables.get("params", {}))))


def count_flops(model, input_shape: Sequence[int]) -> float:
    """FLOPs of one eval-mode forward pass on ``input_shape``, from XLA's HLO cost analysis (no compile, no data).

    Convolutions count 2 FLOPs per multiply-add; element-wise ops, norms and resizes are included.
    """
    import jax
    import jax.numpy as jnp

    x = jax.ShapeDtypeStruct(tuple(input_shape), jnp.float32)
    variables = jax.eval_shape(lambda v: model.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, v),
                               x)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x)
    cost = lowered.cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax returned one dict per computation
        cost = cost[0]
    return float(cost["flops"])


@functools.lru_cache(maxsize=None)
def _complexity(name: str, sizes: tuple, in_channels: int, num_classes: int, cfg: tuple) -> dict:
    from zoo.registry import create_model

    out = {"params": {}, "flops": {}}
    for size in sizes:
        model = create_model(name, spatial_dims=len(size), in_channels=in_channels, num_classes=num_classes,
                             **dict(cfg))
        shape = (1,) + tuple(size) + (in_channels,)
        out["params"].setdefault(f"{len(size)}D", count_params(model, shape))
        out["flops"][size_key(size)] = count_flops(model, shape)
    return out


def complexity(name: str, sizes: Sequence[Sequence[int]] = ((256, 256), (128, 128, 128)), in_channels: int = 1,
               num_classes: int = 2, **cfg) -> dict:
    """``{"params": {"2D": int, "3D": int}, "flops": {"256x256": float, "128x128x128": float}}`` for a
    registered model built with its defaults plus ``cfg``. Cached per arguments; returns the cached dict."""
    sizes = tuple(tuple(int(s) for s in size) for size in sizes)
    if not sizes or any(len(s) not in (2, 3) for s in sizes):
        raise ValueError(f"sizes must be a non-empty list of 2- or 3-entry spatial sizes, got {sizes!r}")
    return _complexity(name, sizes, int(in_channels), int(num_classes), tuple(sorted(cfg.items())))
