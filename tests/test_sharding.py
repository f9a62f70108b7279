"""Mesh construction, PartitionSpec rules, and sharded train step == single device (8 fake CPU devices)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from zoo import sharding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RESOLVE_CASES = [  # (shape, devices, batch, expected or error fragment)
    ((-1, 1), 8, 8, (8, 1)),
    ((4, 2), 8, 8, (4, 2)),
    ((2, -1), 8, 4, (2, 4)),
    ("4,2", 8, 16, (4, 2)),
    ((3, 1), 8, 8, "needs 3 devices"),
    ((-1, 3), 8, 8, "does not divide the 8"),
    ((8, 1), 8, 4, "batch size 4 is not divisible"),
    ((4, 2, 1), 8, 8, "(data, model)"),
    ((0, 1), 8, 8, "positive sizes"),
    ("a,b", 8, 8, "DATA,MODEL integers"),
]


@pytest.mark.parametrize("shape,devices,batch,expected", RESOLVE_CASES)
def test_resolve_mesh_shape(shape, devices, batch, expected):
    if isinstance(expected, tuple):
        assert sharding.resolve_mesh_shape(shape, devices, batch) == expected
    else:
        with pytest.raises(ValueError, match=__import__("re").escape(expected)):
            sharding.resolve_mesh_shape(shape, devices, batch)


SPEC_CASES = [  # (path, shape, mesh, min_size, expected spec)
    ("params/enc1/Conv_0/kernel", (3, 3, 16, 32), {"data": 4, "model": 2}, 0, P(None, None, None, "model")),
    ("opt_state/1/0/mu/enc1/Conv_0/kernel", (3, 3, 16, 32), {"data": 4, "model": 2}, 0,
     P(None, None, None, "model")),
    ("params/head/kernel", (1, 1, 16, 3), {"data": 4, "model": 2}, 0, P()),      # 3 classes: not divisible
    ("params/enc1/Conv_0/kernel", (3, 3, 16, 32), {"data": 4, "model": 2}, 10 ** 6, P()),  # too small
    ("params/enc1/GroupNorm_0/scale", (32,), {"data": 4, "model": 2}, 0, P()),    # no rule
    ("params/enc1/Conv_0/kernel", (3, 3, 3, 16, 32), {"data": 2, "model": 4}, 0, P(None, None, None, None, "model")),
]


@pytest.mark.parametrize("path,shape,mesh,min_size,expected", SPEC_CASES)
def test_partition_spec_rules(path, shape, mesh, min_size, expected):
    assert sharding.partition_spec(path, shape, mesh, min_size=min_size) == expected


SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from data_pipelines.datasets import load_dataset
    from zoo import optim, sharding
    from zoo.configs import apply_overrides, load_config
    from zoo.tasks import get_task
    from data_pipelines.loader import ArraysSource
    from zoo.build import build_model
    from zoo.training import make_init_fn, make_train_step
    from zoo.training.data import TrainBatches

    assert len(jax.devices()) == 8, jax.devices()
    c = apply_overrides(load_config("smoke"), {"data.image_size": "(16,16)", "data.num_train": "16",
        "data.num_val": "4", "model.kwargs.features": "4", "model.kwargs.depth": "2", "train.batch_size": "8"})
    train, _, info = load_dataset(c.data)
    task = get_task("segmentation")
    model = build_model(c, info)
    tx, _ = optim.make_optimizer(c.train)
    init = make_init_fn(model, tx, (8, 16, 16, info.num_channels))
    host_state = jax.device_get(jax.jit(init)(jax.random.key(0)))  # one init, laid out per mesh below

    def global_batch(step, data_sh):  # the trainer's batch of `step`, laid out on the mesh
        batches = TrainBatches(ArraysSource(train), 8, 0, data_sh)
        batches.restore(None, step)
        return batches.next()

    def setup(shape, devices=None):
        mesh = sharding.make_mesh(shape, devices=devices, batch_size=8)
        st_sh = sharding.tree_shardings(mesh, jax.eval_shape(init, jax.random.key(0)), min_size=0)
        data_sh = sharding.batch_sharding(mesh)
        return mesh, st_sh, data_sh, sharding.put_global(host_state, st_sh), global_batch(3, data_sh)

    def loss_and_grad(shape, devices=None, dtype="float32"):
        c.train.dtype = dtype
        m = build_model(c, info)
        mesh, st_sh, data_sh, state, batch = setup(shape, devices)

        def f(state, batch):
            loss = lambda p: task.loss(m, {"params": p, **state.model_state}, batch, jax.random.key(1), True,
                                       "dice_ce")[0]
            return jax.value_and_grad(loss)(state.params)

        lv, grads = jax.jit(f, in_shardings=(st_sh, data_sh),
                            out_shardings=(sharding.replicated(mesh), st_sh.params))(state, batch)
        assert all(g.sharding == s for g, s in zip(jax.tree.leaves(grads), jax.tree.leaves(st_sh.params)))
        return {"loss": float(lv), "grads": [np.asarray(g).ravel().tolist() for g in jax.tree.leaves(grads)],
                "model_sharded_leaves": sum("model" in str(s.spec) for s in jax.tree.leaves(st_sh.params))}

    def step(shape, accum):
        mesh, st_sh, data_sh, state, batch = setup(shape)
        fn = jax.jit(make_train_step(model, tx, task, "ce", grad_accum=accum), in_shardings=(st_sh, data_sh),
                     out_shardings=(st_sh, sharding.replicated(mesh)))
        new, metrics = fn(state, batch)
        return {"loss": float(metrics["loss"]), "grad_norm": float(metrics["grad_norm"]), "step": int(new.step)}

    out = {"single": loss_and_grad((1, 1), jax.devices()[:1]), "8x1": loss_and_grad((8, 1)),
           "4x2": loss_and_grad((4, 2)), "bf16": loss_and_grad((8, 1), dtype="bfloat16"),
           "ce_accum1": step((4, 2), 1), "ce_accum2": step((4, 2), 2)}
    json.dump(out, open(sys.argv[1], "w"))
""")


