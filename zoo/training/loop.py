"""The training loop: ``train_and_evaluate(config, workdir)`` for every task (segmentation, instance, outcome).

Scale-out: one ``Mesh`` ``(data, model)`` (:mod:`zoo.sharding`); the batch is sharded on ``data``,
parameters and optimiser state follow the path rules of ``zoo.sharding`` on ``model``; the train step is
``jax.jit`` with ``in_shardings``/``out_shardings``. Multi-host: each process loads only the rows of the
global batch its devices hold; only process 0 writes logs.

Reproducibility: the batch of step ``s`` is a pure function of ``(data.seed, s)`` and its grain iterator
state is saved in every checkpoint; the step's dropout/augmentation key is a pure function of the saved
RNG and ``s``; so a run resumed from a checkpoint repeats the uninterrupted run bit for bit. SIGTERM saves
a checkpoint, then stops.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from data_pipelines.atomic import strict_json, write_json
from data_pipelines.families import record_preprocessing
from data_pipelines.loader import ArraysSource
from data_pipelines.sources import open_sources
from zoo import sharding
from zoo.build import build_model
from zoo.checkpoint import CheckpointIO, restore_meta
from zoo.inference import Predictor
from zoo.provenance import run_metadata
from zoo.training.data import TrainBatches
from zoo.training.distributed import sync
from zoo.training.evaluate import evaluate
from zoo.training.setup import RunSetup, prepare_run
from zoo.training.state import INPUT_KEYS, jit_init, make_init_fn
from zoo.training.step import make_train_step
from zoo.training.workdir import WorkdirLock, check_resumable, truncate_metrics

__all__ = ["train_and_evaluate", "PREEMPTED_EXIT_CODE", "NonFiniteLossError"]

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM: "stopped early, checkpoint saved, rerun to resume"


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/Inf loss or gradient; nothing after the last finite checkpoint was saved."""

    exit_code = 3


class _Logger:
    """JSONL metrics (+ TensorBoard events when ``train.tensorboard`` asks and ``tensorboardX`` is importable);
    silent off process 0."""

    def __init__(self, workdir: str, enabled: bool, tensorboard: bool):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.tb = None
        if enabled and tensorboard:
            # tensorboardX only: it writes event files with numpy and protobuf alone. Never
            # torch.utils.tensorboard (it would pull PyTorch into a JAX run) nor TensorFlow's writer.
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                import warnings

                warnings.warn("train.tensorboard=True but tensorboardX is not installed (pip install tensorboardX); "
                              "writing metrics.jsonl only", RuntimeWarning, stacklevel=2)
            else:
                self.tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(strict_json(record), allow_nan=False) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.tb.add_scalar(f"{record.get('split', 'train')}/{k}", v, record.get("step", 0))

    def close(self):
        if self.tb is not None:
            self.tb.close()


