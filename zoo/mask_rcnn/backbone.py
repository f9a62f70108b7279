"""ResNet-FPN backbone: an encoder giving strides 2..32, then a feature pyramid P2..P5.

The encoder follows the zoo's encoder interface (``__call__(x, train)`` → feature maps at
strides 2, 4, 8, 16, 32). ``encoder="tiny"`` is a small ResNet-18-shaped network defined here
(one basic block per stage by default) so tests and CPU runs are fast; any other name
(``resnet18/34/50``, ``vgg11/16``) comes from ``zoo.encoders.get_encoder`` with
``features=encoder_width``, ``norm`` and ``dtype`` (``encoder_kwargs`` override them).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from zoo.encoders import BasicBlock, get_encoder
from zoo.layers import Conv, Norm

__all__ = ["TinyResNet", "FPN", "make_encoder"]


class TinyResNet(nn.Module):
    """ResNet with basic blocks: stem (stride 2) + four stages (strides 4, 8, 16, 32).

    ``x: [B, H, W, C]`` → ``[f2, f4, f8, f16, f32]``; widths ``width * (1, 2, 4, 8)``. The blocks are
    :class:`zoo.encoders.BasicBlock`, the zoo ResNets' own.
    ``blocks=(2, 2, 2, 2), width=64`` is ResNet-18 without the stem max-pool.
    """

    width: int = 16
    blocks: Sequence[int] = (1, 1, 1, 1)
    norm: str = "group"
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = Conv(self.width, 3, strides=2, use_bias=False, dtype=self.dtype)(x)
        x = nn.relu(Norm(self.norm, dtype=self.dtype)(x, train))
        feats = [x]
        for stage, n in enumerate(self.blocks):
            for i in range(n):
                x = BasicBlock(self.width * 2 ** stage, strides=2 if i == 0 else 1, norm=self.norm,
                               dtype=self.dtype)(x, train)
            feats.append(x)
        return feats


def make_encoder(name: str, width: int, norm: str, dtype, kwargs: dict | None = None):
    """The backbone encoder by name: ``tiny`` here, others from ``zoo.encoders``."""
    if name == "tiny":
        return TinyResNet(width=width, norm=norm, dtype=dtype, **(kwargs or {}))
    return get_encoder(name, **{"features": width, "norm": norm, "dtype": dtype, **(kwargs or {})})


class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017): lateral 1×1, nearest top-down upsampling, 3×3 output convs.

    Takes encoder features at strides 4..32 (``[f4, f8, f16, f32]``) → ``[P2, P3, P4, P5]``,
    each ``[B, h_l, w_l, channels]``.
    """

    channels: int = 64
    dtype: Any = None

    @nn.compact
    def __call__(self, feats):
        lat = [Conv(self.channels, 1, dtype=self.dtype)(f) for f in feats]
        out = [lat[-1]]
        for f in reversed(lat[:-1]):
            up = out[0]
            for axis, size in ((1, f.shape[1]), (2, f.shape[2])):
                up = jnp.repeat(up, size // up.shape[axis], axis=axis)
            out.insert(0, f + up)
        return [Conv(self.channels, 3, dtype=self.dtype)(p).astype(jnp.float32) for p in out]
