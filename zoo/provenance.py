"""What every run records next to its checkpoints: seed, package versions, git revision, devices."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import subprocess

import jax

__all__ = ["run_info"]

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
