"""SegNet (Badrinarayanan, Kendall & Cipolla 2017), 2D and 3D from one code path.

``x: [B, *S, C] -> logits [B, *S, K]``. A VGG-style encoder whose 2x max-pools remember their
argmax (``kernels.max_pool_with_argmax``); the mirrored decoder upsamples with those indices
(``kernels.max_unpool``: sparse maps, no learned upsampling) and densifies them with convolutions.
Each spatial size must be divisible by ``2 ** depth``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from kernels import max_pool_with_argmax, max_unpool
from zoo import layers
from zoo.cards import ModelCard
from zoo.registry import register


class SegNet(nn.Module):
    """Encoder (ConvBlock → pool with argmax) × depth; decoder (unpool with the indices → ConvBlock) × depth.

    Attributes:
      features: channels at the first level, doubled per level (capped at ``max_features``).
      depth: number of pool/unpool pairs.
      convs_per_level: convolutions per level, one int or one per level (VGG-16 SegNet: 2, 2, 3, 3, 3).
      norm / dropout / dtype: as elsewhere in the zoo (dropout at the bottom of the encoder).
    """

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    features: int = 16
    depth: int = 4
    convs_per_level: int | Sequence[int] = 2
    norm: str = "batch"
    dropout: float = 0.0
    max_features: int = 512
    dtype: Any = None

    def __post_init__(self):
        layers.check_common("segnet", self.spatial_dims, self.in_channels, self.num_classes, self.norm)
        for k in ("features", "depth", "max_features"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"segnet: {k} must be a positive int, got {v!r}")
        convs = self._convs()
        if len(convs) != self.depth or any((not isinstance(c, int)) or c < 1 for c in convs):
            raise ValueError(f"segnet: convs_per_level must be a positive int or {self.depth} (depth) positive "
                             f"ints, got {self.convs_per_level!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"segnet: dropout must be in [0, 1), got {self.dropout!r}")
        super().__post_init__()

    def _convs(self) -> tuple:
        c = self.convs_per_level
        return tuple(c) if isinstance(c, (tuple, list)) else (c,) * self.depth

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_input("segnet", x, self.spatial_dims, self.in_channels, 2 ** self.depth)
        convs = self._convs()
        feats = [min(self.features * 2 ** i, self.max_features) for i in range(self.depth)]
        x = x.astype(self.dtype or jnp.float32)
        pools = []
        for i in range(self.depth):
            x = layers.ConvBlock(feats[i], num_convs=convs[i], norm=self.norm, dtype=self.dtype,
                                 name=f"enc{i}")(x, train)
            shape = x.shape
            x, idx = max_pool_with_argmax(x, 2)
            pools.append((idx, shape))
        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        for i in reversed(range(self.depth)):
            idx, shape = pools[i]
            x = max_unpool(x, idx, shape)
            # Mirror of the encoder: convs[i] convolutions, the last one mapping to the next level's width.
            if convs[i] > 1:
                x = layers.ConvBlock(feats[i], num_convs=convs[i] - 1, norm=self.norm, dtype=self.dtype,
                                     name=f"dec{i}")(x, train)
            x = layers.ConvBlock(feats[max(i - 1, 0)], num_convs=1, norm=self.norm, dtype=self.dtype,
                                 name=f"dec{i}_out")(x, train)
        logits = layers.Conv(self.num_classes, 1, dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.float32)


CARD = ModelCard(
    name="segnet",
    summary="SegNet: VGG-style encoder-decoder; the decoder unpools with the encoder's max-pool argmax indices",
    reference="Badrinarayanan, Kendall, Cipolla. SegNet. IEEE TPAMI 2017. arXiv:1511.00561",
    input_contract="x: [B, *S, C] float32, channels-last; each spatial size divisible by 2**depth; "
                   "intensities normalised per channel",
)


@register("segnet", card=CARD, summary=CARD.summary)
def segnet(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype: Any = None,
           **cfg) -> SegNet:
    return SegNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, dtype=dtype, **cfg)
