"""A 2D model on a volume predicts only the slices that hold a body voxel (``zoo.prediction.body_slices``, the rule of
a plan's ``crop="nonzero"``): those slices are identical to a prediction of every slice, the others are background,
and the skipped slices never reach the network."""

from __future__ import annotations

import types

import jax
import ml_collections
import numpy as np
import pytest

from data_pipelines.phantoms import PhantomConfig, make_phantom
from data_pipelines.readers import ImageMeta
from zoo import prediction
from zoo.inference import Predictor
from zoo.prediction import body_slices, predict_case_proba
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
