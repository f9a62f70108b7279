"""How the native kernels (``kernels/csrc``) are compiled: one command line for the wheel build (``setup.py``) and
for the developer's compile-on-first-use (``MEDZOO_NATIVE=build``), the instruction-set variants, and which of them
a CPU runs.

The wheel carries, per kernel, one shared library per variant in ``kernels/native_lib/``
(``warp_x86_64_v4.so``...): ``-march=x86-64-v2`` (the portable baseline: every x86-64 CPU jaxlib runs on),
``x86-64-v3`` (AVX2, FMA) and ``x86-64-v4`` (AVX-512) for ``warp``, whose loops are ours to vectorise; the baseline
alone for ``dnnl_conv``, whose work is done inside oneDNN, which picks its own instruction set at run time.
``kernels.native`` loads the widest variant this CPU's flags allow.

Standard library only: ``setup.py`` loads this file by its path before the project (or jax) is importable, so it
must not import the ``kernels`` package.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

__all__ = ["SOURCES", "VARIANTS", "LEVEL_FLAGS", "CSRC", "LIB_DIR", "ONEDNN_HINT", "wheel_platform", "compiler",
           "compiler_version", "cpu_flags", "supported_variants", "library_file", "onednn_dirs", "compile_command",
           "compile_kernel"]

SOURCES = {"warp": "warp.cc", "dnnl_conv": "dnnl_conv.cc"}
# The x86-64 micro-architecture levels (psABI) each kernel is built for, widest first.
VARIANTS = {"warp": ("x86-64-v4", "x86-64-v3", "x86-64-v2"), "dnnl_conv": ("x86-64-v2",)}
# /proc/cpuinfo flags each level adds to the one below it (Linux clears a flag the kernel cannot save the state of).
LEVEL_FLAGS = {
    "x86-64-v2": frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    "x86-64-v3": frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    "x86-64-v4": frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}),
}
CSRC = Path(__file__).with_name("csrc")
LIB_DIR = Path(__file__).with_name("native_lib")
ONEDNN_HINT = "pip install onednn-cpu-gomp==2023.2.0 onednn-devel-cpu-gomp==2023.2.0"
# -ffp-contract=off: no fused multiply-adds the XLA reference does not make, so both forms agree to rounding.
FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fopenmp-simd", "-std=c++17", "-fPIC",
         "-shared", "-pthread", "-w")
# From kernels/native_lib/ inside <prefix>/lib/pythonX.Y/site-packages up to <prefix>/lib, where the
# onednn-cpu-gomp wheel installs libdnnl.so.3 (venv, --user and system installs alike).
WHEEL_RPATH = "$ORIGIN/../../../.."


def wheel_platform() -> bool:
    """Whether the wheel carries native kernels on this platform (Linux x86-64; elsewhere the XLA forms)."""
    return sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")


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


def compiler_version(cxx: str) -> str:
    """The first line of ``cxx --version`` ("" if it cannot be run)."""
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.splitlines()[0] if out.stdout else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset:
    """This CPU's instruction-set flags as Linux reports them (empty where there is no ``cpuinfo``)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def supported_variants(flags, variants=("x86-64-v4", "x86-64-v3", "x86-64-v2")) -> list:
    """Those of ``variants`` (in their order) that a CPU with ``flags`` runs: a level needs its flags and those of
    every level below it."""
    levels = list(LEVEL_FLAGS)
    flags = set(flags)
    ok = {lvl for i, lvl in enumerate(levels) if all(LEVEL_FLAGS[x] <= flags for x in levels[:i + 1])}
    return [v for v in variants if v in ok]


def library_file(kernel: str, variant: str) -> str:
    """The file name of ``kernel`` built for ``variant`` in ``kernels/native_lib`` (``warp_x86_64_v4.so``)."""
    return f"{kernel}_{variant.replace('-', '_')}.so"


def onednn_dirs() -> tuple[Path, Path] | None:
    """oneDNN's include and library folders, or None: ``$MEDZOO_ONEDNN_ROOT``, else where the ``onednn-*-cpu-gomp``
    wheels installed them (``<prefix>/include``, ``<prefix>/lib``; also inside pip's isolated build environment),
    else ``sys.prefix``."""
    def usable(inc: Path, lib: Path) -> bool:
        return (inc / "oneapi" / "dnnl" / "dnnl.hpp").exists() and bool(list(lib.glob("libdnnl.so*")))

    root = os.environ.get("MEDZOO_ONEDNN_ROOT")
    if root:
        return (Path(root) / "include", Path(root) / "lib") if usable(Path(root) / "include", Path(root) / "lib") \
            else None
    found = {}
    for dist, key, tail in (("onednn-devel-cpu-gomp", "include", "oneapi/dnnl/dnnl.hpp"),
                            ("onednn-cpu-gomp", "lib", "libdnnl.so.3")):
        try:
            files = importlib.metadata.distribution(dist).files or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for f in files:
            if str(f).replace("\\", "/").endswith(tail):
                path = Path(os.path.normpath(f.locate()))
                found[key] = path.parents[2] if key == "include" else path.parent
                break
    if len(found) == 2 and usable(found["include"], found["lib"]):
        return found["include"], found["lib"]
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        if usable(Path(prefix) / "include", Path(prefix) / "lib"):
            return Path(prefix) / "include", Path(prefix) / "lib"
    return None


def compile_command(kernel: str, out, *, march: str, cxx: str, ffi_include, rpath: str | None = None) -> list:
    """The compiler's command line building ``kernel`` for ``-march=<march>`` into ``out``; ``dnnl_conv`` links
    oneDNN with ``rpath`` (default: the absolute folder it was found in). Raises RuntimeError without oneDNN."""
    cmd = [cxx, *FLAGS, f"-march={march}", "-I", str(ffi_include), str(CSRC / SOURCES[kernel])]
    if kernel == "dnnl_conv":
        dirs = onednn_dirs()
        if dirs is None:
            raise RuntimeError(f"oneDNN is not installed ({ONEDNN_HINT})")
        inc, lib = dirs
        cmd += ["-I", str(inc), f"-L{lib}", "-ldnnl", f"-Wl,-rpath,{rpath or lib}"]
    return [*cmd, "-o", str(out)]


def compile_kernel(kernel: str, out, *, march: str, ffi_include, rpath: str | None = None) -> None:
    """Compile ``kernel`` into ``out`` (the caller makes ``out`` a temporary name when others may read the
    folder); RuntimeError naming the command and the compiler's last lines if it fails."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++ / clang++)")
    cmd = compile_command(kernel, out, march=march, cxx=cxx, ffi_include=ffi_include, rpath=rpath)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        tail = "\n".join((res.stderr or res.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"compiling {SOURCES[kernel]} failed ({' '.join(cmd)}):\n{tail}")
