"""The study's plain CNN baseline: conv blocks with pooling, a per-pixel classifier, linear upsampling.

``x: [B, *S, C] -> logits [B, *S, K]``. No skip connections and nothing learned in the upsampling:
the coarse class map (stride ``2 ** depth``) is resized bilinearly (2D) / trilinearly (3D) back to
the input size. Each spatial size must be divisible by ``2 ** depth``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from zoo import layers
from zoo.cards import ModelCard
from zoo.registry import register


class CNN(nn.Module):
    """Plain CNN: ``depth`` × (ConvBlock → 2x max-pool), a ConvBlock, a 1^D classifier, linear upsampling.

    Attributes:
      features: channels of the first block, doubled per level (capped at ``max_features``).
      depth: number of 2x poolings (output stride ``2 ** depth``).
      convs_per_block: convolutions per block.
      norm / dropout / dtype: as in :class:`zoo.models.unet.UNet`.
    """

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    features: int = 16
    depth: int = 3
    convs_per_block: int = 2
    norm: str = "batch"
    dropout: float = 0.0
    max_features: int = 256
    dtype: Any = None

    def __post_init__(self):
        layers.check_common("cnn", self.spatial_dims, self.in_channels, self.num_classes, self.norm)
        for k in ("features", "convs_per_block", "max_features"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"cnn: {k} must be a positive int, got {v!r}")
        if not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"cnn: depth must be a non-negative int, got {self.depth!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"cnn: dropout must be in [0, 1), got {self.dropout!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_input("cnn", x, self.spatial_dims, self.in_channels, 2 ** self.depth)
        full = x.shape[1:-1]
        nd = self.spatial_dims
        x = x.astype(self.dtype or jnp.float32)
        for i in range(self.depth + 1):
            f = min(self.features * 2 ** i, self.max_features)
            x = layers.ConvBlock(f, num_convs=self.convs_per_block, norm=self.norm, dtype=self.dtype,
                                 dropout=self.dropout if i == self.depth else 0.0, name=f"block{i}")(x, train)
            if i < self.depth:
                x = nn.max_pool(x, window_shape=(2,) * nd, strides=(2,) * nd)
        logits = layers.Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)
        return layers.upsample_linear(logits, full).astype(jnp.float32)


CARD = ModelCard(
    name="cnn",
    summary="Plain CNN baseline: conv/norm/ReLU blocks with pooling, 1x1 classifier, linear upsampling (no skips)",
    reference="baseline of the study (fully convolutional classifier, no skip connections)",
    input_contract="x: [B, *S, C] float32, channels-last; each spatial size divisible by 2**depth; "
                   "intensities normalised per channel",
)


@register("cnn", card=CARD, summary=CARD.summary)
def cnn(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype: Any = None, **cfg) -> CNN:
    return CNN(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, dtype=dtype, **cfg)
