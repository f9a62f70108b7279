"""max_pool_with_argmax / max_unpool against the numpy loops: values, indices and gradients, 2D and 3D."""

import jax
import jax.test_util
import jax.numpy as jnp
import numpy as np
import pytest

from kernels import max_pool_with_argmax, max_unpool
from kernels.pooling import max_pool_with_argmax_reference, max_unpool_reference

# (shape [B, *S, C], window): 2D, 3D, anisotropic windows, a 1x window axis, one channel.
CASES = [
    ((2, 4, 6, 3), 2),
    ((1, 6, 4, 1), (3, 2)),
    ((2, 4, 4, 4, 2), 2),
    ((1, 2, 6, 4, 1), (1, 3, 2)),
]
TOL = {jnp.float32: 1e-6, jnp.bfloat16: 1e-2}


def _distinct(shape, seed):
    # A permutation: no ties, so the argmax is unambiguous and numeric gradients are well defined.
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape)).astype(np.float32)


@pytest.mark.parametrize("shape,window", CASES)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_pool_unpool_value_and_grad(shape, window, dtype):
    x_np = _distinct(shape, len(shape))
    x = jnp.asarray(x_np, dtype)
    x_ref = np.asarray(x.astype(jnp.float32))
    pooled, idx = jax.jit(max_pool_with_argmax, static_argnums=1)(x, window)
    ref_pooled, ref_idx = max_pool_with_argmax_reference(x_ref, window)
    assert pooled.dtype == dtype and idx.dtype == jnp.int32
    assert pooled.shape == ref_pooled.shape
    np.testing.assert_array_equal(np.asarray(idx), ref_idx)
    np.testing.assert_allclose(np.asarray(pooled.astype(jnp.float32)), ref_pooled, atol=TOL[dtype])

    spatial = shape[1:-1]
    up = jax.jit(max_unpool, static_argnums=2)(pooled, idx, shape)
    np.testing.assert_allclose(np.asarray(up.astype(jnp.float32)),
                               max_unpool_reference(ref_pooled, ref_idx, spatial), atol=TOL[dtype])

    # Gradients: d sum(g * pool(x)) / dx puts g at the argmax (== the reference unpool of g);
    # d sum(h * unpool(y)) / dy gathers h at the indices.
    g = jnp.asarray(_distinct(pooled.shape, 7), dtype)
    gx = jax.grad(lambda v: jnp.sum((max_pool_with_argmax(v, window)[0] * g).astype(jnp.float32)))(x)
    np.testing.assert_allclose(np.asarray(gx.astype(jnp.float32)),
                               max_unpool_reference(np.asarray(g.astype(jnp.float32)), ref_idx, spatial),
                               atol=TOL[dtype])
    h = jnp.asarray(_distinct(shape, 8), dtype)
    gy = jax.grad(lambda v: jnp.sum((max_unpool(v, idx, shape) * h).astype(jnp.float32)))(pooled)
    h_np = np.asarray(h.astype(jnp.float32)).reshape(shape[0], -1, shape[-1])
    expect = np.take_along_axis(h_np, ref_idx.reshape(shape[0], -1, shape[-1]), axis=1).reshape(pooled.shape)
    np.testing.assert_allclose(np.asarray(gy.astype(jnp.float32)), expect, atol=TOL[dtype])


def test_numeric_gradient_matches():
    x = jnp.asarray(_distinct((1, 4, 4, 2), 3))
    jax.test_util.check_grads(lambda v: max_pool_with_argmax(v, 2)[0], (x,), order=1, modes=["rev"], eps=1e-3)
    _, idx = max_pool_with_argmax(x, 2)
    y = jnp.asarray(_distinct((1, 2, 2, 2), 4))
    jax.test_util.check_grads(lambda v: max_unpool(v, idx, (4, 4)), (y,), order=1, modes=["rev"], eps=1e-3)


def test_ties_go_to_first_element():
    x = jnp.zeros((1, 2, 2, 1), jnp.float32)
    pooled, idx = max_pool_with_argmax(x, 2)
    assert int(idx[0, 0, 0, 0]) == 0 and float(pooled[0, 0, 0, 0]) == 0.0


@pytest.mark.parametrize("call,match", [
    (lambda: max_pool_with_argmax(jnp.zeros((1, 5, 4, 1)), 2), "divisible"),
    (lambda: max_pool_with_argmax(jnp.zeros((4, 4)), 2), "spatial dims"),
    (lambda: max_pool_with_argmax(jnp.zeros((1, 4, 4, 1)), 0), "window"),
    (lambda: max_unpool(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 2), jnp.int32), (4, 4)), "indices shape"),
    (lambda: max_unpool(jnp.zeros((1, 2, 2, 1)), jnp.zeros((1, 2, 2, 1), jnp.int32), (5, 4)), "multiple"),
])
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()
