"""The walking skeleton: registry, U-Net shapes, phantoms, losses, smoke training, checkpoint round trip."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from data_pipelines import PhantomConfig, PhantomSource
from zoo import losses
from zoo.configs import apply_overrides, load_config
from zoo.registry import register
from zoo.training import jit_init

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_registry_lists_unet_and_refuses_duplicates():
    assert "unet" in zoo.list_models()
    with pytest.raises(ValueError, match="already registered"):
        register("unet")(lambda **cfg: None)


def test_unknown_model_lists_close_matches():
    with pytest.raises(ValueError, match="did you mean 'unet'"):
        zoo.create_model("unte")


def test_unknown_model_kwarg_is_value_error():
    with pytest.raises(ValueError, match="foo"):
        zoo.create_model("unet", foo=1)


@pytest.mark.parametrize("spatial_dims,size,in_ch,k", [(2, (32, 32), 1, 2), (2, (16, 24), 4, 4), (3, (16, 16, 8), 2, 3)])
def test_unet_shapes(spatial_dims, size, in_ch, k):
    m = zoo.create_model("unet", spatial_dims=spatial_dims, in_channels=in_ch, num_classes=k, features=4, depth=3)
    x = jnp.ones((2, *size, in_ch), jnp.float32)
    variables = jit_init(m.init)(jax.random.key(0), x)  # eager Flax init compiles op by op: slow
    y = jax.jit(lambda v, x: m.apply(v, x))(variables, x)
    assert y.shape == (2, *size, k)
    assert y.dtype == jnp.float32


@pytest.mark.parametrize("kwargs,match", [
    (dict(spatial_dims=4), "spatial_dims"),
    (dict(in_channels=0), "in_channels"),
    (dict(num_classes=0), "num_classes"),
    (dict(depth=0), "depth"),
    (dict(norm="layer"), "norm"),
])
def test_unet_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        zoo.create_model("unet", **{"spatial_dims": 2, "in_channels": 1, "num_classes": 2, **kwargs})


@pytest.mark.parametrize("shape,match", [((1, 30, 32, 1), "divisible"), ((1, 32, 32, 2), "channels"),
                                         ((32, 32, 1), "spatial dims")])
def test_unet_bad_input(shape, match):
    m = zoo.create_model("unet", spatial_dims=2, in_channels=1, num_classes=2, features=4, depth=3)
    with pytest.raises(ValueError, match=match):
        m.init(jax.random.key(0), jnp.zeros(shape, jnp.float32))


@pytest.mark.parametrize("kind", ["brain", "skin", "lung"])
@pytest.mark.parametrize("shape", [(32, 32), (16, 16, 16)])
def test_phantoms_deterministic_and_labelled(kind, shape):
    cfg = PhantomConfig(kind=kind, shape=shape, p_empty=0.0, seed=3)
    a, b = PhantomSource(cfg, 4).arrays(), PhantomSource(cfg, 4).arrays()
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["image"].shape == (4, *shape, cfg.num_channels)
    assert np.isfinite(a["image"]).all()
    labels = np.unique(a["label"])
    assert labels.min() == 0 and labels.max() <= cfg.num_classes - 1
    assert (a["label"] > 0).any(axis=tuple(range(1, len(shape) + 1))).all(), "p_empty=0: every sample has foreground"
    other = PhantomSource(PhantomConfig(kind=kind, shape=shape, p_empty=0.0, seed=4), 4).arrays()
    assert not np.array_equal(a["image"], other["image"])


def test_brain_phantom_has_all_subregions():
    arr = PhantomSource(PhantomConfig(kind="brain", shape=(64, 64), p_empty=0.0), 8).arrays()
    assert set(np.unique(arr["label"])) == {0, 1, 2, 3}


def test_losses_are_minimised_by_the_right_answer():
    labels = jnp.array([[0, 1, 2, 2]], jnp.int32)
    good = jax.nn.one_hot(labels, 3) * 20.0
    bad = jax.nn.one_hot((labels + 1) % 3, 3) * 20.0
    for name, fn in losses.LOSSES.items():
        assert float(fn(good, labels)) < float(fn(bad, labels)), name


def test_config_overrides():
    c = apply_overrides(load_config("smoke"), {"train.steps": "7", "mesh.shape": "2,1", "model.kwargs.features": "4"})
    assert c.train.steps == 7 and tuple(c.mesh.shape) == (2, 1) and c.model.kwargs.features == 4
    with pytest.raises(ValueError, match="unknown config field 'train.stepz'"):
        apply_overrides(load_config("smoke"), {"train.stepz": "1"})
    with pytest.raises(ValueError, match="unknown config"):
        load_config("smok")


@pytest.mark.standard_promotion
def test_unet_loss_decreases_on_phantoms():
    arr = PhantomSource(PhantomConfig(kind="brain", shape=(32, 32), p_empty=0.0), 8).arrays()
    m = zoo.create_model("unet", spatial_dims=2, in_channels=4, num_classes=4, features=8, depth=3)
    params = jit_init(m.init)(jax.random.key(0), arr["image"])["params"]
    tx = optax.adam(3e-3)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt):
        loss, g = jax.value_and_grad(lambda p: losses.dice_ce(m.apply({"params": p}, arr["image"]), arr["label"]))(params)
        u, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, u), opt, loss

    first = None
    for _ in range(15):
        params, opt, loss = step(params, opt)
        first = float(loss) if first is None else first
    assert float(loss) < 0.8 * first


def _run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "zoo.train", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "JAX_PLATFORMS": "cpu"})


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("smoke")
    proc = _run_cli("--config=smoke", f"--workdir={wd}", "--no_progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return wd, proc


def test_smoke_run_writes_checkpoint_metrics_and_table(smoke_run):
    wd, proc = smoke_run
    assert f"workdir: {wd}" in proc.stdout
    assert "| **mean (foreground)** |" in proc.stdout
    assert (wd / "checkpoints").is_dir() and any((wd / "checkpoints").iterdir())
    records = [json.loads(line) for line in (wd / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert any(r["split"] == "val" for r in records) and any(r["split"] == "train" for r in records)
    cfg = json.loads((wd / "config.json").read_text(encoding="utf-8"))
    assert cfg["model"] == "unet" and "jax" in cfg["run"]


def test_checkpoint_round_trip_gives_same_eval(smoke_run):
    """Restoring the smoke checkpoint (this process, not the one that trained) reproduces its Dice."""
    wd, _ = smoke_run
    saved = json.loads((wd / "eval.json").read_text(encoding="utf-8"))
    pre = zoo.load_pretrained(str(wd))
    assert pre.step == saved["step"]
    from data_pipelines.datasets import load_dataset
    from scoring import dice_per_class_np

    _, val, info = load_dataset(pre.config.data)
    pred = pre.predict(val["image"])
    per_case = np.stack([dice_per_class_np(p, t, info.num_classes) for p, t in zip(pred, val["label"])])
    with np.errstate(invalid="ignore"):
        mean_fg = np.nanmean(np.nanmean(per_case, axis=0)[1:])
    np.testing.assert_allclose(mean_fg, saved["mean_dice"], atol=1e-6)
    with pytest.raises(ValueError, match="num_classes"):
        zoo.load_pretrained(str(wd), num_classes=9)


@pytest.mark.parametrize("args,match", [
    (["--model=unte"], "unknown model 'unte'"),
    (["--config.train.stepz=3"], "unknown config field"),
    (["--dataset=brats", "--data_dir=/nonexistent/dir"], "does not exist"),
    (["--config=nope"], "unknown config"),
])
def test_cli_bad_input_exits_2_with_one_line(args, match, tmp_path):
    proc = _run_cli("--config=smoke", f"--workdir={tmp_path}", *args) if not args[0].startswith("--config=") else \
        _run_cli(*args, f"--workdir={tmp_path}")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = [line for line in proc.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(err) == 1 and match in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
