"""Training entry point: ``python -m zoo.train --config=NAME --workdir=DIR [--mesh=D,M] [--config.a.b=value ...]``.

``main`` parses flags and calls :func:`train_and_evaluate`; everything else is importable
(flax examples style). Bad input (unknown model, config field or dataset, missing data
directory, a mesh that does not fit the devices or the batch) ends with one line on stderr and
exit status 2, before anything is compiled.

Scale-out: one ``Mesh`` ``(data, model)`` (:mod:`zoo.sharding`); the batch is sharded on
``data``, parameters and optimiser state follow the path rules of ``zoo.sharding`` on
``model``; the train step is ``jax.jit`` with ``in_shardings``/``out_shardings``. Multi-host:
``--coordinator/--num_processes/--process_id`` (or ``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) call ``jax.distributed.initialize``; each process
loads only the rows of the global batch its devices hold; only process 0 writes logs.

Reproducibility: the batch of step ``s`` is a pure function of ``(data.seed, s)``, the step's
dropout/augmentation key a pure function of the saved RNG and ``s``; so a run resumed from a
checkpoint repeats the uninterrupted run bit for bit. SIGTERM saves a checkpoint, then exits.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import functools
import json
import os
import signal
import sys
import time
import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines.datasets import load_dataset
from eval.metrics import dice_per_class_np
from zoo import optim, sharding
from zoo.checkpoint import CheckpointIO
from zoo.provenance import run_info
from zoo.configs import apply_overrides, load_config, split_overrides
from zoo.registry import create_model, get_spec
from zoo.tasks import get_task

__all__ = ["TrainState", "train_and_evaluate", "build_model", "create_train_state", "make_init_fn", "jit_init",
           "make_train_step", "make_augment_fn", "evaluate", "batch_at_step", "batch_indices", "global_batch",
           "init_distributed", "setup_mesh", "PREEMPTED_EXIT_CODE", "main"]

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: "stopped early, checkpoint saved, rerun to resume"


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class TrainState:
    """Everything a resumed run needs, as one pytree of arrays."""

    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-param collections, e.g. batch_stats
    rng: jax.Array  # raw key data (uint32[2]) so Orbax can save it

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


def make_init_fn(model, tx, image_shape) -> Callable[[jax.Array], TrainState]:
    """``key -> TrainState`` for inputs ``image_shape = (B, *S, C)``; pure, so it can be vmapped. Compile it
    with :func:`jit_init`."""

    def init(key):
        key, init_key = jax.random.split(key)
        sample = jnp.zeros((1, *image_shape[1:]), jnp.float32)
        variables = dict(model.init({"params": init_key, "dropout": init_key}, sample, train=False))
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          model_state=variables, rng=jax.random.key_data(key))

    return init


# XLA backend options for programs that run once (parameter initialisation). Level 0 skips LLVM's
# optimisation of the generated kernels: on XLA:CPU jit(init) of a U-Net then compiles in ~3 s instead of
# 13 s (2D) / 22 s (3D), and runs in < 1 s instead of ~0.1 s (docs/performance.md). The random bits are
# integer maths, so the initial values are the same up to float rounding of the initialisers.
RUN_ONCE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def jit_init(init_fn: Callable, **jit_kwargs) -> Callable:
    """``jax.jit`` for a program that runs once (``init_fn`` from :func:`make_init_fn`, or a vmapped one):
    on XLA:CPU it compiles with :data:`RUN_ONCE_COMPILER_OPTIONS`, elsewhere as plain ``jax.jit``."""
    if jax.default_backend() == "cpu":
        jit_kwargs.setdefault("compiler_options", RUN_ONCE_COMPILER_OPTIONS)
    return jax.jit(init_fn, **jit_kwargs)


def create_train_state(model, tx, sample_image, seed: int) -> TrainState:
    """Unsharded state on the default device (tests, notebooks, benchmarks); see :func:`make_init_fn`."""
    return jit_init(make_init_fn(model, tx, tuple(sample_image.shape)))(jax.random.key(seed))


def make_augment_fn(config):
    """Per-sample augmentation ``(key, image [*S, C], label [*S]) -> (image, label)`` or ``None``."""
    aug = config.get("augment", None)
    if aug is None or not aug.get("enabled", False):
        return None
    try:
        from kernels import augment
    except ImportError as e:
        raise ValueError(f"augment.enabled=True needs kernels/augment.py (make_pipeline), which cannot be "
                         f"imported in this checkout ({e}); set --config.augment.enabled=False") from None
    spec = aug.get("spec", {})
    spec = spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else dict(spec)
    # An empty spec means "the default segmentation augmentation", not "no transform".
    return augment.make_pipeline(spec or augment.default_segmentation_spec())


def _augment_batch(augment_fn, key, batch):
    """Apply ``augment_fn`` per sample with split keys; instance maps get the same geometry as labels."""
    keys = jax.random.split(key, batch["image"].shape[0])
    image, label = jax.vmap(augment_fn)(keys, batch["image"], batch["label"])
    out = dict(batch, image=image, label=label.astype(jnp.int32))
    if "instances" in batch:  # same key -> same geometric transform, nearest-neighbour like the labels
        _, inst = jax.vmap(augment_fn)(keys, batch["image"], batch["instances"])
        out["instances"] = inst.astype(jnp.int32)
    return out


def _microbatch(batch, i, n):
    """Rows ``i, i+n, i+2n, ...``: every data shard keeps its rows local (no cross-device traffic)."""

    def take(x):
        return x.reshape(x.shape[0] // n, n, *x.shape[1:])[:, i]

    return jax.tree.map(take, batch)


def make_train_step(model, tx, task, loss_name: str, *, grad_accum: int = 1, augment_fn=None):
    """``(state, batch, lr_scale=None) -> (state, metrics)``, pure; jit it with shardings by the caller.

    ``grad_accum`` > 1 splits the batch into that many micro-batches (a ``lax.scan``) and averages
    their gradients. ``lr_scale`` (a scalar array) multiplies the update: the optimisers here are
    linear in the learning rate, so this is a run with ``learning_rate * lr_scale`` (used to vmap
    trials over learning rates in :mod:`zoo.hparam`).
    """
    grad_accum = int(grad_accum)
    if grad_accum < 1:
        raise ValueError(f"train.grad_accum must be >= 1, got {grad_accum}")

    def grads_of(params, model_state, batch, rng):
        def loss_fn(p):
            return task.loss(model, {"params": p, **model_state}, batch, rng, True, loss_name)

        (loss, (new_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, (new_state or model_state), metrics, grads

    def step_fn(state: TrainState, batch, lr_scale=None):
        rng = jax.random.wrap_key_data(state.rng)
        rng, step_rng = jax.random.split(rng)
        step_rng = jax.random.fold_in(step_rng, state.step)
        drop_rng, aug_rng = jax.random.split(step_rng)
        if augment_fn is not None:
            batch = _augment_batch(augment_fn, aug_rng, batch)
        if grad_accum == 1:
            loss, model_state, metrics, grads = grads_of(state.params, state.model_state, batch, drop_rng)
        else:
            def body(carry, i):
                model_state, gsum, msum = carry
                mb = _microbatch(batch, i, grad_accum)
                loss, model_state, metrics, g = grads_of(state.params, model_state, mb,
                                                         jax.random.fold_in(drop_rng, i))
                gsum = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), gsum, g)
                msum = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), msum, metrics)
                return (model_state, gsum, msum), None

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
            m_shape = jax.eval_shape(lambda: grads_of(state.params, state.model_state,
                                                      _microbatch(batch, 0, grad_accum), drop_rng)[2])
            m0 = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), m_shape)
            (model_state, gsum, msum), _ = jax.lax.scan(body, (state.model_state, zeros, m0),
                                                        jnp.arange(grad_accum))
            grads = jax.tree.map(lambda g, p: (g / grad_accum).astype(p.dtype), gsum, state.params)
            metrics = jax.tree.map(lambda m: m / grad_accum, msum)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if lr_scale is not None:
            updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
        params = jax.tree.map(lambda p, u: p + u, state.params, updates)
        gnorm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))
        metrics = dict(metrics, grad_norm=gnorm)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                               model_state=model_state, rng=jax.random.key_data(rng))
        return new_state, metrics

    return step_fn


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> np.ndarray:
    """Row indices of the batch of ``step``: a seeded permutation per epoch (a pure function of its inputs)."""
    per_epoch = max(n // batch_size, 1)
    epoch, i = divmod(int(step), per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return np.resize(perm[i * batch_size:(i + 1) * batch_size], batch_size)


def _rows(arrays: dict, idx) -> dict:
    batch = {"image": np.asarray(arrays["image"][idx], np.float32), "label": arrays["label"][idx].astype(np.int32)}
    if "instances" in arrays:
        batch["instances"] = arrays["instances"][idx].astype(np.int32)
    return batch


def batch_at_step(arrays: dict, step: int, batch_size: int, seed: int) -> dict:
    """The whole batch of ``step`` as numpy arrays (``image``, ``label``, ``instances`` when present)."""
    return _rows(arrays, batch_indices(len(arrays["image"]), step, batch_size, seed))


def global_batch(arrays: dict, step: int, batch_size: int, seed: int, data_sharding) -> dict:
    """The batch of ``step`` as global ``jax.Array``s sharded by ``data_sharding``.

    Each process reads only the rows its own devices hold (per-host data loading).
    """
    idx = batch_indices(len(arrays["image"]), step, batch_size, seed)
    keys = ["image", "label"] + (["instances"] if "instances" in arrays else [])
    out = {}
    for k in keys:
        dtype = np.float32 if k == "image" else np.int32
        shape = (batch_size, *arrays[k].shape[1:])

        def cb(index, k=k, dtype=dtype):
            return np.asarray(arrays[k][idx[index[0]]], dtype)[(slice(None),) + tuple(index[1:])]

        out[k] = jax.make_array_from_callback(shape, data_sharding, cb)
    return out


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_class = np.nanmean(per_case, axis=0)
    fg = per_class[1:] if num_classes > 1 else per_class
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = float(np.nanmean(fg))
    return {"dice_per_class": [float(v) for v in per_class], "mean_dice": mean,
            "per_case": per_case.tolist(), "num_cases": int(len(per_case))}


def _run_info(config) -> dict:
    return run_info(config.seed)


class _Logger:
    """JSONL metrics (+ TensorBoard when a writer library is importable); silent off process 0."""

    def __init__(self, workdir: str, enabled: bool, tensorboard: bool):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            for mod in ("tensorboardX", "torch.utils.tensorboard"):
                try:  # optional: never required, never TensorFlow
                    self.tb = __import__(mod, fromlist=["SummaryWriter"]).SummaryWriter(
                        os.path.join(workdir, "tensorboard"))
                    break
                except Exception:
                    continue

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{record.get('split', 'train')}/{k}", v, record.get("step", 0))

    def close(self):
        if self.tb is not None:
            self.tb.close()


def format_dice_table(result: dict, class_names) -> str:
    lines = ["| class | Dice |", "|---|---:|"]
    for name, v in zip(class_names, result["dice_per_class"]):
        lines.append(f"| {name} | {v:.4f} |")
    lines.append(f"| **mean (foreground)** | **{result['mean_dice']:.4f}** |")
    return "\n".join(lines)


def setup_mesh(config):
    """The run's mesh, checked against devices, batch size and ``grad_accum`` (raises ``ValueError``)."""
    bs = int(config.train.batch_size)
    if bs < 1:
        raise ValueError(f"train.batch_size must be positive, got {bs}")
    mesh = sharding.make_mesh(config.mesh.shape, batch_size=bs)
    accum = int(config.train.get("grad_accum", 1))
    per_shard = bs // mesh.shape["data"]
    if accum < 1 or per_shard % accum:
        raise ValueError(f"train.grad_accum={accum} must divide the per-device batch {per_shard} "
                         f"(batch {bs} over {mesh.shape['data']} data shards)")
    return mesh


