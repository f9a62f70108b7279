"""Opt-in cache of per-case arrays: decompressing NIfTI dominates loading time, so a source may keep
each case's result as ``.npz`` under ``data.cache_dir`` (default ``""``: no cache).

An entry is keyed by its source files' paths, sizes and mtimes and by the loader's parameters, so an
edited file or a changed setting never reads a stale entry. A cache that cannot be read (corrupt or
truncated entry) or written (read-only folder, full disk) gives a ``CacheWarning`` naming the file and
the reason; the case is then read from its source files.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from typing import Callable, Sequence

import numpy as np

from data_pipelines.atomic import atomic_path

__all__ = ["CacheWarning", "cache_dir", "cached_case"]

# What a damaged .npz raises from np.load / reading its members (BadZipFile is no OSError).
_READ_ERRORS = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)


class CacheWarning(UserWarning):
    """The case cache could not be read or written; the data came from the source files."""


def cache_dir(cfg) -> str | None:
    """``cfg.cache_dir`` (the ``data`` section), or ``None`` when it is unset or empty (no cache)."""
    d = cfg.get("cache_dir", "")
    return str(d) if d else None


def _key(files: Sequence[str], params: dict) -> str:
    stat = [(os.path.abspath(f), os.path.getsize(f), os.path.getmtime(f)) for f in sorted(files)]
    return hashlib.sha1(json.dumps([stat, params], sort_keys=True, default=str).encode()).hexdigest()[:20]


def _read(path: str) -> dict:
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    if "patient_id" not in out:
        raise ValueError("no patient_id array in the entry")
    out["patient_id"] = [str(p) for p in out["patient_id"]]
    return out


def _write(path: str, arrays: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:  # readers see the old entry or the whole new one
        np.savez(tmp, **{k: (np.asarray(v) if k != "patient_id" else np.asarray(v, dtype=str))
                         for k, v in arrays.items()})


def cached_case(cache_dir: str | None, files: Sequence[str], params: dict, make: Callable[[], dict]) -> dict:
    """``make()`` (one case's array dict with a ``patient_id`` list), cached under ``cache_dir`` when given.

    ``files``: the case's source files (they key the entry); ``params``: everything else ``make`` depends on.
    """
    if cache_dir is None:
        return make()
    path = os.path.join(cache_dir, _key(files, params) + ".npz")
    if os.path.exists(path):
        try:
            return _read(path)
        except _READ_ERRORS as e:
            warnings.warn(f"case cache {path}: cannot read it ({type(e).__name__}: {e}); reading the source "
                          f"files instead and rewriting the entry", CacheWarning, stacklevel=2)
    out = make()
    try:
        _write(path, out)
    except (OSError, ValueError) as e:
        warnings.warn(f"case cache {path}: cannot write it ({type(e).__name__}: {e}); continuing without "
                      f"caching this case", CacheWarning, stacklevel=2)
    return out
