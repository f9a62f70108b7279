"""bfloat16 convolutions through oneDNN (kernels/csrc/dnnl_conv.cc, routed by kernels/conv.py) where the CPU computes
bfloat16 natively (AVX512-BF16 or AMX, ``native.onednn_bf16()``), against the float32 reference on the same
(bfloat16-rounded) operands, within bfloat16 rounding; and the XLA path kept where it is not native.

Like tests/test_kernels_native.py, the module skips only where the package carries no kernels (not Linux x86-64,
or ``MEDZOO_NATIVE=0``): a kernel that did not build or load fails here. The tests that need native bfloat16 skip,
naming the instruction set oneDNN found, on CPUs without it."""

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

from kernels import conv, native, native_build

ROOT = Path(__file__).resolve().parents[1]
BF16 = jnp.bfloat16

_SKIP_REASON = ("the package carries native kernels for Linux x86-64 only" if not native_build.wheel_platform() else
                "MEDZOO_NATIVE=0 opts out of the native kernels" if not native.enabled() else None)
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


def _no_native_bf16() -> str | None:
    """Why this host cannot run the bfloat16 kernels natively, or None (also None when the library failed to load:
    then the routing assertions fail, as a build failure should)."""
    if _SKIP_REASON is not None or not native.available("dnnl_conv") or native.onednn_bf16():
        return None
    isa = native.status()["loaded"]["dnnl_conv"]["bf16"]["isa"]
    return (f"this CPU has no native bfloat16 for oneDNN (its instruction set here: {isa}; AVX512-BF16 or AMX "
            f"needed), so bfloat16 convolutions stay on XLA")


def _skip_without_native_bf16():
    reason = _no_native_bf16()
    if reason:
        pytest.skip(reason)


def _bf16_and_reference(fn, reference, x, w, target):
    """``fn`` on bfloat16 operands under the cpu lowering (asserting it calls ``target``) and ``reference`` in float32
    on the same rounded operands: (value, dx, dw) of each, for a random bfloat16 cotangent."""
    xb, wb = x.astype(BF16), w.astype(BF16)
    t = jnp.asarray(np.random.default_rng(0).standard_normal(reference(xb, wb).shape), BF16)

    def value_and_grads(f, x, w, t):
        y, vjp = jax.vjp(f, x, w)
        return (y, *vjp(t))

    with conv.conv_lowering("cpu"):
        f = jax.jit(fn)
        assert target in f.lower(xb, wb).as_text()
        got = value_and_grads(f, xb, wb, t)
    want = value_and_grads(reference, xb.astype(jnp.float32), wb.astype(jnp.float32), t.astype(jnp.float32))
    return got, want


def _assert_bf16_close(got, want):
    for name, a, b in zip(("y", "dx", "dw"), got, want):
        assert a.dtype == BF16 and a.shape == b.shape, (name, a.dtype, a.shape, b.shape)
        scale = float(jnp.max(jnp.abs(b)))
        # bfloat16 keeps 8 significant bits: a result is within 2^-8 of itself once rounded; oneDNN sums in float32
        np.testing.assert_allclose(np.asarray(a.astype(jnp.float32)), np.asarray(b), rtol=1e-2, atol=1e-2 * scale,
                                   err_msg=name)


def _operands(spatial, cin, cout, kernel, seed):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((2, *spatial, cin)).astype(np.float32))
    w = jnp.asarray(rng.standard_normal((*kernel, cin, cout)).astype(np.float32))
    return x, w


@pytest.mark.parametrize("spatial,cin,cout,kernel,strides,padding", [
    ((9, 10), 3, 5, (3, 3), 1, "SAME"),
    ((9, 10), 4, 6, (3, 3), 2, "SAME"),
    ((8, 7, 9), 3, 5, (3, 3, 3), 1, "SAME"),
    ((9, 8, 7), 4, 6, (3, 3, 3), (2, 1, 2), [(1, 0), (0, 1), (2, 1)]),
    ((8, 8, 8), 5, 3, (2, 2, 2), 2, "VALID"),
    ((7, 8, 9), 6, 2, (3, 2, 3), 1, [(2, 0), (0, 1), (1, 1)]),  # the swapped weight gradient
    ((8, 9), 5, 2, (3, 3), 1, "VALID"),
])
def test_bf16_conv_equals_float32_reference_in_value_and_both_gradients(spatial, cin, cout, kernel, strides,
                                                                         padding):
    _skip_without_native_bf16()
    x, w = _operands(spatial, cin, cout, kernel, cin * 10 + cout)
    _assert_bf16_close(*_bf16_and_reference(lambda x, w: conv.conv_nd(x, w, strides, padding),
                                            lambda x, w: conv.conv_nd_reference(x, w, strides, padding), x, w,
                                            "medzoo_dnnl_conv_fwd"))


