"""Hyperparameter search over a run config (``python -m zoo.hparam`` is its command line).

Each ``--param`` names a config field and its values (``--param=train.learning_rate=1e-3,3e-3``,
``--param=seed=0,1,2``); random search also takes ranges ``FIELD=loguniform:LO:HI`` or
``uniform:LO:HI`` and ``--trials=N``. Trials that differ only in ``seed`` and
``train.learning_rate`` share shapes and program, so they run together as **one** vmapped
computation on one device (a leading trial axis on the train state; the learning rate enters
as a per-trial scale of the update, exact because every optimiser in :mod:`zoo.optim` is
linear in it). Other fields (model size, loss, optimiser, ...) give separate groups, run one
after the other. Results: ``<workdir>/results.csv`` and ``results.md`` (one row per trial,
sorted by validation Dice).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import time

import numpy as np

from data_pipelines.atomic import write_csv, write_text

__all__ = ["parse_param", "make_trials", "group_trials", "run_group", "search", "format_results"]

VMAPPED_FIELDS = ("seed", "train.learning_rate")


def parse_param(text: str):
    """``"a.b=1,2"`` → ``("a.b", [1, 2])``; ``"a.b=loguniform:1e-4:1e-2"`` → ``("a.b", ("loguniform", lo, hi))``."""
    import ast

    if "=" not in text:
        raise ValueError(f"--param expects FIELD=V1,V2,... or FIELD=loguniform:LO:HI, got {text!r}")
    field, values = text.split("=", 1)
    if values.startswith(("loguniform:", "uniform:")):
        kind, *bounds = values.split(":")
        try:
            lo, hi = (float(b) for b in bounds)
        except ValueError:
            raise ValueError(f"--param {field}: expected {kind}:LO:HI, got {values!r}") from None
        if not lo < hi or (kind == "loguniform" and lo <= 0):
            raise ValueError(f"--param {field}: bad range {values!r}")
        return field, (kind, lo, hi)
    out = []
    for v in values.split(","):
        try:
            out.append(ast.literal_eval(v))
        except (ValueError, SyntaxError):
            out.append(v)
    if not out:
        raise ValueError(f"--param {field}: no values")
    return field, out


def make_trials(space: dict, mode: str = "grid", num_trials: int | None = None, seed: int = 0) -> list[dict]:
    """Trials as ``{field: value}`` dicts: the full grid, or ``num_trials`` random draws."""
    if mode == "grid":
        for f, v in space.items():
            if not isinstance(v, list):
                raise ValueError(f"grid search needs value lists; {f} is a range {v}")
        keys = list(space)
        return [dict(zip(keys, combo)) for combo in itertools.product(*(space[k] for k in keys))]
    if mode != "random":
        raise ValueError(f"search must be grid | random, got {mode!r}")
    if not num_trials or num_trials < 1:
        raise ValueError(f"random search needs --trials >= 1, got {num_trials!r}")
    rng = np.random.default_rng(seed)
    trials = []
    for _ in range(num_trials):
        t = {}
        for f, v in space.items():
            if isinstance(v, list):
                t[f] = v[int(rng.integers(len(v)))]
            elif v[0] == "loguniform":
                t[f] = float(np.exp(rng.uniform(np.log(v[1]), np.log(v[2]))))
            else:
                t[f] = float(rng.uniform(v[1], v[2]))
        trials.append(t)
    return trials


def _set(config, field: str, value):
    from zoo.configs import apply_overrides

    return apply_overrides(config, {field: repr(value) if not isinstance(value, str) else value})


def group_trials(trials: list[dict]) -> list[list[int]]:
    """Indices of trials that can share one vmapped computation (equal in every non-vmapped field)."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(trials):
        key = json.dumps({k: v for k, v in t.items() if k not in VMAPPED_FIELDS}, sort_keys=True, default=str)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def run_group(config, seeds, learning_rates, data=None, log_every: int = 0) -> list[dict]:
    """Train ``len(seeds)`` trials of ``config`` as one vmapped computation; evaluate each.

    Trial ``i`` uses ``seed=seeds[i]`` (parameter init, dropout) and learning rate
    ``learning_rates[i]``; all see the same batches (``config.data.seed``). Returns per-trial
    ``{"final_loss", "mean_dice", "dice_per_class", "losses"}``.
    """
    import jax
    import jax.numpy as jnp

    from data_pipelines import loader
    from data_pipelines.datasets import load_dataset
    from zoo.build import build_model
    from zoo.inference import Predictor
    from zoo.training import evaluate, jit_init, make_init_fn, make_train_step, prepare_run

    if len(seeds) != len(learning_rates) or not len(seeds):
        raise ValueError(f"need as many seeds as learning rates (>0), got {len(seeds)} and {len(learning_rates)}")
    setup = prepare_run(config)
    train, val, info = load_dataset(config.data) if data is None else data
    task, tx = setup.task, setup.tx
    model = build_model(config, info)
    bs = int(config.train.batch_size)
    base_lr = float(config.train.learning_rate)
    init = make_init_fn(model, tx, (bs, *train["image"].shape[1:]))
    states = jit_init(jax.vmap(init))(jnp.stack([jax.random.key(int(s)) for s in seeds]))
    scales = jnp.asarray([float(lr) / base_lr for lr in learning_rates], jnp.float32)
    step = make_train_step(model, tx, task, config.train.loss, grad_accum=int(config.train.get("grad_accum", 1)),
                           augment_fn=setup.augment_fn)
    source = loader.ArraysSource(train)
    vstep = jax.jit(jax.vmap(step, in_axes=(0, None, 0)), donate_argnums=(0,))
    losses = []
    for s in range(int(config.train.steps)):
        batch = loader.gather(source, loader.batch_indices(len(source), s, bs, int(config.data.seed)),
                              ("image", "label", "instances"))
        states, metrics = vstep(states, batch, scales)
        if log_every and ((s + 1) % log_every == 0 or s + 1 == int(config.train.steps)):
            losses.append((s + 1, np.asarray(metrics["loss"]).tolist()))
    final = np.asarray(metrics["loss"])
    predictor = Predictor(model, None, task, bs)
    out = []
    for i in range(len(seeds)):
        predictor.variables = jax.tree.map(lambda x: x[i], states.variables)
        ev = evaluate(predictor, loader.ArraysSource(val), info.num_classes, bs)
        out.append({"final_loss": float(final[i]), "mean_dice": ev["mean_dice"],
                    "dice_per_class": ev["dice_per_class"], "losses": [(k, v[i]) for k, v in losses]})
    return out


