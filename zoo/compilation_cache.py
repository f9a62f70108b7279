"""JAX's persistent compilation cache, on by default for the command lines and the server.

A command line compiles the same programs on every run (a model's forward pass for a patch shape, a train step);
with the cache a second run loads them from disk instead of compiling them (seconds per program on a CPU). The cache
lives in the user's cache folder, ``$XDG_CACHE_HOME/medzoo/jax/cpu-<digest>`` (``~/.cache/medzoo/jax/...``; one
folder per CPU type, :func:`cpu_signature`, since jax's own keys name no CPU features); every program is kept
(no minimum compile time or entry size) and the folder is capped at :data:`MAX_BYTES`, least recently used entries
evicted first (jax's own LRU cache). ``MEDZOO_COMPILATION_CACHE=0`` (or ``off``/``false``/``no``) turns it off;
any other non-empty value is a folder to use instead; without it, a folder the user gave jax itself
(``JAX_COMPILATION_CACHE_DIR``) is kept.

:func:`enable` is called by every entry point's boundary (``zoo.cli.run_command``) before the command's body, and
by the server at start-up. The cache is trusted code: jax runs what it finds there, so the folder is created
private to the user (mode 0700).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["ENV", "MAX_BYTES", "cache_dir", "cpu_signature", "enable", "active_dir", "redirected", "compile_counter"]

ENV = "MEDZOO_COMPILATION_CACHE"
MAX_BYTES = 4 << 30
_OFF = {"0", "off", "false", "no"}


def cache_dir(environ=None) -> str | None:
    """The cache folder :func:`enable` would use (see the module docstring), or ``None`` when turned off."""
    env = os.environ if environ is None else environ
    value = env.get(ENV, "").strip()
    if value.lower() in _OFF:
        return None
    if value and value != "1":
        return os.path.abspath(os.path.expanduser(value))
    if not value and env.get("JAX_COMPILATION_CACHE_DIR"):  # the user's own choice of jax's cache folder
        return os.path.abspath(os.path.expanduser(env["JAX_COMPILATION_CACHE_DIR"]))
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    # jax's keys name no CPU features: a home folder shared by hosts of two CPU types must not share executables
    return os.path.join(base, "medzoo", "jax", "cpu-" + cpu_signature()[1])


def cpu_signature() -> tuple[str, str]:
    """The CPU's model name and a digest of its model and sorted instruction-set flags (``/proc/cpuinfo``)."""
    import hashlib
    import platform

    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted((fields.get("flags") or fields.get("Features") or "").split()))
    return model, hashlib.sha256(f"{model}|{flags}".encode()).hexdigest()[:16]


def enable(environ=None) -> str | None:
    """Point jax's persistent compilation cache at :func:`cache_dir` (cache every program); return the folder, or
    ``None`` when turned off or the folder cannot be created (then the run compiles as without a cache)."""
    path = cache_dir(environ)
    if path is None:
        return None
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None
    if active_dir() != path:
        _point_at(path)
    return path


def _point_at(path: str) -> None:
    """jax's persistent cache in ``path``, every program cached, at most :data:`MAX_BYTES`."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
    # jax's extra XLA caches (GPU autotuning, kernels) put the cache's path into every program's compile options,
    # hence into its key: a program cached in one folder would never be found in another (zoo.executables)
    jax.config.update("jax_persistent_cache_enable_xla_caches", "none")
    compilation_cache.reset_cache()  # jax reads the folder once, at its first compilation: read it again


def active_dir() -> str | None:
    """The folder jax's persistent compilation cache uses in this process, or ``None``."""
    import jax

    return jax.config.jax_compilation_cache_dir


@contextlib.contextmanager
def redirected(path: str):
    """Inside the block jax's persistent cache writes to and reads from ``path`` only (every program cached), and
    no program compiled before is reused from memory; the previous cache settings come back after it."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes", "jax_compilation_cache_max_size",
             "jax_persistent_cache_enable_xla_caches")
    before = {n: getattr(jax.config, n) for n in names}
    os.makedirs(path, mode=0o700, exist_ok=True)
    jax.clear_caches()
    _point_at(path)
    try:
        yield path
    finally:
        for n, v in before.items():
            jax.config.update(n, v)
        compilation_cache.reset_cache()


class compile_counter:
    """Counts, while active (``with compile_counter() as c``), the programs XLA compiled (``c.compiled``) and those
    loaded from the persistent cache instead (``c.loaded``), from jax's monitoring events; ``c.backend_s`` the seconds
    spent getting executables (compiling, or loading them from the cache). Without a cache every
    program counts as compiled (jax's backend-compile event)."""

    _REQUESTS = "/jax/compilation_cache/compile_requests_use_cache"
    _HITS = "/jax/compilation_cache/cache_hits"
    _BACKEND = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.requests = self.loaded = self.backend = 0
        self.backend_s = 0.0  # seconds in XLA's compiler (or loading from the cache), all programs together
        self.active = False

    @property
    def compiled(self) -> int:
        """Programs compiled by XLA (cache misses; with no cache in use, every backend compilation)."""
        return self.requests - self.loaded if self.requests else self.backend

    def _event(self, name, **kw):
        if self.active:
            self.requests += name == self._REQUESTS
            self.loaded += name == self._HITS

    def _duration(self, name, duration, **kw):
        if self.active and name == self._BACKEND:
            self.backend += 1
            self.backend_s += float(duration)

    def __enter__(self):
        from jax import monitoring

        monitoring.register_event_listener(self._event)
        monitoring.register_event_duration_secs_listener(self._duration)
        self.active = True
        return self

    def __exit__(self, *exc):
        from jax import monitoring

        self.active = False
        monitoring.unregister_event_listener(self._event)
        monitoring.unregister_event_duration_listener(self._duration)