@pytest.mark.parametrize("spatial,cin,cout,kernel,strides,padding", [
    ((5, 6), 6, 5, 3, 2, "SAME"),
    ((4, 5), 4, 3, 2, 2, "SAME"),
    ((4, 5, 3), 3, 4, 3, 2, "torch"),
    ((3, 4, 3), 5, 6, 2, 2, "SAME"),
])
def test_bf16_conv_transpose_equals_float32_reference_in_value_and_both_gradients(spatial, cin, cout, kernel,
                                                                                   strides, padding):
    _skip_without_native_bf16()
    x, w = _operands(spatial, cin, cout, (kernel,) * len(spatial), cin * 10 + cout + kernel)
    _assert_bf16_close(*_bf16_and_reference(lambda x, w: conv.conv_transpose_nd(x, w, strides, padding),
                                            lambda x, w: conv.conv_transpose_nd_reference(x, w, strides, padding),
                                            x, w, "medzoo_dnnl_conv_bwd_data"))


def test_bf16_routing_keeps_the_few_channel_form_and_mixed_types_on_xla():
    """Only same-type bfloat16 operands of the ordinary cases go to oneDNN; the status says bfloat16 is native."""
    _skip_without_native_bf16()
    info = native.status()["loaded"]["dnnl_conv"]["bf16"]
    assert info["native"] is True and info["isa"].startswith("avx512_core_")
    x = jnp.zeros((1, 6, 6, 6, 2), BF16)
    with conv.conv_lowering("cpu"):
        few = jax.jit(lambda x, w: conv.conv_nd(x, w)).lower(x, jnp.zeros((3, 3, 3, 2, 2), BF16)).as_text()
        wide = jax.jit(lambda x, w: conv.conv_nd(x, w)).lower(x, jnp.zeros((3, 3, 3, 2, 8), BF16)).as_text()
        with conv.use_onednn(False):
            off = jax.jit(lambda x, w: conv.conv_nd(x, w)).lower(x, jnp.zeros((3, 3, 3, 2, 8), BF16)).as_text()
    assert "medzoo_dnnl" not in few and "medzoo_dnnl_conv_fwd" in wide and "medzoo_dnnl" not in off


def test_kernel_rejects_other_types_with_a_clear_error():
    """The FFI handlers take float32 or bfloat16, all operands alike, and say so."""
    if not native.available("dnnl_conv"):
        pytest.fail(f"dnnl_conv did not load: {native.status()['dnnl_conv']}")
    x, w = jnp.ones((1, 5, 5, 4), jnp.float16), jnp.ones((3, 3, 4, 6), jnp.float16)
    with pytest.raises(Exception, match="medzoo_dnnl_conv: operands must be float32 or bfloat16"):
        jax.block_until_ready(conv.conv_onednn(x, w, (1, 1), [(1, 1), (1, 1)]))
    with pytest.raises(Exception, match="medzoo_dnnl_conv: the operands of one call must share their type"):
        jax.block_until_ready(conv.conv_onednn(x.astype(BF16), w.astype(jnp.float32), (1, 1), [(1, 1), (1, 1)]))


def test_without_native_bf16_bf16_stays_on_xla_and_status_says_why():
    """oneDNN capped below AVX512-BF16 (``ONEDNN_MAX_CPU_ISA``, as on a CPU without it): the status names its
    instruction set and that bfloat16 is not native; bfloat16 convolutions stay on XLA, float32 ones go to oneDNN."""
    code = """
        import jax, jax.numpy as jnp
        from kernels import conv, native
        x, w = jnp.ones((1, 5, 5, 5, 4)), jnp.ones((3, 3, 3, 4, 3))
        with conv.conv_lowering("cpu"), conv.use_onednn(True):
            f32 = jax.jit(lambda x, w: conv.conv_nd(x, w)).lower(x, w).as_text()
            bf = jax.jit(lambda x, w: conv.conv_nd(x, w))
            bf16 = bf.lower(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)).as_text()
            y = bf(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
        assert "medzoo_dnnl_conv_fwd" in f32 and "medzoo_dnnl" not in bf16 and float(y[0, 2, 2, 2, 0]) == 108.0
        print("BF16", native.onednn_bf16(), native.status()["loaded"]["dnnl_conv"]["bf16"])
    """
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "BF16 False {'native': False, 'isa': '" in res.stdout
    assert "avx512_core_bf16" not in res.stdout
