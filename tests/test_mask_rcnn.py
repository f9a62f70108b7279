"""Mask R-CNN: ground truth from instance maps, static shapes (one trace), finite losses, clipping, training."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from zoo.mask_rcnn.postprocess import paste_masks, select_detections, semantic_map
from zoo.mask_rcnn.targets import gt_from_instances
from zoo.registry import create_model, get_spec
from zoo.tasks import get_task
from zoo.training import jit_init

TINY = dict(encoder_width=8, fpn_channels=16, box_head_dim=32, mask_head_dim=16, mask_head_convs=1,
            anchor_sizes=(6.0, 12.0, 24.0, 48.0), rpn_pre_nms_topk=64, rpn_post_nms_topk_train=24,
            rpn_post_nms_topk_test=16, rpn_batch_per_image=64, roi_batch_per_image=16, box_pool=4, mask_pool=7,
            max_instances=4, detections_per_image=6, roi_levels=2)
S = 32


def _batch(n_objects):
    """Two 32x32 images with ``n_objects`` bright squares each (ids 1..n), class = 1."""
    img = np.zeros((2, S, S, 1), np.float32)
    inst = np.zeros((2, S, S), np.int32)
    rng = np.random.default_rng(n_objects)
    for b in range(2):
        for k in range(n_objects):
            y, x = rng.integers(0, S - 9, size=2)
            inst[b, y:y + 8, x:x + 8] = k + 1
    img[..., 0] = (inst > 0) + 0.1 * rng.normal(size=inst.shape)
    return {"image": jnp.asarray(img), "label": jnp.asarray((inst > 0).astype(np.int32)),
            "instances": jnp.asarray(inst)}


def test_gt_from_instances_boxes_classes_valid():
    inst = np.zeros((1, 10, 12), np.int32)
    label = np.zeros((1, 10, 12), np.int32)
    inst[0, 2:5, 3:7] = 1
    label[0, 2:5, 3:7] = 2
    label[0, 2, 3] = 1  # minority label inside object 1
    inst[0, 8:10, 0:1] = 3  # id 2 absent, id 3 present
    inst[0, 0, 0] = 9  # beyond max_instances: ignored
    boxes, classes, masks, valid = jax.jit(lambda i, l: gt_from_instances(i, l, 4, 3))(inst, label)
    np.testing.assert_array_equal(np.asarray(valid), [[True, False, True, False]])
    np.testing.assert_allclose(np.asarray(boxes)[0, [0, 2]], [[2, 3, 5, 7], [8, 0, 10, 1]])
    np.testing.assert_array_equal(np.asarray(boxes)[0, [1, 3]], 0.0)
    np.testing.assert_array_equal(np.asarray(classes), [[2, 0, 1, 0]])  # no fg label inside -> class 1
    assert np.asarray(masks).shape == (1, 4, 10, 12) and int(np.asarray(masks)[0, 0].sum()) == 12


@pytest.mark.parametrize("kwargs,match", [
    (dict(spatial_dims=3), "spatial_dims"),
    (dict(num_classes=1), "num_classes"),
    (dict(anchor_sizes=(8.0, 16.0)), "anchor_sizes"),
    (dict(roi_batch_per_image=500), "roi_batch_per_image"),
    (dict(sampling_ratio=0), "sampling_ratio"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("mask_rcnn", **{**TINY, **kwargs})


def test_detections_are_clipped_and_pasted():
    props = jnp.array([[-5.0, -5.0, 10.0, 10.0], [20.0, 25.0, 40.0, 45.0]])
    logits = jnp.array([[0.0, 5.0], [0.0, 5.0]])
    deltas = jnp.zeros((2, 2, 4)).at[:, 1, 2:].set(2.0)  # grow both boxes well past the image
    boxes, scores, classes, valid = jax.jit(lambda p, v, lg, d: select_detections(p, v, lg, d, (S, S), 0.05, 0.5, 4))(
        props, jnp.array([True, True]), logits, deltas)
    b = np.asarray(boxes)[np.asarray(valid)]
    assert len(b) == 2 and b.min() >= 0.0 and b[:, [0, 2]].max() <= S and b[:, [1, 3]].max() <= S
    assert np.all(np.asarray(classes)[np.asarray(valid)] == 1)
    # A full mask pasted into box (8, 4, 16, 20) covers exactly that box at threshold 0.5.
    pasted = np.asarray(jax.jit(lambda m, b: paste_masks(m, b, (S, S)))(jnp.ones((1, 28, 28)),
                                                                      jnp.array([[8.0, 4.0, 16.0, 20.0]])))
    on = np.argwhere(pasted[0] >= 0.5)
    np.testing.assert_array_equal(on.min(0), [8, 4])
    np.testing.assert_array_equal(on.max(0), [15, 19])
    sem = jax.jit(lambda p: semantic_map(p, jnp.array([0.9]), jnp.array([1]), jnp.array([True]), 0.5, 0.5))(
        jnp.asarray(pasted))
    assert int(np.asarray(sem).sum()) == 8 * 16


def test_model_traces_once_trains_without_nan_and_predicts():
    model = create_model("mask_rcnn", num_classes=2, in_channels=1, **TINY)
    assert get_spec("mask_rcnn").task == "instance"
    task = get_task("instance")
    variables = jit_init(lambda x: model.init({"params": jax.random.key(0)}, x, train=False))(jnp.zeros((2, S, S, 1)))
    tx = optax.adam(3e-3)
    traces = []

    @jax.jit
    def step(params, opt_state, batch, key):
        traces.append(1)
        (loss, (_, terms)), grads = jax.value_and_grad(
            lambda p: task.loss(model, {"params": p}, batch, key, True), has_aux=True)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam bias correction mixes int32 and float
            updates, opt_state = tx.update(grads, opt_state, params)
        gnorm = optax.global_norm(grads)
        return optax.apply_updates(params, updates), opt_state, terms, gnorm

    params, opt_state = variables["params"], tx.init(variables["params"])
    batches = [_batch(2), _batch(0), _batch(3)]
    losses = []
    for i in range(12):
        params, opt_state, terms, gnorm = step(params, opt_state, batches[i % 3], jax.random.key(i))
        assert np.isfinite(float(terms["loss"])) and np.isfinite(float(gnorm)), (i, terms)
        losses.append(float(terms["loss"]))
    assert len(traces) == 1  # 0, 2 and 3 objects: one program
    assert float(step(params, opt_state, batches[1], jax.random.key(99))[2]["num_gt"]) == 0.0
    assert np.mean(losses[-3:]) < np.mean(losses[:3])

    out = jax.jit(lambda v, x: model.apply(v, x))({"params": params}, batches[0]["image"])
    d = model.detections_per_image
    assert out["boxes"].shape == (2, d, 4) and out["masks"].shape == (2, d, S, S)
    assert out["semantic"].shape == (2, S, S) and out["semantic"].dtype == jnp.int32
    b = np.asarray(out["boxes"])
    assert b.min() >= 0.0 and b.max() <= S
    # task.predict is the same program's semantic map (shape/dtype only here: a second compile is slow on CPU).
    labels = jax.eval_shape(lambda v, x: task.predict(model, v, x), {"params": params}, batches[0]["image"])
    assert labels.shape == (2, S, S) and labels.dtype == jnp.int32
    with pytest.raises(ValueError, match="instances"):
        task.loss(model, {"params": params}, {"image": batches[0]["image"], "label": batches[0]["label"]},
                  jax.random.key(0), True)


def test_zoo_encoder_backbone_shapes():
    # The zoo's ResNet-18 (zoo.encoders) as backbone: shapes only (tracing, no compile).
    model = create_model("mask_rcnn", num_classes=3, in_channels=2, encoder="resnet18", **TINY)
    x = jax.ShapeDtypeStruct((1, S, S, 2), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init({"params": jax.random.key(0)}, x), x)
    out = jax.eval_shape(lambda v, x: model.apply(v, x), variables, x)
    assert out["masks"].shape == (1, TINY["detections_per_image"], S, S)
    assert out["semantic"].shape == (1, S, S)
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(lambda v, x: model.apply(v, x), variables, jax.ShapeDtypeStruct((1, 40, 40, 2), jnp.float32))
