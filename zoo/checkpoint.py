"""Orbax checkpoints of a training run: atomic (written to a temporary directory, then renamed),
asynchronous, with the run's metadata (config, model name, dataset info, data-iterator position)
saved beside the state.

Layout: ``<workdir>/checkpoints/<step>/{state,meta}`` keeps the latest N steps;
``<workdir>/best/<step>/{state,meta}`` keeps the best N by validation Dice. They are two
managers on two directories, so neither one's retention policy can delete the other's steps.
A save interrupted half-way leaves only a ``<step>.orbax-checkpoint-tmp-*`` directory, which
Orbax never lists as a step (and cleans up on the next start).

Integrity: :meth:`CheckpointIO.restore_latest` uses the newest step that restores completely, naming each
newer step it skips on stderr (a truncated array file, an empty step folder, a missing ``state``/``meta``,
metadata that is not JSON). The trainer then moves the skipped steps aside (``<step>.unreadable-<time>``,
kept, never listed as a step), so a new save of the same step cannot collide with them and retention
never deletes the intact step before it while that is the only copy.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["CheckpointIO", "CheckpointError", "restore_meta", "restore_variables", "VARIABLE_FIELDS"]


class CheckpointError(ValueError):
    """No usable checkpoint (each step's reason in the message)."""


def _reason(e: BaseException) -> str:
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    first = first.split(" See full TensorStore details")[0]
    return f"{type(e).__name__}: {first[:200]}" if first else type(e).__name__


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr, flush=True)


def _from_orbax(unraisable) -> bool:
    """Whether an exception Python could not raise (``sys.unraisablehook``) comes from Orbax's or TensorStore's
    own reads of a damaged step that fail after the restore has already given up (their coroutines, or the
    ``Event loop is closed`` of a read's completion callback)."""
    if isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == "Event loop is closed":
        return True  # TensorStore's callback of a read that finished after Orbax closed its loop (no object)
    code = getattr(unraisable.object, "cr_code", None) or getattr(unraisable.object, "__code__", None)
    where = getattr(code, "co_filename", "") or repr(unraisable.object)
    return any(f"{os.sep}{name}{os.sep}" in where for name in ("orbax", "tensorstore"))


# The lines TensorStore prints when a read it still had in flight finishes after Orbax closed its event loop (one
# traceback per abandoned read: ``loop.call_soon_threadsafe`` -> ``RuntimeError: Event loop is closed``).
_LATE_READ_LINES = ("Traceback (most recent call last):", "asyncio/base_events.py", "self._check_closed()",
                    "raise RuntimeError('Event loop is closed')", "RuntimeError: Event loop is closed")


class _LateReads(io.TextIOBase):
    """``sys.stderr`` while a step is probed: keeps what is written, so that :func:`_orbax_quiet` can pass on all
    but the abandoned reads' tracebacks."""

    encoding = "utf-8"

    def __init__(self):
        self.parts, self.lock = [], threading.Lock()

    def write(self, text):
        with self.lock:
            self.parts.append(str(text))
        return len(text)

    def size(self) -> int:
        with self.lock:
            return sum(map(len, self.parts))

    def kept(self) -> str:
        with self.lock:
            lines = "".join(self.parts).splitlines(keepends=True)
        return "".join(line for line in lines if line.strip() and not any(p in line for p in _LATE_READ_LINES))


def _without_orbax_unraisables(hook):
    """``hook`` (a ``sys.unraisablehook``) that first drops the unraisable exceptions of Orbax's and TensorStore's
    abandoned reads (:func:`_from_orbax`); ``hook`` itself when it already does."""
    if getattr(hook, "drops_orbax_reads", False):
        return hook

    def dropping(unraisable):
        if not _from_orbax(unraisable):
            hook(unraisable)

    dropping.drops_orbax_reads = True
    return dropping


# Set by the first failed probe: a damaged step's abandoned reads are coroutines the garbage collector may finalise
# at any later time (on a loaded machine, after the probe's settle window), each printing a TensorStore spec
# dozens of lines long; from then on this process drops those (and only those) unraisable exceptions.
_probe_failed = False


