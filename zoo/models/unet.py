"""U-Net (Ronneberger et al. 2015), 2D and 3D from one code path.

``x: [B, *S, C] -> logits [B, *S, K]``; ``S`` has ``spatial_dims`` (2 or 3) entries, each
divisible by ``2 ** (depth - 1)``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from zoo import layers
from zoo.cards import ModelCard
from zoo.registry import register

__all__ = ["UNet", "UNetEncoder", "unet"]


def level_features(features: int, depth: int, max_features: int) -> list[int]:
    """Channels of each U-Net level: ``features`` doubled per level, capped at ``max_features``."""
    return [min(features * 2 ** i, max_features) for i in range(depth)]


def contracting_path(x, level_widths, norm: str, dtype, train: bool, bottleneck_dropout: float = 0.0) -> list:
    """The U-Net contracting path, built in the scope of the calling module: conv blocks ``enc0`` …,
    the first at stride 1, then stride 2 each; dropout in the last (the bottleneck).

    Returns the feature map of every level (strides 1, 2, 4, …). Called by :class:`UNet` (blocks at
    the top of its params) and :class:`UNetEncoder` (blocks inside the encoder), so both lay out
    their parameters alike and a U-Net's encoder transfers as it is.
    """
    feats = []
    for i, f in enumerate(level_widths):
        x = layers.ConvBlock(f, norm=norm, strides=1 if i == 0 else 2, dtype=dtype,
                             dropout=bottleneck_dropout if i == len(level_widths) - 1 else 0.0,
                             name=f"enc{i}")(x, train)
        feats.append(x)
    return feats


class UNetEncoder(nn.Module):
    """U-Net contracting path as a feature extractor: ``x: [B, *S, C]`` -> feature maps at strides
    1, 2, 4, … (``depth`` of them). Parameters ``enc{i}`` are laid out as in :class:`UNet`."""

    features: int = 16
    depth: int = 4
    norm: str = "instance"
    max_features: int = 320
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        return contracting_path(x, level_features(self.features, self.depth, self.max_features), self.norm,
                                self.dtype, train)


class UNet(nn.Module):
    """Encoder-decoder with skip connections.

    Attributes:
      spatial_dims: 2 or 3.
      in_channels / num_classes: input channels ``C`` and output classes ``K``.
      features: channels at the first level; doubled at each of the ``depth`` levels.
      depth: number of resolution levels (``depth - 1`` poolings).
      norm: ``batch`` | ``instance`` | ``group`` | ``none``.
      dropout: dropout rate at the bottleneck.
      skip_connections: ``False`` is the study's ablation (decoder sees only the upsampled path).
      max_features: cap on channels per level.
      attention: additive attention gates on the skips (Attention U-Net, Oktay 2018).
      deep_supervision: number of extra 1^D heads on the coarser decoder levels; in training
        their logits, resized to full resolution, are ``sow``n into the ``aux_logits`` collection
        (finest first), which ``zoo.tasks.SegmentationTask`` adds to the loss.
      dtype: compute dtype (params stay float32).
    """

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    features: int = 32
    depth: int = 4
    norm: str = "instance"
    dropout: float = 0.0
    skip_connections: bool = True
    max_features: int = 320
    attention: bool = False
    deep_supervision: int = 0
    dtype: Any = None
    name_: str = "unet"

    def __post_init__(self):
        n = self.name_
        layers.check_common(n, self.spatial_dims, self.in_channels, self.num_classes, self.norm)
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"{n}: depth must be a positive int, got {self.depth!r}")
        if not isinstance(self.features, int) or self.features < 1:
            raise ValueError(f"{n}: features must be a positive int, got {self.features!r}")
        if not isinstance(self.max_features, int) or self.max_features < 1:
            raise ValueError(f"{n}: max_features must be a positive int, got {self.max_features!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"{n}: dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.deep_supervision, int) or not 0 <= self.deep_supervision <= self.depth - 2:
            raise ValueError(f"{n}: deep_supervision must be an int in [0, depth - 2] = [0, {self.depth - 2}] "
                             f"(one head per decoder level below the top), got {self.deep_supervision!r}")
        if self.attention and not self.skip_connections:
            raise ValueError(f"{n}: attention=True gates the skip connections; it needs skip_connections=True")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_input(self.name_, x, self.spatial_dims, self.in_channels, 2 ** (self.depth - 1))
        full = x.shape[1:-1]
        feats = level_features(self.features, self.depth, self.max_features)
        x = x.astype(self.dtype or jnp.float32)
        skips = contracting_path(x, feats, self.norm, self.dtype, train, bottleneck_dropout=self.dropout)
        x = skips[-1]
        for i in reversed(range(self.depth - 1)):
            x = layers.ConvTranspose(feats[i], strides=2, dtype=self.dtype, name=f"up{i}")(x)
            if self.skip_connections:
                skip = skips[i]
                if self.attention:
                    skip = layers.AttentionGate(max(feats[i] // 2, 1), norm=self.norm, dtype=self.dtype,
                                                name=f"gate{i}")(skip, x, train)
                x = jnp.concatenate([x, skip], axis=-1)
            x = layers.ConvBlock(feats[i], norm=self.norm, dtype=self.dtype, name=f"dec{i}")(x, train)
            if 1 <= i <= self.deep_supervision:
                aux = layers.Conv(self.num_classes, 1, dtype=self.dtype, name=f"ds_head{i}")(x)
                aux = layers.upsample_linear(aux, full).astype(jnp.float32)
                if not self.is_initializing():  # init must not leave stale logits in the collection
                    self.sow("aux_logits", f"ds{i}", aux)
        logits = layers.Conv(self.num_classes, 1, dtype=self.dtype, name="head")(x)
        return logits.astype(jnp.float32)


CARD = ModelCard(
    name="unet",
    summary="U-Net: conv encoder-decoder with skip connections (Ronneberger 2015), 2D/3D",
    reference="Ronneberger, Fischer, Brox. U-Net. MICCAI 2015. arXiv:1505.04597",
    input_contract="x: [B, *S, C] float32, channels-last; each spatial size divisible by 2**(depth-1); "
                   "intensities normalised per channel (z-score inside the foreground for MRI, HU window for CT)",
)


@register("unet", card=CARD, summary=CARD.summary)
def unet(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype: Any = None, **cfg) -> UNet:
    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, dtype=dtype, **cfg)
