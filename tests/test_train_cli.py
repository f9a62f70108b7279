"""``python -m zoo.train`` / ``zoo.cv`` / ``zoo.hparam`` entry points, optimisers and schedules, the
augmentation hook, and vmapped hyperparameter trials == separate runs."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from data_pipelines import loader
from zoo import cv, hparam_search as hparam, optim, train, training
from zoo.training import kfold
from zoo.build import build_model
from zoo.configs import apply_overrides, load_config

TINY = {"data.image_size": "(16,16)", "data.num_train": "12", "data.num_val": "4", "model.kwargs.features": "4",
        "model.kwargs.depth": "2", "train.batch_size": "4", "train.steps": "3", "train.log_every": "1",
        "train.eval_every": "1000", "train.checkpoint_every": "1000", "train.warmup_steps": "0"}
TINY_ARGS = [f"--config.{k}={v}" for k, v in TINY.items()]

CLI_ERRORS = [  # (argv, fragment of the one-line error)
    (["--model=unett"], "unknown model 'unett'; did you mean 'unet'"),
    (["--config.train.stepz=3"], "unknown config field 'train.stepz'; did you mean steps"),
    (["--config=smok"], "unknown config 'smok'"),
    (["--dataset=brats", "--data_dir=/no/such/dir"], "data_dir '/no/such/dir' does not exist"),
    (["--mesh=3,1"], "mesh shape (3, 1) needs 3 devices; 1 are available"),
    (["--mesh=1,1", "--config.train.batch_size=3", "--config.train.grad_accum=2"], "grad_accum=2 must divide"),
    (["--mesh=x"], "mesh shape must be DATA,MODEL integers"),
    (["--config.train.loss=dicee"], "unknown loss 'dicee'"),
    (["--config.train.optimizer=adamax"], "unknown train.optimizer 'adamax'"),
    (["--num_processes=2"], "need --coordinator"),
    (["--config.train.learning_rate=1e999"], "train.learning_rate must be a finite number"),
    (["--config.train.log_every=0"], "train.log_every must be a positive integer"),
    (["--config.train.eval_every=0"], "train.eval_every must be a positive integer"),
    (["--config.train.checkpoint_every=-5"], "train.checkpoint_every must be a positive integer"),
    (["--config.train.grad_clip=-1"], "train.grad_clip must be >= 0"),
    (["--step=7"], "holds no checkpoint"),
]


@pytest.mark.parametrize("argv,fragment", CLI_ERRORS)
def test_cli_bad_input_is_one_line_exit_2(argv, fragment, tmp_path, capsys):
    code = train.main(["--config=smoke", f"--workdir={tmp_path / 'w'}", "--no_progress", *TINY_ARGS, *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err


def test_cv_cli_prints_per_fold_and_aggregate_table(tmp_path, capsys):
    code = cv.main(["--config=smoke", "--folds=3", f"--workdir={tmp_path}", "--no_progress", *TINY_ARGS,
                    "--config.train.steps=2"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line for line in out.splitlines() if re.match(r"\| [0-9] \|", line)]
    assert len(rows) == 3
    assert re.search(r"\*\*mean ± std\*\*.*\*\*[0-9.]+ ± [0-9.]+\*\*", out)
    for i in range(3):  # per-fold checkpoints (latest and best) and metrics
        assert (tmp_path / f"fold{i}" / "checkpoints" / "2").is_dir()
        assert (tmp_path / f"fold{i}" / "best").is_dir()
        assert (tmp_path / f"fold{i}" / "metrics.jsonl").exists()
    assert (tmp_path / "cv.json").exists()


def test_patient_folds_are_disjoint_by_patient():
    ids = [f"p{i // 2}" for i in range(20)]  # two cases per patient
    folds = kfold.patient_folds(ids, 4, seed=1)
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen.tolist()) == list(range(20))
    for tr, va in folds:
        assert not {ids[i] for i in tr} & {ids[i] for i in va}
    with pytest.raises(ValueError, match="folds=11 is more than the 10 patients"):
        kfold.patient_folds(ids, 11)
    with pytest.raises(ValueError, match="folds must be an integer >= 2"):
        kfold.patient_folds(ids, 1)


def _cfg(**extra):
    return apply_overrides(load_config("smoke"), {**TINY, **extra})


def test_hparam_grid_runs_trials_vmapped_and_matches_a_separate_run(tmp_path):
    trials = hparam.make_trials({"seed": [0, 1], "train.learning_rate": [1e-3, 3e-3],
                                 "model.kwargs.features": [4, 8]})
    assert len(trials) == 8
    assert sorted(len(g) for g in hparam.group_trials(trials)) == [4, 4]  # one vmapped computation per size
    rnd = hparam.make_trials({"train.learning_rate": ("loguniform", 1e-4, 1e-2)}, "random", 5, seed=3)
    assert len(rnd) == 5 and all(1e-4 <= t["train.learning_rate"] <= 1e-2 for t in rnd)
    with pytest.raises(ValueError, match="unknown config field 'train.lr'"):
        hparam.search(_cfg(), {"train.lr": [1.0]}, str(tmp_path))

    base = _cfg(**{"train.schedule": "constant", "train.learning_rate": "3e-3"})
    rows = hparam.search(base, {"seed": [0, 1], "train.learning_rate": [3e-3, 1e-3]}, str(tmp_path))
    assert len(rows) == 4 and all(r["group_size"] == 4 for r in rows)  # all four in one computation
    dice = [r["mean_dice"] for r in rows]
    assert dice == sorted(dice, reverse=True)
    assert (tmp_path / "results.csv").read_text(encoding="utf-8").count("\n") == 5
    by = {(r["seed"], r["train.learning_rate"]): r for r in rows}
    assert len({r["final_loss"] for r in rows}) == 4  # seeds and learning rates both matter
    # The (seed 1, lr 1e-3) trial alone, at its own base learning rate (no per-trial update scale).
    alone_cfg = _cfg(**{"train.schedule": "constant", "train.learning_rate": "1e-3"})
    alone_cfg.seed = 1
    alone = hparam.run_group(alone_cfg, seeds=[1], learning_rates=[1e-3])[0]
    assert abs(by[(1, 1e-3)]["final_loss"] - alone["final_loss"]) <= 1e-5
    assert abs(by[(1, 1e-3)]["mean_dice"] - alone["mean_dice"]) <= 1e-4


SCHEDULE_CASES = [  # (schedule, warmup, step, expected lr for lr=1, steps=10)
    ("constant", 0, 7, 1.0),
    ("cosine", 0, 5, 0.5),
    ("poly", 0, 5, 0.5 ** 0.9),
    ("poly", 2, 1, 0.5),            # linear warm-up
    ("poly", 2, 6, 0.5 ** 0.9),     # after warm-up: decay over the remaining 8 steps
    ("warmup_cosine", 2, 1, 0.5),
    ("warmup_cosine", 2, 10, 0.0),
]


@pytest.mark.parametrize("name,warmup,step,expected", SCHEDULE_CASES)
def test_schedules(name, warmup, step, expected):
    cfg = ml_collections.ConfigDict({"learning_rate": 1.0, "steps": 10, "warmup_steps": warmup, "schedule": name})
    assert float(optim.make_schedule(cfg)(step)) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_optimizers_reduce_a_quadratic_and_clip(name):
    cfg = ml_collections.ConfigDict({"learning_rate": 0.05, "steps": 50, "warmup_steps": 0, "schedule": "constant",
                                     "optimizer": name, "weight_decay": 1e-4, "grad_clip": 1.0,
                                     "momentum": 0.9})
    tx, _ = optim.make_optimizer(cfg)
    params = {"w": jnp.full((3,), 5.0)}

    @jax.jit
    def step(params, state):
        g = jax.grad(lambda p: jnp.sum(p["w"] ** 2))(params)
        upd, state = tx.update(g, state, params)
        return jax.tree.map(lambda p, u: p + u, params, upd), state, upd

    state = tx.init(params)
    for _ in range(50):
        params, state, upd = step(params, state)
        assert bool(jnp.all(jnp.isfinite(upd["w"])))
    assert float(jnp.sum(params["w"] ** 2)) < 75.0 * 0.5


def test_augmentation_hook_in_train_step():
    from data_pipelines.datasets import load_dataset
    from zoo.tasks import get_task

    c = _cfg()
    train_arrays, _, info = load_dataset(c.data)
    model = build_model(c, info)
    tx, _ = optim.make_optimizer(c.train)
    state = training.create_train_state(model, tx, train_arrays["image"][:4], 0)
    batch = loader.gather(loader.ArraysSource(train_arrays), loader.batch_indices(len(train_arrays["image"]), 0, 4, 0),
                          ("image", "label"))
    task = get_task("segmentation")

    def loss_with(spec, enabled=True):
        c.augment.enabled = enabled
        c.augment.spec = ml_collections.ConfigDict(spec)
        fn = training.make_augment_fn(c)
        step = jax.jit(training.make_train_step(model, tx, task, "dice_ce", augment_fn=fn))
        return float(step(state, batch)[1]["loss"])

    plain = loss_with({}, enabled=False)
    flipped = loss_with({"flip": {"p": 1.0, "axes": (0,)}})
    assert np.isfinite(flipped) and flipped != plain
    with pytest.raises(ValueError):
        loss_with({"no_such_transform": {}})
