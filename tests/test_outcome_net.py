"""The outcome net (image + covariates): shapes, input validation, task, data, metrics, baseline, short training,
the ``python -m zoo.outcome`` command line."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import ehr, outcome_data
from data_pipelines.covariates import check_covariates
from scoring import outcome_metrics
from zoo.configs import apply_overrides, load_config
from zoo.inference import Predictor
from zoo.models.outcome import transfer_unet_encoder
from zoo.outcome.__main__ import main
from zoo.outcome.baselines import logistic_baselines
from zoo.outcome.run import run_outcome
from zoo.registry import create_model, get_spec, list_models
from zoo.tasks import get_task
from zoo.training import jit_init

F = len(outcome_data.COVARIATE_NAMES)
TINY = {"encoder_kwargs": {"features": 4, "depth": 2, "norm": "none"}, "embed_dim": 8, "head_hidden": 8,
        "ehr_hidden": (8,)}


def _model(spatial_dims=2, in_channels=2, num_classes=2, **kw):
    return create_model("outcome_net", spatial_dims=spatial_dims, in_channels=in_channels,
                        num_classes=num_classes, num_covariates=F, **{**TINY, **kw})


def _inputs(shape, channels=2, b=3, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (b, *shape, channels)), jax.random.normal(k2, (b, F))


def _init(model, x, c, seed=1):
    # One jitted init (eager Flax compiles every op separately, which is slow on 2 shared cores).
    return jit_init(model.init)(jax.random.key(seed), x, c)


@pytest.fixture(scope="module")
def model2d():
    model = _model(2)
    x, c = _inputs((16, 16))
    return model, _init(model, x, c), x, c


SHAPE_CASES = [
    # (spatial shape, num_classes, fusion, modalities, pool)
    ((16, 16), 2, "concat", "both", "avg"),
    ((8, 8, 8), 2, "gated", "both", "avgmax"),
    ((12, 10), 3, "film", "both", "avg"),          # odd sizes, K-class
    ((8, 8, 8), 1, "film", "both", "avg"),          # one binary logit
    ((16, 16), 2, "concat", "image", "avg"),
    ((8, 8, 8), 2, "concat", "ehr", "avg"),
]


@pytest.mark.parametrize("shape,k,fusion,modalities,pool", SHAPE_CASES)
def test_logits_shape_2d_3d(shape, k, fusion, modalities, pool):
    model = _model(len(shape), num_classes=k, fusion=fusion, modalities=modalities, pool=pool)
    x, c = _inputs(shape)

    @jit_init  # runs once: XLA level 0 compiles the threefry init in a fraction of the time
    def init_apply(key):
        variables = model.init(key, x, c)
        return variables, model.apply(variables, x, c, train=False)

    variables, logits = init_apply(jax.random.key(1))
    assert logits.shape == (3, k) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))
    if modalities == "ehr":
        assert "encoder" not in variables["params"]
    if modalities == "image":
        assert not any(name.startswith("ehr") for name in variables["params"])


def test_fused_output_depends_on_both_inputs(model2d):
    model, v, x, c = model2d
    apply = jax.jit(model.apply)
    base = apply(v, x, c)
    assert not np.allclose(base, apply(v, x * 2.0 + 1.0, c))
    assert not np.allclose(base, apply(v, x, c + 1.0))


@pytest.mark.parametrize("cov_shape", [(3, F - 1), (3, F + 2), (3,), (2, F)])
def test_covariate_shape_mismatch_raises(cov_shape, model2d):
    model, v, x, _ = model2d
    with pytest.raises(ValueError, match="covariates"):
        model.apply(v, x, jnp.zeros(cov_shape))


def test_nan_covariates_raise_everywhere(model2d):
    model, v, x, c = model2d
    bad = np.asarray(c).copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.apply(v, x, jnp.asarray(bad))
    task = get_task("outcome")
    batch = {"image": x, "covariates": bad, "outcome": np.zeros(3, np.int32)}
    with pytest.raises(ValueError, match="NaN"):
        task.loss(model, v, batch, jax.random.key(0), False)
    with pytest.raises(ValueError, match="NaN"):
        task.predict_proba(model, v, batch)
    with pytest.raises(ValueError, match="NaN"):
        Predictor(model, v, task).predict_proba({"image": np.asarray(x), "covariates": bad}, batch_size=2)
    with pytest.raises(ValueError, match="NaN"):
        check_covariates(bad, F)


@pytest.mark.parametrize("kwargs,match", [
    ({"fusion": "sum"}, "fusion"),
    ({"modalities": "text"}, "modalities"),
    ({"pool": "median"}, "pool"),
    ({"num_covariates": 0}, "num_covariates"),
    ({"encoder_kwargs": {"features": 4, "width": 3}}, "encoder_kwargs"),
    ({"pool_levels": 5}, "pool_levels"),
    ({"spatial_dims": 4}, "spatial_dims"),
])
def test_bad_config_raises(kwargs, match):
    cfg = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2, "num_covariates": F, **TINY, **kwargs}
    with pytest.raises(ValueError, match=match):
        create_model("outcome_net", **cfg)


def test_registry_and_task():
    assert "outcome_net" in list_models()
    spec = get_spec("outcome_net")
    assert spec.task == "outcome" and spec.card is not None and "covariates" in spec.card.input_contract
    task = get_task("outcome")
    model = _model(2)
    x, c = _inputs((16, 16), b=4)
    v = _init(model, x, c)
    batch = {"image": x, "covariates": c, "outcome": jnp.array([0, 1, 1, 0], jnp.int32)}
    loss, (state, metrics) = jax.jit(lambda v, b: task.loss(model, v, b, jax.random.key(2), True))(v, batch)
    assert np.isfinite(float(loss)) and 0.0 <= float(metrics["accuracy"]) <= 1.0
    pred, proba = jax.jit(lambda v, b: (task.predict(model, v, b), task.predict_proba(model, v, b)))(v, batch)
    assert pred.shape == (4,) and pred.dtype == jnp.int32
    np.testing.assert_allclose(np.asarray(proba).sum(-1), 1.0, rtol=1e-5)
    assert np.array_equal(np.asarray(pred), np.asarray(proba).argmax(-1))
    with pytest.raises(ValueError, match="covariates"):
        task.predict(model, v, x)  # the fused model cannot predict from images alone
    img_only = _model(2, modalities="image")
    vi = jit_init(lambda k: img_only.init(k, x, None))(jax.random.key(1))
    assert jax.jit(lambda v, im: task.predict(img_only, v, im))(vi, x).shape == (4,)
    with pytest.raises(ValueError, match="loss_name"):
        task.loss(model, v, batch, jax.random.key(2), False, "dice")


def test_binary_single_logit_loss_matches_sigmoid_bce():
    from zoo.outcome.tasks import outcome_loss

    z = jnp.array([[0.3], [-1.2], [2.0]])
    y = jnp.array([1, 0, 0], jnp.int32)
    p = jax.nn.sigmoid(z[:, 0])
    bce = -jnp.mean(jnp.where(y == 1, jnp.log(p), jnp.log(1 - p)))
    np.testing.assert_allclose(float(outcome_loss(z, y)), float(bce), rtol=1e-5)


def test_transfer_unet_encoder_copies_and_checks(model2d):
    model, v, x, _ = model2d
    params = v["params"]

    def unet_params(features, seed):
        # Shapes from eval_shape (no compile), values random: only structure and copying matter here.
        unet = create_model("unet", spatial_dims=2, in_channels=2, num_classes=2, features=features, depth=2,
                            norm="none")
        shapes = jax.eval_shape(unet.init, jax.random.key(0), x)["params"]
        rng = np.random.default_rng(seed)
        return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32), shapes)

    up = unet_params(4, 5)
    new = transfer_unet_encoder(params, up)
    assert sorted(new["encoder"]) == ["enc0", "enc1"]
    for a, b in zip(jax.tree.leaves(new["encoder"]), jax.tree.leaves({k: up[k] for k in new["encoder"]})):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.array_equal(np.asarray(new["head"]["kernel"]), np.asarray(params["head"]["kernel"]))
    assert not np.array_equal(np.asarray(params["encoder"]["enc0"]["Conv_0"]["kernel"]),
                              np.asarray(new["encoder"]["enc0"]["Conv_0"]["kernel"]))
    with pytest.raises(ValueError, match="does not match"):
        transfer_unet_encoder(params, unet_params(8, 6))


def test_external_encoder_when_available():
    pytest.importorskip("zoo.encoders")
    model = create_model("outcome_net", spatial_dims=2, in_channels=1, num_classes=2, num_covariates=F,
                         encoder="resnet18", encoder_kwargs={"features": 4, "norm": "group"}, pool_levels=2,
                         embed_dim=8, head_hidden=8)
    x, c = _inputs((32, 32), channels=1, b=2)
    out = jax.eval_shape(lambda k: model.apply(model.init(k, x, c), x, c), jax.random.key(0))
    assert out.shape == (2, 2)


def test_outcome_data_split_and_dependence():
    cfg = outcome_data.OutcomeDataConfig(shape=(16, 16), num_patients=300, val_fraction=0.25, seed=3)
    train, val, info = outcome_data.make_outcome_dataset(cfg)
    assert not set(train["patient_id"]) & set(val["patient_id"])
    assert len(train["outcome"]) + len(val["outcome"]) == 300 and len(val["outcome"]) == 75
    assert train["covariates"].shape == (225, F) and train["covariates"].dtype == np.float32
    assert train["image"].shape == (225, 16, 16, 4) and train["outcome"].dtype == np.int32
    assert set(np.unique(train["outcome"])) == {0, 1} and info["covariate_names"] == outcome_data.COVARIATE_NAMES
    np.testing.assert_array_equal(train["covariates"][:, 1] + train["covariates"][:, 2], 1.0)  # sex one-hot
    # The outcome depends on both sources: the true risk's two parts each correlate with it.
    from sklearn.metrics import roc_auc_score

    y = np.concatenate([train["outcome"], val["outcome"]])
    size = np.concatenate([train["tumour_size"], val["tumour_size"]])
    age = np.concatenate([train["covariates"][:, 0], val["covariates"][:, 0]])
    assert roc_auc_score(y, size) > 0.65 and roc_auc_score(y, age) > 0.6
    # Deterministic.
    again = outcome_data.make_outcome_dataset(cfg)[0]
    np.testing.assert_array_equal(again["outcome"], train["outcome"])
    with pytest.raises(ValueError, match="num_patients"):
        outcome_data.OutcomeDataConfig(num_patients=2)
    with pytest.raises(ValueError, match="sex"):
        ehr.encode_covariates([50.0], ["X"], np.zeros((1, 4)))


def test_outcome_metrics_against_hand_counts():
    y = np.array([1, 1, 0, 0, 1, 0])
    p1 = np.array([0.9, 0.4, 0.2, 0.7, 0.8, 0.1])
    m = outcome_metrics(y, np.stack([1 - p1, p1], 1))
    # pred = [1, 0, 0, 1, 1, 0]: tp=2, fp=1, fn=1, tn=2.
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert m["auc_roc"] == pytest.approx(8 / 9)  # 8 of the 9 positive/negative pairs ranked right
    none_pos = outcome_metrics(y, np.tile([0.9, 0.1], (6, 1)))
    assert np.isnan(none_pos["precision"]) and none_pos["recall"] == 0.0
    with pytest.raises(ValueError, match="proba"):
        outcome_metrics(y, p1)


def test_logistic_baselines_run():
    cfg = outcome_data.OutcomeDataConfig(shape=(16, 16), num_patients=200, seed=1)
    train, val, _ = outcome_data.make_outcome_dataset(cfg)
    res = logistic_baselines(train, val)
    assert set(res) == {"logreg[ehr+volume]", "logreg[ehr]", "logreg[volume]"}
    for m in res.values():
        assert 0.0 <= m["accuracy"] <= 1.0 and m["n"] == len(val["outcome"])
    # Both sources together beat either alone on this cohort (by construction of the outcome).
    assert res["logreg[ehr+volume]"]["auc_roc"] > max(res["logreg[ehr]"]["auc_roc"],
                                                     res["logreg[volume]"]["auc_roc"])


def _tiny_config(**overrides):
    c = load_config("outcome_smoke")
    base = {"data.image_size": "16,16", "data.num_patients": "160", "model.kwargs.encoder_kwargs.features": "4",
            "model.kwargs.encoder_kwargs.depth": "2", "model.kwargs.encoder_kwargs.norm": "none",
            "model.kwargs.embed_dim": "16", "model.kwargs.head_hidden": "16", "train.steps": "60",
            "train.eval_every": "30", "train.checkpoint_every": "30", "train.log_every": "30",
            "model.kwargs.pool_levels": "2", "outcome.pretrain_unet_steps": "0"}
    return apply_overrides(c, {**base, **overrides})


def test_short_training_beats_chance_and_writes_outputs(tmp_path):
    config = _tiny_config(**{"outcome.variants": "('both',)"})
    res = run_outcome(config, str(tmp_path))
    net = res["models"]["outcome_net[both]"]
    assert net["step"] == 60 and net["auc_roc"] > 0.6, net
    assert "logreg[ehr+volume]" in res["models"]
    saved = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert saved["models"]["outcome_net[both]"]["auc_roc"] == pytest.approx(net["auc_roc"])
    assert (tmp_path / "both" / "checkpoints").is_dir() and (tmp_path / "config.json").is_file()
    # A rerun resumes from the final checkpoint instead of training again, and reproduces the metrics.
    again = run_outcome(config, str(tmp_path))["models"]["outcome_net[both]"]
    assert again["step"] == 60 and again["auc_roc"] == pytest.approx(net["auc_roc"], abs=1e-6)


def test_cli_errors_exit_2(capsys, tmp_path):
    small = ["--config.data.num_patients=40", "--config.data.image_size=8,8", f"--workdir={tmp_path}"]
    assert main(["--config=outcome_smoke", "--config.model.kwargs.fusion=sum"] + small) == 2
    assert "fusion" in capsys.readouterr().err
    assert main(["--config=outcome_smoke", "--config.outcome.variants=('both','text')"] + small) == 2
    assert "variants" in capsys.readouterr().err
