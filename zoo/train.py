"""Training entry point: ``python -m zoo.train --config=NAME --workdir=DIR [--config.a.b=value ...]``.

``main`` parses flags and calls :func:`train_and_evaluate`; everything else is importable
(flax examples style). Bad input (unknown model, config field or dataset, missing data
directory) ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines.datasets import load_dataset
from eval.metrics import dice_per_class_np
from zoo import optim, sharding
from zoo.checkpoint import CheckpointIO
from zoo.configs import apply_overrides, load_config
from zoo.registry import create_model, get_spec
from zoo.tasks import get_task

__all__ = ["TrainState", "train_and_evaluate", "build_model", "create_train_state", "make_train_step",
           "evaluate", "batch_at_step", "main"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything a resumed run needs, as one pytree of arrays."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-param collections, e.g. batch_stats
    rng: jax.Array

    @property
    def variables(self):
        return {"params": self.params, **self.model_state}


def _dtype(name: str):
    if name not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"train.dtype must be float32 | bfloat16 | float16, got {name!r}")
    return None if name == "float32" else getattr(jnp, name)


def build_model(config, info):
    """Model for the data set described by ``info`` (channels/classes come from the data)."""
    kwargs = dict(config.model.kwargs.to_dict()) if "kwargs" in config.model else {}
    dtype = _dtype(config.train.get("dtype", "float32"))
    if dtype is not None:
        kwargs["dtype"] = dtype
    return create_model(config.model.name, spatial_dims=info.spatial_dims, in_channels=info.num_channels,
                        num_classes=info.num_classes, **kwargs)


def create_train_state(model, tx, sample_image, seed: int) -> TrainState:
    rng = jax.random.key(seed)
    rng, init_rng = jax.random.split(rng)
    variables = model.init({"params": init_rng, "dropout": init_rng}, sample_image, train=False)
    variables = dict(variables)
    params = variables.pop("params")
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      model_state=variables, rng=jax.random.key_data(rng))


def make_train_step(model, tx, task, loss_name: str):
    """``(state, batch) -> (state, metrics)``, pure; jit it with shardings by the caller."""

    def step_fn(state: TrainState, batch):
        rng = jax.random.wrap_key_data(state.rng)
        rng, step_rng = jax.random.split(rng)
        step_rng = jax.random.fold_in(step_rng, state.step)

        def loss_fn(params):
            return task.loss(model, {"params": params, **state.model_state}, batch, step_rng, True, loss_name)

        (loss, (model_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(lambda p, u: p + u, state.params, updates)
        metrics = dict(metrics, grad_norm=jnp.sqrt(sum(jnp.sum(g.astype(jnp.float32) ** 2)
                                                      for g in jax.tree.leaves(grads))))
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                               model_state=model_state or state.model_state, rng=jax.random.key_data(rng))
        return new_state, metrics

    return step_fn


def batch_at_step(arrays: dict, step: int, batch_size: int, seed: int) -> dict:
    """The batch of ``step``: a seeded permutation per epoch, so a resumed run sees the same data."""
    n = len(arrays["image"])
    per_epoch = max(n // batch_size, 1)
    epoch, i = divmod(int(step), per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    idx = np.resize(perm[i * batch_size:(i + 1) * batch_size], batch_size)
    # Every array field travels (image, label, instances, covariates, outcome, ...); ids stay on the host.
    batch = {k: np.asarray(v)[idx] for k, v in arrays.items() if k != "patient_id" and not isinstance(v, list)}
    batch["label"] = batch["label"].astype(np.int32)
    return batch


def evaluate(model, variables, arrays: dict, num_classes: int, batch_size: int, task=None,
             predict_fn=None) -> dict:
    """Per-case Dice per class on ``arrays``; returns means (NaN-aware) and the per-case table."""
    task = task or get_task("segmentation")
    if predict_fn is None:
        predict_fn = jax.jit(functools.partial(task.predict, model))
    images, labels = arrays["image"], arrays["label"]
    per_case = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        pad = batch_size - len(chunk)
        if pad:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)])
        pred = np.asarray(predict_fn(variables, chunk))[:batch_size - pad]
        for p, t in zip(pred, labels[start:start + batch_size]):
            per_case.append(dice_per_class_np(p, t, num_classes))
    per_case = np.stack(per_case)
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            per_class = np.nanmean(per_case, axis=0)
    fg = per_class[1:] if num_classes > 1 else per_class
    return {"dice_per_class": [float(v) for v in per_class], "mean_dice": float(np.nanmean(fg)),
            "per_case": per_case.tolist(), "num_cases": int(len(per_case))}


def _run_info(config) -> dict:
    import flax
    import optax
    import orbax.checkpoint as ocp

    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except Exception:  # no git, not a checkout
        rev = None
    return {"seed": int(config.seed), "git_revision": rev, "python": platform.python_version(),
            "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "orbax": getattr(ocp, "__version__", "?"), "numpy": np.__version__,
            "devices": [str(d) for d in jax.devices()], "time": datetime.datetime.now().isoformat()}


def _log(path: str, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def format_dice_table(result: dict, class_names) -> str:
    lines = ["| class | Dice |", "|---|---:|"]
    for name, v in zip(class_names, result["dice_per_class"]):
        lines.append(f"| {name} | {v:.4f} |")
    lines.append(f"| **mean (foreground)** | **{result['mean_dice']:.4f}** |")
    return "\n".join(lines)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluate on validation."""
    os.makedirs(workdir, exist_ok=True)
    is_main = jax.process_index() == 0
    train_arrays, val_arrays, info = load_dataset(config.data)
    spec = get_spec(config.model.name)
    task = get_task(spec.task)
    model = build_model(config, info)
    tx, schedule = optim.make_optimizer(config.train)
    mesh = sharding.make_mesh(config.mesh.shape)
    bs = int(config.train.batch_size)
    sharding.check_batch(mesh, bs)

    meta = {"config": config.to_dict(), "model": config.model.name, "task": spec.task,
            "data": dataclasses.asdict(info), "run": _run_info(config)}
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w") as f:
            json.dump(meta, f, indent=2, default=str)

    sample = train_arrays["image"][:bs]
    state = create_train_state(model, tx, sample, int(config.seed))
    repl, data_sh = sharding.replicated(mesh), sharding.batch_sharding(mesh)
    state = jax.device_put(state, repl)

    ckpt = CheckpointIO(os.path.join(workdir, "checkpoints"), max_to_keep=int(config.train.keep_checkpoints))
    if ckpt.latest_step() is not None:
        state, _ = ckpt.restore(None, state)
        state = jax.device_put(state, repl)
        if is_main:
            print(f"resumed from step {int(state.step)}", flush=True)

    step_fn = jax.jit(make_train_step(model, tx, task, config.train.loss),
                      in_shardings=(repl, data_sh), out_shardings=(repl, repl), donate_argnums=(0,))
    predict_fn = jax.jit(functools.partial(task.predict, model))
    metrics_path = os.path.join(workdir, "metrics.jsonl")
    total = int(config.train.steps)
    start = int(state.step)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc=f"train {config.model.name}", disable=not (progress and is_main),
               dynamic_ncols=True)
    t0, last_eval = time.time(), None
    for step in range(start, total):
        batch = batch_at_step(train_arrays, step, bs, int(config.data.seed))
        batch = jax.device_put(batch, data_sh)
        state, metrics = step_fn(state, batch)
        done = step + 1
        if done % int(config.train.log_every) == 0 or done == total:
            m = {k: float(v) for k, v in jax.device_get(metrics).items()}
            m.update(step=done, lr=float(schedule(step)), elapsed_s=round(time.time() - t0, 2))
            bar.set_postfix(loss=f"{m['loss']:.4f}")
            if is_main:
                _log(metrics_path, {"split": "train", **m})
        if done % int(config.train.eval_every) == 0 or done == total:
            last_eval = evaluate(model, state.variables, val_arrays, info.num_classes, bs, task, predict_fn)
            if is_main:
                _log(metrics_path, {"split": "val", "step": done, "mean_dice": last_eval["mean_dice"],
                                    "dice_per_class": last_eval["dice_per_class"]})
            bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", val_dice=f"{last_eval['mean_dice']:.3f}")
        if done % int(config.train.checkpoint_every) == 0 or done == total:
            ckpt.save(done, state, meta, metrics={"mean_dice": last_eval["mean_dice"]} if last_eval else None)
        bar.update(1)
    bar.close()
    ckpt.close()
    if last_eval is None:  # resumed a finished run: evaluate what was restored
        last_eval = evaluate(model, state.variables, val_arrays, info.num_classes, bs, task, predict_fn)
    result = {"step": int(state.step), "mean_dice": last_eval["mean_dice"],
              "dice_per_class": last_eval["dice_per_class"], "class_names": list(info.class_names),
              "num_cases": last_eval["num_cases"], "train_seconds": round(time.time() - t0, 2)}
    if is_main:
        with open(os.path.join(workdir, "eval.json"), "w") as f:
            json.dump(result, f, indent=2)
    return result