class _Preemption:
    """SIGTERM sets a flag; the loop saves at the next step boundary and stops (all processes agree)."""

    def __init__(self):
        self.flag = False
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread: no handler, no preemption support
            self.previous = None

    def _handle(self, signum, frame):
        self.flag = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            flag = np.asarray([self.flag], np.int32)
            return bool(np.max(multihost_utils.process_allgather(flag)))
        return self.flag

    def close(self):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


@dataclasses.dataclass(frozen=True)
class _Programs:
    model: Any
    task: Any
    schedule: Any
    state_sh: Any
    init: Callable
    step: Callable
    predict: Callable


_PROGRAMS: "collections.OrderedDict[str, _Programs]" = collections.OrderedDict()


def _programs(config, info, image_shape, mesh) -> _Programs:
    """Model, optimiser and jitted init/step/predict for a run, memoised on everything they depend on,
    so runs that differ only in data or work directory (the folds of ``zoo.cv``) compile once."""
    key = json.dumps({"model": config.model.to_dict(), "train": config.train.to_dict(),
                      "augment": config.get("augment", ml_collections.ConfigDict()).to_dict(),
                      "shard_min_size": config.mesh.get("shard_min_size", 0), "info": dataclasses.asdict(info),
                      "image_shape": list(image_shape), "mesh": [int(v) for v in mesh.shape.values()],
                      "devices": [d.id for d in mesh.devices.flat]}, sort_keys=True, default=str)
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    task = get_task(get_spec(config.model.name).task)
    model = build_model(config, info)
    tx, schedule = optim.make_optimizer(config.train)
    init_fn = make_init_fn(model, tx, image_shape)
    state_sh = sharding.tree_shardings(mesh, jax.eval_shape(init_fn, jax.random.key(0)),
                                       min_size=int(config.mesh.get("shard_min_size", 0)))
    data_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    step = jax.jit(make_train_step(model, tx, task, config.train.loss,
                                   grad_accum=int(config.train.get("grad_accum", 1)),
                                   augment_fn=make_augment_fn(config)),
                   in_shardings=(state_sh, data_sh), out_shardings=(state_sh, repl), donate_argnums=(0,))
    prog = _Programs(model=model, task=task, schedule=schedule, state_sh=state_sh, init=jit_init(init_fn),
                     step=step, predict=jax.jit(functools.partial(task.predict, model)))
    _PROGRAMS[key] = prog
    while len(_PROGRAMS) > 4:
        _PROGRAMS.popitem(last=False)
    return prog


