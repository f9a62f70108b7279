"""RoIAlign, NMS and box utilities against their numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kernels
from kernels import boxes as box_ops
from kernels.nms import nms_np
from kernels.roi_align import roi_align_np

ROI_CASES = [
    # (H, W, C, output_size, sampling_ratio, spatial_scale, aligned)
    (6, 5, 2, 2, 2, 1.0, True),
    (7, 7, 1, (3, 2), 1, 1.0, True),
    (8, 6, 3, 3, 3, 0.5, True),
    (6, 6, 2, 2, 2, 1.0, False),
]

# Inside, straddling the border, far outside, tiny and zero-size boxes.
BOXES = np.array([[1.0, 1.0, 4.0, 3.5], [-2.0, -1.5, 3.0, 2.0], [2.5, 0.3, 9.0, 7.0],
                  [20.0, 20.0, 25.0, 26.0], [2.2, 2.2, 2.4, 2.3], [3.0, 3.0, 3.0, 3.0]], np.float32)


@pytest.mark.parametrize("h,w,c,out,ratio,scale,aligned", ROI_CASES)
def test_roi_align_matches_reference_value_and_grad(h, w, c, out, ratio, scale, aligned):
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(h, w, c)).astype(np.float32)
    f = jax.jit(lambda x, b: kernels.roi_align(x, b, out, ratio, scale, aligned))
    got = np.asarray(f(feats, BOXES))
    ref = roi_align_np(feats, BOXES, out, ratio, scale, aligned)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # Gradient w.r.t. features: RoIAlign is linear in them, so the reference gradient of
    # sum(out * g) is J^T g with J built column by column from the reference on unit maps.
    g = rng.normal(size=ref.shape).astype(np.float32)
    grad = np.asarray(jax.grad(lambda x: jnp.sum(f(x, BOXES) * g))(feats))
    ref_grad = np.zeros((h, w, c))
    for idx in np.ndindex(h, w, c):
        e = np.zeros((h, w, c))
        e[idx] = 1.0
        ref_grad[idx] = np.sum(roi_align_np(e, BOXES, out, ratio, scale, aligned) * g)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-5)
    assert np.abs(ref_grad).sum() > 0


def test_roi_align_constant_map_and_bad_input():
    feats = jnp.full((8, 8, 1), 3.0)
    got = jax.jit(lambda f, b: kernels.roi_align(f, b, 4, 2))(feats, jnp.array([[1.0, 1.0, 6.0, 7.0]]))
    np.testing.assert_allclose(np.asarray(got), 3.0, rtol=1e-6)
    with pytest.raises(ValueError, match="sampling_ratio"):
        kernels.roi_align(feats, jnp.zeros((1, 4)), 4, 0)
    with pytest.raises(ValueError, match="features"):
        kernels.roi_align(jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, 4)), 4, 2)
    with pytest.raises(ValueError, match="boxes"):
        kernels.roi_align(feats, jnp.zeros((1, 3)), 4, 2)


def _random_boxes(rng, n, size=32.0):
    yx = rng.uniform(0, size, size=(n, 2))
    hw = rng.uniform(2, size / 2, size=(n, 2))
    return np.concatenate([yx, yx + hw], 1).astype(np.float32)


NMS_CASES = [  # (n, iou_threshold, max_outputs, seed)
    (1, 0.5, 3, 0), (30, 0.5, 10, 1), (60, 0.3, 60, 2), (60, 0.7, 80, 3), (40, 0.0, 5, 4),
]


@pytest.mark.parametrize("n,thr,k,seed", NMS_CASES)
def test_nms_matches_reference(n, thr, k, seed):
    rng = np.random.default_rng(seed)
    b = _random_boxes(rng, n)
    s = rng.uniform(size=n).astype(np.float32)
    if n > 5:
        s[3] = -np.inf  # a padded candidate never comes back
        b[5] = b[4] + 0.5  # a near duplicate
    idx, valid = jax.jit(lambda b, s: kernels.nms(b, s, thr, k))(b, s)
    idx, valid = np.asarray(idx), np.asarray(valid)
    ref = nms_np(b, s, thr, k)
    assert idx.shape == (k,) and valid.shape == (k,)
    assert valid.sum() == len(ref)
    np.testing.assert_array_equal(idx[valid], ref)
    assert np.all(idx[~valid] == 0)
    assert np.all(valid[:valid.sum()])  # valid entries come first


def test_nms_vmaps_and_respects_valid_mask():
    rng = np.random.default_rng(5)
    b = np.stack([_random_boxes(rng, 20) for _ in range(3)])
    s = rng.uniform(size=(3, 20)).astype(np.float32)
    v = rng.uniform(size=(3, 20)) > 0.3
    idx, valid = jax.jit(jax.vmap(lambda b, s, v: kernels.nms(b, s, 0.5, 8, valid=v)))(b, s, v)
    for i in range(3):
        ref = nms_np(b[i], np.where(v[i], s[i], -np.inf), 0.5, 8)
        np.testing.assert_array_equal(np.asarray(idx[i])[np.asarray(valid[i])], ref)


def test_box_iou_encode_decode_clip_anchors():
    rng = np.random.default_rng(6)
    a, b = _random_boxes(rng, 7), _random_boxes(rng, 5)
    np.testing.assert_allclose(np.asarray(jax.jit(box_ops.box_iou)(a, b)), box_ops.box_iou_np(a, b), rtol=1e-5,
                               atol=1e-6)

    @jax.jit
    def roundtrip(a, b):
        d = box_ops.encode_boxes(a, b)
        return d, box_ops.decode_boxes(a, d), box_ops.encode_boxes(a, b, (10.0, 10.0, 5.0, 5.0))

    d, back, d2 = roundtrip(a[:5], b)
    np.testing.assert_allclose(np.asarray(back), b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(d2), np.asarray(d) * np.array([10, 10, 5, 5]), rtol=1e-5, atol=1e-5)
    clipped = np.asarray(jax.jit(lambda x: box_ops.clip_boxes(x, 32, 64))(jnp.array([[-3.0, 5.0, 40.0, 70.0]])))
    np.testing.assert_allclose(clipped, [[0.0, 5.0, 32.0, 64.0]])
    anchors = box_ops.make_anchors((2, 3), 8, (16,), (0.5, 1.0, 2.0))
    assert anchors.shape == (2 * 3 * 3, 4)
    hw = anchors[:, 2:] - anchors[:, :2]
    np.testing.assert_allclose(hw[:, 0] * hw[:, 1], 256.0, rtol=1e-5)
    np.testing.assert_allclose(hw[:3, 0] / hw[:3, 1], [0.5, 1.0, 2.0], rtol=1e-5)
    np.testing.assert_allclose((anchors[3, :2] + anchors[3, 2:]) / 2, [4.0, 12.0])  # position (0, 1)
    with pytest.raises(ValueError, match="stride"):
        box_ops.make_anchors((2, 2), 0, (16,))
