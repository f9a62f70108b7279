"""CI (.ci/run): the installed wheel's native kernels, checked in a fresh venv with no compiler on PATH.

Run with that venv's python, from outside the source tree (so ``kernels`` is the installed one). Checks that
``kernels.native.status()`` says ready, loaded from the package (the widest variant this CPU runs; ``libdnnl.so.3``
found by the library's rpath in the venv), that a 3D convolution through ``kernels.conv`` on the oneDNN path
equals ``lax.conv_general_dilated`` in value and gradient, that the warp kernel equals its XLA form, and that with
``MEDZOO_NATIVE=0`` both kernels keep their XLA forms without a warning. Exit status 1 and the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

OPT_OUT = """
    import warnings
    import jax, jax.numpy as jnp
    import numpy as np
    from kernels import conv, geometry, native
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, w = jnp.ones((1, 5, 5, 5, 4)), jnp.ones((3, 3, 3, 4, 3))
        with conv.conv_lowering("cpu"):
            text = jax.jit(lambda x: conv.conv_nd(x, w)).lower(x).as_text()
            y = conv.conv_nd(x, w)
        img = np.arange(30, dtype=np.float32).reshape(5, 6, 1)
        out, _ = geometry.warp(img, None, matrix=np.eye(3, dtype=np.float32))
    assert "medzoo_dnnl" not in text and float(y[0, 2, 2, 2, 0]) == 108.0, text
    assert np.array_equal(np.asarray(out), img)
    st = native.status()
    assert st["warp"] == st["dnnl_conv"] == "disabled by MEDZOO_NATIVE=0" and not st["loaded"], st
    assert not [w for w in caught if "native" in str(w.message)], [str(w.message) for w in caught]
"""


def check_installed_kernels() -> None:
    import numpy as np

    import jax
    import jax.numpy as jnp
    from jax import lax

    import kernels
    from kernels import conv, geometry, native, native_build

    assert os.path.realpath(kernels.__file__).startswith(os.path.realpath(sys.prefix)), \
        f"kernels comes from {kernels.__file__}, not from the venv {sys.prefix}"
    for cxx in ("c++", "g++", "gcc", "cc", "clang++", "clang"):
        assert shutil.which(cxx) is None, f"a compiler is on PATH: {shutil.which(cxx)}"
    assert native.available("warp") and native.available("dnnl_conv"), native.status()
    st = native.status()
    best = native_build.supported_variants(native_build.cpu_flags())[0]
    for name in ("warp", "dnnl_conv"):
        info = st["loaded"][name]
        want = best if best in native_build.VARIANTS[name] else native_build.VARIANTS[name][-1]
        assert info["from"] == "package" and info["variant"] == want, st
    assert st["loaded"]["dnnl_conv"]["onednn"] == "rpath", st
    with open("/proc/self/maps", encoding="utf-8") as f:
        dnnl = {line.split()[-1] for line in f if "libdnnl.so" in line}
    assert dnnl == {os.path.join(sys.prefix, "lib", "libdnnl.so.3")}, dnnl
    print("status:", st)

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 9, 10, 8, 3)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 3, 5)).astype(np.float32))
    t = jnp.asarray(rng.standard_normal((2, 5, 5, 4, 5)).astype(np.float32))

    def reference(x, w):
        return lax.conv_general_dilated(x, w, (2, 2, 2), [(1, 1)] * 3, dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))

    def onednn(x, w):
        return conv.conv_nd(x, w, 2, [(1, 1)] * 3)

    with conv.conv_lowering("cpu"), conv.use_onednn(True):
        assert "medzoo_dnnl_conv_fwd" in jax.jit(onednn).lower(x, w).as_text()
        got = jax.jit(onednn)(x, w), jax.grad(lambda x, w: jnp.sum(onednn(x, w) * t), argnums=(0, 1))(x, w)
    want = reference(x, w), jax.grad(lambda x, w: jnp.sum(reference(x, w) * t), argnums=(0, 1))(x, w)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    print("3D convolution through oneDNN equals lax.conv_general_dilated (value and both gradients)")

    img = rng.standard_normal((9, 10, 8, 2)).astype(np.float32)
    m = np.eye(4, dtype=np.float32)
    m[:3, :3] += rng.normal(0, 0.2, (3, 3)).astype(np.float32)
    out, _ = geometry.warp(img, None, matrix=m)
    geometry.set_warp_backend("xla")
    ref, _ = geometry.warp(img, None, matrix=m)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=2e-5)
    print("warp kernel equals its XLA form")


def check_opt_out() -> None:
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(OPT_OUT)], capture_output=True, text=True,
                         env={**os.environ, "MEDZOO_NATIVE": "0"}, timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    print("MEDZOO_NATIVE=0: the XLA forms, no warning")


if __name__ == "__main__":
    start = time.perf_counter()
    sys.path[:] = [p for p in sys.path if os.path.abspath(p) != os.path.dirname(os.path.abspath(__file__))]
    try:
        import kernels.native_build

        if kernels.native_build.wheel_platform():
            check_installed_kernels()
        else:
            print("check_wheel: not Linux x86-64: the wheel carries no kernels; checking the opt-out only")
        check_opt_out()
    except AssertionError as e:
        print(f"check_wheel: FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"check_wheel: ok ({time.perf_counter() - start:.1f} s)")
