"""Native CPU kernels: C++ sources in ``kernels/csrc``, compiled once per machine and registered as XLA FFI targets.

    from kernels import native
    native.available("warp")       # True once kernels/csrc/warp.cc is built and registered for the CPU
    native.available("dnnl_conv")  # kernels/csrc/dnnl_conv.cc: oneDNN convolutions (needs the oneDNN wheels)
    native.status()                # {"warp": "ready: /root/.cache/medzoo/kernels/warp-....so", ...} or why not

Kernels: ``warp`` (``kernels.geometry.warp``: the augmentation's resampling) and ``dnnl_conv`` (``kernels.conv``:
2D/3D float32 convolutions through oneDNN, linked against the ``onednn-cpu-gomp`` / ``onednn-devel-cpu-gomp``
wheels, which install its header and library into ``sys.prefix``; ``$MEDZOO_ONEDNN_ROOT`` points elsewhere).

Nothing is downloaded: the sources ship with the package and the FFI headers with jaxlib
(``jax.ffi.include_dir()``). The first use on a machine compiles the source with the system C++ compiler
(``$CXX``, else ``c++`` / ``g++`` / ``clang++``; a few seconds) into ``$MEDZOO_KERNEL_CACHE`` (default
``~/.cache/medzoo/kernels``), named by a hash of the source, the jaxlib version, the compiler and this CPU's
instruction set (it is built with ``-march=native``), written to a temporary file and renamed into place, so
concurrent processes never load a half-written library. Where there is no compiler, the build fails, or
``MEDZOO_NATIVE=0`` is set, ``available()`` is False (with one warning naming the reason, except for the
opt-out) and callers use their pure-XLA form: results agree to float32 rounding (labels exactly), only the
speed differs. On GPUs callers never reach these targets (``jax.lax.platform_dependent``).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

__all__ = ["available", "status", "library_path", "cache_dir", "compiler", "SOURCES", "FFI_TARGETS"]

SOURCES = {"warp": "warp.cc", "dnnl_conv": "dnnl_conv.cc"}
# FFI target name -> (source, exported handler symbol)
FFI_TARGETS = {"medzoo_warp": ("warp", "MedzooWarp"),
               "medzoo_dnnl_conv_fwd": ("dnnl_conv", "MedzooDnnlConvFwd"),
               "medzoo_dnnl_conv_bwd_data": ("dnnl_conv", "MedzooDnnlConvBwdData"),
               "medzoo_dnnl_conv_bwd_weights": ("dnnl_conv", "MedzooDnnlConvBwdWeights")}
# Sources that link a library: how to find it (the oneDNN CPU wheels put it under sys.prefix).
_ONEDNN_HINT = "pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"
_CSRC = Path(__file__).with_name("csrc")
_FLAGS = ("-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-std=c++17", "-fPIC", "-shared",
          "-pthread")
_status: dict[str, str] = {}


def enabled() -> bool:
    """False when ``MEDZOO_NATIVE`` is ``0`` / ``false`` / ``off`` / ``no`` (use the pure-XLA forms)."""
    return os.environ.get("MEDZOO_NATIVE", "1").strip().lower() not in ("0", "false", "off", "no")


def cache_dir() -> Path:
    env = os.environ.get("MEDZOO_KERNEL_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medzoo" / "kernels"


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX`` if set, else the first of c++ / g++ / clang++ on PATH."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or (cxx if os.path.isfile(cxx) else None)
    for name in ("c++", "g++", "clang++"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _cpu_signature() -> str:
    """What ``-march=native`` depends on: the machine and its instruction-set flags."""
    sig = [platform.machine(), platform.processor()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features", "model name")):
                    sig.append(line.strip())
                    if len(sig) >= 4:
                        break
    except OSError:
        pass
    return "\n".join(sig)


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def onednn_prefix() -> Path | None:
    """The prefix holding oneDNN's header and library (the ``onednn-*-cpu-gomp`` wheels install them into
    ``sys.prefix``; ``$MEDZOO_ONEDNN_ROOT`` overrides), or None."""
    import sys

    for root in filter(None, (os.environ.get("MEDZOO_ONEDNN_ROOT"), sys.prefix, sys.base_prefix)):
        root = Path(root)
        if (root / "include" / "oneapi" / "dnnl" / "dnnl.hpp").exists() and list((root / "lib").glob("libdnnl.so*")):
            return root
    return None


def _link_flags(name: str) -> list:
    if name != "dnnl_conv":
        return []
    root = onednn_prefix()
    if root is None:
        raise RuntimeError(f"oneDNN is not installed ({_ONEDNN_HINT})")
    lib = str(root / "lib")
    return ["-I", str(root / "include"), f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{lib}"]


def library_path(name: str) -> Path:
    """Where the built library for source ``name`` lives (or would, once built) on this machine."""
    import jaxlib

    cxx = compiler() or ""
    src = (_CSRC / SOURCES[name]).read_bytes()
    h = hashlib.sha256()
    try:
        link = " ".join(_link_flags(name))
    except RuntimeError:
        link = "missing"
    for part in (src, jaxlib.__version__.encode(), cxx.encode(), _compiler_version(cxx).encode() if cxx else b"",
                 _cpu_signature().encode(), " ".join(_FLAGS).encode(), link.encode()):
        h.update(part)
        h.update(b"\0")
    return cache_dir() / f"{name}-{h.hexdigest()[:16]}.so"


def _build(name: str) -> Path:
    import jax

    _link_flags(name)  # a missing library is named before anything else
    out = library_path(name)
    if out.exists():
        return out
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ / clang++)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out.stem + ".", suffix=".tmp.so", dir=out.parent)
    os.close(fd)
    link = _link_flags(name)
    cmd = [cxx, *_FLAGS, "-w", "-I", jax.ffi.include_dir(), str(_CSRC / SOURCES[name]), *link, "-o", tmp]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if res.returncode != 0:
            tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
            raise RuntimeError(f"compiling {SOURCES[name]} failed ({' '.join(cmd)}):\n{tail}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.lru_cache(maxsize=None)
def _load(name: str):
    if not enabled():
        _status[name] = "disabled by MEDZOO_NATIVE=0"
        return None
    try:
        import jax

        path = _build(name)
        lib = ctypes.CDLL(str(path))
        for target, (src, symbol) in FFI_TARGETS.items():
            if src == name:
                jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means: use the XLA form, and say why once
        _status[name] = f"unavailable: {type(e).__name__}: {e}"
        warnings.warn(f"kernels.native: the {name} kernel is not available, using the slower pure-XLA form "
                      f"({type(e).__name__}: {e})", RuntimeWarning, stacklevel=3)
        return None
    _status[name] = f"ready: {path}"
    return lib


def available(name: str) -> bool:
    """Whether the native kernel ``name`` is built and registered (building it on first call)."""
    if name not in SOURCES:
        raise ValueError(f"unknown native kernel {name!r}; known: {', '.join(SOURCES)}")
    return _load(name) is not None


def status() -> dict:
    """Per kernel: ``"ready: <path>"``, ``"disabled by MEDZOO_NATIVE=0"``, ``"unavailable: <reason>"`` or
    ``"not loaded"`` (nothing asked for it yet in this process)."""
    return {name: _status.get(name, "not loaded") for name in SOURCES}
