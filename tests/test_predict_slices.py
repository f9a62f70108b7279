"""A 2D model on a volume (``zoo.prediction``, slice by slice): calls of ``SLICES`` axial slices, the last one padded,
so one program serves every call and every depth, and each slice's probabilities are its own."""

from __future__ import annotations

import types

import jax
import ml_collections
import numpy as np

from data_pipelines import geometry
from data_pipelines.readers import ImageMeta
from zoo.compilation_cache import compile_counter
from zoo.inference import Predictor
from zoo.prediction import SLICES, predict_case_proba, resize_slices
from zoo.registry import create_model
from zoo.tasks import get_task


def _pre():
    model = create_model("unet", spatial_dims=2, in_channels=2, num_classes=3, features=2, depth=2)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 2), np.float32), train=False)
    config = ml_collections.ConfigDict({"data": {"name": "brats", "image_size": (8, 8)}})
    meta = {"data": {"spatial_dims": 2, "extra": {"intensity_scaling": {"kind": "none"}}}}
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
