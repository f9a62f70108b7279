"""Fully convolutional network (Long, Shelhamer & Darrell 2015): FCN-32s / 16s / 8s, 2D and 3D.

``x: [B, *S, C] -> logits [B, *S, K]``. A backbone from :mod:`zoo.encoders` (VGG by default, as in
the paper) gives pool3/pool4/pool5 (strides 8/16/32); two 3^D convolutions stand in for fc6/fc7;
class scores are upsampled with learned transposed convolutions and, for 16s/8s, fused with the
(zero-initialised) scores of pool4 and pool3. Each spatial size must be divisible by 32.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from zoo import layers
from zoo.cards import ModelCard
from zoo.encoders import get_encoder, list_encoders
from zoo.registry import register

VARIANTS = ("32s", "16s", "8s")


class FCN(nn.Module):
    """FCN with skip fusion from pool4 (16s) and pool3 (8s).

    Attributes:
      backbone: encoder name (``vgg11``, ``vgg16``, ``resnet18``, ...).
      features: backbone base width (64 in the paper; small by default for CPU).
      head_features: channels of the fc6/fc7 convolutions (default ``4 * features``).
      variant: ``32s`` | ``16s`` | ``8s``.
      norm / dropout / dtype: as elsewhere in the zoo (dropout after fc6/fc7).
    """

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    backbone: str = "vgg11"
    features: int = 8
    head_features: int | None = None
    variant: str = "8s"
    norm: str = "batch"
    dropout: float = 0.0
    dtype: Any = None

    def __post_init__(self):
        layers.check_common("fcn", self.spatial_dims, self.in_channels, self.num_classes, self.norm)
        if self.variant not in VARIANTS:
            raise ValueError(f"fcn: variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.backbone not in list_encoders():
            raise ValueError(f"fcn: backbone must be one of {list_encoders()}, got {self.backbone!r}")
        if not isinstance(self.features, int) or self.features < 1:
            raise ValueError(f"fcn: features must be a positive int, got {self.features!r}")
        if self.head_features is not None and (not isinstance(self.head_features, int) or self.head_features < 1):
            raise ValueError(f"fcn: head_features must be a positive int or None, got {self.head_features!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"fcn: dropout must be in [0, 1), got {self.dropout!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_input("fcn", x, self.spatial_dims, self.in_channels, 32)
        k, dt = self.num_classes, self.dtype
        feats = get_encoder(self.backbone, features=self.features, norm=self.norm, dtype=dt,
                            name="encoder")(x, train)
        pool3, pool4, pool5 = feats[2], feats[3], feats[4]
        h = layers.ConvBlock(self.head_features or 4 * self.features, num_convs=2, norm=self.norm,
                             dropout=self.dropout, dtype=dt, name="fc67")(pool5, train)
        score = layers.Conv(k, 1, dtype=dt, name="score_pool5")(h)
        if self.variant == "32s":
            score, stride = score, 32
        else:
            score = layers.ConvTranspose(k, 2, dtype=dt, name="up_pool5")(score)
            score = score + layers.Conv(k, 1, dtype=dt, kernel_init=nn.initializers.zeros, name="score_pool4")(pool4)
            stride = 16
            if self.variant == "8s":
                score = layers.ConvTranspose(k, 2, dtype=dt, name="up_pool4")(score)
                score = score + layers.Conv(k, 1, dtype=dt, kernel_init=nn.initializers.zeros,
                                            name="score_pool3")(pool3)
                stride = 8
        logits = layers.ConvTranspose(k, stride, dtype=dt, name="up_final")(score)
        return logits.astype(jnp.float32)


CARD = ModelCard(
    name="fcn",
    summary="FCN-32s/16s/8s: VGG/ResNet backbone, learned transposed-conv upsampling, pool3/pool4 skip fusion",
    reference="Long, Shelhamer, Darrell. Fully Convolutional Networks for Semantic Segmentation. CVPR 2015. "
              "arXiv:1411.4038",
    input_contract="x: [B, *S, C] float32, channels-last; each spatial size divisible by 32; "
                   "intensities normalised per channel",
)


@register("fcn", card=CARD, summary=CARD.summary)
def fcn(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype: Any = None, **cfg) -> FCN:
    return FCN(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, dtype=dtype, **cfg)
