"""Sliding-window inference against a plain numpy loop over windows."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import kernels


def predict(x):
    """A window-dependent prediction (uses the window mean), so blending is exercised: [N, *roi, C] -> 2C."""
    axes = tuple(range(1, x.ndim - 1))
    return jnp.concatenate([x + jnp.mean(x, axis=axes, keepdims=True), x * x], axis=-1)


def predict_np(x):
    axes = tuple(range(0, x.ndim - 1))
    return np.concatenate([x + x.mean(axis=axes, keepdims=True), x * x], axis=-1)


def reference(image, roi, overlap, mode, sigma_scale=0.125):
    b, spatial, c = image.shape[0], image.shape[1:-1], image.shape[-1]
    pads = [((max(r - n, 0)) // 2, max(r - n, 0) - max(r - n, 0) // 2) for n, r in zip(spatial, roi)]
    x = np.pad(image, [(0, 0)] + pads + [(0, 0)])
    padded = x.shape[1:-1]
    axis_starts = []
    for n, r in zip(padded, roi):
        step = max(int(r * (1 - overlap)), 1)
        starts, s = [], 0
        while True:
            starts.append(min(s, n - r))
            if s + r >= n:
                break
            s += step
        axis_starts.append(sorted(set(starts)))
    if mode == "gaussian":
        w = np.ones(roi)
        for a, r in enumerate(roi):
            g = np.exp(-((np.arange(r) - (r - 1) / 2) ** 2) / (2 * (sigma_scale * r) ** 2))
            w = w * g.reshape([-1 if i == a else 1 for i in range(len(roi))])
        w = np.maximum(w / w.max(), 1e-6)
    else:
        w = np.ones(roi)
    out = np.zeros((b, *padded, 2 * c))
    norm = np.zeros(padded)
    for start in itertools.product(*axis_starts):
        sl = tuple(slice(s, s + r) for s, r in zip(start, roi))
        norm[sl] += w
        for i in range(b):
            out[(i,) + sl] += predict_np(x[(i,) + sl].astype(np.float64)) * w[..., None]
    out = out / norm[None, ..., None]
    crop = tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, spatial))
    return out[(slice(None),) + crop]


CASES = [
    # image shape, roi, overlap, mode, batch_size
    ((1, 20, 17, 1), (8, 8), 0.5, "gaussian", 3),
    ((2, 9, 10, 7, 2), (4, 5, 4), 0.25, "constant", 4),
    ((2, 9, 10, 7, 1), (4, 4, 4), 0.5, "gaussian", 5),
    ((1, 5, 6, 1), (8, 4), 0.5, "gaussian", 2),  # smaller than the roi on one axis: padded
    ((1, 6, 6, 1), (6, 6), 0.5, "constant", 1),  # exactly one window
]


@pytest.mark.parametrize("shape,roi,overlap,mode,batch_size", CASES)
def test_sliding_window_matches_numpy_reference(shape, roi, overlap, mode, batch_size):
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    fn = jax.jit(lambda x: kernels.sliding_window_inference(predict, x, roi, overlap, mode, batch_size))
    out = np.asarray(fn(jnp.asarray(image)))
    assert out.shape == shape[:-1] + (2 * shape[-1],) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(image, roi, overlap, mode), rtol=1e-5, atol=1e-5)


def test_identity_predictor_reproduces_image_and_window_count():
    image = np.random.default_rng(1).standard_normal((1, 13, 11, 1)).astype(np.float32)
    calls = []

    def ident(x):
        calls.append(x.shape)
        return x

    out = kernels.sliding_window_inference(ident, jnp.asarray(image), (6, 6), overlap=0.5, batch_size=4)
    np.testing.assert_allclose(np.asarray(out), image, atol=1e-6)
    starts = kernels.sliding_window.window_starts((13, 11), (6, 6), 0.5)
    # 3 steps of 3 on 13 (0, 3, 6, 7) and on 11 (0, 3, 5) -> 12 windows; traced once per scan body.
    assert len(starts) == 12 and starts.max(0).tolist() == [7, 5]
    assert calls and all(c == (4, 6, 6, 1) for c in calls)


@pytest.mark.parametrize("kwargs,word", [
    (dict(image=np.zeros((4, 4, 1)), roi_size=2), "image"),
    (dict(roi_size=(2, 2, 2)), "roi_size"),
    (dict(roi_size=2, overlap=1.0), "overlap"),
    (dict(roi_size=2, mode="median"), "mode"),
    (dict(roi_size=2, batch_size=0), "batch_size"),
    (dict(roi_size=2, predict_fn=lambda x: x[:, :1]), "predict_fn"),
])
def test_bad_input_raises(kwargs, word):
    args = dict(predict_fn=predict, image=np.zeros((1, 4, 4, 1), np.float32))
    args.update(kwargs)
    with pytest.raises(ValueError, match=word):
        kernels.sliding_window_inference(**args)
