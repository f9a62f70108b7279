"""The mirrored sliding window (zoo.inference.Predictor.sliding_window_proba with tta): the mirrored copies share
forward passes, and each member equals the sliding window of that mirrored image, mirrored back."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from zoo.inference import Predictor, flip_axes
from zoo.registry import create_model
from zoo.tasks import get_task


@pytest.mark.parametrize("shape,roi,batch_size", [((2, 20, 24, 1), (16, 16), 4), ((1, 12, 16, 10, 1), (8, 8, 8), 3)])
def test_mirrored_members_equal_each_mirrored_sliding_window(shape, roi, batch_size):
    dims = len(shape) - 2
    model = create_model("unet", spatial_dims=dims, in_channels=1, num_classes=3, features=2, depth=2)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), x[:1, *(slice(0, r) for r in roi)], train=False)
    p = Predictor(model, variables, get_task("segmentation"))
    members = p.sliding_window_proba(x, roi, tta=True, members=True, batch_size=batch_size)
    flips = flip_axes(dims)
    assert members.shape == (1 + len(flips), *shape[:-1], 3)
    want = [p.sliding_window_proba(x, roi, batch_size=batch_size)]
    want += [np.flip(p.sliding_window_proba(np.flip(x, axes).copy(), roi, batch_size=batch_size), axes)
             for axes in flips]
    np.testing.assert_allclose(members, np.stack(want), rtol=1e-5, atol=1e-6)
    mean = p.sliding_window_proba(x, roi, tta=True, batch_size=batch_size)
    np.testing.assert_allclose(mean, np.mean(want, axis=0), rtol=1e-5, atol=1e-6)
    assert not np.allclose(want[0], want[1], atol=1e-4)  # the mirrored copies differ: the test can fail