def _sync(name: str) -> None:
    """Multi-process: wait for every process at a coordination-service barrier (generous timeout)."""
    if jax.process_count() > 1:
        from jax._src import distributed

        distributed.global_state.client.wait_at_barrier(f"medzoo_{name}", 30 * 60 * 1000)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, progress: bool = True, *,
                       data=None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its latest checkpoint) and evaluate on validation.

    ``data``: optional ``(train_arrays, val_arrays, info)`` replacing ``load_dataset(config.data)``
    (k-fold cross-validation passes its folds here). Returns the final evaluation plus
    ``preempted`` (SIGTERM: checkpoint saved, run stopped early) and the best validation Dice.
    """
    mesh = setup_mesh(config)  # bad mesh/batch: fail before loading or compiling anything
    spec = get_spec(config.model.name)
    make_augment_fn(config)  # a bad augmentation spec, optimiser or loss fails here, before any data is loaded
    optim.make_optimizer(config.train)
    if spec.task == "segmentation":
        from zoo import losses

        losses.get_loss(config.train.loss)
    train_arrays, val_arrays, info = load_dataset(config.data) if data is None else data
    bs = int(config.train.batch_size)
    image_shape = (bs, *train_arrays["image"].shape[1:])
    prog = _programs(config, info, image_shape, mesh)
    model, task, schedule, state_sh = prog.model, prog.task, prog.schedule, prog.state_sh
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)

    data_seed = int(config.data.seed)
    meta = {"config": config.to_dict(), "model": config.model.name, "task": spec.task,
            "data": dataclasses.asdict(info), "run": _run_info(config),
            "mesh": {k: int(v) for k, v in mesh.shape.items()}}
    if is_main:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2, default=str)

    data_sh = sharding.batch_sharding(mesh)
    # Initialise on one device (a small, fast-compiling program), then lay the values out on the mesh.
    state = sharding.put_global(jax.device_get(prog.init(jax.random.key(int(config.seed)))), state_sh)

    _sync("init")
    keep = int(config.train.keep_checkpoints)
    ckpt = CheckpointIO(os.path.join(workdir, "checkpoints"), max_to_keep=keep)
    best_ckpt = CheckpointIO(os.path.join(workdir, "best"), max_to_keep=int(config.train.get("keep_best", 1)),
                             best_metric="mean_dice")
    if ckpt.latest_step() is not None:
        state, saved_meta = ckpt.restore(None, state)
        it = saved_meta.get("data_iterator", {})
        if it and int(it.get("seed", data_seed)) != data_seed and is_main:
            print(f"warning: checkpoint was written with data.seed={it.get('seed')}, now {data_seed}", flush=True)
        if is_main:
            print(f"resumed from step {int(state.step)}", flush=True)

    step_fn, predict_fn = prog.step, prog.predict
    if jax.process_count() > 1:
        # Compile ahead of time, then meet: the processes' compile times differ, and gloo gives a
        # process only 30 s to join the first collective of a program.
        step_fn = step_fn.lower(state, global_batch(train_arrays, int(state.step), bs, data_seed, data_sh)).compile()
        images = val_arrays["image"]
        predict_fn = predict_fn.lower(state.variables, np.zeros((bs, *images.shape[1:]), images.dtype)).compile()
        _sync("compiled")
    log = _Logger(workdir, is_main, bool(config.train.get("tensorboard", True)))
    total = int(config.train.steps)
    start = int(state.step)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc=f"train {config.model.name}", disable=not (progress and is_main),
               dynamic_ncols=True)
    preempt = _Preemption()
    t0, last_eval, preempted = time.time(), None, False

    def save(manager, done, metrics=None, force=False):
        m = dict(meta, data_iterator={"kind": "seeded_permutation", "seed": data_seed, "position": done})
        manager.save(done, state, m, metrics=metrics, force=force)

    try:
        for step in range(start, total):
            state, metrics = step_fn(state, global_batch(train_arrays, step, bs, data_seed, data_sh))
            done = step + 1
            if done % int(config.train.log_every) == 0 or done == total:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                m.update(step=done, lr=float(schedule(step)), elapsed_s=round(time.time() - t0, 2))
                bar.set_postfix(loss=f"{m['loss']:.4f}")
                log.write({"split": "train", **m})
            if done % int(config.train.eval_every) == 0 or done == total:
                last_eval = evaluate(model, state.variables, val_arrays, info.num_classes, bs, task, predict_fn)
                _sync(f"eval{done}")
                log.write({"split": "val", "step": done, "mean_dice": last_eval["mean_dice"],
                           "dice_per_class": last_eval["dice_per_class"]})
                bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", val_dice=f"{last_eval['mean_dice']:.3f}")
                if np.isfinite(last_eval["mean_dice"]):
                    save(best_ckpt, done, {"mean_dice": last_eval["mean_dice"]}, force=True)
            if done % int(config.train.checkpoint_every) == 0 or done == total:
                save(ckpt, done)
            bar.update(1)
            if done < total and preempt.reached(done):
                if ckpt.latest_step() != done:
                    save(ckpt, done, force=True)
                preempted = True
                break
    finally:
        preempt.close()
        bar.close()
        ckpt.close()
        best_ckpt.close()
        log.close()
    if preempted:
        if is_main:
            print(f"preempted: saved a checkpoint at step {int(state.step)}; rerun to resume", flush=True)
        return {"step": int(state.step), "preempted": True, "mean_dice": float("nan"), "dice_per_class": [],
                "class_names": list(info.class_names), "num_cases": 0, "train_seconds": round(time.time() - t0, 2)}
    if last_eval is None:  # resumed a finished run: evaluate what was restored
        last_eval = evaluate(model, state.variables, val_arrays, info.num_classes, bs, task, predict_fn)
    best_step, best_dice = CheckpointIO.best_of(os.path.join(workdir, "best"), "mean_dice")
    result = {"step": int(state.step), "preempted": False, "mean_dice": last_eval["mean_dice"],
              "dice_per_class": last_eval["dice_per_class"], "class_names": list(info.class_names),
              "num_cases": last_eval["num_cases"], "best_step": best_step, "best_mean_dice": best_dice,
              "train_seconds": round(time.time() - t0, 2)}
    if is_main:
        with open(os.path.join(workdir, "eval.json"), "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
    """``jax.distributed.initialize`` from flags, else ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID``; a no-op (``False``) when neither names a coordinator."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if not coordinator:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError("--num_processes/--process_id need --coordinator=HOST:PORT")
        return False
    try:
        num_processes = int(num_processes if num_processes is not None else env["JAX_NUM_PROCESSES"])
        process_id = int(process_id if process_id is not None else env["JAX_PROCESS_ID"])
    except KeyError as e:
        raise ValueError(f"--coordinator needs --num_processes and --process_id (or {e.args[0]})") from None
    except (TypeError, ValueError):
        raise ValueError(f"--num_processes/--process_id must be integers, got {num_processes!r}/{process_id!r}") \
            from None
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


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
    p.add_argument("--coordinator", default=None, help="multi-host: coordinator HOST:PORT")
    p.add_argument("--num_processes", default=None, type=int, help="multi-host: number of processes")
    p.add_argument("--process_id", default=None, type=int, help="multi-host: this process's index")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    known, rest = p.parse_known_args(argv)
    overrides = split_overrides(rest, p.error)
    for flag, field in (("model", "model.name"), ("dataset", "data.name"), ("data_dir", "data.data_dir"),
                        ("mesh", "mesh.shape"), ("steps", "train.steps")):
        if getattr(known, flag) is not None:
            overrides.setdefault(field, getattr(known, flag))
    return known, overrides


