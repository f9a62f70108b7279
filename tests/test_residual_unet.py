"""The MONAI-layout residual U-Net: same parameter count as MONAI's reference UNet, MONAI weights reproduce
MONAI's outputs (when PyTorch + MONAI are installed: ``pip install -e ".[compare]"``), bad configs, and the
PyTorch-aligned transposed convolution it is built on."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from kernels import conv
from zoo.models.residual_unet import from_monai_state_dict


def _num_params(model, shape):
    v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct(shape, jnp.float32))
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(v["params"])))


@pytest.mark.parametrize("dims,expected", [(2, 1_627_597), (3, 4_808_917)])
def test_reference_configuration_has_monais_parameter_count(dims, expected):
    # MONAI UNet(spatial_dims, 1, 2, channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2,
    # norm="batch"): 1,627,597 parameters in 2D and 4,808,917 in 3D (../shared/PERFORMANCE.md).
    model = zoo.create_model("residual_unet", spatial_dims=dims, in_channels=1, num_classes=2, norm="batch",
                             channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2)
    assert _num_params(model, (1,) + (16,) * dims + (1,)) == expected


def test_fewer_flops_than_the_plain_unet_at_the_same_widths():
    x = jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)

    def flops(model):
        v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
        with conv.use_onednn(False):  # XLA counts no FLOPs inside native kernels
            lowered = jax.jit(lambda v, x: model.apply(v, x)).lower(v, x)
        return lowered.compile().cost_analysis()["flops"]

    res = flops(zoo.create_model("residual_unet", norm="batch"))
    plain = flops(zoo.create_model("unet", features=16, depth=5, norm="batch"))
    assert 2.5 < plain / res < 6.0, (plain, res)  # MONAI's layout downsamples in each level's first unit


@pytest.mark.parametrize("dims,num_res_units,norm", [(2, 2, "batch"), (3, 2, "batch"), (2, 0, "batch"),
                                                     (2, 1, "instance")])
def test_monai_weights_reproduce_monai_outputs(dims, num_res_units, norm):
    torch = pytest.importorskip("torch", reason="PyTorch not installed (optional [compare] extra)")
    nets = pytest.importorskip("monai.networks.nets", reason="MONAI not installed (optional [compare] extra)")
    torch.manual_seed(0)
    kw = dict(channels=(8, 16, 32), strides=(2, 2), num_res_units=num_res_units)
    net = nets.UNet(spatial_dims=dims, in_channels=2, out_channels=3,
                    norm=("instance", {"affine": True}) if norm == "instance" else norm, **kw)
    shape = (16,) * dims
    net.train()
    with torch.no_grad():  # non-trivial batch-norm running statistics
        for _ in range(2):
            net(torch.randn(4, 2, *shape))
    net.eval()
    x = np.random.default_rng(0).standard_normal((2, 2, *shape)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    model = zoo.create_model("residual_unet", spatial_dims=dims, in_channels=2, num_classes=3, norm=norm, **kw)
    variables = from_monai_state_dict(net.state_dict(), model)
    got = np.moveaxis(np.asarray(model.apply(variables, jnp.asarray(np.moveaxis(x, 1, -1)))), -1, 1)
    # Instance norm: flax GroupNorm's epsilon is 1e-6, PyTorch's 1e-5.
    np.testing.assert_allclose(got, want, atol=2e-4 if norm == "instance" else 2e-5, rtol=1e-4)


def test_monai_state_dict_from_another_configuration_is_refused():
    model = zoo.create_model("residual_unet", channels=(8, 16), strides=(2,), num_res_units=1, norm="batch")
    with pytest.raises(ValueError, match="missing"):
        from_monai_state_dict({"model.0.conv.unit0.conv.weight": np.zeros((8, 1, 3, 3))}, model)


@pytest.mark.parametrize("kwargs,shape,match", [
    ({"channels": (16,)}, None, "channels"),
    ({"strides": (2, 2)}, None, "strides"),
    ({"num_res_units": -1}, None, "num_res_units"),
    ({}, (1, 24, 24, 1), "divisible by 16"),
    ({}, (1, 32, 32, 3), "channels"),
])
def test_bad_config_or_input_raises(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        model = zoo.create_model("residual_unet", **kwargs)
        jax.eval_shape(lambda x: model.init(jax.random.key(0), x), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("xs,ws", [((2, 5, 6, 3), (3, 3, 3, 4)), ((1, 3, 4, 5, 2), (3, 3, 3, 2, 3)),
                                   ((1, 7, 2), (5, 2, 3))])
def test_torch_aligned_transposed_conv_phase_form_matches_reference(xs, ws):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)
    want = conv.conv_transpose_nd_reference(x, w, 2, "torch")
    np.testing.assert_allclose(conv.conv_transpose_nd_cpu(x, w, 2, "torch"), want, atol=1e-4, rtol=1e-4)
    same = conv.conv_transpose_nd_reference(x, w, 2, "SAME")
    assert want.shape == same.shape and not np.allclose(want, same)  # a different alignment for odd K > s
    g1 = jax.grad(lambda x: jnp.sum(conv.conv_transpose_nd_cpu(x, w, 2, "torch") ** 2))(x)
    g2 = jax.grad(lambda x: jnp.sum(conv.conv_transpose_nd_reference(x, w, 2, "torch") ** 2))(x)
    np.testing.assert_allclose(g1, g2, atol=1e-3, rtol=1e-4)


def test_transposed_conv_padding_is_validated():
    x, w = jnp.zeros((1, 4, 4, 1)), jnp.zeros((3, 3, 1, 1))
    with pytest.raises(ValueError, match="low \\+ high"):
        conv.conv_transpose_nd_reference(x, w, 2, ((1, 1), (1, 2)))
    with pytest.raises(ValueError, match="padding"):
        conv.conv_transpose_nd_reference(x, w, 2, "full")
    explicit = conv.conv_transpose_nd_reference(x + 1, w + 1, 2, ((1, 2), (1, 2)))
    np.testing.assert_array_equal(explicit, conv.conv_transpose_nd_reference(x + 1, w + 1, 2, "torch"))
