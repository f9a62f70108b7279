"""kernels.native and the native warp kernel (kernels/csrc/warp.cc) against the XLA form of geometry.warp.

The scipy references in tests/test_kernels_augment.py run through the default backend, i.e. this kernel
wherever the package carries it; here both forms are compared directly, including the cases scipy cannot check.
On Linux x86-64 the kernels are built with the package (setup.py), so a kernel that did not build or load fails
here; elsewhere (no kernels in the wheel) the module skips, as it does under the explicit ``MEDZOO_NATIVE=0``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from kernels import augment, geometry, native

ROOT = Path(__file__).resolve().parents[1]

from kernels import native_build  # noqa: E402

_SKIP_REASON = ("the package carries native kernels for Linux x86-64 only" if not native_build.wheel_platform() else
                "MEDZOO_NATIVE=0 opts out of the native kernels" if not native.enabled() else None)
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


def _both(*args, **kwargs):
    prev = geometry.set_warp_backend("xla")
    try:
        ref = geometry.warp(*args, **kwargs)
        geometry.set_warp_backend("native")
        out = geometry.warp(*args, **kwargs)
    finally:
        geometry.set_warp_backend(prev)
    return ref, out


def _sample(rng, shape, c, label_dtype=np.int32):
    d = len(shape)
    img = rng.standard_normal((*shape, c)).astype(np.float32)
    lab = rng.integers(0, 5, shape).astype(label_dtype)
    m = np.eye(d + 1, dtype=np.float32)
    m[:d, :d] += rng.normal(0, 0.2, (d, d)).astype(np.float32)
    m[:d, d] = rng.normal(0, 2, d).astype(np.float32)
    disp = rng.normal(0, 1.5, (d, *shape)).astype(np.float32)
    return img, lab, m, disp


def _assert_close(ref, out, label_dtype=None):
    np.testing.assert_allclose(np.asarray(out[0]), np.asarray(ref[0]), rtol=1e-5, atol=2e-5)
    assert out[0].dtype == ref[0].dtype and out[0].shape == ref[0].shape
    if ref[1] is None:
        assert out[1] is None
        return
    assert out[1].dtype == ref[1].dtype == np.dtype(label_dtype) and out[1].shape == ref[1].shape
    # A label may differ only where the sample point is within float32 rounding of a half-voxel boundary.
    assert np.mean(np.asarray(out[1]) != np.asarray(ref[1])) <= 1e-3


@pytest.mark.parametrize("shape,c", [((17, 23), 1), ((16, 16), 3), ((9, 11, 13), 1), ((7, 8, 6), 2),
                                     ((1, 7), 1), ((5, 1, 6), 1)])
@pytest.mark.parametrize("parts", [(), ("matrix",), ("displacement",), ("matrix", "displacement")])
def test_native_warp_equals_xla(shape, c, parts):
    rng = np.random.default_rng(len(shape) * 100 + c)
    img, lab, m, disp = _sample(rng, shape, c)
    kw = {k: v for k, v in (("matrix", m), ("displacement", disp)) if k in parts}
    for label in (lab, None):
        ref, out = _both(img, label, **kw)
        _assert_close(ref, out, np.int32)
    if not parts:  # the identity warp is exact in both forms
        ref, out = _both(img, lab)
        np.testing.assert_array_equal(np.asarray(out[0]), img)
        np.testing.assert_array_equal(np.asarray(out[1]), lab)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.bool_])
def test_native_warp_keeps_label_dtype(dtype):
    rng = np.random.default_rng(3)
    img, lab, m, disp = _sample(rng, (12, 10, 9), 1, dtype)
    if dtype == np.int8:
        lab = (lab.astype(np.int16) - 3).astype(np.int8)  # negative labels survive the int32 round trip
    ref, out = _both(img, lab, matrix=m, displacement=disp)
    _assert_close(ref, out, dtype)


def test_native_warp_outside_and_nan_points_read_zero():
    rng = np.random.default_rng(4)
    img, lab, _, _ = _sample(rng, (8, 9, 10), 2)
    lab = lab + 1  # no zero labels inside, so zeros in the output mean "outside"
    disp = np.zeros((3, 8, 9, 10), np.float32)
    disp[2, :, :, :3] = 50.0        # far outside along x
    disp[0, 0, 0, 5] = np.nan       # NaN coordinate
    disp[1, 2, 3, 4] = -0.5         # a half-voxel shift that stays inside
    ref, out = _both(img, lab, displacement=disp)
    _assert_close(ref, out, np.int32)
    o_img, o_lab = np.asarray(out[0]), np.asarray(out[1])
    assert np.all(o_img[:, :, :3] == 0) and np.all(o_lab[:, :, :3] == 0)
    assert np.all(o_img[0, 0, 5] == 0) and o_lab[0, 0, 5] == 0
    assert np.all(o_lab[:, :, 3:][np.abs(disp[:, :, :, 3:]).sum(0) == 0] > 0)


def test_native_warp_vmapped_batched_pipeline_equals_xla():
    rng = np.random.default_rng(6)
    imgs = rng.standard_normal((3, 20, 18, 16, 1)).astype(np.float32)
    labs = rng.integers(0, 3, (3, 20, 18, 16)).astype(np.int32)
    spec = {"rotate": {"max_angle": 15.0}, "scale": {"range": (0.9, 1.1)}, "elastic": {"alpha": 20.0, "sigma": 3.0}}
    outs = {}
    for backend in ("xla", "native"):
        prev = geometry.set_warp_backend(backend)
        try:
            outs[backend] = augment.make_batch_pipeline(spec)(jax.random.key(0), jnp.asarray(imgs), jnp.asarray(labs))
        finally:
            geometry.set_warp_backend(prev)
    _assert_close(outs["xla"], outs["native"], np.int32)
    assert not np.allclose(np.asarray(outs["native"][0]), imgs)  # the pipeline did warp


def test_native_warp_gradient_equals_xla():
    rng = np.random.default_rng(7)
    img, _, m, disp = _sample(rng, (9, 10, 8), 2)

    def loss(backend):
        def f(image, matrix, displacement):
            prev = geometry.set_warp_backend(backend)
            try:
                out, _ = geometry.warp(image, None, matrix=matrix, displacement=displacement)
            finally:
                geometry.set_warp_backend(prev)
            return jnp.sum(out ** 2)
        return jax.grad(f, argnums=(0, 1, 2))(jnp.asarray(img), jnp.asarray(m), jnp.asarray(disp))

    for g_xla, g_native in zip(loss("xla"), loss("native")):
        np.testing.assert_allclose(np.asarray(g_native), np.asarray(g_xla), rtol=1e-4, atol=1e-4)


def test_non_float32_images_use_the_xla_form_and_native_request_says_why():
    rng = np.random.default_rng(8)
    img = rng.standard_normal((6, 7, 1)).astype(jnp.bfloat16)
    out, _ = geometry.warp(img, None, matrix=np.eye(3, dtype=np.float32))
    assert out.dtype == jnp.bfloat16
    prev = geometry.set_warp_backend("native")
    try:
        with pytest.raises(ValueError, match="bfloat16"):
            geometry.warp(img, None)
        with pytest.raises(ValueError, match="int64|up to 32 bits"):
            geometry.warp(np.zeros((4, 4, 1), np.float32), np.zeros((4, 4), np.uint32))
    finally:
        geometry.set_warp_backend(prev)
    with pytest.raises(ValueError, match="warp backend must be one of"):
        geometry.set_warp_backend("fast")


def test_packaged_kernels_load_the_widest_variant_this_cpu_runs():
    assert native.available("warp") and native.available("dnnl_conv"), native.status()
    st = native.status()
    best = native_build.supported_variants(native_build.cpu_flags())[0]
    for name in ("warp", "dnnl_conv"):
        info = st["loaded"][name]
        assert st[name] == f"ready: {info['path']}"
        if native.mode() == "package":
            want = best if best in native_build.VARIANTS[name] else native_build.VARIANTS[name][-1]
            assert info["from"] == "package" and info["variant"] == want
            assert Path(info["path"]) == native.LIB_DIR / native_build.library_file(name, want)
    with pytest.raises(ValueError, match="unknown native kernel"):
        native.available("nope")


@pytest.mark.parametrize("flags,want", [
    ("", []),
    ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3", ["x86-64-v2"]),
    ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave", ["x86-64-v3", "x86-64-v2"]),
    ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave avx512f avx512bw "
     "avx512cd avx512dq avx512vl", ["x86-64-v4", "x86-64-v3", "x86-64-v2"]),
    # AVX-512 without the AVX2 level below it (a hypervisor hiding flags): only the baseline
    ("cx16 lahf_lm popcnt pni sse4_1 sse4_2 ssse3 avx512f avx512bw avx512cd avx512dq avx512vl", ["x86-64-v2"]),
])
def test_variant_choice_follows_the_cpu_flags(flags, want):
    assert native_build.supported_variants(flags.split()) == want
    assert native_build.supported_variants(flags.split(), ("x86-64-v2",)) == [v for v in want if v == "x86-64-v2"]


def test_every_variant_this_cpu_runs_equals_xla():
    """Each library the wheel carries for this CPU (not only the one loaded by default) gives the XLA form's
    result; a variant the CPU cannot run is refused with the reason."""
    for variant in native_build.supported_variants(native_build.cpu_flags(), native_build.VARIANTS["warp"]):
        res = _run("""
            import numpy as np
            from kernels import geometry, native
            rng = np.random.default_rng(0)
            img = rng.standard_normal((9, 10, 8, 2)).astype(np.float32)
            m = np.eye(4, dtype=np.float32); m[:3, :3] += rng.normal(0, 0.2, (3, 3)).astype(np.float32)
            out, _ = geometry.warp(img, None, matrix=m)
            geometry.set_warp_backend("xla")
            ref, _ = geometry.warp(img, None, matrix=m)
            np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=2e-5)
            print("LOADED", native.status()["loaded"]["warp"]["variant"])
        """, {"MEDZOO_NATIVE_VARIANT": variant, "MEDZOO_NATIVE": "1"})
        assert res.returncode == 0, res.stderr
        assert f"LOADED {variant}" in res.stdout
    res = _run(_FALLBACK, {"MEDZOO_NATIVE_VARIANT": "x86-64-v9", "MEDZOO_NATIVE": "1"})
    assert res.returncode == 0, res.stderr
    assert "STATUS unavailable: RuntimeError: MEDZOO_NATIVE_VARIANT=x86-64-v9 is not one this CPU runs" in res.stdout
    assert "WARNINGS 1" in res.stdout


def test_developer_build_status_and_cached_library(dev_cache):
    """MEDZOO_NATIVE=build: compiled on first use (-march=native) into $MEDZOO_KERNEL_CACHE."""
    res = _run("""
        from pathlib import Path
        from kernels import native
        assert native.available("warp"), native.status()
        assert native.status()["warp"].startswith("ready: ")
        path = native.library_path("warp")
        assert path.exists() and path.suffix == ".so" and path.parent == native.cache_dir()
        assert native.status()["loaded"]["warp"] == {"variant": "native", "from": "build", "path": str(path)}
    """, {"MEDZOO_NATIVE": "build", "MEDZOO_KERNEL_CACHE": str(dev_cache)})
    assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def dev_cache(tmp_path_factory):
    """One kernel cache for the MEDZOO_NATIVE=build tests of this module (the first one compiles, a few seconds)."""
    return tmp_path_factory.mktemp("kernel-cache")


def _run(code: str, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


_FALLBACK = """
    import warnings
    import numpy as np
    from kernels import geometry, native
    img = np.arange(30, dtype=np.float32).reshape(5, 6, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out, _ = geometry.warp(img, None, matrix=np.eye(3, dtype=np.float32))
    assert np.array_equal(np.asarray(out), img)
    print("STATUS", native.status()["warp"])
    print("WARNINGS", len([w for w in caught if "native" in str(w.message)]))
"""


def test_opt_out_uses_xla_without_warning():
    res = _run(_FALLBACK, {"MEDZOO_NATIVE": "0"})
    assert res.returncode == 0, res.stderr
    assert "STATUS disabled by MEDZOO_NATIVE=0" in res.stdout and "WARNINGS 0" in res.stdout


def test_missing_compiler_falls_back_with_one_warning(tmp_path):
    """The developer's build (MEDZOO_NATIVE=build) without a compiler: the XLA form, one warning."""
    res = _run(_FALLBACK, {"CXX": str(tmp_path / "no-such-compiler"), "MEDZOO_KERNEL_CACHE": str(tmp_path),
                           "MEDZOO_NATIVE": "build"})
    assert res.returncode == 0, res.stderr
    assert "STATUS unavailable: RuntimeError: no C++ compiler found" in res.stdout
    assert "WARNINGS 1" in res.stdout
    assert not list(tmp_path.glob("*.so"))


def test_installation_without_kernels_falls_back_with_one_warning(tmp_path):
    """A wheel without kernels (MEDZOO_BUILD_NATIVE=0, or another platform's): both kernels take the XLA form,
    with one warning between them, and no compiler is asked for."""
    res = _run("""
        import warnings
        from pathlib import Path
        import jax.numpy as jnp
        import numpy as np
        from kernels import conv, geometry, native
        native.LIB_DIR = Path(%r)
        img = np.arange(30, dtype=np.float32).reshape(5, 6, 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out, _ = geometry.warp(img, None, matrix=np.eye(3, dtype=np.float32))
            with conv.conv_lowering("cpu"):
                y = conv.conv_nd(jnp.ones((1, 5, 5, 5, 4)), jnp.ones((3, 3, 3, 4, 3)))
        assert np.array_equal(np.asarray(out), img) and float(y[0, 2, 2, 2, 0]) == 108.0
        print("STATUS", native.status()["warp"])
        print("STATUS", native.status()["dnnl_conv"])
        print("WARNINGS", len([w for w in caught if "native" in str(w.message)]))
    """ % str(tmp_path), {"CXX": str(tmp_path / "no-such-compiler"), "MEDZOO_NATIVE": "1"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("STATUS unavailable: RuntimeError: this installation carries no native kernels") == 2
    assert "WARNINGS 1" in res.stdout


def test_fresh_cache_builds_atomically(dev_cache):
    res = _run("""
        from kernels import native
        assert native.available("warp"), native.status()
        print("BUILT", native.library_path("warp"))
    """, {"MEDZOO_KERNEL_CACHE": str(dev_cache), "MEDZOO_NATIVE": "build"})
    assert res.returncode == 0, res.stderr
    built = list(dev_cache.glob("*.so"))
    assert len(built) == 1 and f"BUILT {built[0]}" in res.stdout
    assert not list(dev_cache.glob("*.tmp*"))  # no temporary left behind


def test_accelerator_lowering_uses_xla_gathers():
    """platform_dependent: the CPU program calls the kernel, a CUDA program (lowered here, not run) does not."""
    f = jax.jit(lambda x, y: geometry.warp(x, y, matrix=jnp.eye(3)))
    args = (jnp.zeros((8, 9, 1), jnp.float32), jnp.zeros((8, 9), jnp.int32))
    allow = [jax.export.DisabledSafetyCheck.custom_call("medzoo_warp")]
    text = {p: jax.export.export(f, platforms=(p,), disabled_checks=allow)(*args).mlir_module() for p in ("cpu", "cuda")}
    assert "medzoo_warp" in text["cpu"]
    assert "medzoo_warp" not in text["cuda"] and "gather" in text["cuda"]


# ----------------------------------------------------------------------------- oneDNN convolutions (2D, 3D)

from kernels import conv  # noqa: E402

onednn = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")  # a build failure fails, not skips

CONV3D_CASES = [
    # x spatial, Cin, Cout, kernel, strides, padding
    ((9, 10, 8), 3, 5, (3, 3, 3), 1, "SAME"),
    ((10, 9, 11), 4, 6, (3, 3, 3), 2, "SAME"),
    ((7, 8, 9), 3, 4, (3, 3, 3), (1, 2, 1), [(1, 0), (0, 1), (2, 1)]),
    ((8, 8, 8), 5, 3, (2, 2, 2), 2, "VALID"),
    ((11, 6, 7), 4, 4, (1, 1, 1), 1, "SAME"),
    ((6, 7, 5), 6, 8, (1, 3, 3), (2, 1, 1), "SAME"),
    ((9, 10), 3, 5, (3, 3), 2, "SAME"),  # 2D goes the same way
    ((7, 8), 4, 6, (3, 3), 1, [(1, 1), (0, 2)]),
    # stride 1, Cout < 16 and < Cin: the weight gradient with x and dy swapped (dnnl_conv.cc, swapped_geometry)
    ((9, 10, 8), 8, 3, (3, 3, 3), 1, "SAME"),
    ((7, 8, 9), 6, 2, (3, 2, 3), 1, [(2, 0), (0, 1), (1, 1)]),
    ((8, 9), 5, 2, (3, 3), 1, "VALID"),
    ((7, 8), 6, 3, (3, 3), 1, [(3, 1), (1, 1)]),  # padded beyond the kernel: not swapped
]


@onednn
@pytest.mark.parametrize("spatial,cin,cout,kernel,strides,padding", CONV3D_CASES)
def test_onednn_conv_equals_lax_in_value_and_both_gradients(spatial, cin, cout, kernel, strides, padding):
    rng = np.random.default_rng(cin * 10 + cout)
    x = jnp.asarray(rng.standard_normal((2, *spatial, cin)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((*kernel, cin, cout)).astype(np.float32))
    _assert_onednn_matches(lambda x, w: conv.conv_nd(x, w, strides, padding),
                           lambda x, w: conv.conv_nd_reference(x, w, strides, padding), x, w, "medzoo_dnnl_conv_fwd")


def _assert_onednn_matches(fn, reference, x, w, target):
    """``fn`` under the cpu lowering with oneDNN calls ``target`` and equals ``reference`` in value and both
    gradients (of a random linear functional of the output)."""
    t = jnp.asarray(np.random.default_rng(0).standard_normal(reference(x, w).shape).astype(np.float32))

    def value_and_grads(f):
        return f(x, w), jax.grad(lambda x, w: jnp.sum(f(x, w) * t), argnums=(0, 1))(x, w)

    ref = value_and_grads(reference)
    with conv.conv_lowering("cpu"), conv.use_onednn(True):
        f = jax.jit(fn)
        assert target in f.lower(x, w).as_text()
        out = value_and_grads(f)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))


@onednn
def test_onednn_conv3d_under_vmap_and_opt_out():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((3, 2, 6, 7, 5, 4)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 3, 4, 6)).astype(np.float32))
    with conv.conv_lowering("cpu"):
        out = jax.vmap(lambda xi: conv.conv_nd(xi, w, 2))(x)
        with conv.use_onednn(False):
            text = jax.jit(lambda x: conv.conv_nd(x, w)).lower(x[0]).as_text()
    ref = jax.vmap(lambda xi: conv.conv_nd_reference(xi, w, 2))(x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-4, atol=1e-4)
    assert "medzoo_dnnl" not in text
    bf16 = x[0].astype(jnp.bfloat16)
    with conv.conv_lowering("cpu"):  # bfloat16 goes to oneDNN only where it is native (tests/test_kernels_bf16.py)
        text = jax.jit(lambda x: conv.conv_nd(x, w.astype(jnp.bfloat16))).lower(bf16).as_text()
    assert ("medzoo_dnnl" in text) == native.onednn_bf16()