def resolve_config(known, overrides) -> ml_collections.ConfigDict:
    """Recipe + flag overrides, validated without touching devices (raises ``ValueError``)."""
    config = load_config(known.config)
    if known.model is not None and known.model != config.model.name:
        # The recipe's model kwargs belong to its own model; another model starts from its defaults.
        config.model.kwargs = ml_collections.ConfigDict()
    if "mesh.shape" in overrides:  # "4,2" from --mesh; validated here for a one-line error
        overrides = dict(overrides)
        config.mesh.shape = sharding.parse_mesh_shape(overrides.pop("mesh.shape"))
    config = apply_overrides(config, overrides)
    get_spec(config.model.name)
    return config


def main(argv=None) -> int:
    known, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = resolve_config(known, overrides)
        init_distributed(known.coordinator, known.num_processes, known.process_id)
        setup_mesh(config)  # a mesh that does not fit the devices or the batch: one line, exit 2
        workdir = known.workdir or config.workdir or os.path.join(
            "workdirs", f"{known.config}-{datetime.datetime.now():%Y%m%d-%H%M%S}")
        workdir = os.path.abspath(workdir)
        if jax.process_index() == 0:
            print(f"workdir: {workdir}", flush=True)
        result = train_and_evaluate(config, workdir, progress=not known.no_progress)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.get("preempted"):
        return PREEMPTED_EXIT_CODE
    if jax.process_index() == 0:
        print(f"\nvalidation Dice after {result['step']} steps ({result['num_cases']} cases):")
        print(format_dice_table(result, result["class_names"]))
        if result.get("best_step") is not None:
            print(f"best validation Dice {result['best_mean_dice']:.4f} at step {result['best_step']} "
                  f"({os.path.join(workdir, 'best')})")
        print(f"\ncheckpoints: {os.path.join(workdir, 'checkpoints')}\n"
              f"metrics: {os.path.join(workdir, 'metrics.jsonl')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
