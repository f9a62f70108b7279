"""zoo.explain: Grad-CAM against a hand-computed two-layer model; SHAP against closed-form linear values; the
``python -m eval.interpret`` command line over it."""

from __future__ import annotations

import os

# shap's numba kernels take ~15 s of CPU to compile per process; on these tiny inputs the
# pure-Python fallback is instant. Must be set before numba is first imported.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eval import interpret
from zoo import explain


class TwoLayer(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        a = nn.Dense(3, name="feat")(x)
        return nn.Dense(2, name="head")(a)


def test_gradcam_matches_hand_computation():
    x = jax.random.normal(jax.random.key(0), (2, 6, 5, 2), jnp.float32)
    model = TwoLayer()
    v = model.init(jax.random.key(1), x)
    region = np.zeros((2, 6, 5), bool)
    region[:, 1:4, 2:5] = True
    cam = explain.gradcam(model, v, x, layer="feat", target_class=1, region=region, normalize=False)
    # dScore/dA = W_head[:, 1] inside the region, 0 outside; weights = that mean over the grid.
    w2 = np.asarray(v["params"]["head"]["kernel"])[:, 1]
    a = np.asarray(x) @ np.asarray(v["params"]["feat"]["kernel"]) + np.asarray(v["params"]["feat"]["bias"])
    weights = w2 * region.reshape(2, -1).mean(1)[:, None]
    want = np.maximum(np.einsum("bhwc,bc->bhw", a, weights), 0)
    assert np.allclose(cam, want, atol=1e-5)
    norm = explain.gradcam(model, v, x, layer="feat", target_class=1, region=region)
    assert norm.shape == (2, 6, 5) and np.all((norm >= 0) & (norm <= 1 + 1e-6))
    assert np.allclose(norm.reshape(2, -1).max(1), [1, 1], atol=1e-6) or not want.any()
    assert "feat" in explain.layer_names(model, v, x)
    with pytest.raises(ValueError, match="no layer"):
        explain.gradcam(model, v, x, layer="nope", target_class=0)
    with pytest.raises(ValueError, match="target_class"):
        explain.gradcam(model, v, x, layer="feat", target_class=5)


class PooledClassifier(nn.Module):
    """A 3D classifier with covariates: per-voxel features, global average pool, a head on [pool, covariates]."""

    @nn.compact
    def __call__(self, x, covariates=None, train: bool = False):
        a = nn.Dense(3, name="feat")(x)
        return nn.Dense(2, name="head")(jnp.concatenate([a.mean(axis=(1, 2, 3)), covariates], -1))


def test_gradcam_classifier_3d_channels_last_with_covariates(tmp_path):
    x = jax.random.normal(jax.random.key(0), (2, 4, 5, 3, 2), jnp.float32)
    cov = jax.random.normal(jax.random.key(2), (2, 4), jnp.float32)
    model = PooledClassifier()
    v = model.init(jax.random.key(1), x, cov)
    cam = explain.gradcam(model, v, x, layer="feat", target_class=1, normalize=False, inputs={"covariates": cov})
    # dScore/dA = W_head[:3, 1] / |S| at every voxel: the weights; CAM = ReLU(A @ weights).
    w2 = np.asarray(v["params"]["head"]["kernel"])[:3, 1] / (4 * 5 * 3)
    a = np.asarray(x) @ np.asarray(v["params"]["feat"]["kernel"]) + np.asarray(v["params"]["feat"]["bias"])
    assert cam.shape == (2, 4, 5, 3) and np.allclose(cam, np.maximum(a @ w2, 0), atol=1e-5)
    with pytest.raises(ValueError, match="region"):
        explain.gradcam(model, v, x, layer="feat", target_class=1, region=np.ones((2, 4, 5, 3)),
                        inputs={"covariates": cov})
    explain.gradcam_overlay(np.asarray(x[0]), cam[0] / cam[0].max(), str(tmp_path / "c.png"), channel=1, index=2)
    assert (tmp_path / "c.png").stat().st_size > 500


def test_gradcam_on_registered_unet_and_overlay(tmp_path):
    from zoo import create_model

    model = create_model("unet", spatial_dims=2, in_channels=1, num_classes=2, features=4, depth=2)
    x = jax.random.normal(jax.random.key(0), (1, 8, 8, 1), jnp.float32)
    # Random parameters of the right shapes without compiling ``init`` (slow to compile on CPU).
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(1), x, train=False))
    v = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.normal(size=s.shape), s.dtype), shapes)
    cam = explain.gradcam(model, v, x, layer="enc1", target_class=1)
    assert cam.shape == (1, 8, 8) and np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1 + 1e-6
    path = explain.gradcam_overlay(np.asarray(x[0]), cam[0], str(tmp_path / "cam.png"))
    assert (tmp_path / "cam.png").stat().st_size > 1000 and path.endswith("cam.png")


def test_shap_linear_closed_form_and_additivity(tmp_path):
    pytest.importorskip("shap")
    rng = np.random.default_rng(0)
    bg = rng.normal(size=(30, 4))
    x = rng.normal(size=(5, 4))
    w = np.array([0.5, -1.0, 2.0, 0.0])
    expl = explain.shap_tabular(lambda z: z @ w + 0.3, bg, x, feature_names=["age", "sex", "asa", "bmi"])
    assert np.allclose(expl.values, w * (x - bg.mean(0)), atol=1e-6)

    def logistic(z):
        return 1 / (1 + np.exp(-(z @ w + z[:, 0] * z[:, 1])))

    expl = explain.shap_tabular(logistic, bg, x)
    assert np.allclose(expl.base_values + expl.values.sum(1), logistic(x), atol=1e-6)
    assert np.abs(expl.values[:, 3]).max() < 1e-9  # a feature the model ignores gets zero credit
    explain.shap_importance_plot(expl, str(tmp_path / "shap.png"))
    assert (tmp_path / "shap.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="share F"):
        explain.shap_tabular(logistic, bg, x[:, :3])


def test_gradcam_cli_missing_workdir(tmp_path, capsys):
    assert interpret.main(["--workdir", str(tmp_path / "missing")]) == 2
    assert "error:" in capsys.readouterr().err
