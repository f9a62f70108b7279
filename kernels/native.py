"""Native CPU kernels: C++ sources in ``kernels/csrc``, compiled when the wheel is built and registered as XLA FFI
targets.

    from kernels import native
    native.available("warp")       # True once kernels/csrc/warp.cc's library is loaded and registered for the CPU
    native.available("dnnl_conv")  # kernels/csrc/dnnl_conv.cc: oneDNN convolutions (links the oneDNN wheels)
    native.status()                # {"warp": "ready: .../kernels/native_lib/warp_x86_64_v4.so", ...,
                                   #  "loaded": {"warp": {"variant": "x86-64-v4", "from": "package", "path": ...}}}
    native.onednn_bf16()           # True where oneDNN computes bfloat16 natively (AVX512-BF16 / AMX)

Kernels: ``warp`` (``kernels.geometry.warp``: the augmentation's resampling) and ``dnnl_conv`` (``kernels.conv``:
2D/3D float32 convolutions, and bfloat16 ones where the CPU computes bfloat16 natively, through oneDNN, linked
against the ``onednn-cpu-gomp`` wheel's ``libdnnl.so.3``; its OpenMP team waits passively between calls unless
``OMP_WAIT_POLICY`` / ``GOMP_SPINCOUNT`` say otherwise, see ``_omp_waits_passively``).

Where they come from (``$MEDZOO_NATIVE``):

* unset / ``1`` (the default): the libraries the wheel carries in ``kernels/native_lib/`` (built by ``setup.py``,
  in place for an editable install; see ``kernels/native_build.py``), one per instruction-set variant; the widest
  that this CPU's flags (``/proc/cpuinfo``) allow is loaded (``$MEDZOO_NATIVE_VARIANT``, e.g. ``x86-64-v2``,
  asks for one). No compiler is needed at run time.
* ``build``: the developer's option: compile the sources on first use (``$CXX``, else ``c++`` / ``g++`` /
  ``clang++``; ``-march=native``; a few seconds) into ``$MEDZOO_KERNEL_CACHE`` (default
  ``~/.cache/medzoo/kernels``), named by a hash of the source, the jaxlib version, the compiler, this CPU and the
  flags, written to a temporary file and renamed into place, so concurrent processes never load a half-written one.
* ``0`` / ``false`` / ``off`` / ``no``: the pure-XLA forms, silently.

Where a kernel cannot be had (a wheel without kernels: macOS, Windows, other machines, ``MEDZOO_BUILD_NATIVE=0``;
a CPU below the baseline; a failed load or developer build), ``available()`` is False with one warning naming
the reason, and callers use their pure-XLA form: results agree to float32 rounding (labels exactly), only the
speed differs. On GPUs callers never reach these targets (``jax.lax.platform_dependent``).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import tempfile
import warnings
from pathlib import Path

from kernels.native_build import (CSRC, LIB_DIR, ONEDNN_HINT, SOURCES, VARIANTS, compile_command, compile_kernel,
                                  compiler, compiler_version, cpu_flags, library_file, onednn_dirs,
                                  supported_variants, wheel_platform)

__all__ = ["available", "onednn_bf16", "status", "mode", "enabled", "packaged_library", "library_path", "cache_dir",
           "compiler", "SOURCES", "FFI_TARGETS", "LIB_DIR"]

# FFI target name -> (source, exported handler symbol)
FFI_TARGETS = {"medzoo_warp": ("warp", "MedzooWarp"),
               "medzoo_dnnl_conv_fwd": ("dnnl_conv", "MedzooDnnlConvFwd"),
               "medzoo_dnnl_conv_bwd_data": ("dnnl_conv", "MedzooDnnlConvBwdData"),
               "medzoo_dnnl_conv_bwd_weights": ("dnnl_conv", "MedzooDnnlConvBwdWeights")}
_status: dict[str, str] = {}
_loaded: dict[str, dict] = {}
_warned: set[str] = set()


def mode() -> str:
    """``"package"`` (the default: the wheel's libraries), ``"build"`` (``MEDZOO_NATIVE=build``: compile on first
    use) or ``"off"`` (``MEDZOO_NATIVE`` is ``0`` / ``false`` / ``off`` / ``no``: the pure-XLA forms)."""
    value = os.environ.get("MEDZOO_NATIVE", "1").strip().lower()
    if value in ("0", "false", "off", "no"):
        return "off"
    return "build" if value == "build" else "package"


def enabled() -> bool:
    """False when ``MEDZOO_NATIVE`` opts out (use the pure-XLA forms)."""
    return mode() != "off"


def packaged_library(name: str) -> tuple[Path, str]:
    """The wheel's library for kernel ``name`` this CPU runs, widest variant first, and that variant; RuntimeError
    saying why there is none."""
    if not wheel_platform():
        raise RuntimeError(f"the package carries no native kernels for {platform.system()} {platform.machine()} "
                           f"(Linux x86-64 only)")
    built = [v for v in VARIANTS[name] if (LIB_DIR / library_file(name, v)).exists()]
    if not built:
        raise RuntimeError(f"this installation carries no native kernels ({LIB_DIR} has none: built with "
                           f"MEDZOO_BUILD_NATIVE=0, or from a source tree never built; `pip install .` builds them, "
                           f"MEDZOO_NATIVE=build compiles them on first use)")
    runs = supported_variants(cpu_flags(), built)
    asked = os.environ.get("MEDZOO_NATIVE_VARIANT", "").strip()
    if asked:
        if asked not in runs:
            raise RuntimeError(f"MEDZOO_NATIVE_VARIANT={asked} is not one this CPU runs among the built "
                               f"{', '.join(built)} (it runs: {', '.join(runs) or 'none'})")
        runs = [asked]
    if not runs:
        raise RuntimeError(f"this CPU lacks the instruction sets of every built variant ({', '.join(built)})")
    return LIB_DIR / library_file(name, runs[0]), runs[0]


def cache_dir() -> Path:
    """Where ``MEDZOO_NATIVE=build`` puts the libraries it compiles."""
    env = os.environ.get("MEDZOO_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medzoo" / "kernels"


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the machine and its instruction-set flags."""
    return "\n".join([platform.machine(), platform.processor(), " ".join(sorted(cpu_flags()))])


