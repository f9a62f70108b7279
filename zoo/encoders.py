"""Shared backbone family: ResNet-18/34/50 and VGG-11/16, 2D and 3D from one code path.

``get_encoder(name, **cfg)`` returns a Flax module whose ``__call__(x, train=False)`` maps
``x: [B, *S, C]`` to a list of five feature maps at strides 2, 4, 8, 16, 32 (stem, then one per
stage). With ``output_stride=16`` (or 8) the last stage(s) keep their resolution and use atrous
(dilated) convolutions instead (DeepLab); the returned list still has five entries, and
``encoder.strides()`` gives the stride of each. ``encoder.out_channels()`` gives their channels.

Used by FCN, DeepLabV3+, Mask R-CNN's FPN and the outcome model. All convolutions go through
``zoo.layers.Conv``, normalisation through ``zoo.layers.Norm``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo import layers

__all__ = ["ResNet", "VGG", "ENCODERS", "get_encoder", "list_encoders", "VGG_CONFIGS"]

# (blocks per stage, bottleneck?)
RESNET_CONFIGS = {
    "resnet18": ((2, 2, 2, 2), False),
    "resnet34": ((3, 4, 6, 3), False),
    "resnet50": ((3, 4, 6, 3), True),
}
# Convolutions per stage (5 stages, each ends with a 2x max-pool), as multiples of the base width 1,2,4,8,8.
VGG_CONFIGS = {
    "vgg11": (1, 1, 2, 2, 2),
    "vgg16": (2, 2, 3, 3, 3),
}
_VGG_MULT = (1, 2, 4, 8, 8)


def _check_encoder_args(name: str, features, norm: str, output_stride):
    if not isinstance(features, int) or features < 1:
        raise ValueError(f"{name}: features (base width) must be a positive int, got {features!r}")
    if norm not in layers.NORMS:
        raise ValueError(f"{name}: norm must be one of {layers.NORMS}, got {norm!r}")
    if output_stride not in (8, 16, 32):
        raise ValueError(f"{name}: output_stride must be 8, 16 or 32, got {output_stride!r}")


def _check_encoder_input(name: str, x, divisor: int):
    if x.ndim not in (4, 5):
        raise ValueError(f"{name}: expected input [B, *S, C] with 2 or 3 spatial dims; got shape {tuple(x.shape)}")
    bad = [s for s in x.shape[1:-1] if s % divisor]
    if bad:
        raise ValueError(f"{name}: spatial sizes {tuple(x.shape[1:-1])} must be divisible by {divisor} "
                         f"(the encoder downsamples by that factor)")


def _add_shortcut(x, y, strides: int, norm: str, dtype, train: bool):
    """``relu(shortcut(x) + y)``, the shortcut projected (1^D conv ``proj`` + ``proj_norm``, built in the
    calling block's scope) when the stride or width changes."""
    if strides != 1 or x.shape[-1] != y.shape[-1]:
        x = layers.Conv(y.shape[-1], 1, strides=strides, use_bias=norm == "none", dtype=dtype, name="proj")(x)
        x = layers.Norm(norm, dtype=dtype, name="proj_norm")(x, train)
    return nn.relu(x + y)


class BasicBlock(nn.Module):
    """ResNet basic block: 3^D conv → norm → ReLU → 3^D conv → norm, plus (projected) identity."""

    features: int
    strides: int = 1
    dilation: int = 1
    norm: str = "batch"
    dtype: Any = None
    expansion = 1

    @nn.compact
    def __call__(self, x, train: bool = False):
        bias = self.norm == "none"
        y = layers.Conv(self.features, 3, strides=self.strides, dilation=self.dilation, use_bias=bias,
                        dtype=self.dtype)(x)
        y = nn.relu(layers.Norm(self.norm, dtype=self.dtype)(y, train))
        y = layers.Conv(self.features, 3, dilation=self.dilation, use_bias=bias, dtype=self.dtype)(y)
        y = layers.Norm(self.norm, dtype=self.dtype)(y, train)
        return _add_shortcut(x, y, self.strides, self.norm, self.dtype, train)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1^D conv → 3^D conv (stride, dilation) → 1^D conv to ``4 * features``."""

    features: int
    strides: int = 1
    dilation: int = 1
    norm: str = "batch"
    dtype: Any = None
    expansion = 4

    @nn.compact
    def __call__(self, x, train: bool = False):
        bias = self.norm == "none"
        out = self.features * self.expansion
        y = layers.Conv(self.features, 1, use_bias=bias, dtype=self.dtype)(x)
        y = nn.relu(layers.Norm(self.norm, dtype=self.dtype)(y, train))
        y = layers.Conv(self.features, 3, strides=self.strides, dilation=self.dilation, use_bias=bias,
                        dtype=self.dtype)(y)
        y = nn.relu(layers.Norm(self.norm, dtype=self.dtype)(y, train))
        y = layers.Conv(out, 1, use_bias=bias, dtype=self.dtype)(y)
        y = layers.Norm(self.norm, dtype=self.dtype)(y, train)
        return _add_shortcut(x, y, self.strides, self.norm, self.dtype, train)


class ResNet(nn.Module):
    """ResNet (He et al. 2016) feature extractor, ``[B, *S, C] -> 5 maps at strides 2, 4, 8, 16, 32``.

    Attributes:
      blocks: residual blocks per stage (4 stages).
      bottleneck: bottleneck blocks (ResNet-50) instead of basic blocks.
      features: stem width; stage ``i`` has ``features * 2**i`` (× 4 for bottlenecks) channels.
      norm: ``batch`` | ``instance`` | ``group`` | ``none``.
      output_stride: 32 (plain), 16 or 8: the last one or two stages keep resolution and dilate.
      dtype: compute dtype (params stay float32).
    """

    blocks: Sequence[int] = (2, 2, 2, 2)
    bottleneck: bool = False
    features: int = 64
    norm: str = "batch"
    output_stride: int = 32
    dtype: Any = None
    name_: str = "resnet"

    def __post_init__(self):
        _check_encoder_args(self.name_, self.features, self.norm, self.output_stride)
        if len(self.blocks) != 4 or any((not isinstance(b, int)) or b < 1 for b in self.blocks):
            raise ValueError(f"{self.name_}: blocks must be 4 positive ints, got {self.blocks!r}")
        super().__post_init__()

    def strides(self) -> tuple[int, ...]:
        """Stride of each returned feature map."""
        return tuple(min(s, self.output_stride) for s in (2, 4, 8, 16, 32))

    def out_channels(self) -> tuple[int, ...]:
        """Channels of each returned feature map."""
        exp = 4 if self.bottleneck else 1
        return (self.features,) + tuple(self.features * 2 ** i * exp for i in range(4))

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_encoder_input(self.name_, x, self.output_stride)
        nd = x.ndim - 2
        block = Bottleneck if self.bottleneck else BasicBlock
        x = x.astype(self.dtype or jnp.float32)
        x = layers.Conv(self.features, 7, strides=2, use_bias=self.norm == "none", dtype=self.dtype,
                        name="stem")(x)
        x = nn.relu(layers.Norm(self.norm, dtype=self.dtype, name="stem_norm")(x, train))
        outs = [x]
        x = nn.max_pool(x, window_shape=(3,) * nd, strides=(2,) * nd, padding="SAME")
        stride, dilation = 4, 1
        for i, n in enumerate(self.blocks):
            s = 1 if i == 0 else 2
            if i > 0 and stride * 2 > self.output_stride:
                s, dilation = 1, dilation * 2  # atrous: keep resolution, widen the receptive field
            elif s == 2:
                stride *= 2
            for j in range(n):
                x = block(self.features * 2 ** i, strides=s if j == 0 else 1, dilation=dilation,
                          norm=self.norm, dtype=self.dtype, name=f"stage{i}_block{j}")(x, train)
            outs.append(x)
        return outs


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015) feature extractor with norm after each conv (VGG-BN style).

    ``[B, *S, C] -> 5 maps`` taken after each 2x max-pool (strides 2, 4, 8, 16, 32; FCN's
    pool1..pool5). Stage widths are ``features * (1, 2, 4, 8, 8)``.
    """

    convs: Sequence[int] = (1, 1, 2, 2, 2)
    features: int = 64
    norm: str = "batch"
    output_stride: int = 32
    dtype: Any = None
    name_: str = "vgg"

    def __post_init__(self):
        _check_encoder_args(self.name_, self.features, self.norm, self.output_stride)
        if self.output_stride != 32:
            raise ValueError(f"{self.name_}: only output_stride=32 is supported, got {self.output_stride!r}")
        if len(self.convs) != 5 or any((not isinstance(c, int)) or c < 1 for c in self.convs):
            raise ValueError(f"{self.name_}: convs must be 5 positive ints, got {self.convs!r}")
        super().__post_init__()

    def strides(self) -> tuple[int, ...]:
        return (2, 4, 8, 16, 32)

    def out_channels(self) -> tuple[int, ...]:
        return tuple(self.features * m for m in _VGG_MULT)

    @nn.compact
    def __call__(self, x, train: bool = False):
        _check_encoder_input(self.name_, x, 32)
        nd = x.ndim - 2
        x = x.astype(self.dtype or jnp.float32)
        outs = []
        for i, (n, m) in enumerate(zip(self.convs, _VGG_MULT)):
            for j in range(n):
                x = layers.Conv(self.features * m, 3, use_bias=self.norm == "none", dtype=self.dtype,
                                name=f"stage{i}_conv{j}")(x)
                x = nn.relu(layers.Norm(self.norm, dtype=self.dtype, name=f"stage{i}_norm{j}")(x, train))
            x = nn.max_pool(x, window_shape=(2,) * nd, strides=(2,) * nd)
            outs.append(x)
        return outs


def _resnet(arch):
    blocks, bottleneck = RESNET_CONFIGS[arch]

    def make(features: int = 64, norm: str = "batch", output_stride: int = 32, dtype: Any = None,
             name: str | None = None) -> ResNet:
        return ResNet(blocks=blocks, bottleneck=bottleneck, features=features, norm=norm,
                      output_stride=output_stride, dtype=dtype, name_=arch, name=name)

    return make


def _vgg(arch):
    def make(features: int = 64, norm: str = "batch", output_stride: int = 32, dtype: Any = None,
             name: str | None = None) -> VGG:
        return VGG(convs=VGG_CONFIGS[arch], features=features, norm=norm, output_stride=output_stride,
                   dtype=dtype, name_=arch, name=name)

    return make


ENCODERS = {**{n: _resnet(n) for n in RESNET_CONFIGS}, **{n: _vgg(n) for n in VGG_CONFIGS}}


def list_encoders() -> list[str]:
    return sorted(ENCODERS)


def get_encoder(arch: str, /, **cfg) -> nn.Module:
    """Backbone ``arch`` (``resnet18|resnet34|resnet50|vgg11|vgg16``).

    ``cfg``: ``features`` (base width, default 64), ``norm`` (default ``batch``), ``output_stride``
    (32, or 16/8 for ResNets), ``dtype``, and ``name`` (the Flax submodule name, when built inside
    a parent's ``@nn.compact`` method). The module's ``__call__(x, train=False)`` returns the list
    of five feature maps at strides 2, 4, 8, 16, 32 (capped at ``output_stride``).
    """
    if arch not in ENCODERS:
        raise ValueError(f"unknown encoder {arch!r}; expected one of {list_encoders()}")
    unknown = sorted(set(cfg) - {"features", "norm", "output_stride", "dtype", "name"})
    if unknown:
        raise ValueError(f"encoder {arch!r} got unknown argument(s) {unknown}; "
                         "it accepts: features, norm, output_stride, dtype, name")
    return ENCODERS[arch](**cfg)
