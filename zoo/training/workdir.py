"""A run's work directory: one run at a time, resumed only by a compatible run, its log kept consistent.

* :class:`WorkdirLock`: an advisory ``fcntl`` lock on ``<workdir>/.lock`` held for the whole run; a second
  run on the same directory stops at once with an error naming the PID that holds it.
* :func:`check_resumable`: a resumed run must be the run its checkpoints hold (model, inputs, batch, data,
  optimiser, loss, augmentation, seed); the differences are listed and nothing in the directory changes.
  What may change on resume: the number of steps, the logging/evaluation/checkpoint intervals, retention,
  TensorBoard and the mesh.
* :func:`truncate_metrics`: on resume, ``metrics.jsonl`` keeps only the records up to the restored step, so
  the steps a killed run logged after its last checkpoint are not listed twice.
"""

from __future__ import annotations

import errno
import json
import os

from data_pipelines.atomic import write_text

__all__ = ["WorkdirLock", "check_resumable", "truncate_metrics", "RESUMABLE_CHANGES"]

#: ``train`` fields a resumed run may change.
RESUMABLE_CHANGES = ("steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "keep_best",
                     "tensorboard", "time_limit_s")


#: What runs record about their data since a run began recording it (absent from older checkpoints).
RECORDED_LATER = "info.extra.intensity_scaling"


class WorkdirLock:
    """``with WorkdirLock(workdir):`` holds an exclusive advisory lock on ``<workdir>/.lock``."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, ".lock")
        self._f = None

    def __enter__(self):
        import fcntl

        f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                f.close()
                raise
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise ValueError(f"work directory {os.path.dirname(self.path)} is in use by another run (PID {holder}); "
                             f"wait for it to finish or choose another --workdir") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._f = f
        return self

    def __exit__(self, *exc):
        import fcntl

        if self._f is not None:
            fcntl.flock(self._f, fcntl.LOCK_UN)
            self._f.close()
            self._f = None
        return False


def _flat(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _comparable(meta: dict) -> dict:
    config = dict(meta.get("config", {}))
    config.pop("mesh", None)
    config.pop("workdir", None)
    train = {k: v for k, v in config.pop("train", {}).items() if k not in RESUMABLE_CHANGES}
    return {**_flat(config), **_flat(train, "train."), **_flat(meta.get("data", {}), "info."),
            **_flat(meta.get("inputs", {}), "inputs."), "task": meta.get("task")}


def check_resumable(saved: dict, new: dict, workdir: str) -> None:
    """Raise ``ValueError`` listing what differs between the checkpointed run ``saved`` and the ``new`` one."""
    a, b = _comparable(saved), _comparable(new)
    for k in [k for k in b if k.startswith(RECORDED_LATER) and not any(j.startswith(RECORDED_LATER) for j in a)]:
        b.pop(k)  # a run checkpointed before runs recorded their scaling: the record is new, not a change
    diffs = [f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in sorted(set(a) | set(b))
             if a.get(k, "<unset>") != b.get(k, "<unset>")]
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise ValueError(f"work directory {workdir} holds checkpoints of a different run ({shown}); resume it with "
                         f"its own settings or choose another --workdir (nothing was changed)")


def truncate_metrics(path: str, step: int) -> int:
    """Drop the records of ``metrics.jsonl`` after ``step`` (atomically); returns how many were dropped."""
    if not os.path.exists(path):
        return 0
    keep, dropped = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:  # a line cut off by a kill: drop it
                dropped += 1
                continue
            if int(rec.get("step", 0)) <= step:
                keep.append(line if line.endswith("\n") else line + "\n")
            else:
                dropped += 1
    if dropped:
        write_text(path, "".join(keep))
    return dropped