@onednn
def test_onednn_conv3d_accelerator_lowering_keeps_the_xla_rewrites():
    x, w = jnp.zeros((1, 6, 6, 6, 3), jnp.float32), jnp.zeros((3, 3, 3, 3, 4), jnp.float32)
    with conv.conv_lowering("cpu"):
        f = jax.jit(lambda x: conv.conv_nd(x, w))
        allow = [jax.export.DisabledSafetyCheck.custom_call("medzoo_dnnl_conv_fwd")]
        text = {p: jax.export.export(f, platforms=(p,), disabled_checks=allow)(x).mlir_module() for p in ("cpu", "cuda")}
    assert "medzoo_dnnl_conv_fwd" in text["cpu"] and "medzoo_dnnl" not in text["cuda"]


@onednn
def test_onednn_residual_unet_3d_gradient_equals_xla_rewrites():
    """The whole network's gradient (many convolutions, some of them run by XLA on its pool threads)."""
    from zoo import create_model

    model = create_model("residual_unet", spatial_dims=3, in_channels=1, num_classes=2, norm="batch")
    x = jnp.asarray(np.random.default_rng(2).standard_normal((1, 32, 32, 32, 1)).astype(np.float32))
    variables = model.init(jax.random.key(0), x, train=False)

    def grads():
        def loss(p):
            y, _ = model.apply({**variables, "params": p}, x, train=True, mutable=["batch_stats"])
            return jnp.mean(y ** 2)
        return jax.jit(jax.grad(loss))(variables["params"])

    with conv.conv_lowering("cpu"):
        with conv.use_onednn(True):
            got = grads()
        with conv.use_onednn(False):
            want = grads()
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-3, atol=2e-5)


