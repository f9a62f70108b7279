"""zoo.layers.BatchNorm / batch_norm_act: flax's BatchNorm (+ PReLU) numerics in one fused op, the conv bias folded."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import layers

CASES = [  # (shape [B, *S, C], PReLU after the norm, a conv bias folded in)
    ((4, 6, 5, 3), True, True),
    ((2, 4, 3, 5, 2), True, False),
    ((3, 7, 4), False, True),
    ((2, 5, 4, 3, 1), False, False),
]


class _Reference(nn.Module):
    """What the fused layer replaces: the conv bias added, flax's BatchNorm, flax's PReLU."""

    act: bool

    @nn.compact
    def __call__(self, y, bias, train):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(y + bias)
        return nn.PReLU(negative_slope_init=0.25)(x) if self.act else x


class _Fused(nn.Module):
    act: bool
    fold: bool

    @nn.compact
    def __call__(self, y, bias, train):
        slope = layers.PReLU(negative_slope_init=0.25).slope() if self.act else None
        if self.fold:
            return layers.BatchNorm(momentum=0.9)(y, train, conv_bias=bias, slope=slope)
        return layers.BatchNorm(momentum=0.9)(y + bias, train, slope=slope)


def _variables(ref_vars, shape, seed):
    """Non-trivial parameters and running statistics, the same values for both modules."""
    rng = np.random.default_rng(seed)
    c = shape[-1]
    params = {"BatchNorm_0": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32),
                              "bias": jnp.asarray(rng.normal(size=c), jnp.float32)}}
    if "PReLU_0" in ref_vars["params"]:
        params["PReLU_0"] = {"negative_slope": jnp.asarray(0.3, jnp.float32)}
    stats = {"BatchNorm_0": {"mean": jnp.asarray(rng.normal(size=c), jnp.float32),
                             "var": jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)}}
    return {"params": params, "batch_stats": stats}


@pytest.mark.parametrize("shape,act,fold", CASES)
def test_batch_norm_matches_flax_forward_gradients_and_running_stats(shape, act, fold):
    rng = np.random.default_rng(0)
    y = jnp.asarray(rng.normal(1.5, 2.0, shape), jnp.float32)  # a mean far from 0, as after a conv
    bias = jnp.asarray(rng.normal(size=shape[-1]), jnp.float32)
    ref, fused = _Reference(act), _Fused(act, fold)
    ref_vars = ref.init(jax.random.PRNGKey(0), y, bias, False)
    fused_vars = fused.init(jax.random.PRNGKey(0), y, bias, False)
    # the same variables (names, shapes, initial values) as flax's modules
    assert jax.tree.map(np.shape, ref_vars) == jax.tree.map(np.shape, fused_vars)
    for a, b in zip(jax.tree.leaves(ref_vars), jax.tree.leaves(fused_vars)):
        np.testing.assert_array_equal(a, b)
    v = _variables(ref_vars, shape, 1)
    w = jnp.asarray(rng.normal(size=shape), jnp.float32)  # a loss that weighs every output differently

    def loss(module):
        def f(params, y):
            out, upd = module.apply({"params": params, "batch_stats": v["batch_stats"]}, y, bias, True,
                                    mutable=["batch_stats"])
            return jnp.sum(w * out), (out, upd)
        return jax.value_and_grad(f, argnums=(0, 1), has_aux=True)

    (l_ref, (o_ref, s_ref)), g_ref = loss(ref)(v["params"], y)
    (l_new, (o_new, s_new)), g_new = loss(fused)(v["params"], y)
    np.testing.assert_allclose(o_new, o_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(l_new, l_ref, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    for a, b in zip(jax.tree.leaves(s_new), jax.tree.leaves(s_ref)):  # the running mean includes the conv bias
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # inference: running statistics, the folded bias added back
    np.testing.assert_allclose(fused.apply(v, y, bias, False), ref.apply(v, y, bias, False), rtol=1e-5, atol=1e-5)


def test_batch_norm_act_without_activation_normalises_each_channel():
    y = jnp.asarray(np.random.default_rng(2).normal(3.0, 4.0, (8, 5, 5, 2)), jnp.float32)
    z, mean, var = layers.batch_norm_act(y, jnp.ones(2), jnp.zeros(2), jnp.asarray(1.0), 1e-5, False)
    np.testing.assert_allclose(mean, y.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(var, y.var((0, 1, 2)), rtol=1e-4)
    np.testing.assert_allclose(z.mean((0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std((0, 1, 2)), 1.0, rtol=1e-4)


def test_batch_norm_keeps_bfloat16_activations_and_float32_statistics():
    y = jnp.asarray(np.random.default_rng(3).normal(size=(2, 4, 4, 3)), jnp.bfloat16)
    module = layers.BatchNorm(momentum=0.9, dtype=jnp.bfloat16)
    v = module.init(jax.random.PRNGKey(0), y, False)
    out, upd = module.apply(v, y, True, mutable=["batch_stats"])
    assert out.dtype == jnp.bfloat16
    assert upd["batch_stats"]["mean"].dtype == jnp.float32
    grad = jax.grad(lambda y: jnp.sum(module.apply(v, y, True, mutable=["batch_stats"])[0].astype(jnp.float32)
                                      ** 2))(y)
    assert grad.dtype == jnp.bfloat16 and bool(jnp.all(jnp.isfinite(grad.astype(jnp.float32))))


def test_norm_refuses_a_folded_bias_it_cannot_fold():
    x = jnp.ones((1, 4, 4, 2))
    with pytest.raises(ValueError, match="only batch norm"):
        layers.Norm("instance").init(jax.random.PRNGKey(0), x, False, conv_bias=jnp.zeros(2))


def test_conv_without_bias_add_returns_the_bias_it_owns():
    x = jnp.asarray(np.random.default_rng(4).normal(size=(1, 6, 6, 2)), jnp.float32)
    conv = layers.Conv(3, 3)
    v = conv.init(jax.random.PRNGKey(0), x)
    v = {"params": {**v["params"], "bias": jnp.asarray([1.0, -2.0, 0.5])}}
    y, b = conv.apply(v, x, add_bias=False)
    np.testing.assert_array_equal(b, v["params"]["bias"])
    np.testing.assert_allclose(y + b, conv.apply(v, x), rtol=1e-6)
