"""Building blocks shared by every model: N-d convolutions, normalisation, conv blocks.

Every convolution in the zoo goes through :class:`Conv` / :class:`ConvTranspose` here, which
call :mod:`kernels.conv`, so the lowering is chosen in one place. One code path serves 2D and
3D: the number of spatial dims is taken from the input ``x: [B, *S, C]``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels import conv as conv_ops

Dtype = Any
NORMS = ("batch", "instance", "group", "none")


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _add_bias(conv: nn.Module, y, dtype):
    """``y`` plus ``conv``'s zero-initialised ``bias [features]`` param when ``conv.use_bias``."""
    if not conv.use_bias:
        return y
    return y + conv.param("bias", nn.initializers.zeros, (conv.features,), conv.param_dtype).astype(dtype)


class Conv(nn.Module):
    """Channels-last convolution, ``[B, *S, Cin] -> [B, *S / strides, features]``, 'SAME' padding."""

    features: int
    kernel_size: int | Sequence[int] = 3
    strides: int | Sequence[int] = 1
    dilation: int | Sequence[int] = 1
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.kaiming_normal()

    @nn.compact
    def __call__(self, x):
        nd = x.ndim - 2
        ks = _tuple(self.kernel_size, nd)
        kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features), self.param_dtype)
        dtype = self.dtype or x.dtype
        y = conv_ops.conv_nd(x.astype(dtype), kernel.astype(dtype), _tuple(self.strides, nd), "SAME",
                             _tuple(self.dilation, nd))
        return _add_bias(self, y, dtype)


class ConvTranspose(nn.Module):
    """Learned upsampling by ``strides`` (kernel size == strides unless given),
    ``[B, *S, C] -> [B, *S*strides, features]``; ``padding`` "SAME" (lax/Flax alignment) or "torch"
    (PyTorch/MONAI ``padding=(K-1)//2, output_padding=s-1``; see ``kernels.conv``)."""

    features: int
    strides: int | Sequence[int] = 2
    kernel_size: int | Sequence[int] | None = None
    padding: Any = "SAME"
    use_bias: bool = True
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    kernel_init: Any = nn.initializers.kaiming_normal()

    @nn.compact
    def __call__(self, x):
        nd = x.ndim - 2
        st = _tuple(self.strides, nd)
        ks = _tuple(self.kernel_size, nd) if self.kernel_size is not None else st
        kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features), self.param_dtype)
        dtype = self.dtype or x.dtype
        y = conv_ops.conv_transpose_nd(x.astype(dtype), kernel.astype(dtype), st, self.padding)
        return _add_bias(self, y, dtype)


class Norm(nn.Module):
    """Normalisation by name: ``batch`` | ``instance`` | ``group`` | ``none``.

    Statistics are computed in float32 whatever the compute dtype.
    """

    kind: str = "instance"
    num_groups: int = 8
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.kind == "none":
            return x
        if self.kind == "batch":
            return nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
        if self.kind == "instance":
            # Per-sample, per-channel statistics over the spatial dims (nnU-Net's default).
            return nn.GroupNorm(num_groups=None, group_size=1, dtype=self.dtype)(x)
        if self.kind == "group":
            groups = min(self.num_groups, x.shape[-1])
            while x.shape[-1] % groups:
                groups -= 1
            return nn.GroupNorm(num_groups=groups, dtype=self.dtype)(x)
        raise ValueError(f"unknown norm {self.kind!r}; expected one of {NORMS}")


class ConvBlock(nn.Module):
    """``num_convs`` × (conv 3^D → norm → ReLU), optional dropout after the last."""

    features: int
    num_convs: int = 2
    norm: str = "instance"
    dropout: float = 0.0
    strides: int = 1
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        for i in range(self.num_convs):
            x = Conv(self.features, 3, strides=self.strides if i == 0 else 1,
                     use_bias=self.norm == "none", dtype=self.dtype)(x)
            x = Norm(self.norm, dtype=self.dtype)(x, train)
            x = nn.relu(x)
        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


def check_common(name: str, spatial_dims: int, in_channels: int, num_classes: int, norm: str | None = None):
    """Validate the arguments every model takes; raise ``ValueError`` naming the offending value."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"{name}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"{name}: in_channels must be a positive int, got {in_channels!r}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"{name}: num_classes must be a positive int, got {num_classes!r}")
    if norm is not None and norm not in NORMS:
        raise ValueError(f"{name}: norm must be one of {NORMS}, got {norm!r}")


def check_input(name: str, x, spatial_dims: int, in_channels: int, divisor: int = 1):
    """Check ``x: [B, *S, C]`` against the model's contract at trace time (shapes are static)."""
    if x.ndim != spatial_dims + 2:
        raise ValueError(f"{name}: expected input [B, *S, C] with {spatial_dims} spatial dims "
                         f"(rank {spatial_dims + 2}); got shape {tuple(x.shape)}")
    if x.shape[-1] != in_channels:
        raise ValueError(f"{name}: expected {in_channels} input channels (last axis); got shape {tuple(x.shape)}")
    bad = [s for s in x.shape[1:-1] if s % divisor]
    if bad:
        raise ValueError(f"{name}: spatial sizes {tuple(x.shape[1:-1])} must be divisible by {divisor} "
                         f"(the model downsamples by that factor)")


def upsample_linear(x, spatial_shape):
    """Bilinear (2D) / trilinear (3D) resize of ``x: [B, *S, C]`` to ``[B, *spatial_shape, C]``, same dtype.

    Antialiased only when some axis shrinks: when every axis grows, jax's antialiasing changes nothing (it only
    widens the kernel when downsampling), and the plain form is the one exporters (jax2onnx) can convert."""
    spatial_shape = tuple(int(s) for s in spatial_shape)
    if tuple(x.shape[1:-1]) == spatial_shape:
        return x
    grows = all(n >= o for o, n in zip(x.shape[1:-1], spatial_shape))
    return jax.image.resize(x, (x.shape[0],) + spatial_shape + (x.shape[-1],), method="linear",
                            antialias=not grows).astype(x.dtype)


class AttentionGate(nn.Module):
    """Additive attention gate (Oktay et al. 2018): ``skip * sigmoid(psi(relu(Wx skip + Wg gate)))``.

    ``skip: [B, *S, Cs]`` and ``gate: [B, *S, Cg]`` (the decoder path, already upsampled to ``S``);
    returns ``skip`` scaled by a per-voxel coefficient in (0, 1).
    """

    features: int
    norm: str = "instance"
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, skip, gate, train: bool = False):
        theta = Norm(self.norm, dtype=self.dtype, name="norm_x")(Conv(self.features, 1, dtype=self.dtype,
                                                                      name="w_x")(skip), train)
        phi = Norm(self.norm, dtype=self.dtype, name="norm_g")(Conv(self.features, 1, dtype=self.dtype,
                                                                    name="w_g")(gate), train)
        psi = Conv(1, 1, dtype=self.dtype, name="psi")(nn.relu(theta + phi))
        return skip * nn.sigmoid(psi)