def test_native_opt_out_keeps_3d_convolutions_in_xla():
    res = _run("""
        import jax, jax.numpy as jnp
        from kernels import conv, native
        x, w = jnp.ones((1, 5, 5, 5, 4)), jnp.ones((3, 3, 3, 4, 3))  # (more than the few-channel form takes)
        with conv.conv_lowering("cpu"):
            text = jax.jit(lambda x: conv.conv_nd(x, w)).lower(x).as_text()
            y = conv.conv_nd(x, w)
        assert "medzoo_dnnl" not in text and float(y[0, 2, 2, 2, 0]) == 108.0
        print("STATUS", native.status()["dnnl_conv"])
    """, {"MEDZOO_NATIVE": "0"})
    assert res.returncode == 0, res.stderr
    assert "STATUS disabled by MEDZOO_NATIVE=0" in res.stdout


@onednn
@pytest.mark.parametrize("spatial,cin,cout,kernel,strides,padding", [
    ((5, 6, 4), 6, 5, 3, 2, "SAME"), ((5, 6, 4), 6, 5, 2, 2, "SAME"), ((4, 5, 3), 3, 4, 3, 2, "torch"),
    ((5, 4, 6), 4, 3, 3, (2, 1, 2), "SAME"), ((4, 4, 5), 5, 2, 4, 2, "SAME"), ((3, 4, 3), 4, 6, 2, 2, [(1, 1)] * 3),
    ((5, 6), 6, 5, 3, 2, "SAME"), ((4, 5), 3, 4, 2, 2, "SAME")])