@contextlib.contextmanager
def _orbax_quiet(settle: float = 2.0):
    """Silence Orbax's and TensorStore's own output while a possibly damaged step is probed: their log lines
    (``absl``, ``asyncio``), the tracebacks of their abandoned array reads (unraisable coroutines, and the
    ``Event loop is closed`` tracebacks TensorStore prints when a read finishes after the restore gave up: waited
    for up to ``settle`` seconds after a failure, until stderr stays quiet). The one ``warning:`` line this module
    prints names the step and the reason; anything else written to stderr meanwhile is passed on. After a failed
    probe the process keeps dropping those reads' unraisable coroutines (``_probe_failed``)."""
    global _probe_failed
    loggers = [logging.getLogger(name) for name in ("absl", "asyncio")]
    levels = [lg.level for lg in loggers]
    previous_hook, previous_err = sys.unraisablehook, sys.stderr
    capture = _LateReads()
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
    sys.unraisablehook, sys.stderr = _without_orbax_unraisables(previous_hook), capture
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed:  # finalise the failed reads' coroutines now, while their tracebacks are dropped (a full
            gc.collect()  # collection: 0.1 s a call, which a restore that succeeded does not pay)
        if failed or capture.size():
            deadline, last = time.monotonic() + settle, (-1, time.monotonic())
            while time.monotonic() < deadline:  # until nothing new was written for 0.2 s
                n = capture.size()
                if n != last[0]:
                    last = (n, time.monotonic())
                elif time.monotonic() - last[1] >= 0.2:
                    break
                time.sleep(0.02)
        _probe_failed = _probe_failed or failed
        sys.unraisablehook = _without_orbax_unraisables(previous_hook) if _probe_failed else previous_hook
        sys.stderr = previous_err
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        kept = capture.kept()
        if kept:
            previous_err.write(kept)


