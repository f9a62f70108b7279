"""Residual U-Net in MONAI's ``UNet`` layout (Kerfoot et al. 2018), 2D and 3D from one code path.

``x: [B, *S, C] -> logits [B, *S, K]``. The same network as ``monai.networks.nets.UNet(spatial_dims, in_channels,
out_channels, channels, strides, num_res_units, norm)``: every level *downsamples in its first unit* (a residual
unit whose first 3^D convolution and shortcut are strided), the bottom is a stride-1 residual unit, and each
decoder level is a 3^D stride-2 transposed convolution (PyTorch alignment) followed by a one-convolution residual
unit; skip connections concatenate ``[encoder input, decoder output]`` as MONAI's ``SkipConnection`` does.
Norm → activation (PReLU, one slope per layer, initialised to 0.25) follows every convolution except the
last, and convolutions keep their bias, all as MONAI builds it (with batch norm the bias is folded into the
norm after it, ``layers.BatchNorm``: training cancels it exactly, inference adds it in the norm's pass; the norm
and the PReLU run as one fused op). Layer by layer the parameter count equals MONAI's (1,627,597 for the 2D
``channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2, norm="batch"`` reference with 1 input
channel and 2 classes) and :func:`from_monai_state_dict` loads a MONAI checkpoint (tested to reproduce its outputs
when PyTorch and MONAI are installed).

Normalisation: the default, ``norm="instance"``, is MONAI's own default. The like-for-like configuration of the
speed comparison against MONAI (``benchmarks.compare_torch``) is ``norm="batch"`` on both sides: batch norm folds
into an affine at inference, instance norm computes per-sample statistics there (measured 0.68x of MONAI's 2D
inference speed with instance norm against 0.89x with batch norm, in one harness run).

Compared with the zoo ``unet`` at the same widths this network does ~4x fewer FLOPs (nothing but the last
transposed convolution runs at full resolution); it is the like-for-like model for ``benchmarks.compare_torch``.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from zoo import layers
from zoo.cards import ModelCard
from zoo.registry import register


def _PReLU(name: str) -> layers.PReLU:
    """PyTorch's ``nn.PReLU()``: one learned slope per layer, initialised to 0.25 (flax's default is 0.01)."""
    return layers.PReLU(negative_slope_init=0.25, name=name)


def _conv_norm_act(conv, x, norm: str, train: bool, norm_name: str, act_name: str, dtype):
    """``conv(x)`` → norm → PReLU (MONAI's ``Convolution`` with its ``ADN``). With batch norm, one fused pass
    after the convolution: its bias folded into the norm (``layers.BatchNorm``), the PReLU applied in it."""
    if norm == "batch":
        y, bias = conv(x, add_bias=False)
        return layers.Norm(norm, dtype=dtype, name=norm_name)(y, train, conv_bias=bias,
                                                             slope=_PReLU(name=act_name).slope())
    return _PReLU(name=act_name)(layers.Norm(norm, dtype=dtype, name=norm_name)(conv(x), train))


class ResidualUnit(nn.Module):
    """MONAI ``ResidualUnit``: ``subunits`` × (conv 3^D → norm → PReLU), the first strided, plus a shortcut
    (identity; a 1^D conv when only the width changes; a strided 3^D conv when strided)."""

    features: int
    strides: int = 1
    subunits: int = 2
    norm: str = "batch"
    last_conv_only: bool = False
    dtype: Any = None

    @nn.compact
    def __call__(self, x, train: bool = False):
        res = x
        for i in range(max(1, self.subunits)):
            conv = layers.Conv(self.features, 3, strides=self.strides if i == 0 else 1, dtype=self.dtype,
                               name=f"conv{i}")
            if self.last_conv_only and i == max(1, self.subunits) - 1:
                x = conv(x)
            else:
                x = _conv_norm_act(conv, x, self.norm, train, f"norm{i}", f"act{i}", self.dtype)
        if self.strides != 1 or res.shape[-1] != self.features:
            res = layers.Conv(self.features, 3 if self.strides != 1 else 1, strides=self.strides, dtype=self.dtype,
                              name="residual")(res)
        return x + res


class ResidualUNet(nn.Module):
    """See the module docstring. ``channels[i]`` is the width of level ``i``; ``strides[i]`` (len(channels) - 1
    of them) its downsampling; ``num_res_units`` 0 gives plain conv → norm → PReLU layers (MONAI's option)."""

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    channels: Sequence[int] = (16, 32, 64, 128, 256)
    strides: Sequence[int] = (2, 2, 2, 2)
    num_res_units: int = 2
    norm: str = "instance"
    dtype: Any = None

    def __post_init__(self):
        n = "residual_unet"
        layers.check_common(n, self.spatial_dims, self.in_channels, self.num_classes, self.norm)
        ch, st = tuple(self.channels), tuple(self.strides)
        if len(ch) < 2 or any(not isinstance(c, int) or c < 1 for c in ch):
            raise ValueError(f"{n}: channels must be >= 2 positive ints (one per level), got {self.channels!r}")
        if len(st) != len(ch) - 1 or any(not isinstance(s, int) or s < 1 for s in st):
            raise ValueError(f"{n}: strides must be len(channels) - 1 = {len(ch) - 1} positive ints, "
                             f"got {self.strides!r}")
        if not isinstance(self.num_res_units, int) or self.num_res_units < 0:
            raise ValueError(f"{n}: num_res_units must be an int >= 0, got {self.num_res_units!r}")
        super().__post_init__()

    def _down(self, x, features, strides, train, name):
        if self.num_res_units > 0:
            return ResidualUnit(features, strides, self.num_res_units, self.norm, dtype=self.dtype, name=name)(x, train)
        conv = layers.Conv(features, 3, strides=strides, dtype=self.dtype, name=f"{name}_conv")
        return _conv_norm_act(conv, x, self.norm, train, f"{name}_norm", f"{name}_act", self.dtype)

    def _up(self, x, features, strides, is_top, train, name):
        conv = layers.ConvTranspose(features, strides, kernel_size=3, padding="torch", dtype=self.dtype,
                                    name=f"{name}_conv")
        if is_top and self.num_res_units == 0:
            x = conv(x)
        else:
            x = _conv_norm_act(conv, x, self.norm, train, f"{name}_norm", f"{name}_act", self.dtype)
        if self.num_res_units > 0:
            x = ResidualUnit(features, 1, 1, self.norm, last_conv_only=is_top, dtype=self.dtype,
                             name=f"{name}_res")(x, train)
        return x

    @nn.compact
    def __call__(self, x, train: bool = False):
        layers.check_input("residual_unet", x, self.spatial_dims, self.in_channels,
                           int(np.prod(self.strides)))
        x = x.astype(self.dtype or jnp.float32)
        ch, st = tuple(self.channels), tuple(self.strides)
        levels = len(st)
        skips = []
        for i in range(levels):
            skips.append(x)
            x = self._down(x, ch[i], st[i], train, f"down{i}")
        x = jnp.concatenate([x, self._down(x, ch[-1], 1, train, "bottom")], axis=-1)
        for i in reversed(range(levels)):
            out = self.num_classes if i == 0 else ch[i - 1]
            x = self._up(x, out, st[i], i == 0, train, f"up{i}")
            if i > 0:
                x = jnp.concatenate([skips[i], x], axis=-1)
        return x.astype(jnp.float32)


def from_monai_state_dict(state_dict, model: ResidualUNet) -> dict:
    """Flax variables ``{"params", "batch_stats"}`` from a MONAI ``UNet`` ``state_dict`` (tensors or arrays) built
    with the same ``channels``/``strides``/``num_res_units`` and ``norm="batch"`` (or instance norm with
    ``affine=True``). Convolution kernels are moved to channels-last and transposed-convolution kernels flipped,
    so ``model.apply(variables, x_channels_last)`` equals MONAI's output moved to channels-last."""
    sd = {k: np.asarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v) for k, v in state_dict.items()}
    nd = model.spatial_dims
    params: dict = {}
    stats: dict = {}

    def put(tree, path, value):
        for p in path[:-1]:
            tree = tree.setdefault(p, {})
        tree[path[-1]] = jnp.asarray(value, jnp.float32)

    def conv(prefix, path, transposed=False):
        w = sd.pop(f"{prefix}.weight")
        if transposed:  # torch [Cin, Cout, *K] (gradient-of-conv) -> ours [*K, Cin, Cout], spatially flipped
            w = np.flip(np.moveaxis(w, (0, 1), (-2, -1)), axis=tuple(range(nd)))
        else:  # torch [Cout, Cin, *K] -> [*K, Cin, Cout]
            w = np.moveaxis(w, (0, 1), (-1, -2))
        put(params, path + ["kernel"], np.ascontiguousarray(w))
        put(params, path + ["bias"], sd.pop(f"{prefix}.bias"))

    def adn(prefix, norm_path, act_path):
        norm_key = "BatchNorm_0" if model.norm == "batch" else "GroupNorm_0"
        put(params, norm_path + [norm_key, "scale"], sd.pop(f"{prefix}.N.weight"))
        put(params, norm_path + [norm_key, "bias"], sd.pop(f"{prefix}.N.bias"))
        if model.norm == "batch":
            put(stats, norm_path + [norm_key, "mean"], sd.pop(f"{prefix}.N.running_mean"))
            put(stats, norm_path + [norm_key, "var"], sd.pop(f"{prefix}.N.running_var"))
            sd.pop(f"{prefix}.N.num_batches_tracked", None)
        put(params, act_path + ["negative_slope"], sd.pop(f"{prefix}.A.weight").reshape(()))

    def res_unit(prefix, name, subunits, last_conv_only):
        for i in range(max(1, subunits)):
            conv(f"{prefix}.conv.unit{i}.conv", [name, f"conv{i}"])
            if not (last_conv_only and i == max(1, subunits) - 1):
                adn(f"{prefix}.conv.unit{i}.adn", [name, f"norm{i}"], [name, f"act{i}"])
        if f"{prefix}.residual.weight" in sd:
            conv(f"{prefix}.residual", [name, "residual"])

    def down(prefix, name):
        if model.num_res_units > 0:
            res_unit(prefix, name, model.num_res_units, False)
        else:
            conv(f"{prefix}.conv", [f"{name}_conv"])
            adn(f"{prefix}.adn", [f"{name}_norm"], [f"{name}_act"])

    def up(prefix, name, is_top):
        tprefix = f"{prefix}.0" if model.num_res_units > 0 else prefix
        conv(f"{tprefix}.conv", [f"{name}_conv"], transposed=True)
        if not (is_top and model.num_res_units == 0):
            adn(f"{tprefix}.adn", [f"{name}_norm"], [f"{name}_act"])
        if model.num_res_units > 0:
            res_unit(f"{prefix}.1", f"{name}_res", 1, is_top)

    # MONAI nests Sequential(down, SkipConnection(Sequential(down, ...)), up); "model.1.submodule" descends.
    levels = len(model.strides)
    prefix = "model"
    try:
        for i in range(levels):
            down(f"{prefix}.0", f"down{i}")
            up(f"{prefix}.2", f"up{i}", i == 0)
            prefix = f"{prefix}.1.submodule"
        down(prefix, "bottom")
    except KeyError as e:
        raise ValueError(f"from_monai_state_dict: MONAI entry {e.args[0]!r} is missing: the state dict is not a "
                         f"UNet with channels={tuple(model.channels)}, strides={tuple(model.strides)}, "
                         f"num_res_units={model.num_res_units}, norm={model.norm!r}") from None
    if sd:
        raise ValueError(f"from_monai_state_dict: {len(sd)} MONAI entries were not used (another configuration?): "
                         f"{sorted(sd)[:6]}")
    return {"params": params, "batch_stats": stats} if stats else {"params": params}


CARD = ModelCard(
    name="residual_unet",
    summary="Residual U-Net in MONAI's UNet layout (strided residual units, 3^D transposed convs), 2D/3D",
    reference="Kerfoot et al. Left-ventricle quantification using residual U-Net. STACOM 2018 "
              "(monai.networks.nets.UNet)",
    input_contract="x: [B, *S, C] float32, channels-last; each spatial size divisible by prod(strides); "
                   "intensities normalised per channel",
)


@register("residual_unet", card=CARD, summary=CARD.summary)
def residual_unet(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype: Any = None,
                  **cfg) -> ResidualUNet:
    return ResidualUNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, dtype=dtype,
                        **cfg)
