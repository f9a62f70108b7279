"""Every registered segmentation model: init, jit forward, output shape, finite grads, loss goes down.

Parametrisation (compiling is the cost on 2 CPU cores, ~5-10 s per train step): every model in
``zoo.list_models()`` with ``task == "segmentation"``, at ``features=4`` on the smallest spatial size
each allows (16, or 32 for FCN's stride 32), batch 2 of brain phantoms. Compiled and trained for 5
Adam steps (jit init, jit train step, jit eval forward): 2D with 4 channels / 4 classes in bfloat16
compute (float32 params), and 3D with 1 channel / 2 classes in float32. The remaining corners of
{2D, 3D} × {1, 4} channels × {2, 4} classes are traced only (``jax.eval_shape`` of value-and-grad:
logits and gradient shapes/dtypes), which costs no compile. Bad configs, deep supervision, attention
gates, SegNet's index unpooling, the encoders and the cards are checked without compiling too.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from data_pipelines.phantoms import PhantomConfig, PhantomSource
from zoo.encoders import get_encoder, list_encoders
from zoo.tasks import SegmentationTask
from zoo.training import jit_init

SEG_MODELS = [n for n in zoo.list_models() if zoo.get_spec(n).task == "segmentation"]
EXPECTED = {"cnn", "fcn", "unet", "attention_unet", "segnet", "deeplabv3plus"}
MIN_SIZE = {"fcn": 32}  # others: 16
TINY = {"features": 4}
# Models configured by per-level widths rather than a base width (MONAI's ``channels``/``strides``).
TINY_FOR = {"residual_unet": {"channels": (4, 8, 16), "strides": (2, 2)}}


def tiny(name: str) -> dict:
    return TINY_FOR.get(name, TINY)

# Compiled training cases (the expensive part: one XLA compile each): per model, 2D with 4 input
# channels / 4 classes in bfloat16 compute, and 3D with 1 channel / 2 classes in float32.
TRAIN_CASES = [(n, 2, 4, 4, "bfloat16") for n in SEG_MODELS] + [(n, 3, 1, 2, "float32") for n in SEG_MODELS]
# Traced-only cases (abstract evaluation: shapes and dtypes of logits and grads, no compile): the rest
# of {2D, 3D} x {1, 4} channels x {2, 4} classes.
SHAPE_CASES = [(n, d, c, k) for n in SEG_MODELS for d in (2, 3) for c in (1, 4) for k in (2, 4)
               if (d, c, k) not in ((2, 4, 4), (3, 1, 2))]


def keys():
    # The "rbg" PRNG compiles to one XLA op; threefry-initialising every kernel made jit(init) ~7x slower
    # to compile on CPU.
    return {"params": jax.random.key(0, impl="rbg"), "dropout": jax.random.key(1, impl="rbg")}


@functools.lru_cache(maxsize=None)
def phantom_batch(spatial_dims: int, size: int, channels: int, num_classes: int, n: int = 2):
    arrays = PhantomSource(PhantomConfig(kind="brain", shape=(size,) * spatial_dims, channels=channels,
                                         p_empty=0.0, seed=1), n).arrays()
    label = arrays["label"] if num_classes == 4 else (arrays["label"] > 0).astype(np.int32)
    return {"image": jnp.asarray(arrays["image"]), "label": jnp.asarray(label, jnp.int32)}


def test_all_issue_models_registered():
    assert EXPECTED <= set(SEG_MODELS), sorted(EXPECTED - set(SEG_MODELS))


@pytest.mark.parametrize("name,spatial_dims,in_channels,num_classes,dtype", TRAIN_CASES)
def test_model_trains(name, spatial_dims, in_channels, num_classes, dtype):
    # flax's BatchNorm / GroupNorm mix their float32 statistics with bfloat16 activations internally,
    # which strict promotion rejects; bfloat16 cases therefore run under standard promotion.
    with jax.numpy_dtype_promotion("strict" if dtype == "float32" else "standard"):
        _train_case(name, spatial_dims, in_channels, num_classes, dtype)


def _train_case(name, spatial_dims, in_channels, num_classes, dtype):
    model = zoo.create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                             dtype=None if dtype == "float32" else getattr(jnp, dtype), **tiny(name))
    size = MIN_SIZE.get(name, 16)
    batch = phantom_batch(spatial_dims, size, in_channels, num_classes)
    variables = dict(jit_init(functools.partial(model.init, train=False))(keys(), batch["image"]))
    assert "aux_logits" not in variables
    params = variables.pop("params")
    assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, state, opt_state):
        def loss_fn(p):
            return SegmentationTask.loss(model, {"params": p, **state}, batch, keys()["dropout"], True, "ce")

        (loss, (new_state, _)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        with jax.numpy_dtype_promotion("standard"):  # optax mixes its int32 step count with floats
            updates, opt_state = tx.update(grads, opt_state, params)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        return optax.apply_updates(params, updates), new_state or state, opt_state, loss, finite

    losses = []
    state = variables
    for _ in range(5):
        params, state, opt_state, loss, finite = step(params, state, opt_state)
        losses.append(float(loss))
        assert bool(finite), f"{name}: non-finite gradients"
    assert np.all(np.isfinite(losses))
    assert losses[-1] < losses[0], f"{name}: loss did not decrease: {losses}"
    logits = jax.jit(functools.partial(model.apply, train=False))({"params": params, **state}, batch["image"])
    assert logits.shape == batch["image"].shape[:-1] + (num_classes,)
    assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


@pytest.mark.parametrize("name,spatial_dims,in_channels,num_classes", SHAPE_CASES)
def test_model_shapes(name, spatial_dims, in_channels, num_classes):
    model = zoo.create_model(name, spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes,
                             **tiny(name))
    size = MIN_SIZE.get(name, 16)
    x = jax.ShapeDtypeStruct((2,) + (size,) * spatial_dims + (in_channels,), jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(keys(), x, train=False), x)

    state = {k: v for k, v in variables.items() if k != "params"}

    def loss(p, state, x):
        out, _ = model.apply({**state, "params": p}, x, train=True, rngs={"dropout": keys()["dropout"]},
                             mutable=["batch_stats"])
        return jnp.mean(out ** 2), out

    (lv, out), grads = jax.eval_shape(jax.value_and_grad(loss, has_aux=True), variables["params"], state, x)
    assert out.shape == x.shape[:-1] + (num_classes,) and out.dtype == jnp.float32 and lv.shape == ()
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    assert all(g.shape == p.shape and g.dtype == jnp.float32
               for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(variables["params"])))


def _abstract_init(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return jax.eval_shape(lambda v: model.init(keys(), v), x)


# (model, constructor kwargs, input shape or None (construction must fail), message fragment)
BAD = [
    ("unet", {"depth": 0}, None, "depth"),
    ("unet", {"features": 0}, None, "features"),
    ("unet", {"in_channels": 0}, None, "in_channels"),
    ("unet", {"num_classes": 0}, None, "num_classes"),
    ("unet", {"spatial_dims": 4}, None, "spatial_dims"),
    ("unet", {"deep_supervision": 5, "depth": 3}, None, "deep_supervision"),
    ("unet", {"depth": 6}, (1, 16, 16, 1), "divisible by 32"),
    ("unet", {"depth": 2}, (1, 15, 16, 1), r"\(15, 16\)"),
    ("attention_unet", {"skip_connections": False}, None, "skip_connections"),
    ("attention_unet", {"depth": 5, "spatial_dims": 3}, (1, 8, 8, 8, 1), "divisible by 16"),
    ("cnn", {"depth": -1}, None, "depth"),
    ("cnn", {"features": 0}, None, "features"),
    ("cnn", {"depth": 5}, (1, 16, 16, 1), "divisible by 32"),
    ("cnn", {}, (1, 16, 16, 2), "input channels"),
    ("fcn", {"variant": "4s"}, None, "variant"),
    ("fcn", {"backbone": "alexnet"}, None, "backbone"),
    ("fcn", {"features": 0}, None, "features"),
    ("fcn", {}, (1, 16, 16, 1), "divisible by 32"),
    ("segnet", {"depth": 0}, None, "depth"),
    ("segnet", {"convs_per_level": (2, 2)}, None, "convs_per_level"),
    ("segnet", {"features": 0}, None, "features"),
    ("segnet", {"depth": 3}, (1, 12, 12, 1), "divisible by 8"),
    ("deeplabv3plus", {"output_stride": 32}, None, "output_stride"),
    ("deeplabv3plus", {"backbone": "vgg16"}, None, "backbone"),
    ("deeplabv3plus", {"aspp_features": 0}, None, "aspp_features"),
    ("deeplabv3plus", {"output_stride": 16}, (1, 24, 24, 1), "divisible by 16"),
    ("deeplabv3plus", {}, (1, 16, 16, 16, 1), "spatial dims"),
]


@pytest.mark.parametrize("name,kwargs,shape,match", BAD)
def test_bad_config_raises(name, kwargs, shape, match):
    kwargs = {"features": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        model = zoo.create_model(name, **kwargs)
        assert shape is not None, "construction should have failed"
        _abstract_init(model, shape)


def test_unknown_model_argument_raises():
    with pytest.raises(ValueError, match="unknown argument"):
        zoo.create_model("segnet", widht=4)


def test_unet_deep_supervision_sows_full_resolution_logits():
    model = zoo.create_model("unet", spatial_dims=3, in_channels=1, num_classes=3, features=4, depth=3,
                             deep_supervision=1)
    shape = (2, 8, 8, 8, 1)
    variables = _abstract_init(model, shape)
    assert "aux_logits" not in variables  # init leaves no stale logits behind
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    out, state = jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["aux_logits"]), variables, x)
    aux = jax.tree.leaves(state["aux_logits"])
    assert len(aux) == 1 and aux[0].shape == (2, 8, 8, 8, 3) and out.shape == (2, 8, 8, 8, 3)
    assert "ds_head1" in variables["params"]


def test_unet_switches_change_the_architecture():
    def n_params(**kw):
        v = _abstract_init(zoo.create_model("unet", features=4, depth=3, **kw), (1, 8, 8, 1))
        return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(v["params"])), v["params"]

    base, _ = n_params()
    no_skip, _ = n_params(skip_connections=False)
    att, p_att = n_params(attention=True)
    assert no_skip < base < att
    assert {"gate0", "gate1"} <= set(p_att)
    v = _abstract_init(zoo.create_model("attention_unet", features=4, depth=3), (1, 8, 8, 1))
    assert {"gate0", "gate1"} <= set(v["params"])


def test_segnet_unpools_with_the_encoders_indices(monkeypatch):
    import zoo.models.segnet as segnet_module

    real_pool, real_unpool = segnet_module.max_pool_with_argmax, segnet_module.max_unpool
    pools, unpools = [], []

    def pool(x, window=2):
        out = real_pool(x, window)
        pools.append(out)
        return out

    def unpool(x, indices, shape):
        out = real_unpool(x, indices, shape)
        unpools.append((indices, out))
        return out

    monkeypatch.setattr(segnet_module, "max_pool_with_argmax", pool)
    monkeypatch.setattr(segnet_module, "max_unpool", unpool)
    model = zoo.create_model("segnet", features=4, depth=2)
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 1))
    variables = model.init(keys(), x)
    pools.clear(), unpools.clear()
    out = model.apply(variables, x)
    assert out.shape == (1, 8, 8, 2)
    names = " ".join(jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_leaves_with_path(variables["params"]))
    assert "ConvTranspose" not in names
    # Two pools, two unpools, each unpool using the indices of the mirrored pool (deepest first).
    assert len(pools) == 2 and len(unpools) == 2
    for (indices, up), (_, pool_idx) in zip(unpools, reversed(pools)):
        assert indices is pool_idx
        # Sparse: at most one non-zero per 2x2 window, at the position the indices name.
        windows = np.asarray(up).reshape(1, up.shape[1] // 2, 2, up.shape[2] // 2, 2, -1)
        assert np.all((windows != 0).sum(axis=(2, 4)) <= 1)
        flat = np.asarray(up).reshape(1, -1, up.shape[-1])
        picked = np.take_along_axis(flat, np.asarray(indices).reshape(1, -1, up.shape[-1]), axis=1)
        assert np.count_nonzero(flat) == np.count_nonzero(picked)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg11"])
@pytest.mark.parametrize("output_stride", [32, 16, 8])
def test_encoder_feature_strides(arch, output_stride):
    if arch.startswith("vgg") and output_stride != 32:
        with pytest.raises(ValueError, match="output_stride"):
            get_encoder(arch, features=4, output_stride=output_stride)
        return
    enc = get_encoder(arch, features=4, output_stride=output_stride)
    for shape in ((1, 32, 32, 3), (1, 32, 32, 32, 1)):
        v = jax.eval_shape(lambda x: enc.init(keys()["params"], x), jax.ShapeDtypeStruct(shape, jnp.float32))
        feats = jax.eval_shape(lambda v, x: enc.apply(v, x), v, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert len(feats) == 5
        for f, s, c in zip(feats, enc.strides(), enc.out_channels()):
            assert f.shape == (1,) + tuple(n // s for n in shape[1:-1]) + (c,)
    assert enc.strides() == tuple(min(s, output_stride) for s in (2, 4, 8, 16, 32))


def test_encoder_bad_arguments():
    assert set(list_encoders()) == {"resnet18", "resnet34", "resnet50", "vgg11", "vgg16"}
    with pytest.raises(ValueError, match="resnet101"):
        get_encoder("resnet101")
    with pytest.raises(ValueError, match="widht"):
        get_encoder("resnet18", widht=3)
    with pytest.raises(ValueError, match="features"):
        get_encoder("vgg16", features=0)
    enc = get_encoder("resnet18", features=4)
    with pytest.raises(ValueError, match=r"\(40, 40\)"):
        jax.eval_shape(lambda x: enc.init(jax.random.key(0), x), jax.ShapeDtypeStruct((1, 40, 40, 1), jnp.float32))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_card(name):
    card = zoo.model_card(name)
    assert card.name == name and card.summary and card.reference and card.licence
    assert "[B, *S, C]" in card.input_contract and card.spatial_dims == (2, 3)


def test_upsample_linear_matches_the_antialiased_resize_when_growing_and_shrinks_antialiased():
    from zoo import layers

    x = jax.random.normal(jax.random.key(0), (2, 5, 7, 3))
    up = layers.upsample_linear(x, (10, 21))  # traced without antialiasing (exportable)
    ref = jax.image.resize(x, (2, 10, 21, 3), "linear", antialias=True)
    np.testing.assert_allclose(np.asarray(up), np.asarray(ref), atol=1e-6)
    down = layers.upsample_linear(x, (2, 7))  # one axis shrinks: antialiased, as jax's default
    np.testing.assert_allclose(np.asarray(down), np.asarray(jax.image.resize(x, (2, 2, 7, 3), "linear")), atol=1e-6)
    assert not np.allclose(np.asarray(down), np.asarray(jax.image.resize(x, (2, 2, 7, 3), "linear",
                                                                         antialias=False)), atol=1e-3)