class CheckpointIO:
    """Thin wrapper around ``ocp.CheckpointManager``.

    Keeps the latest ``max_to_keep`` steps, or with ``best_metric`` the ``max_to_keep`` steps with
    the highest value of that metric (pass it in ``save(..., metrics={name: value})``).
    """

    def __init__(self, directory: str, max_to_keep: int = 2, async_save: bool = True,
                 best_metric: str | None = None):
        if int(max_to_keep) < 1:
            raise ValueError(f"max_to_keep must be >= 1, got {max_to_keep}")
        self.directory = os.path.abspath(directory)
        self.best_metric = best_metric
        kw = {}
        if best_metric is not None:
            kw = dict(best_fn=lambda m: float(m[best_metric]), best_mode="max",
                      keep_checkpoints_without_metrics=False)
        # Orbax names its multi-process barriers after the step folder ("async_write_complete.6"): a run's two
        # managers saving the same step at once (the last step is both "latest" and "best") would meet at one
        # barrier and hang; each manager's own prefix keeps their barriers apart.
        barriers = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=os.path.basename(self.directory))
        options = ocp.CheckpointManagerOptions(max_to_keep=int(max_to_keep), create=True,
                                               enable_async_checkpointing=async_save,
                                               multiprocessing_options=barriers, **kw)
        with _orbax_quiet():  # a damaged step's metadata is logged while the steps are listed; restore names it
            self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    def save(self, step: int, state: Any, meta: dict, metrics: dict | None = None, force: bool = False) -> bool:
        return self.manager.save(int(step), args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), metrics=metrics, force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def best_step(self) -> int | None:
        return self.manager.best_step()

    def all_steps(self):
        return list(self.manager.all_steps())

    def restore(self, step: int | None, target: Any):
        """Restore ``(state, meta)`` at ``step`` into the structure (and shardings) of ``target`` (arrays or
        ``jax.ShapeDtypeStruct``s). ``step=None``: the newest step that restores (:meth:`restore_latest`)."""
        if step is None:
            return self.restore_latest(target)[1:]
        if int(step) not in self.all_steps():
            raise CheckpointError(f"no checkpoint step {step} in {self.directory} (steps: {self.all_steps()})")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        why = None
        try:
            with _orbax_quiet():
                out = self.manager.restore(int(step), args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:  # Orbax/TensorStore raise many types for damaged files; name the step instead
            why = _reason(e)
        if why is not None:
            raise CheckpointError(f"checkpoint step {step} in {self.directory} cannot be restored ({why})")
        if not isinstance(out.meta, dict):
            raise CheckpointError(f"checkpoint step {step} in {self.directory}: meta is not a JSON object")
        return out.state, out.meta

    def restore_latest(self, target: Any, *, quarantine: bool = False) -> tuple[int, Any, dict]:
        """``(step, state, meta)`` of the newest step that restores completely; each newer step that does not is
        named in a warning and, with ``quarantine``, moved aside (kept as ``<step>.unreadable-<time>``).
        Raises :class:`CheckpointError` when no step restores (nothing is moved then)."""
        steps = sorted(self.all_steps(), reverse=True)
        if not steps:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        failures = []
        for step in steps:
            try:
                state, meta = self.restore(step, target)
            except CheckpointError as e:
                failures.append((step, str(e)))
                continue
            for bad, why in failures:
                _warn(f"{why}; skipped, using step {step}")
                if quarantine:
                    self.quarantine(bad)
            return step, state, meta
        raise CheckpointError("no checkpoint restores: " + "; ".join(why for _, why in failures))

    def quarantine(self, step: int, reason: str = "unreadable") -> str:
        """Move step ``step`` aside (never deleted, no longer listed as a step); returns its new path."""
        src = os.path.join(self.directory, str(int(step)))
        dst = f"{src}.{reason}-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(src, dst)
        self.manager.reload()
        _warn(f"moved checkpoint {src} aside to {dst}")
        return dst

    @staticmethod
    def has_steps(directory: str) -> bool:
        """Whether ``directory`` holds any step folder (intact or not), without creating anything."""
        return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))

    @staticmethod
    def best_of(directory: str, metric: str) -> tuple[int | None, float | None]:
        """``(step, value)`` of the highest ``metric`` saved in ``directory`` (``(None, None)`` if none)."""
        best = (None, None)
        if not os.path.isdir(directory):
            return best
        for name in os.listdir(directory):
            path = os.path.join(directory, name, "metrics", "metrics")  # Orbax's JSON of save(metrics=)
            if not name.isdigit() or not os.path.exists(path):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    value = json.load(f).get(metric)
            except (OSError, ValueError, AttributeError):  # a damaged metrics file: that step has no value
                continue
            if value is not None and (best[1] is None or value > best[1]):
                best = (int(name), float(value))
        return best

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def _step_numbers(directory: str) -> list[int]:
    """The steps of a checkpoint directory, newest first: its folders named by a number (an interrupted save's
    ``<step>.orbax-checkpoint-tmp-*`` and a quarantined ``<step>.unreadable-*`` are not)."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no checkpoint directory {directory}")
    steps = sorted((int(n) for n in os.listdir(directory) if n.isdigit()), reverse=True)
    if not steps:
        raise FileNotFoundError(f"no checkpoint in {directory}")
    return steps


def _read_meta(directory: str, step: int) -> dict:
    """The ``meta`` item of one step (Orbax's JSON handler, without a checkpoint manager); raises
    :class:`CheckpointError` naming the file."""
    path = os.path.join(os.path.abspath(directory), str(step), "meta")
    try:
        with _orbax_quiet():
            meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except Exception as e:  # a missing, empty or non-JSON meta item: name the file
        raise CheckpointError(f"checkpoint metadata {path} cannot be read ({_reason(e)})") from None
    return meta


def _newest(directory: str, step: int | None, read):
    """``(step, read(step))`` of ``step``, or of the newest step that ``read`` reads (newer ones named in a
    warning); :class:`CheckpointError` with every step's reason when none does."""
    steps = _step_numbers(directory) if step is None else [int(step)]
    failures = []
    for s in steps:
        try:
            out = read(s)
        except CheckpointError as e:
            failures.append(str(e))
            continue
        for why in failures:
            _warn(f"{why}; skipped, using step {s}")
        return s, out
    raise CheckpointError("; ".join(failures))


def restore_meta(directory: str, step: int | None = None) -> tuple[int, dict]:
    """Read only the metadata (config, model, data info) of a checkpoint directory: of ``step``, or of the
    newest step whose metadata reads (newer ones named in a warning)."""
    return _newest(directory, step, lambda s: _read_meta(directory, s))


#: The fields of the saved training state (``zoo.training.state.TrainState``) that make the model's variables.
VARIABLE_FIELDS = ("params", "model_state")


def restore_variables(directory: str, step: int | None = None) -> tuple[int, dict, dict]:
    """``(step, variables, meta)`` for prediction: the model's variables (``{"params": ..., **model_state}``,
    e.g. batch statistics) of ``step``, or of the newest step whose metadata and state both restore completely
    (newer ones named in a warning).

    The state is restored in the saved tree's own structure, shapes and dtypes (onto the first device), without
    a checkpoint manager and without building or tracing the model or its optimizer to learn the shapes; the
    optimizer state is read too (a step counts as intact only when all of it reads) and then dropped."""
    directory = os.path.abspath(directory)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])

    def read(s):
        meta = _read_meta(directory, s)
        path = os.path.join(directory, str(s), "state")
        why = None
        try:
            with _orbax_quiet():
                checkpointer = ocp.PyTreeCheckpointer()
                saved = checkpointer.metadata(path).item_metadata.tree
                if "params" not in saved:
                    raise KeyError(f"no params (saved: {sorted(saved)})")
                shapes = jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype), saved)
                args = jax.tree.map(lambda m: ocp.ArrayRestoreArgs(sharding=device, global_shape=tuple(m.shape),
                                                                   dtype=m.dtype), saved)
                state = checkpointer.restore(path, args=ocp.args.PyTreeRestore(item=shapes, restore_args=args))
        except Exception as e:  # Orbax/TensorStore raise many types for damaged files; name the step instead
            why = _reason(e)
        if why is not None:
            raise CheckpointError(f"checkpoint step {s} in {directory} cannot be restored ({why})")
        return {"params": state["params"], **(state.get("model_state") or {})}, meta

    s, (variables, meta) = _newest(directory, step, read)
    return s, variables, meta
