"""Compiled programs a model-store entry carries, so that its first prediction on a host of the same type compiles
nothing.

An entry may hold ``programs/``: ``programs.json`` (the host key the programs were compiled for and what they were
prepared for) and ``cache/``, the XLA executables jax serialized (``Compiled`` executables in jax's persistent
compilation cache format, one file per program, keyed by jax on the program, its shapes and the compile
options). :func:`prepare` fills it by running a prediction (load, read, predict at the entry's shapes) with a
fresh, private cache; :func:`install`, called when the entry is loaded, copies the programs into this process's
compilation cache (:mod:`zoo.compilation_cache`, on in every command line and the server), where jax finds them
at the first call instead of compiling. This covers every program the prediction path compiles (the whole-image
sliding window with or without mirroring), which explicit
``jax.experimental.serialize_executable`` calls on single functions would not without a second prediction path.

An executable is machine code for one CPU: the key (:func:`host_key`) is the jaxlib version, the backend's
platform and version and the host CPU's model and instruction-set flags. On any mismatch the programs are ignored
with one notice line and the model compiles as usual.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Callable

from data_pipelines import atomic
from zoo import compilation_cache

__all__ = ["PROGRAMS", "host_key", "prepare", "install"]

PROGRAMS = "programs"
_INFO = "programs.json"


def host_key() -> dict:
    """What an executable compiled here depends on: jaxlib version, backend platform and version, CPU model and
    instruction-set flags (digest)."""
    import jax
    import jax.extend
    import jaxlib

    backend = jax.extend.backend.get_backend()
    model, flags = compilation_cache.cpu_signature()
    return {"jaxlib": jaxlib.__version__, "platform": backend.platform,
            "platform_version": str(backend.platform_version), "device_kind": jax.devices()[0].device_kind,
            "cpu_model": model, "cpu_flags": flags}


def prepare(entry_path: str, run: Callable[[], object], note: dict | None = None) -> int:
    """Compile every program ``run()`` needs (load the entry and predict at the shapes it should serve) into the
    entry's ``programs/``, replacing what was there; return how many programs it holds. ``note`` (e.g. the input
    shapes, mirroring) is kept in ``programs.json`` for the reader."""
    if not os.path.isfile(os.path.join(entry_path, "card.json")):
        raise ValueError(f"{entry_path} is not a model-store entry (no card.json)")
    dest = os.path.join(entry_path, PROGRAMS)
    shutil.rmtree(dest, ignore_errors=True)  # the run must compile, not install the old programs
    with tempfile.TemporaryDirectory(prefix=".programs-", dir=entry_path) as tmp:
        with compilation_cache.redirected(os.path.join(tmp, "cache")) as cache:
            run()
        files = sorted(f for f in os.listdir(cache) if f.endswith("-cache"))
        if not files:
            raise ValueError("the run compiled no program to keep")
        # programs.json is written last and names the files: a half-written folder has none and is ignored
        os.makedirs(os.path.join(dest, "cache"))
        for name in os.listdir(cache):  # each program and its access-time stamp (jax's LRU bookkeeping)
            with open(os.path.join(cache, name), "rb") as f:
                atomic.write_bytes(os.path.join(dest, "cache", name), f.read())
    atomic.write_json(os.path.join(dest, _INFO), {"host": host_key(), "programs": files, "prepared_for": note or {}})
    return len(files)


def install(entry_path: str, log: Callable[[str], object] = print) -> int:
    """Copy the entry's programs into this process's compilation cache when they were compiled for this host;
    return how many were added. A mismatched key, or no cache in use, is one ``notice:`` line through ``log``."""
    info_path = os.path.join(entry_path, PROGRAMS, _INFO)
    if not os.path.isfile(info_path):
        return 0
    try:
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
        saved, files = dict(info["host"]), list(info["programs"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        log(f"notice: the compiled programs of {entry_path} cannot be read ({e}); compiling instead")
        return 0
    here = host_key()
    diff = [k for k in sorted(set(here) | set(saved)) if here.get(k) != saved.get(k)]
    if diff:
        log(f"notice: the compiled programs of {entry_path} were made for another host ("
            + ", ".join(f"{k} {saved.get(k)!r} here {here.get(k)!r}" for k in diff) + "); compiling instead")
        return 0
    cache = compilation_cache.active_dir()
    if cache is None:
        log(f"notice: the compilation cache is off ({compilation_cache.ENV}=0); the compiled programs of "
            f"{entry_path} are not used")
        return 0
    added = 0
    for name in files:
        if os.path.basename(name) != name or os.path.exists(os.path.join(cache, name)):
            continue
        stamp = name[:-len("-cache")] + "-atime"  # written first: jax's LRU cache reads it for every program
        for part in (stamp, name):
            src = os.path.join(entry_path, PROGRAMS, "cache", part)
            if os.path.isfile(src):
                with open(src, "rb") as f:
                    atomic.write_bytes(os.path.join(cache, part), f.read())
        added += 1
    return added