@pytest.fixture(scope="module")
def sharded_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharding") / "out.json"
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=os.path.join(tempfile.gettempdir(), "medzoo-test-jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(out)], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.mark.slow
@pytest.mark.parametrize("mesh", ["8x1", "4x2"])
def test_sharded_loss_and_grad_match_single_device(sharded_runs, mesh):
    ref, got = sharded_runs["single"], sharded_runs[mesh]
    assert abs(got["loss"] - ref["loss"]) <= 1e-5
    assert len(got["grads"]) == len(ref["grads"]) > 0
    for g, r in zip(got["grads"], ref["grads"]):
        np.testing.assert_allclose(g, r, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_model_axis_actually_shards_params(sharded_runs):
    assert sharded_runs["single"]["model_sharded_leaves"] == 0
    assert sharded_runs["8x1"]["model_sharded_leaves"] == 0
    assert sharded_runs["4x2"]["model_sharded_leaves"] > 0


@pytest.mark.slow
def test_grad_accumulation_matches_full_batch(sharded_runs):
    # Cross-entropy is a mean over equal-sized micro-batches, so accumulation is exact up to rounding.
    a1, a2 = sharded_runs["ce_accum1"], sharded_runs["ce_accum2"]
    assert a1["step"] == a2["step"] == 1
    assert abs(a1["loss"] - a2["loss"]) <= 1e-5
    assert abs(a1["grad_norm"] - a2["grad_norm"]) <= 1e-5


@pytest.mark.slow
def test_bf16_compute_close_to_float32(sharded_runs):
    f32, bf16 = sharded_runs["8x1"], sharded_runs["bf16"]
    assert np.isfinite(bf16["loss"]) and bf16["loss"] != f32["loss"]
    assert abs(bf16["loss"] - f32["loss"]) < 0.05 * abs(f32["loss"])
