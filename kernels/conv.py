"""Channels-last N-d convolution ops used by every model in the zoo.

All models build their convolutions through :func:`conv_nd` and :func:`conv_transpose_nd`
(via ``zoo.layers``) so that a faster lowering per backend can be chosen in one place
(see PERFORMANCE.md: XLA:CPU is slow on transposed and 3D convolutions). The plain
``lax`` convolutions here are the references any faster lowering is tested against.

Shapes: ``x: [B, *S, Cin]``, ``w: [*K, Cin, Cout]`` (Flax's kernel layout).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv_nd", "conv_transpose_nd", "conv_nd_reference", "conv_transpose_nd_reference"]


def _dimension_numbers(nd: int):
    spatial = "DHW"[-nd:] if nd <= 3 else None
    if spatial is None:
        raise ValueError(f"only 1-3 spatial dims are supported, got {nd}")
    return lax.conv_dimension_numbers((1,) * (nd + 2), (1,) * (nd + 2),
                                      ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))


def _same_padding(kernel: Sequence[int], dilation: Sequence[int]):
    pads = []
    for k, d in zip(kernel, dilation):
        eff = (k - 1) * d + 1
        pads.append(((eff - 1) // 2, eff - 1 - (eff - 1) // 2))
    return pads


def conv_nd_reference(x, w, strides=1, padding="SAME", dilation=1, feature_group_count=1):
    """Plain ``lax.conv_general_dilated`` convolution, channels-last."""
    nd = x.ndim - 2
    strides = (strides,) * nd if isinstance(strides, int) else tuple(strides)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    if padding == "SAME":
        pad = _same_padding(w.shape[:nd], dilation)
    elif padding == "VALID":
        pad = [(0, 0)] * nd
    else:
        pad = padding
    return lax.conv_general_dilated(
        x, w, window_strides=strides, padding=pad, rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(nd), feature_group_count=feature_group_count)


def conv_transpose_nd_reference(x, w, strides=2):
    """Transposed convolution with ``kernel == strides`` semantics of ``flax.linen.ConvTranspose``
    (padding "SAME", output size ``S * strides``)."""
    nd = x.ndim - 2
    strides = (strides,) * nd if isinstance(strides, int) else tuple(strides)
    return lax.conv_transpose(x, w, strides=strides, padding="SAME",
                              dimension_numbers=_dimension_numbers(nd))


def conv_nd(x, w, strides=1, padding="SAME", dilation=1, feature_group_count=1):
    """Convolution ``[B, *S, Cin] * [*K, Cin, Cout] -> [B, *S', Cout]`` (lowering chosen per backend)."""
    return conv_nd_reference(x, w, strides, padding, dilation, feature_group_count)


def conv_transpose_nd(x, w, strides=2):
    """Transposed convolution ``[B, *S, Cin] -> [B, *S*strides, Cout]``, ``w: [*K, Cin, Cout]``."""
    return conv_transpose_nd_reference(x, w, strides)