def search(config, space: dict, workdir: str, mode: str = "grid", num_trials: int | None = None,
           seed: int = 0) -> list[dict]:
    """Run every trial (grouped into vmapped computations); write ``results.csv``/``results.md``."""
    from data_pipelines.datasets import load_dataset

    trials = make_trials(space, mode, num_trials, seed)
    for t in trials:  # validate every field/value before any training
        c = copy.deepcopy(config)
        for f, v in t.items():
            _set(c, f, v)
    data = load_dataset(config.data)
    os.makedirs(workdir, exist_ok=True)
    rows = [None] * len(trials)
    for g in group_trials(trials):
        c = copy.deepcopy(config)
        for f, v in trials[g[0]].items():
            if f not in VMAPPED_FIELDS:
                c = _set(c, f, v)
        seeds = [int(trials[i].get("seed", config.seed)) for i in g]
        lrs = [float(trials[i].get("train.learning_rate", config.train.learning_rate)) for i in g]
        t0 = time.time()
        res = run_group(c, seeds, lrs, data=data if c.data == config.data else None)
        secs = round(time.time() - t0, 2)
        for i, r in zip(g, res):
            rows[i] = {"trial": i, **trials[i], "group_size": len(g), "final_loss": r["final_loss"],
                       "mean_dice": r["mean_dice"], "group_seconds": secs}
    rows.sort(key=lambda r: -r["mean_dice"] if np.isfinite(r["mean_dice"]) else np.inf)
    write_csv(os.path.join(workdir, "results.csv"), rows)
    write_text(os.path.join(workdir, "results.md"), format_results(rows) + "\n")
    return rows


def format_results(rows: list[dict]) -> str:
    fields = list(rows[0])
    lines = ["| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in fields)
                     + " |")
    return "\n".join(lines)
