"""What every run records next to its checkpoints: seed, package versions, git revision, devices."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import tempfile

import jax

__all__ = ["run_info", "run_metadata", "write_json", "write_text", "strict_json"]

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "scipy", "scikit-learn")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except Exception:  # no git, not a checkout
        return None


def run_info(seed: int) -> dict:
    """Provenance of a run, JSON-serialisable."""
    return {"seed": int(seed), "git_revision": git_revision(), "python": platform.python_version(),
            "packages": {p: _version(p) for p in _PACKAGES},
            "jax": jax.__version__, "process_count": jax.process_count(),
            "devices": [str(d) for d in jax.devices()], "time": datetime.datetime.now().isoformat()}


def _plain(o):
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if hasattr(o, "item") and callable(o.item):  # numpy scalars
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def strict_json(obj):
    """``obj`` with NaN and infinities as ``None`` (JSON ``null``): strict parsers reject ``NaN``/``Infinity``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def run_metadata(config, task: str, info, mesh=None, **extra) -> dict:
    """The one description of a run, written as ``config.json`` and saved in every checkpoint's ``meta``:
    resolved config, model, task, data contract (``DatasetInfo`` as a dict), provenance and mesh.
    ``zoo.load_pretrained`` rebuilds the model from exactly this."""
    data = dataclasses.asdict(info) if dataclasses.is_dataclass(info) else dict(info)
    meta = {"config": config.to_dict(), "model": config.model.name, "task": task, "data": data,
            "run": run_info(config.seed)}
    if mesh is not None:
        meta["mesh"] = {k: int(v) for k, v in mesh.shape.items()}
    meta.update(extra)
    # Through JSON once: tuples become lists, numpy scalars numbers; what is saved is what is read back.
    return strict_json(json.loads(json.dumps(meta, default=_plain)))


def write_json(path: str, obj, indent: int = 2) -> None:
    """Write ``obj`` as strict JSON atomically (NaN/Inf as ``null``; see :func:`write_text`)."""
    write_text(path, json.dumps(strict_json(json.loads(json.dumps(obj, default=_plain))), indent=indent,
                                allow_nan=False), suffix=".json")


def write_text(path: str, text: str, suffix: str = ".txt") -> None:
    """Write ``text`` atomically: a temporary file in the same folder, then ``os.replace`` (readers see the old
    file or the whole new one; the temporary is removed on failure)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
