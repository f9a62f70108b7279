"""Prediction heads: RPN (objectness + deltas), box/class head, mask head; multi-level RoIAlign."""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels.roi_align import roi_align
from zoo.layers import Conv, ConvTranspose

__all__ = ["RPNHead", "BoxHead", "MaskHead", "multilevel_roi_align", "assign_levels"]

_small = nn.initializers.normal(0.01)


class RPNHead(nn.Module):
    """Shared over levels: 3×3 conv + ReLU → per-anchor objectness logit and 4 deltas.

    ``[P_l: [B, h, w, C]]`` → ``logits [B, sum h*w*A]``, ``deltas [B, sum h*w*A, 4]``.
    """

    num_anchors: int
    dtype: Any = None

    @nn.compact
    def __call__(self, feats):
        conv = Conv(feats[0].shape[-1], 3, dtype=self.dtype, kernel_init=_small, name="conv")
        cls = Conv(self.num_anchors, 1, dtype=self.dtype, kernel_init=_small, name="objectness")
        box = Conv(4 * self.num_anchors, 1, dtype=self.dtype, kernel_init=_small, name="deltas")
        logits, deltas = [], []
        for f in feats:
            t = nn.relu(conv(f))
            b = f.shape[0]
            logits.append(cls(t).astype(jnp.float32).reshape(b, -1))
            deltas.append(box(t).astype(jnp.float32).reshape(b, -1, 4))
        return jnp.concatenate(logits, 1), jnp.concatenate(deltas, 1)


def assign_levels(boxes, num_levels: int, canonical_size: float, canonical_level: int, min_level: int = 2):
    """FPN level index (0 = P``min_level``) of each box: ``floor(k0 + log2(sqrt(area) / s0))``, clamped."""
    size = jnp.sqrt(jnp.maximum((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]), 1e-6))
    lvl = jnp.floor(canonical_level + jnp.log2(size / canonical_size + 1e-8))
    return (jnp.clip(lvl, min_level, min_level + num_levels - 1) - min_level).astype(jnp.int32)


def multilevel_roi_align(feats: Sequence, strides: Sequence[int], boxes, output_size: int, sampling_ratio: int,
                         canonical_size: float, canonical_level: int):
    """RoIAlign each of ``boxes [B, R, 4]`` on its FPN level → ``[B, R, s, s, C]``.

    Every level is pooled for every box and the right one selected (static shapes; the pyramid
    has four levels, so this costs four small gathers instead of a data-dependent split).
    """
    lvl = assign_levels(boxes, len(feats), canonical_size, canonical_level)
    out = 0.0
    for i, (f, s) in enumerate(zip(feats, strides)):
        pooled = jax.vmap(lambda fm, b: roi_align(fm, b, output_size, sampling_ratio, 1.0 / s))(f, boxes)
        out = out + jnp.where((lvl == i)[..., None, None, None], pooled, 0.0)
    return out


class BoxHead(nn.Module):
    """Two fully connected layers → class logits ``[N, K]`` and class-specific deltas ``[N, K, 4]``."""

    num_classes: int
    hidden: int = 256
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(x))
        logits = nn.Dense(self.num_classes, kernel_init=_small, dtype=self.dtype, name="cls")(x)
        deltas = nn.Dense(4 * self.num_classes, kernel_init=nn.initializers.normal(0.001), dtype=self.dtype,
                          name="deltas")(x)
        return logits.astype(jnp.float32), deltas.astype(jnp.float32).reshape(-1, self.num_classes, 4)


class MaskHead(nn.Module):
    """``num_convs`` × (3×3 conv + ReLU) → 2× transposed conv + ReLU → 1×1 conv: ``[N, s, s, C] → [N, 2s, 2s, K]``."""

    num_classes: int
    features: int = 64
    num_convs: int = 4
    dtype: Any = None

    @nn.compact
    def __call__(self, x):
        for _ in range(self.num_convs):
            x = nn.relu(Conv(self.features, 3, dtype=self.dtype)(x))
        x = nn.relu(ConvTranspose(self.features, 2, dtype=self.dtype)(x))
        return Conv(self.num_classes, 1, dtype=self.dtype, kernel_init=nn.initializers.normal(0.001))(x).astype(
            jnp.float32)
