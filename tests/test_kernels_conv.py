"""kernels.conv: the CPU lowering equals the plain lax reference in value and gradient.

Table-driven: 1D/2D/3D, strided, odd sizes, explicit padding, dilation, groups, transposed
convolutions with kernel == / < / > stride; float32 and bfloat16 tolerances.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from kernels import conv

TOL = {jnp.float32: 2e-5, jnp.bfloat16: 3e-2}  # relative to the output's max magnitude

CONV_CASES = [
    # x shape, w shape, strides, padding, dilation, groups
    ((2, 8, 8, 3), (3, 3, 3, 4), 2, "SAME", 1, 1),          # the U-Net's downsampling conv
    ((2, 7, 9, 3), (3, 3, 3, 4), 2, "SAME", 1, 1),          # odd sizes
    ((2, 7, 9, 3), (3, 3, 3, 4), (2, 3), "SAME", 1, 1),     # per-axis strides
    ((1, 7, 9, 3), (5, 4, 3, 2), (2, 3), ((2, 1), (0, 3)), 1, 1),  # explicit padding, even kernel
    ((1, 7, 9, 3), (3, 3, 3, 2), 2, "VALID", 1, 1),
    ((2, 9, 3), (3, 3, 4), 2, "SAME", 1, 1),                # 1D
    ((1, 5, 6, 7, 3), (3, 3, 3, 3, 4), 1, "SAME", 1, 1),    # 3D stride 1 (depth-tap slices)
    ((1, 5, 6, 7, 3), (3, 3, 3, 3, 4), 2, "SAME", 1, 1),    # 3D strided, odd sizes
    ((1, 6, 5, 7, 3), (3, 3, 3, 3, 2), 1, "SAME", 2, 1),    # 3D dilated
    ((1, 5, 6, 7, 4), (3, 3, 3, 2, 4), 1, "SAME", 1, 2),    # 3D grouped
    ((1, 8, 8, 4), (3, 3, 2, 4), 2, "SAME", 1, 2),          # strided + grouped: falls back to lax
    ((1, 9, 9, 2), (3, 3, 2, 2), 2, "SAME", 2, 1),          # strided + dilated: falls back to lax
]

TRANSPOSE_CASES = [
    # x shape, w shape, strides
    ((2, 5, 6, 3), (2, 2, 3, 4), 2),        # the U-Net's kernel == stride
    ((2, 5, 6, 3), (3, 3, 3, 4), 2),        # kernel > stride (odd)
    ((2, 5, 6, 3), (1, 1, 3, 4), 2),        # kernel < stride
    ((2, 7, 3), (3, 3, 2), 2),              # 1D
    ((1, 3, 4, 5, 3), (2, 2, 2, 3, 4), 2),  # 3D
    ((1, 3, 4, 5, 3), (3, 2, 4, 3, 2), (2, 1, 3)),
]


def _rand(shape, seed, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32).astype(dtype)


def _close(a, b, dtype, what):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != reference {b.shape}"
    scale = max(float(np.abs(b).max()), 1.0)
    err = float(np.abs(a - b).max()) / scale
    assert err <= TOL[dtype], f"{what}: max relative error {err:.2e} > {TOL[dtype]:.0e}"


def _value_and_grads(fn, x, w, cot):
    """``fn(x, w)``, and the gradients of ``sum(fn(x, w) * cot)``, in one compiled call."""
    def run(x, w):
        y, vjp = jax.vjp(fn, x, w)
        return (y,) + vjp(cot.astype(y.dtype))
    return jax.jit(run)(x, w)


def _compare(cpu_fn, ref_fn, x, w, seed, dtype):
    ref_shape = jax.eval_shape(ref_fn, x, w).shape
    cot = _rand(ref_shape, seed)
    got, want = _value_and_grads(cpu_fn, x, w, cot), _value_and_grads(ref_fn, x, w, cot)
    assert got[0].dtype == want[0].dtype
    for g, r, what in zip(got, want, ("value", "d/dx", "d/dw")):
        _close(g, r, dtype, what)
    return want[0]


@pytest.mark.parametrize("xs,ws,strides,padding,dilation,groups", CONV_CASES)
def test_conv_cpu_lowering_matches_reference(xs, ws, strides, padding, dilation, groups):
    x, w = _rand(xs, 0), _rand(ws, 1)
    _compare(lambda x, w: conv.conv_nd_cpu(x, w, strides, padding, dilation, groups),
             lambda x, w: conv.conv_nd_reference(x, w, strides, padding, dilation, groups), x, w, 2, jnp.float32)


@pytest.mark.parametrize("xs,ws,strides", TRANSPOSE_CASES)
def test_conv_transpose_cpu_lowering_matches_reference(xs, ws, strides):
    x, w = _rand(xs, 3), _rand(ws, 4)
    ref = _compare(lambda x, w: conv.conv_transpose_nd_cpu(x, w, strides),
                   lambda x, w: conv.conv_transpose_nd_reference(x, w, strides), x, w, 5, jnp.float32)
    st = (strides,) * (len(xs) - 2) if isinstance(strides, int) else strides
    assert ref.shape == (xs[0], *[s * k for s, k in zip(xs[1:-1], st)], ws[-1])


@pytest.mark.parametrize("op,xs,ws,strides", [
    ("conv", (2, 8, 8, 3), (3, 3, 3, 4), 2),
    ("conv", (1, 5, 6, 7, 3), (3, 3, 3, 3, 4), 2),
    ("conv", (1, 5, 6, 7, 3), (3, 3, 3, 3, 4), 1),
    ("transpose", (2, 5, 6, 3), (2, 2, 3, 4), 2),
    ("transpose", (1, 3, 4, 5, 3), (3, 3, 3, 3, 4), 2),
])
def test_public_ops_under_cpu_lowering_match_reference(op, xs, ws, strides):
    """What the zoo calls: conv_nd / conv_transpose_nd with the per-case CPU choices (incl. the custom VJP)."""
    x, w = _rand(xs, 7), _rand(ws, 8)
    if op == "conv":
        fast, ref = (lambda x, w: conv.conv_nd(x, w, strides)), (lambda x, w: conv.conv_nd_reference(x, w, strides))
    else:
        fast = lambda x, w: conv.conv_transpose_nd(x, w, strides)  # noqa: E731
        ref = lambda x, w: conv.conv_transpose_nd_reference(x, w, strides)  # noqa: E731
    with conv.conv_lowering("cpu"):
        _compare(fast, ref, x, w, 9, jnp.float32)


@pytest.mark.parametrize("xs,ws,strides,padding", [
    ((2, 5, 6, 3), (3, 3, 3, 4), 2, "torch"),          # MONAI's up-convolution alignment
    ((2, 5, 6, 3), (3, 3, 3, 4), 2, "SAME"),
    ((1, 4, 5, 3), (4, 2, 3, 2), (3, 2), "SAME"),      # kernel larger than / equal to the stride, per axis
    ((2, 7, 3), (3, 3, 2), 2, ((1, 2),)),              # 1D, explicit padding
    ((2, 7, 3), (3, 3, 2), 3, ((3, 1),)),              # kernel == stride, no adjoint padding: phase form
    ((2, 5, 6, 3), (2, 2, 3, 4), 2, "SAME"),           # kernel == stride: phase form
])
def test_transpose_backward_through_adjoint_matches_reference(xs, ws, strides, padding):
    """1D/2D transposed convolutions on CPU: lax forward, backward via the adjoint strided convolution."""
    x, w = _rand(xs, 10), _rand(ws, 11)
    with conv.conv_lowering("cpu"):
        _compare(lambda x, w: conv.conv_transpose_nd(x, w, strides, padding),
                 lambda x, w: conv.conv_transpose_nd_reference(x, w, strides, padding), x, w, 12, jnp.float32)


@pytest.mark.parametrize("op,xs,ws,strides", [
    ("conv", (1, 7, 9, 3), (3, 3, 3, 4), 2),
    ("conv", (1, 5, 6, 7, 3), (3, 3, 3, 3, 4), 2),
    ("transpose", (1, 3, 4, 5, 3), (2, 2, 2, 3, 4), 2),
])
def test_bfloat16_values_match_reference(op, xs, ws, strides):
    x, w = _rand(xs, 0, jnp.bfloat16), _rand(ws, 1, jnp.bfloat16)
    if op == "conv":
        got, want = conv.conv_nd_cpu(x, w, strides), conv.conv_nd_reference(x, w, strides)
    else:
        got, want = conv.conv_transpose_nd_cpu(x, w, strides), conv.conv_transpose_nd_reference(x, w, strides)
    assert got.dtype == want.dtype == jnp.bfloat16
    _close(got, want, jnp.bfloat16, "value")


FEW_CHANNEL_CASES = [
    # x shape, w shape, padding: Cin * Cout <= conv.FEW_CHANNELS -> channels-first shifted sums on CPU
    ((2, 7, 9, 2), (3, 3, 2, 2), "SAME"),               # the segmentation head's 2 -> 2 conv, odd sizes
    ((1, 5, 6, 7, 2), (3, 3, 3, 2, 2), "SAME"),         # 3D
    ((1, 5, 6, 7, 1), (3, 3, 3, 1, 4), "VALID"),        # 1 -> 4, no padding
    ((2, 9, 2), (5, 2, 3), ((1, 2),)),                  # 1D, even kernel, explicit asymmetric padding
    ((1, 4, 5, 6, 2), (1, 1, 1, 2, 2), "SAME"),         # 1^3 kernel
]


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("xs,ws,padding", FEW_CHANNEL_CASES)
def test_few_channel_convolution_matches_reference(xs, ws, padding, dtype):
    x, w = _rand(xs, 20, dtype), _rand(ws, 21, dtype)
    assert ws[-2] * ws[-1] <= conv.FEW_CHANNELS
    with conv.conv_lowering("cpu"):
        jaxpr = str(jax.make_jaxpr(lambda x, w: conv.conv_nd(x, w, 1, padding))(x, w))
        _compare(lambda x, w: conv.conv_nd(x, w, 1, padding), lambda x, w: conv.conv_nd_reference(x, w, 1, padding),
                 x, w, 22, dtype)
    assert "conv_general_dilated" not in jaxpr and "custom_vjp" in jaxpr  # the shifted-sum form was chosen


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("xs,ws,strides,padding", [
    ((1, 3, 4, 5, 3), (3, 3, 3, 3, 2), 2, "torch"),          # MONAI's last up-convolution: 32 -> 2 channels
    ((1, 3, 4, 5, 3), (3, 3, 3, 3, 2), 2, "SAME"),
    ((1, 3, 4, 5, 3), (2, 2, 2, 3, 4), 2, "SAME"),           # kernel == stride
    ((1, 3, 4, 5, 3), (3, 2, 4, 3, 2), (2, 1, 3), "SAME"),   # per-axis strides, kernel < / == / > stride
])
def test_few_output_channel_transpose_matches_reference(xs, ws, strides, padding, dtype):
    """3D transposed convolutions with few output channels: matmul + col2im forward, phase-form backward."""
    x, w = _rand(xs, 23, dtype), _rand(ws, 24, dtype)
    assert ws[-1] <= conv.FEW_OUTPUT_CHANNELS
    with conv.conv_lowering("cpu"):
        ref = _compare(lambda x, w: conv.conv_transpose_nd(x, w, strides, padding),
                       lambda x, w: conv.conv_transpose_nd_reference(x, w, strides, padding), x, w, 25, dtype)
    st = (strides,) * 3 if isinstance(strides, int) else strides
    assert ref.shape == (xs[0], *[s * k for s, k in zip(xs[1:-1], st)], ws[-1])


def test_lowering_selection_and_override(monkeypatch):
    x, w = _rand((1, 6, 6, 2), 0), _rand((3, 3, 2, 2), 1)
    monkeypatch.delenv(conv.ENV_VAR, raising=False)
    conv.set_conv_lowering(None)
    assert conv.get_conv_lowering() == "auto"
    expected = "cpu" if jax.default_backend() == "cpu" else "lax"
    assert conv.resolve_conv_lowering() == expected
    monkeypatch.setenv(conv.ENV_VAR, "lax")
    assert conv.resolve_conv_lowering() == "lax"
    with conv.conv_lowering("cpu"):  # the explicit override beats the environment
        assert conv.resolve_conv_lowering() == "cpu"
        jaxpr_cpu = str(jax.make_jaxpr(lambda x, w: conv.conv_transpose_nd(x, w, 2))(x, w))
    assert conv.resolve_conv_lowering() == "lax"
    jaxpr_lax = str(jax.make_jaxpr(lambda x, w: conv.conv_transpose_nd(x, w, 2))(x, w))
    # The CPU lowering wraps the transposed conv in a custom VJP (lax forward, adjoint-conv backward).
    assert "custom_vjp" in jaxpr_cpu and "custom_vjp" not in jaxpr_lax
    monkeypatch.setenv(conv.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="MEDZOO_CONV_LOWERING"):
        conv.resolve_conv_lowering()
    with pytest.raises(ValueError, match="conv lowering"):
        conv.set_conv_lowering("gpu")


@pytest.mark.parametrize("fn,args,match", [
    (conv.conv_nd, ((1, 6, 6, 2), (3, 3, 3, 2)), "Cin"),
    (conv.conv_nd, ((1, 6, 6, 2), (3, 2, 2)), "w must be"),
    (conv.conv_nd, ((1, 6, 6, 6, 6, 2), (3, 3, 3, 3, 2, 2)), "1-3 spatial dims"),
    (conv.conv_nd_cpu, ((1, 2, 2, 2), (5, 5, 2, 2)), "smaller than the dilated kernel"),
])
def test_bad_shapes_raise(fn, args, match):
    with pytest.raises(ValueError, match=match):
        fn(_rand(args[0], 0), _rand(args[1], 1), 1, "VALID" if "smaller" in match else "SAME")


@pytest.mark.parametrize("kw,match", [
    ({"strides": 0}, "strides"), ({"dilation": (1,)}, "dilation"), ({"padding": "FULL"}, "padding"),
    ({"padding": ((1, 1),)}, "padding"), ({"feature_group_count": 3}, "feature_group_count"),
])
def test_bad_arguments_raise(kw, match):
    x, w = _rand((1, 6, 6, 2), 0), _rand((3, 3, 2, 2), 1)
    for fn in (conv.conv_nd_reference, conv.conv_nd_cpu):
        with pytest.raises(ValueError, match=match):
            fn(x, w, **kw)


def test_unet_train_gradients_match_between_lowerings():
    """The whole zoo U-Net (strided convs + transposed convs, 3D) gives the same loss gradient either way."""
    from zoo.registry import create_model
    from zoo.training import jit_init

    x = _rand((1, 4, 4, 4, 1), 6)
    model = create_model("unet", spatial_dims=3, in_channels=1, num_classes=2, features=2, depth=2, norm="none")
    variables = jit_init(model.init)(jax.random.key(0), x)

    def loss(params):
        return jnp.mean(model.apply({"params": params}, x) ** 2)

    grads = {}
    for low in ("lax", "cpu"):
        with conv.conv_lowering(low):
            grads[low] = jax.jit(jax.grad(loss))(variables["params"])
    flat_l, flat_c = jax.tree.leaves(grads["lax"]), jax.tree.leaves(grads["cpu"])
    assert len(flat_l) == len(flat_c) > 0
    for a, b in zip(flat_c, flat_l):
        scale = max(float(jnp.abs(b).max()), 1e-6)
        assert float(jnp.abs(a - b).max()) / scale < 1e-4
