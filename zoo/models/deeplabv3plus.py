"""DeepLabV3+ (Chen et al. 2018), 2D and 3D from one code path.

``x: [B, *S, C] -> logits [B, *S, K]``. A ResNet from :mod:`zoo.encoders` run at output stride 16
(or 8) with atrous convolutions in its last stage(s); atrous spatial pyramid pooling (ASPP) on
the deepest features; a decoder that upsamples them to stride 4, fuses the stride-4 low-level
features (1^D-projected), refines with two 3^D convolutions and upsamples linearly to the input
size. Each spatial size must be divisible by ``output_stride``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo import layers
from zoo.cards import ModelCard
from zoo.encoders import RESNET_CONFIGS, get_encoder
from zoo.registry import register


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1^D conv, 3^D convs at ``rates``, image pooling; concat; 1^D conv."""

    features: int
    rates: Sequence[int] = (6, 12, 18)
    norm: str = "batch"
    dropout: float = 0.0
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        bias = self.norm == "none"

        def branch(y, k, rate, name):
            y = layers.Conv(self.features, k, dilation=rate, use_bias=bias, dtype=self.dtype, name=name)(y)
            return nn.relu(layers.Norm(self.norm, dtype=self.dtype, name=name + "_norm")(y, train))

        outs = [branch(x, 1, 1, "conv1")]
        outs += [branch(x, 3, r, f"atrous{r}") for r in self.rates]
        # Image-level features: global mean, 1^D conv (no norm: one value per channel), broadcast back.
        spatial_axes = tuple(range(1, x.ndim - 1))
        g = jnp.mean(x, axis=spatial_axes, keepdims=True)
        g = nn.relu(layers.Conv(self.features, 1, dtype=self.dtype, name="image_pool")(g))
        outs.append(jnp.broadcast_to(g, x.shape[:-1] + (self.features,)))
        y = branch(jnp.concatenate(outs, axis=-1), 1, 1, "project")
        if self.dropout > 0:
            y = nn.Dropout(self.dropout, deterministic=not train)(y)
        return y


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ with a ResNet encoder.

    Attributes:
      backbone: ``resnet18`` | ``resnet34`` | ``resnet50``.
      features: encoder base width (64 in the paper; small by default for CPU).
      output_stride: 16 or 8 (atrous rates default to (6, 12, 18) at 16 and (12, 24, 36) at 8).
      aspp_features / decoder_features: default ``4 * features`` (256 at width 64, as in the paper).
      low_level_features: projection of the stride-4 features, default ``3 * features // 4`` (48 at 64).
      atrous_rates: override the ASPP rates.
      norm / dropout / dtype: as elsewhere in the zoo (dropout after ASPP).
    """

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    backbone: str = "resnet18"
    features: int = 8
    output_stride: int = 16
    aspp_features: int | None = None
    decoder_features: int | None = None
    low_level_features: int | None = None
    atrous_rates: Sequence[int] | None = None
    norm: str = "batch"
    dropout: float = 0.0
    dtype: Any = None

    def __post_init__(self):
        layers.check_common("deeplabv3plus", self.spatial_dims, self.in_channels, self.num_classes, self.norm)
        if self.backbone not in RESNET_CONFIGS:
            raise ValueError(f"deeplabv3plus: backbone must be one of {sorted(RESNET_CONFIGS)}, got {self.backbone!r}")
        if self.output_stride not in (8, 16):
            raise ValueError(f"deeplabv3plus: output_stride must be 8 or 16, got {self.output_stride!r}")
        if not isinstance(self.features, int) or self.features < 1:
            raise ValueError(f"deeplabv3plus: features must be a positive int, got {self.features!r}")
        for k in ("aspp_features", "decoder_features", "low_level_features"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"deeplabv3plus: {k} must be a positive int or None, got {v!r}")
        if self.atrous_rates is not None and (len(self.atrous_rates) == 0 or any(
                (not isinstance(r, int)) or r < 1 for r in self.atrous_rates)):
            raise ValueError(f"deeplabv3plus: atrous_rates must be positive ints, got {self.atrous_rates!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"deeplabv3plus: dropout must be in [0, 1), got {self.dropout!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_input("deeplabv3plus", x, self.spatial_dims, self.in_channels, self.output_stride)
        full = x.shape[1:-1]
        dt, f = self.dtype, self.features
        feats = get_encoder(self.backbone, features=f, norm=self.norm, output_stride=self.output_stride,
                            dtype=dt, name="encoder")(x, train)
        low, high = feats[1], feats[4]
        rates = tuple(self.atrous_rates or ((6, 12, 18) if self.output_stride == 16 else (12, 24, 36)))
        y = ASPP(self.aspp_features or 4 * f, rates, norm=self.norm, dropout=self.dropout, dtype=dt,
                 name="aspp")(high, train)
        low = layers.Conv(self.low_level_features or max(3 * f // 4, 1), 1, use_bias=self.norm == "none",
                          dtype=dt, name="low_level")(low)
        low = nn.relu(layers.Norm(self.norm, dtype=dt, name="low_level_norm")(low, train))
        y = layers.upsample_linear(y, low.shape[1:-1])
        y = jnp.concatenate([y, low], axis=-1)
        y = layers.ConvBlock(self.decoder_features or 4 * f, num_convs=2, norm=self.norm, dtype=dt,
                             name="decoder")(y, train)
        logits = layers.Conv(self.num_classes, 1, dtype=dt, name="classifier")(y)
        return layers.upsample_linear(logits, full).astype(jnp.float32)


CARD = ModelCard(
    name="deeplabv3plus",
    summary="DeepLabV3+: atrous ResNet (output stride 16/8), ASPP, decoder fusing stride-4 low-level features",
    reference="Chen, Zhu, Papandreou, Schroff, Adam. Encoder-Decoder with Atrous Separable Convolution "
              "(DeepLabV3+). ECCV 2018. arXiv:1802.02611",
    input_contract="x: [B, *S, C] float32, channels-last; each spatial size divisible by output_stride; "
                   "intensities normalised per channel",
)


@register("deeplabv3plus", card=CARD, summary=CARD.summary)
def deeplabv3plus(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype: Any = None,
                  **cfg) -> DeepLabV3Plus:
    return DeepLabV3Plus(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                         dtype=dtype, **cfg)
