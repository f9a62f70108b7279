"""Builds the native kernels (``kernels/csrc/*.cc``) into the wheel; everything else is in pyproject.toml.

On Linux x86-64 each kernel is compiled for its instruction-set variants (``kernels/native_build.py``: the
``x86-64-v2`` baseline, plus ``x86-64-v3`` and ``x86-64-v4`` for ``warp``) against jaxlib's XLA FFI headers
(``jax.ffi.include_dir()``) and, for ``dnnl_conv``, the ``onednn-*-cpu-gomp`` wheels (linked by a relative rpath to
the ``libdnnl.so.3`` those wheels install under ``<prefix>/lib``), into ``kernels/native_lib/`` (in place for an
editable install). Plain shared libraries: ``kernels.native`` loads them with ctypes and registers their handlers as
XLA FFI targets. A kernel that does not compile fails the build. Elsewhere (macOS, Windows, other machines), or with
``MEDZOO_BUILD_NATIVE=0``, the wheel carries no kernels and ``kernels.native`` uses the XLA forms.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


def _load_by_path(name: str, relpath: str):
    """A standard-library-only module of the project, loaded by its path (the packages import jax and more, which
    the build environment may not have)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


NB = _load_by_path("medzoo_native_build", "kernels/native_build.py")
ATOMIC = _load_by_path("medzoo_atomic", "data_pipelines/atomic.py")


class NativeKernel(Extension):
    """One kernel for one instruction-set variant: a plain shared library, not a Python extension module."""

    def __init__(self, kernel: str, variant: str):
        stem = NB.library_file(kernel, variant)[:-len(".so")]
        super().__init__(f"kernels.native_lib.{stem}", sources=[f"kernels/csrc/{NB.SOURCES[kernel]}"], language="c++")
        self.kernel, self.variant = kernel, variant
        self.built: Path | None = None  # where build_ext compiled it


class BuildNativeKernels(build_ext):
    """Compiles each :class:`NativeKernel` with kernels/native_build.py's command line, in parallel."""

    def get_ext_filename(self, fullname):
        # <name>.so, not <name>.cpython-311-x86_64-linux-gnu.so: ctypes loads these, Python never imports them
        return os.path.join(*fullname.split(".")) + ".so"

    def copy_extensions_to_source(self):
        """In place (an editable install, ``build_ext --inplace``): each library renamed into kernels/native_lib/,
        never rewritten where it stands, so a process that has the old one loaded keeps a whole file."""
        NB.LIB_DIR.mkdir(exist_ok=True)
        for ext in self.extensions:
            with ATOMIC.atomic_path(NB.LIB_DIR / NB.library_file(ext.kernel, ext.variant)) as tmp:
                shutil.copyfile(ext.built, tmp)
                os.chmod(tmp, 0o755)

    def build_extensions(self):
        import jax  # a build requirement (pyproject.toml), as is oneDNN

        include = jax.ffi.include_dir()
        jobs = [(ext, Path(self.get_ext_fullpath(ext.name))) for ext in self.extensions]
        with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
            done = list(pool.map(lambda job: self._compile(*job, include), jobs))
        failed = [msg for msg in done if msg]
        if failed:
            sys.exit("medzoo: the native kernels did not build (set MEDZOO_BUILD_NATIVE=0 to build a wheel without "
                     "them, which then uses the slower XLA forms):\n" + "\n\n".join(failed))

    def _compile(self, ext: NativeKernel, out: Path, include) -> str | None:
        out.parent.mkdir(parents=True, exist_ok=True)
        ext.built = out
        print(f"medzoo: compiling {ext.kernel} for {ext.variant} -> {out}", flush=True)
        try:
            NB.compile_kernel(ext.kernel, out, march=ext.variant, ffi_include=include, rpath=NB.WHEEL_RPATH)
        except RuntimeError as e:
            return f"{ext.kernel} ({ext.variant}): {e}"
        return None


def _extensions() -> list:
    if os.environ.get("MEDZOO_BUILD_NATIVE", "1").strip().lower() in ("0", "false", "off", "no"):
        print("medzoo: MEDZOO_BUILD_NATIVE=0: building without native kernels (the XLA forms are used)")
        return []
    if not NB.wheel_platform():
        return []
    return [NativeKernel(kernel, variant) for kernel, variants in NB.VARIANTS.items() for variant in variants]


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildNativeKernels})