def parse_args(argv):
    """Split ``argv`` into known flags and ``--config.a.b=value`` overrides."""
    p = argparse.ArgumentParser(prog="python -m zoo.train", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default", help="recipe name in zoo/configs (default: default)")
    p.add_argument("--workdir", default="", help="output directory (default: workdirs/<config>-<time>)")
    p.add_argument("--model", default=None, help="shortcut for --config.model.name")
    p.add_argument("--dataset", default=None, help="shortcut for --config.data.name")
    p.add_argument("--data_dir", default=None, help="shortcut for --config.data.data_dir")
    p.add_argument("--mesh", default=None, help="DATA,MODEL mesh shape, shortcut for --config.mesh.shape")
    p.add_argument("--steps", default=None, help="shortcut for --config.train.steps")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    known, rest = p.parse_known_args(argv)
    overrides = {}
    for arg in rest:
        if not arg.startswith("--config.") or "=" not in arg:
            p.error(f"unrecognised argument {arg!r} (overrides look like --config.train.steps=100)")
        key, value = arg[len("--config."):].split("=", 1)
        overrides[key] = value
    for flag, field in (("model", "model.name"), ("dataset", "data.name"), ("data_dir", "data.data_dir"),
                        ("mesh", "mesh.shape"), ("steps", "train.steps")):
        if getattr(known, flag) is not None:
            overrides.setdefault(field, getattr(known, flag))
    return known, overrides


def main(argv=None) -> int:
    known, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = load_config(known.config)
        if known.model is not None and known.model != config.model.name:
            # The recipe's model kwargs belong to its own model; another model starts from its defaults.
            config.model.kwargs = ml_collections.ConfigDict()
        config = apply_overrides(config, overrides)
        get_spec(config.model.name)
        workdir = known.workdir or config.workdir or os.path.join(
            "workdirs", f"{known.config}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
        workdir = os.path.abspath(workdir)
        print(f"workdir: {workdir}", flush=True)
        result = train_and_evaluate(config, workdir, progress=not known.no_progress)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nvalidation Dice after {result['step']} steps ({result['num_cases']} cases):")
    print(format_dice_table(result, result["class_names"]))
    print(f"\ncheckpoints: {os.path.join(workdir, 'checkpoints')}\nmetrics: {os.path.join(workdir, 'metrics.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
