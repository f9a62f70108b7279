"""Intensity kernels against numpy / scipy.ndimage references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi

import jax
import jax.numpy as jnp

import kernels
from kernels import intensity

SHAPES = [(13, 11), (7, 6, 8)]


def sample(shape, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((*shape, channels)) * np.array([1.0, 40.0][:channels]) + [3.0, -100.0][:channels]
            ).astype(np.float32)


def mask_for(shape):
    m = np.zeros(shape, bool)
    m[tuple(slice(1, n - 2) for n in shape)] = True
    return m


@pytest.mark.parametrize("shape", SHAPES)
def test_zscore_and_percentiles_match_numpy(shape):
    x, m = sample(shape), mask_for(shape)
    z = np.asarray(kernels.zscore(jnp.asarray(x)))
    np.testing.assert_allclose(z, (x - x.mean(tuple(range(len(shape))))) / x.std(tuple(range(len(shape)))),
                               rtol=1e-4, atol=1e-4)
    zm = np.asarray(kernels.zscore(jnp.asarray(x), mask=jnp.asarray(m)))
    inside = x[m]
    np.testing.assert_allclose(zm, (x - inside.mean(0)) / inside.std(0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(zm[m].mean(0), 0.0, atol=1e-4)
    c = np.asarray(kernels.clip_percentiles(jnp.asarray(x), 5.0, 95.0))
    flat = x.reshape(-1, 2)
    np.testing.assert_allclose(c, np.clip(x, np.percentile(flat, 5, axis=0), np.percentile(flat, 95, axis=0)),
                               rtol=1e-5, atol=1e-4)
    cm = np.asarray(kernels.clip_percentiles(jnp.asarray(x), 10.0, 90.0, mask=jnp.asarray(m)))
    np.testing.assert_allclose(cm, np.clip(x, np.percentile(inside, 10, axis=0), np.percentile(inside, 90, axis=0)),
                               rtol=1e-5, atol=1e-4)


def test_ct_window():
    hu = jnp.asarray(np.array([-1000, -160, 40, 240, 3000], np.float32).reshape(5, 1, 1))
    out = np.asarray(kernels.ct_window(hu, center=40, width=400)).ravel()
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    out = np.asarray(kernels.ct_window(hu, 40, 400, out_range=(-1.0, 1.0))).ravel()
    np.testing.assert_allclose(out, [-1.0, -1.0, 0.0, 1.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_blur_matches_scipy(shape):
    x = sample(shape)
    sig = (1.0, 1.5, 0.8)[:len(shape)]
    out = np.asarray(kernels.gaussian_blur(jnp.asarray(x), sig))
    for c in range(2):
        ref = ndi.gaussian_filter(x[..., c].astype(np.float64), sig, mode="reflect", truncate=4.0)
        np.testing.assert_allclose(out[..., c], ref, rtol=1e-4, atol=1e-3 * np.abs(ref).max())
    # A traced sigma (drawn per sample in a pipeline) gives the same result for the same value.
    traced = jax.jit(lambda s: kernels.gaussian_blur(jnp.asarray(x), s, max_sigma=2.0))(jnp.float32(1.0))
    np.testing.assert_allclose(np.asarray(traced), np.asarray(kernels.gaussian_blur(jnp.asarray(x), 1.0)),
                               rtol=1e-5, atol=1e-4)


def test_gamma_brightness_contrast_match_numpy():
    x = sample((9, 10))
    lo, hi = x.min((0, 1)), x.max((0, 1))
    out = np.asarray(kernels.adjust_gamma(jnp.asarray(x), 1.7))
    np.testing.assert_allclose(out, ((x - lo) / (hi - lo)) ** 1.7 * (hi - lo) + lo, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(out.min((0, 1)), lo, rtol=1e-5)
    np.testing.assert_allclose(out.max((0, 1)), hi, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(kernels.adjust_gamma(jnp.asarray(x), 1.0)), x, rtol=1e-5, atol=1e-4)
    out = np.asarray(kernels.adjust_brightness_contrast(jnp.asarray(x), 1.2, 0.5))
    y = x * 1.2
    ref = np.clip((y - y.mean((0, 1))) * 0.5 + y.mean((0, 1)), y.min((0, 1)), y.max((0, 1)))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-4)


def test_noise_and_bias_field_are_keyed_and_sane():
    x = jnp.asarray(np.full((32, 32, 1), 2.0, np.float32))
    n1 = kernels.add_gaussian_noise(jax.random.key(0), x, 0.5)
    n2 = kernels.add_gaussian_noise(jax.random.key(0), x, 0.5)
    n3 = kernels.add_gaussian_noise(jax.random.key(1), x, 0.5)
    np.testing.assert_array_equal(np.asarray(n1), np.asarray(n2))
    assert not np.allclose(np.asarray(n1), np.asarray(n3))
    assert abs(float(jnp.std(n1)) - 0.5) < 0.05 and abs(float(jnp.mean(n1)) - 2.0) < 0.05
    b = np.asarray(kernels.apply_bias_field(jax.random.key(2), x, 0.5))
    gain = b[..., 0] / 2.0
    assert gain.min() > np.exp(-0.5) - 1e-5 and gain.max() < np.exp(0.5) + 1e-5 and gain.std() > 1e-3
    # Smooth: neighbouring voxels differ much less than the field's range.
    assert np.abs(np.diff(gain, axis=0)).max() < 0.2 * (gain.max() - gain.min())
    np.testing.assert_array_equal(np.asarray(kernels.apply_bias_field(jax.random.key(2), x, 0.0)), np.asarray(x))


@pytest.mark.parametrize("call,word", [
    (lambda: kernels.zscore(jnp.zeros((4, 4))), "image"),
    (lambda: kernels.zscore(jnp.zeros((4, 4, 1)), mask=jnp.zeros((4, 3))), "mask"),
    (lambda: kernels.clip_percentiles(jnp.zeros((4, 4, 1)), 90, 10), "percentiles"),
    (lambda: kernels.ct_window(jnp.zeros((4, 4, 1)), 40, 0), "width"),
    (lambda: kernels.gaussian_blur(jnp.zeros((4, 4, 1)), -1.0), "sigma"),
    (lambda: jax.jit(lambda s: kernels.gaussian_blur(jnp.zeros((4, 4, 1)), s))(1.0), "max_sigma"),
    (lambda: intensity.bias_field(jax.random.key(0), (4, 4), 0), "control_points"),
])
def test_bad_input_raises(call, word):
    with pytest.raises(ValueError, match=word):
        call()