def library_path(name: str) -> Path:
    """Where ``MEDZOO_NATIVE=build`` puts (or finds) kernel ``name`` compiled on this machine."""
    import jax
    import jaxlib

    cxx = compiler() or ""
    try:
        cmd = " ".join(compile_command(name, "out", march="native", cxx=cxx, ffi_include=jax.ffi.include_dir()))
    except RuntimeError:
        cmd = "missing"
    h = hashlib.sha256()
    for part in ((CSRC / SOURCES[name]).read_bytes(), jaxlib.__version__.encode(),
                 compiler_version(cxx).encode() if cxx else b"", _cpu_signature().encode(), cmd.encode()):
        h.update(part)
        h.update(b"\0")
    return cache_dir() / f"{name}-{h.hexdigest()[:16]}.so"


def _build(name: str) -> Path:
    import jax

    if name == "dnnl_conv" and onednn_dirs() is None:  # a missing library is named before anything else
        raise RuntimeError(f"oneDNN is not installed ({ONEDNN_HINT})")
    out = library_path(name)
    if out.exists():
        return out
    if compiler() is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ / clang++)")
    out.parent.mkdir(parents=True, exist_ok=True)
    # kernels imports nothing of the project (data_pipelines.atomic is out of reach): the same unique-temporary +
    # rename, by hand
    fd, tmp = tempfile.mkstemp(prefix=out.stem + ".", suffix=".tmp.so", dir=out.parent)
    os.close(fd)
    try:
        compile_kernel(name, tmp, march="native", ffi_include=jax.ffi.include_dir())
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _open(name: str, path: Path) -> tuple[ctypes.CDLL, str]:
    """Load ``path``; ``dnnl_conv`` finds ``libdnnl.so.3`` by its rpath (``<prefix>/lib`` beside site-packages),
    else (an editable install's in-place library) preloaded from where the oneDNN wheel put it."""
    try:
        return ctypes.CDLL(str(path)), "rpath"
    except OSError as e:
        dirs = onednn_dirs() if name == "dnnl_conv" and "libdnnl" in str(e) else None
        if dirs is None:
            raise
        dnnl = dirs[1] / "libdnnl.so.3"
        ctypes.CDLL(str(dnnl))  # the dependency is then resolved by its soname
        return ctypes.CDLL(str(path)), str(dnnl)


OMP_WAIT_ENV = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_omp_wait: dict[str, str] = {}


