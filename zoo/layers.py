"""Building blocks shared by every model: N-d convolutions, normalisation, conv blocks.

Every convolution in the zoo goes through :class:`Conv` / :class:`ConvTranspose` here, which
call :mod:`kernels.conv`, so the lowering is chosen in one place. One code path serves 2D and
3D: the number of spatial dims is taken from the input ``x: [B, *S, C]``.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kernels import conv as conv_ops

Dtype = Any
NORMS = ("batch", "instance", "group", "none")


def _tuple(v, n):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _add_bias(conv: nn.Module, y, dtype, add_bias: bool = True):
    """``y`` plus ``conv``'s zero-initialised ``bias [features]`` param when ``conv.use_bias``; with ``add_bias=False``
    ``(y, bias)``, the bias left out (``None`` without ``use_bias``)."""
    bias = (conv.param("bias", nn.initializers.zeros, (conv.features,), conv.param_dtype) if conv.use_bias
            else None)
    if not add_bias:
        return y, bias
    return y if bias is None else y + bias.astype(dtype)


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
    def __call__(self, x, add_bias: bool = True):
        """``y``; with ``add_bias=False`` ``(y, bias)`` (``None`` without ``use_bias``), the bias left out of ``y``
        for a :class:`BatchNorm` that folds it (its ``conv_bias``: batch norm in training cancels it exactly)."""
        nd = x.ndim - 2
        ks = _tuple(self.kernel_size, nd)
        kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features), self.param_dtype)
        dtype = self.dtype or x.dtype
        y = conv_ops.conv_nd(x.astype(dtype), kernel.astype(dtype), _tuple(self.strides, nd), "SAME",
                             _tuple(self.dilation, nd))
        return _add_bias(self, y, dtype, add_bias)


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
    def __call__(self, x, add_bias: bool = True):
        """``y``, or ``(y, bias)`` with ``add_bias=False`` as :class:`Conv` does."""
        nd = x.ndim - 2
        st = _tuple(self.strides, nd)
        ks = _tuple(self.kernel_size, nd) if self.kernel_size is not None else st
        kernel = self.param("kernel", self.kernel_init, ks + (x.shape[-1], self.features), self.param_dtype)
        dtype = self.dtype or x.dtype
        y = conv_ops.conv_transpose_nd(x.astype(dtype), kernel.astype(dtype), st, self.padding)
        return _add_bias(self, y, dtype, add_bias)


def _channel_sums(*terms):
    """Per-channel sums (over every axis but the last) of each ``[B, *S, C]`` term, as one reduction."""
    axes = tuple(range(terms[0].ndim - 1))
    return jnp.sum(jnp.stack(terms, axis=-1), axis=axes).T


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def batch_norm_act(y, scale, shift, slope, epsilon: float, act: bool):
    """Training batch norm of ``y: [B, *S, C]`` over every axis but the last, then (``act``) PReLU with the scalar
    ``slope``: ``(z, mean, var)``, ``z`` in ``y``'s dtype, the batch ``mean`` / biased ``var`` (float32, for the
    running averages; their cotangents are ignored). Statistics in float32, ``var = E[y^2] - E[y]^2`` clipped at 0
    as flax's ``BatchNorm`` computes them. The gradient is the closed form (two passes over ``y``: one reduction, one
    elementwise) instead of autodiff through the statistics, and the normalised tensor is never stored."""
    z, mean, var, _ = _bn_act_forward(y, scale, shift, slope, epsilon, act)
    return z, mean, var


def _bn_act_forward(y, scale, shift, slope, epsilon, act):
    y32 = y.astype(jnp.float32)
    n = y.size // y.shape[-1]
    s1, s2 = _channel_sums(y32, jnp.square(y32))
    mean = s1 / n
    var = jnp.maximum(0.0, s2 / n - jnp.square(mean))
    rstd = jax.lax.rsqrt(var + epsilon)
    u = (y32 - mean) * (rstd * scale) + shift
    z = jnp.where(u >= 0, u, slope * u) if act else u
    return z.astype(y.dtype), mean, var, rstd


def _bn_act_fwd(y, scale, shift, slope, epsilon, act):
    z, mean, var, rstd = _bn_act_forward(y, scale, shift, slope, epsilon, act)
    return (z, mean, var), (y, mean, rstd, scale, shift, slope)


def _bn_act_bwd(epsilon, act, res, cts):
    y, mean, rstd, scale, shift, slope = res
    dz = cts[0].astype(jnp.float32)
    n = y.size // y.shape[-1]
    xhat = (y.astype(jnp.float32) - mean) * rstd
    if act:
        u = xhat * scale + shift
        neg = u < 0
        g = jnp.where(neg, slope * dz, dz)
        dshift, dscale, dslope = _channel_sums(g, g * xhat, jnp.where(neg, u * dz, 0.0))
        dslope = jnp.sum(dslope).astype(slope.dtype)
    else:
        g = dz
        dshift, dscale = _channel_sums(g, g * xhat)
        dslope = jnp.zeros_like(slope)
    dy = (scale * rstd) * (g - dshift / n - xhat * (dscale / n))
    return dy.astype(y.dtype), dscale.astype(scale.dtype), dshift.astype(shift.dtype), dslope


batch_norm_act.defvjp(_bn_act_fwd, _bn_act_bwd)


class BatchNorm(nn.Module):
    """Batch norm over every axis but the last, with flax ``nn.BatchNorm``'s variables (params ``scale`` / ``bias``,
    ``batch_stats`` ``mean`` / ``var``, momentum and epsilon as given) and numerics, in one fused op in training
    (:func:`batch_norm_act`).

    ``conv_bias [C]`` (optional): the bias of the convolution before it, left out of ``x`` (``Conv(...)(x,
    add_bias=False)``): training cancels it exactly (only the running mean sees it), inference adds it in the same
    pass. ``slope`` (optional): a PReLU slope applied after the affine, in the same pass (``PReLU.slope``)."""

    momentum: float = 0.99
    epsilon: float = 1e-5
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, conv_bias=None, slope=None):
        c = x.shape[-1]
        ra_mean = self.variable("batch_stats", "mean", lambda s: jnp.zeros(s, jnp.float32), (c,))
        ra_var = self.variable("batch_stats", "var", lambda s: jnp.ones(s, jnp.float32), (c,))
        scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype).astype(jnp.float32)
        shift = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype).astype(jnp.float32)
        act = slope is not None
        slope = jnp.asarray(slope if act else 1.0, jnp.float32)
        out_dtype = self.dtype or jnp.result_type(x, self.param_dtype)
        bias = jnp.zeros((c,), jnp.float32) if conv_bias is None else conv_bias.astype(jnp.float32)
        if train:
            z, mean, var = batch_norm_act(x, scale, shift, slope, self.epsilon, act)
            if not self.is_initializing():
                ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * (mean + bias)
                ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
            return z.astype(out_dtype)
        u = (x.astype(jnp.float32) + bias - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) \
            + shift
        return (jnp.where(u >= 0, u, slope * u) if act else u).astype(out_dtype)


class PReLU(nn.Module):
    """PReLU with one learned slope (flax ``nn.PReLU``'s parameter ``negative_slope``); :meth:`slope` hands it to
    a :class:`BatchNorm` that applies it in its own pass."""

    negative_slope_init: float = 0.01
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.negative_slope = self.param("negative_slope", nn.initializers.constant(self.negative_slope_init), (),
                                         self.param_dtype)

    def slope(self):
        return self.negative_slope

    def __call__(self, x):
        return jnp.where(x >= 0, x, jnp.asarray(self.negative_slope, x.dtype) * x)


class Norm(nn.Module):
    """Normalisation by name: ``batch`` | ``instance`` | ``group`` | ``none``.

    Statistics are computed in float32 whatever the compute dtype.
    """

    kind: str = "instance"
    num_groups: int = 8
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, conv_bias=None, slope=None):
        """``conv_bias`` / ``slope``: batch norm only, folded into its pass (:class:`BatchNorm`)."""
        if self.kind == "batch":
            return BatchNorm(momentum=0.9, dtype=self.dtype)(x, train, conv_bias, slope)
        if conv_bias is not None or slope is not None:
            raise ValueError(f"Norm({self.kind!r}) folds no conv bias or slope; only batch norm does")
        if self.kind == "none":
            return x
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