def test_onednn_conv_transpose_equals_lax_in_value_and_both_gradients(spatial, cin, cout, kernel, strides, padding):
    rng = np.random.default_rng(cin * 10 + cout + kernel)
    x = jnp.asarray(rng.standard_normal((2, *spatial, cin)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((kernel,) * len(spatial) + (cin, cout)).astype(np.float32))
    _assert_onednn_matches(lambda x, w: conv.conv_transpose_nd(x, w, strides, padding),
                           lambda x, w: conv.conv_transpose_nd_reference(x, w, strides, padding), x, w,
                           "medzoo_dnnl_conv_bwd_data")


_OMP_WAIT = """
    import ctypes, os, sys
    from kernels import native
    assert native.available("dnnl_conv"), native.status()
    print("STATUS", native.status()["loaded"]["dnnl_conv"]["omp_wait"])
    print("ENV", os.environ.get("OMP_WAIT_POLICY"))
    sys.stdout.flush()
    gomp = ctypes.CDLL("libgomp.so.1")
    if hasattr(gomp, "omp_display_env"):  # libgomp's own report of what it loaded with (stderr; GCC >= 12)
        gomp.omp_display_env(0)
    else:
        print("NO_DISPLAY_ENV")
"""


@onednn
@pytest.mark.parametrize("user, want", [(None, "PASSIVE"), ("active", "ACTIVE")])
def test_onednn_openmp_team_waits_passively_unless_the_user_says(user, want, monkeypatch):
    """oneDNN's libgomp loads with OMP_WAIT_POLICY=PASSIVE (its spinning took a core from XLA's ops between the
    convolutions); a user's setting wins; the process environment is left as it was."""
    for k in native.OMP_WAIT_ENV:
        monkeypatch.delenv(k, raising=False)
    res = _run(_OMP_WAIT, {"OMP_WAIT_POLICY": user} if user else {})
    assert res.returncode == 0, res.stderr
    assert "NO_DISPLAY_ENV" in res.stdout or f"OMP_WAIT_POLICY = '{want}'" in res.stderr
    assert f"ENV {user}" in res.stdout
    assert ("'PASSIVE'" if user is None else f"'{user}'") in res.stdout