def _gomp_loaded() -> bool:
    """Whether this process already mapped ``libgomp.so.1`` (then its wait policy is fixed)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            return any("libgomp.so.1" in line for line in maps)
    except OSError:
        return False


@contextlib.contextmanager
def _omp_waits_passively(name: str):
    """While ``dnnl_conv`` (and with it oneDNN's ``libgomp``) loads, ``OMP_WAIT_POLICY=PASSIVE`` unless the user set
    ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``: libgomp reads them once, when it loads, and by default spins
    ~300,000 pauses after every parallel region; here each convolution is followed by XLA's own ops on XLA's
    pool, and the spinning OpenMP thread took a core from them (2D train step, loaded host: 918-1,128 ms of CPU
    time a step spinning, 204 ms passive; docs/performance.md). The environment is restored after the load, so
    child processes inherit the user's."""
    if name != "dnnl_conv" or any(k in os.environ for k in OMP_WAIT_ENV) or _gomp_loaded():
        _omp_wait.update({k: os.environ[k] for k in OMP_WAIT_ENV if k in os.environ})
        if _gomp_loaded():
            _omp_wait["libgomp"] = "loaded before dnnl_conv: its own settings"
        yield
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        yield
    finally:
        os.environ.pop("OMP_WAIT_POLICY", None)
    _omp_wait["OMP_WAIT_POLICY"] = "PASSIVE"


def _warn_once(name: str, error: Exception) -> None:
    """One warning per reason: an installation without kernels says so once, not once per kernel."""
    reason = f"{type(error).__name__}: {error}"
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"kernels.native: the {name} kernel is not available, using the slower pure-XLA form "
                      f"({reason})", RuntimeWarning, stacklevel=4)


@functools.lru_cache(maxsize=None)
def _load(name: str):
    how = mode()
    if how == "off":
        _status[name] = "disabled by MEDZOO_NATIVE=0"
        return None
    try:
        import jax

        if how == "build":
            path, variant = _build(name), "native"
        else:
            path, variant = packaged_library(name)
        with _omp_waits_passively(name):
            lib, onednn = _open(name, path)
        for target, (src, symbol) in FFI_TARGETS.items():
            if src == name:
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means: use the XLA form, and say why once
        _status[name] = f"unavailable: {type(e).__name__}: {e}"
        _warn_once(name, e)
        return None
    _status[name] = f"ready: {path}"
    _loaded[name] = {"variant": variant, "from": "package" if how == "package" else "build", "path": str(path)}
    if name == "dnnl_conv":
        _loaded[name]["onednn"] = onednn
        _loaded[name]["omp_wait"] = dict(_omp_wait)
        _loaded[name]["bf16"] = _bf16_isa(lib)
    return lib


def _bf16_isa(lib) -> dict:
    """``{"native": bool, "isa": name}``: the instruction set oneDNN dispatches to here (``$ONEDNN_MAX_CPU_ISA``
    can lower it) and whether it has native bfloat16 (``avx512_core_bf16``, ``avx512_core_fp16`` or AMX); a
    library without the query (built before it existed) counts as not native."""
    query = getattr(lib, "medzoo_dnnl_bf16_isa", None)
    if query is None:
        return {"native": False, "isa": "unknown (library without medzoo_dnnl_bf16_isa)"}
    query.restype, query.argtypes = ctypes.c_int, [ctypes.c_char_p, ctypes.c_int]
    name = ctypes.create_string_buffer(64)
    native = bool(query(name, len(name)))
    return {"native": native, "isa": name.value.decode("ascii", "replace")}


def onednn_bf16() -> bool:
    """Whether bfloat16 convolutions go to oneDNN: ``dnnl_conv`` is loaded (loading it on first call) and oneDNN
    computes bfloat16 natively on this CPU (AVX512-BF16 or AMX). Elsewhere oneDNN would emulate bfloat16 on plain
    AVX-512 (or not run it at all), and ``kernels.conv`` keeps bfloat16 convolutions on XLA."""
    return available("dnnl_conv") and bool(_loaded["dnnl_conv"]["bf16"]["native"])


def available(name: str) -> bool:
    """Whether the native kernel ``name`` is loaded and registered (loading, or with ``MEDZOO_NATIVE=build``
    building, it on first call)."""
    if name not in SOURCES:
        raise ValueError(f"unknown native kernel {name!r}; known: {', '.join(SOURCES)}")
    return _load(name) is not None


def status() -> dict:
    """Per kernel: ``"ready: <path>"``, ``"disabled by MEDZOO_NATIVE=0"``, ``"unavailable: <reason>"`` or
    ``"not loaded"`` (nothing asked for it yet in this process); and ``"loaded"``: per loaded kernel, its
    ``variant`` (``x86-64-v4``..., ``native`` when built here), ``from`` (``package`` or ``build``), ``path``, and
    for ``dnnl_conv`` how ``libdnnl.so.3`` was found (``rpath``, or the path it was preloaded from), ``omp_wait``:
    the OpenMP wait settings its ``libgomp`` loaded with (``{"OMP_WAIT_POLICY": "PASSIVE"}`` by default) and
    ``bf16``: ``{"native": bool, "isa": "avx512_core_bf16"...}``, oneDNN's instruction set here and whether it
    computes bfloat16 natively (then bfloat16 convolutions go to oneDNN, see :func:`onednn_bf16`)."""
    return {**{name: _status.get(name, "not loaded") for name in SOURCES},
            "loaded": {name: dict(info) for name, info in _loaded.items()}}
