"""What every run records next to its checkpoints: seed, package versions, git revision, devices."""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess

import jax

from data_pipelines import atomic

__all__ = ["run_info", "run_metadata"]

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
    return json.loads(atomic.dumps(meta))