class _Preemption:
    """SIGTERM or a first Ctrl-C (SIGINT) sets a flag; the loop saves at the next step boundary and stops (all
    processes agree). A second Ctrl-C interrupts at once, as usual."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.flag = False
        self.previous = {}
        for sig in self.SIGNALS:
            try:
                self.previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler, no preemption support
                pass

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def reached(self) -> bool:
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            flag = np.asarray([self.flag], np.int32)
            return bool(np.max(multihost_utils.process_allgather(flag)))
        return self.flag

    def close(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


@dataclasses.dataclass(frozen=True)
class _Programs:
    model: Any
    state_sh: Any
    init: Callable
    step: Callable


_PROGRAMS: "collections.OrderedDict[str, _Programs]" = collections.OrderedDict()


def _programs(config, setup: RunSetup, info, input_shapes: dict) -> _Programs:
    """Model and jitted init/step for a run, memoised on everything they depend on, so runs that differ only
    in data or work directory (the folds of ``zoo.cv``) compile once."""
    mesh = setup.mesh
    key = json.dumps({"model": config.model.to_dict(), "train": config.train.to_dict(),
                      "augment": config.get("augment", ml_collections.ConfigDict()).to_dict(),
                      "shard_min_size": _mesh_cfg(config).get("shard_min_size", 0), "info": dataclasses.asdict(info),
                      "inputs": {k: list(v) for k, v in input_shapes.items()},
                      "mesh": [int(v) for v in mesh.shape.values()],
                      "devices": [d.id for d in mesh.devices.flat]}, sort_keys=True, default=str)
    if key in _PROGRAMS:
        _PROGRAMS.move_to_end(key)
        return _PROGRAMS[key]
    model = build_model(config, info)
    init_fn = make_init_fn(model, setup.tx, input_shapes)
    state_sh = sharding.tree_shardings(mesh, jax.eval_shape(init_fn, jax.random.key(0)),
                                       min_size=int(_mesh_cfg(config).get("shard_min_size", 0)))
    data_sh, repl = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    step = jax.jit(make_train_step(model, setup.tx, setup.task, config.train.loss,
                                   grad_accum=int(config.train.get("grad_accum", 1)), augment_fn=setup.augment_fn,
                                   skip_nonfinite=bool(config.train.get("skip_nonfinite", False))),
                   in_shardings=(state_sh, data_sh), out_shardings=(state_sh, repl), donate_argnums=(0,))
    prog = _Programs(model=model, state_sh=state_sh, init=jit_init(init_fn), step=step)
    _PROGRAMS[key] = prog
    while len(_PROGRAMS) > 4:
        _PROGRAMS.popitem(last=False)
    return prog


def _mesh_cfg(config):
    return config.get("mesh", None) or ml_collections.ConfigDict()


def _as_source(data):
    return ArraysSource(data) if isinstance(data, dict) else data


def _no_foreground(sources, limit: int = 64) -> int:
    """How many label maps of ``sources`` were looked at if none holds foreground (0 if one does, or if the
    records carry no ``label``): all of an in-memory source, else ``limit`` records spread over each."""
    seen = 0
    for src in sources:
        arrays = getattr(src, "arrays", None)
        if isinstance(arrays, dict) and "label" in arrays:
            if np.any(np.asarray(arrays["label"]) > 0):
                return 0
            seen += len(arrays["label"])
            continue
        n = len(src)
        for i in np.unique(np.linspace(0, n - 1, min(n, limit)).astype(int)) if n else ():
            record = src[int(i)]
            if "label" not in record:
                return 0
            if np.any(np.asarray(record["label"]) > 0):
                return 0
            seen += 1
    return seen


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, progress: bool = True, *,
                       data=None, setup: RunSetup | None = None,
                       init_params: Callable[[Any], Any] | None = None, resume_step: int | None = None) -> dict:
    """Train ``config`` in ``workdir`` (resuming from its newest intact checkpoint) and evaluate on validation.

    ``data``: optional ``(train, val, info)`` (sources or dicts of arrays) replacing the config's data set
    (k-fold cross-validation passes its folds here). ``setup``: the :func:`prepare_run` of ``config`` when
    the caller already made it. ``init_params(params) -> params`` changes freshly initialised parameters
    (transfer learning) before training starts; a resumed run restores its own. ``resume_step``: resume
    from this checkpoint step instead of the newest (newer steps are moved aside, kept). Returns the final
    validation metrics plus ``preempted`` (SIGTERM/Ctrl-C: checkpoint saved, run stopped early) and the best
    validation value of the task's ``best_metric``. A non-finite loss raises :class:`NonFiniteLossError`
    (unless ``train.skip_nonfinite``) before anything after the last finite step is saved.
    """
    setup = setup or prepare_run(config)  # bad config: fail before loading or compiling anything
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"work directory {workdir} exists and is not a directory")
    train_src, val_src, info = open_sources(config.data) if data is None else data
    train_src, val_src = _as_source(train_src), _as_source(val_src)
    info = record_preprocessing(info, config.data)  # the scaling prediction applies to a run without a plan
    if setup.task.name in ("segmentation", "instance") and jax.process_index() == 0:
        empty = _no_foreground((train_src, val_src))
        if empty:
            print(f"warning: no foreground in any of the {empty} label maps looked at (training and validation): "
                  "every mask is empty, so the model can only learn background and Dice stays 0",
                  file=sys.stderr, flush=True)
    bs = int(config.train.batch_size)
    first = train_src[0]
    input_shapes = {k: (bs, *np.shape(first[k])) for k in INPUT_KEYS if k in first}
    is_main = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    lock = WorkdirLock(workdir) if is_main else contextlib.nullcontext()
    with lock:
        return _train(config, workdir, progress, setup, (train_src, val_src, info), input_shapes, init_params,
                      resume_step)


def _train(config, workdir, progress, setup, data, input_shapes, init_params, resume_step) -> dict:
    task, mesh = setup.task, setup.mesh
    train_src, val_src, info = data
    bs = int(config.train.batch_size)
    is_main = jax.process_index() == 0
    data_seed = int(config.data.seed)
    meta = run_metadata(config, task.name, info, mesh,
                        inputs={k: [1, *v[1:]] for k, v in input_shapes.items()})
    metric = task.best_metric
    ckpt_dir = os.path.join(workdir, "checkpoints")
    resuming = False
    if CheckpointIO.has_steps(ckpt_dir):  # the same run, or stop here with the differences, the directory as it was
        try:
            _, saved = restore_meta(ckpt_dir, resume_step)
            resuming = True
        except FileNotFoundError:  # only step folders Orbax does not list (never finalised)
            saved = None
        if saved is not None:
            check_resumable(saved, meta, workdir)
    elif resume_step is not None:
        raise ValueError(f"--step {resume_step}: {ckpt_dir} holds no checkpoint")
    prog = _programs(config, setup, info, input_shapes)
    if is_main:
        write_json(os.path.join(workdir, "config.json"), meta)
        plan = (info.extra or {}).get("plan")
        if plan:  # the preprocessing plan beside the checkpoints; zoo.prediction applies the copy in the metadata
            write_json(os.path.join(workdir, "plan.json"), plan)

    data_sh = sharding.batch_sharding(mesh)
    # Initialise on one device (a small, fast-compiling program), then lay the values out on the mesh.
    state = jax.device_get(prog.init(jax.random.key(int(config.seed))))
    if init_params is not None:
        params = init_params(state.params)
        state = dataclasses.replace(state, params=params, opt_state=setup.tx.init(params))
    state = sharding.put_global(state, prog.state_sh)

    sync("init")
    ckpt = CheckpointIO(ckpt_dir, max_to_keep=int(config.train.keep_checkpoints))
    best_ckpt = CheckpointIO(os.path.join(workdir, "best"), max_to_keep=int(config.train.get("keep_best", 1)),
                             best_metric=metric)
    batches = TrainBatches(train_src, bs, data_seed, data_sh)
    if resuming:
        if resume_step is None:
            step0, state, saved_meta = ckpt.restore_latest(state, quarantine=is_main)
        else:
            state, saved_meta = ckpt.restore(resume_step, state)
            step0 = int(resume_step)
            for newer in [s for s in ckpt.all_steps() if s > step0] if is_main else []:
                ckpt.quarantine(newer, reason="after-resume")
        it = saved_meta.get("data_iterator", {})
        if it and int(it.get("seed", data_seed)) != data_seed and is_main:
            print(f"warning: checkpoint was written with data.seed={it.get('seed')}, now {data_seed}", flush=True)
        batches.restore(it, int(state.step))
        if is_main:  # best steps after the restored one belong to the interrupted attempt; the replay rewrites them
            for newer in [s for s in best_ckpt.all_steps() if s > step0]:
                best_ckpt.quarantine(newer, reason="superseded")
            dropped = truncate_metrics(os.path.join(workdir, "metrics.jsonl"), step0)
            print(f"resumed from step {step0}" + (f" (dropped {dropped} metrics.jsonl records logged after it)"
                                                 if dropped else ""), flush=True)

    step_fn = prog.step
    predictor = Predictor(prog.model, state.variables, task, bs)
    if jax.process_count() > 1:
        # Compile ahead of time, then meet: the processes' compile times differ, and gloo gives a
        # process only 30 s to join the first collective of a program.
        example = {k: jax.ShapeDtypeStruct((bs, *v.shape[1:]), v.dtype, sharding=data_sh)
                   for k, v in batches.peek().items()}
        step_fn = step_fn.lower(state, example).compile()
        first = train_src[0]
        sample = {k: np.zeros((bs, *np.shape(first[k])), np.float32) for k in ("image", "covariates") if k in first}
        predictor.compile(sample if task.name == "outcome" else sample["image"], proba=task.name == "outcome")
        sync("compiled")
    log = _Logger(workdir, is_main, bool(config.train.get("tensorboard", False)))
    total = int(config.train.steps)
    start = int(state.step)
    skip_nonfinite = bool(config.train.get("skip_nonfinite", False))

    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=start, desc=f"train {config.model.name}", disable=not (progress and is_main),
               dynamic_ncols=True)
    preempt = _Preemption()
    t0, last_eval, preempted = time.time(), None, False
    # train.time_limit_s > 0: train by time. The clock starts when the first step's result is ready (compile
    # excluded); the first step boundary past the limit becomes the run's last step (logged, evaluated, saved).
    time_limit = float(config.train.get("time_limit_s", 0.0) or 0.0)
    clock, timed, out_of_time = None, None, False
    pending = []  # per-step "finite" flags not yet looked at (checked before anything is logged or saved)

    def save(manager, done, metrics=None, force=False):
        manager.save(done, state, dict(meta, data_iterator=batches.state()), metrics=metrics, force=force)

    def validate():
        predictor.variables = state.variables
        return evaluate(predictor, val_src, info.num_classes, bs)

    def check_finite(done):
        flags = np.asarray(jax.device_get(pending)) if pending else np.ones(0)
        first_bad = done - len(pending) + 1 + int(np.argmin(flags)) if flags.size and flags.min() < 1 else None
        pending.clear()
        if first_bad is not None and not skip_nonfinite:
            last = ckpt.latest_step()
            raise NonFiniteLossError(
                f"the loss or its gradient became NaN/Inf at step {first_bad}; stopped, nothing after it was saved "
                f"(last checkpoint: {'none' if last is None else f'step {last}'} in {ckpt.directory}). Lower "
                f"train.learning_rate, or set train.skip_nonfinite=true to skip such steps")

    try:
        for step in range(start, total):
            state, metrics = step_fn(state, batches.next())
            pending.append(metrics["finite"])
            done = step + 1
            if time_limit > 0:
                if clock is None:
                    jax.block_until_ready(metrics["finite"])
                    clock = time.time()
                else:  # one step in flight: the host clock follows the steps actually computed
                    if len(pending) > 1:
                        jax.block_until_ready(pending[-2])
                    out_of_time = time.time() - clock >= time_limit
            last = done == total or out_of_time
            if last and clock is not None:
                jax.block_until_ready(metrics["finite"])
                timed = time.time() - clock
            is_log = done % int(config.train.log_every) == 0 or last
            is_eval = done % int(config.train.eval_every) == 0 or last
            is_ckpt = done % int(config.train.checkpoint_every) == 0 or last
            if is_log or is_eval or is_ckpt or preempt.flag:
                check_finite(done)
            if is_log:
                m = {k: float(v) for k, v in jax.device_get(metrics).items()}
                m.update(step=done, lr=float(setup.schedule(step)), elapsed_s=round(time.time() - t0, 2))
                bar.set_postfix(loss=f"{m['loss']:.4f}")
                log.write({"split": "train", **m})
            if is_eval:
                last_eval = validate()
                sync(f"eval{done}")
                log.write({"split": "val", "step": done, **{k: v for k, v in last_eval.items()
                                                            if k not in ("per_case", "confusion", "num_cases")}})
                bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", **{metric: f"{last_eval[metric]:.3f}"})
                if np.isfinite(last_eval[metric]):
                    save(best_ckpt, done, {metric: last_eval[metric]}, force=True)
            if is_ckpt:
                save(ckpt, done)
            bar.update(1)
            if out_of_time:
                break
            if done < total and preempt.reached():
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
    base = {"step": int(state.step), "task": task.name, "class_names": list(info.class_names),
            "train_seconds": round(time.time() - t0, 2), "stopped_by_time": out_of_time,
            "timed_seconds": None if timed is None else round(timed, 2)}
    if preempted:
        if is_main:
            print(f"preempted: saved a checkpoint at step {int(state.step)}; rerun to resume", flush=True)
        return {**base, "preempted": True, metric: float("nan"), "dice_per_class": [], "num_cases": 0}
    if last_eval is None:  # resumed a finished run: evaluate what was restored
        last_eval = validate()
    best_step, best_value = CheckpointIO.best_of(os.path.join(workdir, "best"), metric)
    result = {**base, "preempted": False, **{k: v for k, v in last_eval.items() if k != "per_case"},
              "best_step": best_step, f"best_{metric}": best_value}
    if is_main:
        write_json(os.path.join(workdir, "eval.json"), result)
    return result
