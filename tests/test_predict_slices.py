"""A 2D model on a volume (``zoo.prediction``, slice by slice): calls of ``SLICES`` axial slices, the last one padded,
so one program serves every call and every depth, and each slice's probabilities are its own; only the slices that
hold a body voxel are predicted (``body_slices``, the rule of a plan's ``crop="nonzero"``): those are identical to a
prediction of every slice, the others are background and never reach the network."""

from __future__ import annotations

import types

import jax
import ml_collections
import numpy as np
import pytest

from data_pipelines import geometry
from data_pipelines.phantoms import PhantomConfig, make_phantom
from data_pipelines.readers import ImageMeta
from zoo import prediction
from zoo.compilation_cache import compile_counter
from zoo.inference import Predictor
from zoo.prediction import SLICES, body_slices, predict_case_proba, resize_slices
from zoo.registry import create_model
from zoo.tasks import get_task


K = 3


def _pre():
    model = create_model("unet", spatial_dims=2, in_channels=2, num_classes=K, features=2, depth=2)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 2), np.float32), train=False)
    config = ml_collections.ConfigDict({"data": {"name": "brats", "image_size": (8, 8)}})
    meta = {"data": {"spatial_dims": 2, "num_classes": K, "extra": {"intensity_scaling": {"kind": "none"}}}}
    return types.SimpleNamespace(task="segmentation", predictor=Predictor(model, variables, get_task("segmentation")),
                                 config=config, meta=meta)


def _meta():
    return ImageMeta(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                     direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))


def test_slices_are_predicted_alone_and_every_depth_shares_one_program():
    pre = _pre()
    depth = SLICES + 3  # a last call of 3 real slices
    x = np.random.default_rng(0).normal(size=(10, 12, depth, 2)).astype(np.float32)
    whole = predict_case_proba(pre, x, _meta(), tta=True).proba
    assert whole.shape == (10, 12, depth, 3)
    head = predict_case_proba(pre, x[:, :, :SLICES], _meta(), tta=True).proba
    tail = predict_case_proba(pre, x[:, :, SLICES:], _meta(), tta=True).proba
    np.testing.assert_allclose(whole, np.concatenate([head, tail], axis=2), rtol=1e-5, atol=1e-6)
    assert not np.allclose(whole[:, :, 0], whole[:, :, -1], atol=1e-4)  # the slices differ: this can fail
    with compile_counter() as c:
        for d in (5, 2 * SLICES + 1):  # other depths: the program of the calls above
            out = predict_case_proba(pre, x[:, :, :1].repeat(d, axis=2), _meta(), tta=True).proba
            assert out.shape == (10, 12, d, 3)
    assert c.backend == 0


def test_resize_slices_equals_resizing_each_slice():
    x = np.random.default_rng(1).normal(size=(13, 11, 5, 3)).astype(np.float32)
    for size in ((6, 7), (20, 17)):  # down (antialiased) and up
        want = np.stack([geometry.resize(x[:, :, z], size) for z in range(5)], axis=2)
        np.testing.assert_allclose(resize_slices(x, size), want, rtol=1e-5, atol=1e-6)


def _phantom():
    """A tiny brain phantom (12 x 12 x 10, 2 channels) whose first and last two slices are all background."""
    return make_phantom(PhantomConfig(kind="brain", shape=(12, 12, 10), channels=2), 0)["image"]


def _counting(pre):
    """Count the slices that reach the network."""
    seen = []
    run = pre.predictor.sliding_window_proba

    def counted(images, *a, **kw):
        seen.append(len(images))
        return run(images, *a, **kw)

    pre.predictor.sliding_window_proba = counted
    return seen


@pytest.mark.parametrize("members", [False, True])
def test_background_slices_are_skipped_and_the_others_are_identical(monkeypatch, members):
    pre, x = _pre(), _phantom()
    kept = body_slices(x)
    assert 0 < len(kept) < x.shape[2]  # the phantom has slices of both kinds: this can fail
    skipped = np.setdiff1d(np.arange(x.shape[2]), kept)
    seen = _counting(pre)
    cropped = predict_case_proba(pre, x, _meta(), tta=True, members=members)
    assert sum(seen) == -(-len(kept) // prediction.SLICES) * prediction.SLICES  # only the kept slices, padded
    monkeypatch.setattr(prediction, "body_slices", lambda v: np.arange(v.shape[2]))  # every slice
    whole = predict_case_proba(pre, x, _meta(), tta=True, members=members)
    for a, b in ((cropped.proba, whole.proba),) + (((cropped.members, whole.members),) if members else ()):
        assert a.shape == b.shape
        np.testing.assert_allclose(a[..., kept, :], b[..., kept, :], rtol=1e-6, atol=1e-7)  # identical inside
        background = np.zeros(K, np.float32)
        background[0] = 1.0
        assert np.array_equal(a[..., skipped, :], np.broadcast_to(background, a[..., skipped, :].shape))
        assert not np.allclose(b[..., skipped, :], background, atol=1e-3)  # the network would say otherwise
    if members:
        assert cropped.members.shape == (4, 12, 12, 10, K)


def test_a_volume_without_a_body_voxel_is_background_without_running_the_network():
    pre = _pre()
    seen = _counting(pre)
    empty = np.full((12, 12, 5, 2), -1.0, np.float32)
    for members in (False, True):
        out = predict_case_proba(pre, empty, _meta(), tta=True, members=members)
        assert out.proba.shape == (12, 12, 5, K)
        assert np.all(out.proba[..., 0] == 1.0) and np.all(out.proba[..., 1:] == 0.0)
        assert out.members is None if not members else out.members.shape == (4, 12, 12, 5, K)
    assert seen == []


def test_body_slices_follows_the_body_mask_of_every_channel():
    x = np.zeros((4, 4, 6, 2), np.float32)
    x[1, 2, 1, 0] = 3.0  # channel 0 only
    x[0, 0, 4, 1] = 2.0  # channel 1 only
    assert body_slices(x).tolist() == [1, 4]
    x[0, 0, 2, 1] = -2.0  # channel 1's background is its minimum, not zero: now every slice differs from it
    assert body_slices(x).tolist() == list(range(6))
