"""Channels-last N-d convolution ops used by every model in the zoo.

All models build their convolutions through :func:`conv_nd` and :func:`conv_transpose_nd`
(via ``zoo.layers``) so that the lowering is chosen in one place. Two lowerings exist:

* ``"lax"``: plain ``lax.conv_general_dilated`` / ``lax.conv_transpose``. This is the reference
  (:func:`conv_nd_reference`, :func:`conv_transpose_nd_reference`) and the choice on GPU/TPU,
  where cuDNN/XLA handle strided, transposed and 3D convolutions natively.
* ``"cpu"``: the same maths rewritten for XLA:CPU, which has slow generic paths for lhs-dilated
  (transposed) convolutions, strided 3D convolutions' gradients and 3D convolutions in general
  (measurements in ``docs/performance.md``). The building blocks, each tested against the reference:

  - :func:`conv_nd_cpu`: a strided convolution becomes space-to-depth of the padded input followed by a
    stride-1 convolution with a ``ceil(K / s)`` kernel on ``s**D * Cin`` channels (polyphase form); a
    stride-1 3D convolution becomes the sum over the depth taps of 2D convolutions on
    ``(batch * depth)``-stacked slices;
  - :func:`conv_transpose_nd_cpu`: one stride-1 convolution producing all ``s**D`` output phases as
    channels, then depth-to-space (no lhs dilation, no multiplications by inserted zeros).

  What :func:`conv_nd` / :func:`conv_transpose_nd` use under ``"cpu"`` was chosen by measurement:
  3D convolutions and 3D transposed convolutions take the rewritten forms both ways; 1D/2D strided
  convolutions stay on ``lax`` (faster there both ways); 1D/2D transposed convolutions run ``lax``
  forward and, backward, the adjoint strided convolution when kernels overlap (``K > stride``), else the
  phase form (a ``jax.custom_vjp``; exact: the transposed convolution is that convolution's adjoint).

  On CPU hosts where :mod:`kernels.native` builds ``csrc/dnnl_conv.cc`` (the ``onednn-cpu-gomp`` wheels, a C++
  compiler), 2D and 3D float32 convolutions and transposed convolutions (no dilation, one group; bfloat16 ones
  too where oneDNN computes bfloat16 natively, ``native.onednn_bf16()``: AVX512-BF16 or AMX) go to
  oneDNN instead (:func:`conv_onednn`, :func:`conv_transpose_onednn`: the kernels PyTorch's CPU convolutions
  use, forward and both gradients), except the few-channel convolutions, which stay shifted sums. Inside
  ``jax.lax.platform_dependent``, so accelerators keep the XLA forms; :func:`use_onednn` switches it per trace.

The lowering is ``"auto"`` by default: ``"cpu"`` when ``jax.default_backend() == "cpu"``, else
``"lax"``. Override with the environment variable ``MEDZOO_CONV_LOWERING=auto|lax|cpu`` or
:func:`set_conv_lowering` / the :func:`conv_lowering` context manager. The choice is made when
a function is traced, so change it before ``jax.jit`` traces (a cached trace keeps its lowering).

Shapes: ``x: [B, *S, Cin]``, ``w: [*K, Cin / groups, Cout]`` (Flax's kernel layout), 1-3 spatial dims.
"""

from __future__ import annotations

import contextlib
import os
from typing import Sequence

import jax
import numpy as np
from jax import lax

__all__ = ["conv_nd", "conv_transpose_nd", "conv_nd_reference", "conv_transpose_nd_reference",
           "conv_nd_cpu", "conv_transpose_nd_cpu", "LOWERINGS", "set_conv_lowering", "get_conv_lowering",
           "resolve_conv_lowering", "conv_lowering", "conv_onednn", "conv_transpose_onednn", "use_onednn"]

LOWERINGS = ("auto", "lax", "cpu")
ENV_VAR = "MEDZOO_CONV_LOWERING"
_override: str | None = None


# ----------------------------------------------------------------------------- lowering choice

def _check_lowering(name, source: str) -> str:
    if name not in LOWERINGS:
        raise ValueError(f"{source} must be one of {LOWERINGS}, got {name!r}")
    return name


def set_conv_lowering(name: str | None) -> None:
    """Force a lowering (``"auto"`` | ``"lax"`` | ``"cpu"``) for later traces; ``None`` clears it."""
    global _override
    _override = None if name is None else _check_lowering(name, "conv lowering")


def get_conv_lowering() -> str:
    """The configured lowering: :func:`set_conv_lowering`, else ``$MEDZOO_CONV_LOWERING``, else ``"auto"``."""
    if _override is not None:
        return _override
    return _check_lowering(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


def resolve_conv_lowering() -> str:
    """The lowering that the next trace will use: ``"lax"`` or ``"cpu"``."""
    name = get_conv_lowering()
    if name == "auto":
        return "cpu" if jax.default_backend() == "cpu" else "lax"
    return name


@contextlib.contextmanager
def conv_lowering(name: str | None):
    """Context manager: ``with conv_lowering("lax"): ...`` (traces inside use that lowering)."""
    global _override
    previous = _override
    set_conv_lowering(name)
    try:
        yield
    finally:
        _override = previous


# ----------------------------------------------------------------------------- argument handling

def _dimension_numbers(nd: int):
    if nd not in (1, 2, 3):
        raise ValueError(f"x: only 1-3 spatial dims are supported, got {nd} (x must be [B, *S, C])")
    spatial = "DHW"[-nd:]
    return lax.conv_dimension_numbers((1,) * (nd + 2), (1,) * (nd + 2),
                                      ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C"))


def _same_padding(kernel: Sequence[int], dilation: Sequence[int]):
    """'SAME' padding pairs: ``(E - 1) // 2`` low and the rest high, for the dilated kernel extent ``E``,
    whatever the stride (PyTorch's ``padding=K // 2`` for odd ``K``; output ``ceil(S / s)`` for odd ``K``).
    Note this differs from XLA's strided "SAME" (which pads ``(0, 1)`` for ``K=3, s=2`` on even sizes)."""
    pads = []
    for k, d in zip(kernel, dilation):
        eff = (k - 1) * d + 1
        pads.append(((eff - 1) // 2, eff - 1 - (eff - 1) // 2))
    return pads


def _tuple(v, nd: int, name: str):
    t = (v,) * nd if isinstance(v, (int, np.integer)) else tuple(v)
    if len(t) != nd or not all(isinstance(i, (int, np.integer)) and i >= 1 for i in t):
        raise ValueError(f"{name} must be a positive int or {nd} positive ints, got {v!r}")
    return tuple(int(i) for i in t)


def _check(x, w, feature_group_count):
    nd = x.ndim - 2
    _dimension_numbers(nd)
    if w.ndim != x.ndim:
        raise ValueError(f"w must be [*K, Cin, Cout] with {nd} kernel dims; got w {tuple(w.shape)} "
                         f"for x {tuple(x.shape)}")
    g = feature_group_count
    if not isinstance(g, (int, np.integer)) or g < 1 or x.shape[-1] % g or w.shape[-1] % g:
        raise ValueError(f"feature_group_count must be a positive int dividing Cin={x.shape[-1]} and "
                         f"Cout={w.shape[-1]}, got {g!r}")
    if w.shape[-2] * g != x.shape[-1]:
        raise ValueError(f"w {tuple(w.shape)} expects Cin={w.shape[-2] * g} input channels "
                         f"(feature_group_count={g}); x {tuple(x.shape)} has {x.shape[-1]}")
    return nd


def _resolve(x, w, strides, padding, dilation, feature_group_count):
    """Validate arguments; return ``(nd, strides, explicit padding pairs, dilation)``."""
    nd = _check(x, w, feature_group_count)
    strides = _tuple(strides, nd, "strides")
    dilation = _tuple(dilation, nd, "dilation")
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            pad = _same_padding(w.shape[:nd], dilation)
        elif padding.upper() == "VALID":
            pad = [(0, 0)] * nd
        else:
            raise ValueError(f"padding must be 'SAME', 'VALID' or {nd} (low, high) pairs, got {padding!r}")
    else:
        try:
            pad = [(int(lo), int(hi)) for lo, hi in padding]
        except (TypeError, ValueError):
            raise ValueError(f"padding must be 'SAME', 'VALID' or {nd} (low, high) pairs, got {padding!r}") from None
        if len(pad) != nd:
            raise ValueError(f"padding must have {nd} (low, high) pairs, got {padding!r}")
    for i in range(nd):
        eff = (w.shape[i] - 1) * dilation[i] + 1
        if x.shape[1 + i] + pad[i][0] + pad[i][1] < eff:
            raise ValueError(f"x spatial size {x.shape[1:-1]} with padding {pad} is smaller than the "
                             f"dilated kernel {tuple(w.shape[:nd])} (dilation {dilation})")
    return nd, strides, pad, dilation


# ----------------------------------------------------------------------------- references

def conv_nd_reference(x, w, strides=1, padding="SAME", dilation=1, feature_group_count=1):
    """Plain ``lax.conv_general_dilated`` convolution, channels-last.

    ``padding``: ``"SAME"`` (see :func:`_same_padding`), ``"VALID"`` or explicit ``(low, high)`` pairs.
    """
    nd, strides, pad, dilation = _resolve(x, w, strides, padding, dilation, feature_group_count)
    return lax.conv_general_dilated(
        x, w, window_strides=strides, padding=pad, rhs_dilation=dilation,
        dimension_numbers=_dimension_numbers(nd), feature_group_count=feature_group_count)


def _transpose_padding(w, strides, padding, nd: int):
    """Low padding (of the stride-dilated input) per axis for an output of exactly ``S * strides``.

    ``"SAME"``: ``lax.conv_transpose``'s choice. ``"torch"``: PyTorch's ``ConvTranspose(padding=(K-1)//2,
    output_padding=s-1)`` alignment, as MONAI builds it (differs from SAME for odd K > s, e.g. K=3, s=2).
    Explicit ``(low, high)`` pairs must satisfy ``low + high == K + s - 2``.
    """
    ks = w.shape[:nd]
    total = [k + s - 2 for k, s in zip(ks, strides)]
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            return [k - 1 if s > k - 1 else -(-t // 2) for k, s, t in zip(ks, strides, total)]
        if padding.lower() == "torch":
            return [k - 1 - (k - 1) // 2 for k in ks]
        raise ValueError(f"padding must be 'SAME', 'torch' or {nd} (low, high) pairs, got {padding!r}")
    try:
        pairs = [(int(lo), int(hi)) for lo, hi in padding]
    except (TypeError, ValueError):
        raise ValueError(f"padding must be 'SAME', 'torch' or {nd} (low, high) pairs, got {padding!r}") from None
    if len(pairs) != nd or any(lo + hi != t or lo < 0 or hi < 0 for (lo, hi), t in zip(pairs, total)):
        raise ValueError(f"padding pairs {pairs} must be {nd} non-negative (low, high) with low + high == "
                         f"kernel + stride - 2 = {total} (output size input * stride)")
    return [lo for lo, _ in pairs]


def conv_transpose_nd_reference(x, w, strides=2, padding="SAME"):
    """Transposed convolution with the semantics of ``flax.linen.ConvTranspose(padding="SAME")``
    (``lax.conv_transpose``, kernel not flipped): output size ``S * strides``, any kernel size.
    ``padding="torch"`` aligns the output as PyTorch/MONAI do (see :func:`_transpose_padding`)."""
    nd = _check(x, w, 1)
    strides = _tuple(strides, nd, "strides")
    lows = _transpose_padding(w, strides, padding, nd)
    pads = [(lo, k + s - 2 - lo) for lo, k, s in zip(lows, w.shape[:nd], strides)]
    return lax.conv_transpose(x, w, strides=strides, padding=pads,
                              dimension_numbers=_dimension_numbers(nd))


# ----------------------------------------------------------------------------- CPU lowering

def _pad_spatial(x, pads):
    """Pad (or crop, for negative values) the spatial axes of ``x: [B, *S, C]``."""
    if all(lo == 0 and hi == 0 for lo, hi in pads):
        return x
    config = [(0, 0, 0)] + [(lo, hi, 0) for lo, hi in pads] + [(0, 0, 0)]
    return lax.pad(x, lax.full((), 0, x.dtype), config)


def _conv_stride1(x, w, pad, dilation, feature_group_count):
    """Stride-1 convolution; a 3D one as a sum over depth taps of 2D convolutions on stacked slices."""
    nd = x.ndim - 2
    if nd != 3:
        return lax.conv_general_dilated(x, w, (1,) * nd, pad, rhs_dilation=dilation,
                                        dimension_numbers=_dimension_numbers(nd),
                                        feature_group_count=feature_group_count)
    x = _pad_spatial(x, [pad[0], (0, 0), (0, 0)])
    b, d, h, wd, c = x.shape
    kd, dd = w.shape[0], dilation[0]
    d_out = d - (kd - 1) * dd
    dn = _dimension_numbers(2)
    out = None
    for t in range(kd):
        # Each depth tap is an ordinary 2D convolution of the (batch * depth) stack of slices.
        xs = lax.slice_in_dim(x, t * dd, t * dd + d_out, axis=1).reshape(b * d_out, h, wd, c)
        y = lax.conv_general_dilated(xs, w[t], (1, 1), pad[1:], rhs_dilation=dilation[1:],
                                     dimension_numbers=dn, feature_group_count=feature_group_count)
        out = y if out is None else out + y
    return out.reshape((b, d_out) + out.shape[1:])


def _space_to_depth(x, s):
    """``[B, J1*s1, ..., C] -> [B, J1, ..., s1*...*C]`` with channel order ``(r1, ..., rD, c)``."""
    nd = x.ndim - 2
    b, c = x.shape[0], x.shape[-1]
    js = [x.shape[1 + i] // s[i] for i in range(nd)]
    x = x.reshape([b] + [v for i in range(nd) for v in (js[i], s[i])] + [c])
    perm = [0] + [1 + 2 * i for i in range(nd)] + [2 + 2 * i for i in range(nd)] + [2 * nd + 1]
    return x.transpose(perm).reshape([b] + js + [int(np.prod(s)) * c])


def _depth_to_space(y, s):
    """``[B, M1, ..., s1*...*C] -> [B, M1*s1, ..., C]`` (inverse of :func:`_space_to_depth`)."""
    nd = y.ndim - 2
    b, ms = y.shape[0], list(y.shape[1:-1])
    c = y.shape[-1] // int(np.prod(s))
    y = y.reshape([b] + ms + list(s) + [c])
    perm = [0] + [v for i in range(nd) for v in (1 + i, 1 + nd + i)] + [1 + 2 * nd]
    return y.transpose(perm).reshape([b] + [ms[i] * s[i] for i in range(nd)] + [c])


def conv_nd_cpu(x, w, strides=1, padding="SAME", dilation=1, feature_group_count=1):
    """:func:`conv_nd_reference` rewritten for XLA:CPU (polyphase strided convs, 3D as 2D slices)."""
    nd, strides, pad, dilation = _resolve(x, w, strides, padding, dilation, feature_group_count)
    if all(s == 1 for s in strides):
        return _conv_stride1(x, w, pad, dilation, feature_group_count)
    if any(d != 1 for d in dilation) or feature_group_count != 1:
        # Rare in the zoo; the polyphase form below assumes dense, undilated kernels.
        return conv_nd_reference(x, w, strides, pad, dilation, feature_group_count)
    ks = w.shape[:nd]
    outs = [(x.shape[1 + i] + pad[i][0] + pad[i][1] - ks[i]) // strides[i] + 1 for i in range(nd)]
    qs = [-(-ks[i] // strides[i]) for i in range(nd)]
    # Pad/crop so each axis holds exactly (out + q - 1) blocks of s: every tap reads inside.
    full = [(pad[i][0], (outs[i] + qs[i] - 1) * strides[i] - x.shape[1 + i] - pad[i][0]) for i in range(nd)]
    xs = _space_to_depth(_pad_spatial(x, full), strides)
    # w[K.., ci, co] -> zero-pad K to q*s -> [q1, s1, ..] -> [q.., s.., ci, co] -> [q.., s..*ci, co]
    wp = lax.pad(w, lax.full((), 0, w.dtype),
                 [(0, qs[i] * strides[i] - ks[i], 0) for i in range(nd)] + [(0, 0, 0), (0, 0, 0)])
    ci, co = w.shape[-2], w.shape[-1]
    wp = wp.reshape([v for i in range(nd) for v in (qs[i], strides[i])] + [ci, co])
    perm = [2 * i for i in range(nd)] + [2 * i + 1 for i in range(nd)] + [2 * nd, 2 * nd + 1]
    wp = wp.transpose(perm).reshape(qs + [int(np.prod(strides)) * ci, co])
    return _conv_stride1(xs, wp, [(0, 0)] * nd, (1,) * nd, 1)


def _transpose_phase_maps(k: int, s: int, a: int):
    """For one axis of a transposed conv (kernel ``k``, stride ``s``, low padding ``a`` of the dilated
    input): ``(lo, index [T, s])`` such that output ``s*m + p`` is ``sum_t x[m - lo + t] * w[index[t, p]]``
    (``index = -1``: no tap)."""
    taps = {}  # phase -> list of (offset into x, kernel index)
    for p in range(s):
        for kk in range(k):
            if (p + kk - a) % s == 0:
                taps.setdefault(p, []).append(((p + kk - a) // s, kk))
    offsets = [o for v in taps.values() for o, _ in v]
    omin, omax = min(offsets), max(offsets)
    index = -np.ones((omax - omin + 1, s), np.int64)
    for p, v in taps.items():
        for o, kk in v:
            index[o - omin, p] = kk
    return -omin, index


def conv_transpose_nd_cpu(x, w, strides=2, padding="SAME"):
    """:func:`conv_transpose_nd_reference` as one stride-1 convolution producing every output phase
    as channels, then depth-to-space (no lhs-dilated convolution)."""
    nd = _check(x, w, 1)
    strides = _tuple(strides, nd, "strides")
    ci, co = w.shape[-2], w.shape[-1]
    lows = _transpose_padding(w, strides, padding, nd)
    maps = [_transpose_phase_maps(w.shape[i], strides[i], lows[i]) for i in range(nd)]
    # Combined kernel W[t.., ci, (p.., co)] = w[index_1[t1, p1], ..., ci, co].
    wk = lax.pad(w, lax.full((), 0, w.dtype), [(0, 1, 0)] * nd + [(0, 0, 0), (0, 0, 0)])
    for i, (_, idx) in enumerate(maps):
        idx = np.where(idx < 0, w.shape[i], idx)
        # Axis i (length K+1) becomes (T_i, P_i); keep T_i at position i and move P_i to the end.
        # Static slices, not a gather: its gradient would be a scatter-add that XLA constant-folds slowly.
        wk = jax.numpy.stack([lax.index_in_dim(wk, int(j), axis=i, keepdims=False) for j in idx.reshape(-1)],
                             axis=i)
        wk = wk.reshape(wk.shape[:i] + idx.shape + wk.shape[i + 1:])
        wk = jax.numpy.moveaxis(wk, i + 1, -1)
    # wk: [T.., ci, co, P1, .., PD] -> [T.., ci, P1.., co]
    wk = jax.numpy.moveaxis(wk, nd + 1, -1)
    ts = [idx.shape[0] for _, idx in maps]
    wk = wk.reshape(ts + [ci, int(np.prod(strides)) * co])
    pads = [(lo, ts[i] - 1 - lo) for i, (lo, _) in enumerate(maps)]
    y = _conv_stride1(_pad_spatial(x, pads), wk, [(0, 0)] * nd, (1,) * nd, 1)
    return _depth_to_space(y, strides)


# ----------------------------------------------------------------------------- few-channel forms

# Convolutions with Cin * Cout at or below this run as channels-first shifted sums (see conv_few_channels).
FEW_CHANNELS = 8
# Transposed convolutions with at most this many output channels run as one matmul + col2im forward.
FEW_OUTPUT_CHANNELS = 4


def _tap(xc, t, outs, channels=None, last=False):
    """``xc [B, C, *P][:, channels, t_1 : t_1 + outs_1, ...]``: the input window of kernel tap ``t`` (``last``:
    ``xc [B, *P, C]``, the same window channels-last)."""
    lo, hi = (0, xc.shape[-1 if last else 1]) if channels is None else channels
    ends = tuple(t[i] + outs[i] for i in range(len(t)))
    if last:
        return lax.slice(xc, (0,) + tuple(t) + (lo,), (xc.shape[0],) + ends + (hi,))
    return lax.slice(xc, (0, lo) + tuple(t), (xc.shape[0], hi) + ends)


def _shifted_sums(xc, w, outs, last=False):
    """Channels-first correlation by shifted sums: ``xc [B, Ci, *P]`` (already padded), ``w [*K, Ci, Co]`` ->
    ``[B, Co, *outs]`` (``last``: ``[B, *P, Ci] -> [B, *outs, Co]``, channels-last). One fused elementwise loop
    per output channel; for a handful of channels that is what a convolution library's direct kernel does."""
    nd = w.ndim - 2
    ks, (ci_n, co_n) = w.shape[:nd], w.shape[-2:]
    acc = [None] * co_n
    for t in np.ndindex(*ks):
        for ci in range(ci_n):
            sl = _tap(xc, t, outs, (ci, ci + 1), last)
            for co in range(co_n):
                term = sl * w[t + (ci, co)]
                acc[co] = term if acc[co] is None else acc[co] + term
    return jax.numpy.concatenate(acc, axis=-1 if last else 1)


def _sums(terms, axes):
    """The sums of same-shaped ``terms`` over ``axes``, as one variadic ``lax.reduce``."""
    zeros = tuple(lax.full((), 0, t.dtype) for t in terms)
    return lax.reduce(tuple(terms), zeros, lambda a, b: tuple(p + q for p, q in zip(a, b)), axes)


def conv_few_channels(x, w, pad):
    """Stride-1, undilated convolution for few channels (``Cin * Cout <= FEW_CHANNELS``), e.g. a segmentation
    head's 2 -> 2 convolution at full resolution, where XLA:CPU's convolution (and its depth-tap form) is
    memory-bound on a badly vectorised loop: on a 2 x 64^3 volume, 2 -> 2 channels, 3^3 kernel, the forward
    pass took 13 ms instead of 180 ms and forward + both gradients 230 ms instead of 590 ms
    (docs/performance.md). Gradients: the input gradient is the same form with the flipped, channel-swapped
    kernel; the kernel gradient one variadic reduction per tap. Computes in float32 for lower-precision inputs."""
    nd = x.ndim - 2
    ks = w.shape[:nd]
    dtype = x.dtype
    acc_dtype = dtype if jax.numpy.finfo(dtype).bits >= 32 else jax.numpy.float32

    def forward(x, w):
        """``(y, xc)``: the output and the padded channels-first input (the kernel gradient's operand)."""
        xp = _pad_spatial(x.astype(acc_dtype), pad)
        xc = jax.numpy.moveaxis(xp, -1, 1)
        outs = [xp.shape[1 + i] - (ks[i] - 1) for i in range(nd)]
        if nd == 3:
            # 3D: channels-last sums. From the channels-first copy XLA made a layout (the padded input
            # channels-minor) and read every tap strided where the input also fed a residual add (the head at
            # 1 x 128^3: 190 against 67 ms; residual_unet 3D inference -22 %, 2D unchanged)
            return _shifted_sums(xp, w.astype(acc_dtype), outs, last=True).astype(dtype), xc
        return jax.numpy.moveaxis(_shifted_sums(xc, w.astype(acc_dtype), outs), 1, -1).astype(dtype), xc

    @jax.custom_vjp
    def op(x, w):
        return forward(x, w)[0]

    def fwd(x, w):
        y, xc = forward(x, w)
        return y, (xc, w)

    def bwd(res, gy):
        xc, w = res
        gc = jax.numpy.moveaxis(gy.astype(acc_dtype), -1, 1)  # [B, Co, *O]
        gp = lax.pad(gc, lax.full((), 0, acc_dtype), [(0, 0, 0)] * 2 + [(k - 1, k - 1, 0) for k in ks])
        wf = jax.numpy.swapaxes(jax.numpy.flip(w.astype(acc_dtype), tuple(range(nd))), -1, -2)
        dxp = _shifted_sums(gp, wf, xc.shape[2:])  # d/d(padded x)
        dx = lax.slice(dxp, (0, 0) + tuple(lo for lo, _ in pad),
                       dxp.shape[:2] + tuple(xc.shape[2 + i] - hi for i, (_, hi) in enumerate(pad)))
        outs = gy.shape[1:-1]
        # per tap, the Cin * Cout products summed in one variadic reduction, which XLA fuses with the window's
        # slice (an einsum, or a plain sum, copied each window first: 2 x 64^3, 2 -> 2: 295 / 180 against 25 ms)
        ci_n, co_n = w.shape[-2:]
        axes = tuple(range(1 + nd))
        dw = jax.numpy.stack([jax.numpy.stack(_sums([_tap(xc, t, outs, (ci, ci + 1))[:, 0] * gc[:, co]
                                                     for ci in range(ci_n) for co in range(co_n)], axes))
                              for t in np.ndindex(*ks)]).reshape(w.shape)
        return jax.numpy.moveaxis(dx, 1, -1).astype(dtype), dw.astype(w.dtype)

    op.defvjp(fwd, bwd)
    return op(x, w)


def _conv_transpose_col2im(x, w, strides, lows):
    """Transposed convolution as ``z = x @ W`` (every kernel tap's contribution, ``[B, *S, K^D * Co]``) then
    col2im: each output phase sums shifted slices of ``z``, channels-first, and the phases interleave. For few
    output channels the matmul does all the multiplications at a good shape and the rest is cheap adds
    (a 32 -> 2 up-convolution to 2 x 64^3: 27 ms instead of the phase form's 154 ms)."""
    nd = x.ndim - 2
    ks, (ci, co) = w.shape[:nd], w.shape[-2:]
    maps = [_transpose_phase_maps(ks[i], strides[i], lows[i]) for i in range(nd)]
    kt = int(np.prod(ks))
    wm = jax.numpy.moveaxis(w.reshape(kt, ci, co), 0, 1).reshape(ci, kt * co)
    z = jax.numpy.moveaxis(lax.dot_general(x, wm, (((x.ndim - 1,), (0,)), ((), ()))), -1, 1)  # [B, kt*co, *S]
    size = x.shape[1:-1]
    taps, lo = [idx.shape[0] for _, idx in maps], [low for low, _ in maps]
    zp = lax.pad(z, lax.full((), 0, z.dtype),
                 [(0, 0, 0)] * 2 + [(lo[i], taps[i] - 1 - lo[i], 0) for i in range(nd)])
    phases = []
    for p in np.ndindex(*strides):
        acc = None
        for t in np.ndindex(*taps):
            k = [int(maps[i][1][t[i], p[i]]) for i in range(nd)]
            if min(k) < 0:
                continue
            c0 = int(np.ravel_multi_index(k, ks)) * co
            sl = lax.slice(zp, (0, c0) + t, (zp.shape[0], c0 + co) + tuple(t[i] + size[i] for i in range(nd)))
            acc = sl if acc is None else acc + sl
        phases.append(jax.numpy.zeros((x.shape[0], co) + size, z.dtype) if acc is None else acc)
    y = jax.numpy.stack(phases, axis=2).reshape((x.shape[0], co) + tuple(strides) + size)
    y = y.transpose([0] + [v for i in range(nd) for v in (2 + nd + i, 2 + i)] + [1])
    return y.reshape((x.shape[0],) + tuple(size[i] * strides[i] for i in range(nd)) + (co,))


def _col2im_forward(x, w, strides, padding, backward):
    """:func:`_conv_transpose_col2im` forward, the VJP of ``backward(x, w)`` (the same linear map) backward."""
    nd = x.ndim - 2
    lows = _transpose_padding(w, strides, padding, nd)
    return _lax_forward_cpu_backward(lambda x, w: _conv_transpose_col2im(x, w, strides, lows), backward, x, w)


# ----------------------------------------------------------------------------- public ops

def _lax_forward_cpu_backward(ref_fn, cpu_fn, x, w):
    """``ref_fn(x, w)`` in the forward pass, the vector-Jacobian product of ``cpu_fn`` in the backward pass
    (both compute the same linear map, so this is exact; the unused primal inside the VJP is dead code)."""

    @jax.custom_vjp
    def op(x, w):
        return ref_fn(x, w)

    def fwd(x, w):
        return ref_fn(x, w), (x, w)

    def bwd(res, g):
        return jax.vjp(cpu_fn, *res)[1](g)

    op.defvjp(fwd, bwd)
    return op(x, w)


def _adjoint_padding(w, strides, lows, nd: int):
    """Padding pairs of the strided convolution whose adjoint is the transposed convolution with low paddings
    ``lows`` (output size: the transposed conv's input size), or ``None`` when no such non-negative padding
    exists (then the phase form's VJP is used)."""
    pads = []
    for i in range(nd):
        k, s = w.shape[i], strides[i]
        lo = k - 1 - lows[i]
        hi = max(k - lo - s, 0)
        if lo < 0 or hi > k - lo - 1:
            return None
        pads.append((lo, hi))
    return pads


def _conv_transpose_adjoint_vjp(x, w, strides, padding, pads):
    """``lax.conv_transpose`` forward; backward through its adjoint, the strided convolution ``S(u, v)`` with
    ``v = flip(w)`` (in/out channels swapped): ``dx = S(dy, v)`` and ``dw`` = the kernel gradient of
    ``S(dy, .)`` at cotangent ``x``, flipped back. XLA:CPU runs both as ordinary strided convolutions: on the
    residual U-Net's 3x3 stride-2 up-convolutions, forward + backward took 1.8x less time than with the phase
    form's VJP, itself ~4x faster than XLA's own lhs-dilated kernel gradient (docs/performance.md)."""
    nd = x.ndim - 2
    dn, spatial = _dimension_numbers(nd), tuple(range(nd))

    def strided(u, v):
        return lax.conv_general_dilated(u, v, strides, pads, dimension_numbers=dn)

    @jax.custom_vjp
    def op(x, w):
        return conv_transpose_nd_reference(x, w, strides, padding)

    def fwd(x, w):
        return op(x, w), (x, w)

    def bwd(res, g):
        x, w = res
        v = jax.numpy.swapaxes(jax.numpy.flip(w, spatial), -1, -2)
        dx = strided(g, v)
        dv = jax.vjp(lambda v_: strided(g, v_), v)[1](x)[0]
        return dx, jax.numpy.swapaxes(jax.numpy.flip(dv, spatial), -1, -2)

    op.defvjp(fwd, bwd)
    return op(x, w)


# ----------------------------------------------------------------------------- oneDNN (kernels/csrc/dnnl_conv.cc)

_onednn_enabled: bool | None = None  # None: wherever kernels.native builds it


@contextlib.contextmanager
def use_onednn(enabled: bool | None):
    """``with use_onednn(False): ...``: traces inside keep the ``cpu`` lowering's 2D/3D float32 (bf16) convolutions on
    the XLA forms instead of oneDNN (``True`` requires oneDNN, ``None`` restores the default: where it builds)."""
    global _onednn_enabled
    previous, _onednn_enabled = _onednn_enabled, enabled
    try:
        yield
    finally:
        _onednn_enabled = previous


def _onednn_ok(x, w, dil, feature_group_count) -> bool:
    """float32, or bfloat16 where oneDNN computes it natively (``native.onednn_bf16()``: AVX512-BF16 / AMX;
    elsewhere bfloat16 stays on XLA, even under ``use_onednn(True)``); both operands the same type."""
    if _onednn_enabled is False or x.ndim not in (3, 4, 5) or x.dtype != w.dtype:
        return False
    if x.dtype not in (np.float32, jax.numpy.bfloat16) or feature_group_count != 1 or any(d != 1 for d in dil):
        return False
    from kernels import native

    if x.dtype == jax.numpy.bfloat16 and native.available("dnnl_conv"):
        return native.onednn_bf16()
    if native.available("dnnl_conv"):
        return True
    if _onednn_enabled:
        raise ValueError(f"oneDNN convolutions were requested but are unavailable: {native.status()['dnnl_conv']}")
    return False


def _onednn_call(target, out_shape, a, b, st, pad):
    return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(tuple(out_shape), a.dtype), vmap_method="sequential")(
        a, b, strides=np.asarray(st, np.int64), pad_lo=np.asarray([p[0] for p in pad], np.int64),
        pad_hi=np.asarray([p[1] for p in pad], np.int64))


def _onednn_vjp(forward, backward):
    """``op(a, b) = forward(a, b)`` with the gradients ``backward(a, b, g) -> (da, db)`` (cotangent in ``a``'s type)."""

    @jax.custom_vjp
    def op(a, b):
        return forward(a, b)

    def fwd(a, b):
        return op(a, b), (a, b)

    def bwd(res, g):
        return backward(*res, g.astype(res[0].dtype))

    op.defvjp(fwd, bwd)
    return op


def conv_onednn(x, w, st, pad):
    """1D-3D float32 / bfloat16 convolution through oneDNN (forward, and both gradients in its ``custom_vjp``),
    channels-last, explicit padding pairs, no dilation or groups. Only callable where ``kernels.native`` built ``dnnl_conv``."""
    nd = x.ndim - 2
    out = (x.shape[0], *[(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(x.shape[1:-1], pad, w.shape[:nd], st)],
           w.shape[-1])
    return _onednn_vjp(
        lambda x, w: _onednn_call("medzoo_dnnl_conv_fwd", out, x, w, st, pad),
        lambda x, w, g: (_onednn_call("medzoo_dnnl_conv_bwd_data", x.shape, g, w, st, pad),
                         _onednn_call("medzoo_dnnl_conv_bwd_weights", w.shape, x, g, st, pad)))(x, w)


def conv_transpose_onednn(x, w, st, lows):
    """1D-3D float32 / bfloat16 transposed convolution (``lax.conv_transpose`` semantics, low paddings ``lows`` of the
    dilated input, output ``S * st``) through oneDNN: it is the backward-data pass of the stride-``st``
    convolution ``F`` from the output's space to the input's, with the kernel flipped and its channel axes
    swapped (``V``); its gradients are ``F`` itself (input) and ``F``'s weight gradient (kernel)."""
    nd = x.ndim - 2
    pads = [(k - 1 - lo, lo - s + 1) for k, lo, s in zip(w.shape[:nd], lows, st)]
    out = (x.shape[0], *[n * s for n, s in zip(x.shape[1:-1], st)], w.shape[-1])
    v = jax.numpy.swapaxes(jax.numpy.flip(w, tuple(range(nd))), -1, -2)
    return _onednn_vjp(
        lambda x, v: _onednn_call("medzoo_dnnl_conv_bwd_data", out, x, v, st, pads),
        lambda x, v, g: (_onednn_call("medzoo_dnnl_conv_fwd", x.shape, g, v, st, pads),
                         _onednn_call("medzoo_dnnl_conv_bwd_weights", v.shape, g, x, st, pads)))(x, v)


def _conv_nd_auto_cpu(x, w, strides, padding, dilation, feature_group_count):
    """The per-case choice on XLA:CPU (measurements in docs/performance.md)."""
    nd, st, pad, dil = _resolve(x, w, strides, padding, dilation, feature_group_count)
    if (all(s == 1 for s in st) and all(d == 1 for d in dil) and feature_group_count == 1
            and w.shape[-2] * w.shape[-1] <= FEW_CHANNELS
            and int(np.prod(w.shape[:nd])) * w.shape[-2] * w.shape[-1] <= FEW_CHANNELS * 27):
        # (the last bound keeps the unrolled sum small: a 7^3 kernel would be thousands of terms)
        return conv_few_channels(x, w, pad)
    if nd != 3:
        # 1D/2D: XLA:CPU's own strided convolution beat the polyphase form both ways on this machine.
        xla = lambda x, w: conv_nd_reference(x, w, st, pad, dil, feature_group_count)  # noqa: E731
    else:
        xla = lambda x, w: conv_nd_cpu(x, w, st, pad, dil, feature_group_count)  # noqa: E731
    if nd >= 2 and _onednn_ok(x, w, dil, feature_group_count):
        # oneDNN's kernels ran 2-10x faster than the rewrites on every 3D layer of the U-Nets except the
        # few-channel ones above; accelerators (a forced "cpu" lowering there) keep the XLA forms.
        return lax.platform_dependent(x, w, cpu=lambda x, w: conv_onednn(x, w, st, pad), default=xla)
    return xla(x, w)


def conv_nd(x, w, strides=1, padding="SAME", dilation=1, feature_group_count=1):
    """Convolution ``[B, *S, Cin] * [*K, Cin / groups, Cout] -> [B, *S', Cout]``.

    Same contract as :func:`conv_nd_reference`; the lowering follows :func:`resolve_conv_lowering`.
    """
    if resolve_conv_lowering() == "cpu":
        return _conv_nd_auto_cpu(x, w, strides, padding, dilation, feature_group_count)
    return conv_nd_reference(x, w, strides, padding, dilation, feature_group_count)


def conv_transpose_nd(x, w, strides=2, padding="SAME"):
    """Transposed convolution ``[B, *S, Cin] -> [B, *S*strides, Cout]``, ``w: [*K, Cin, Cout]``.

    Same contract as :func:`conv_transpose_nd_reference`; the lowering follows :func:`resolve_conv_lowering`.
    On XLA:CPU, 2D/3D float32 (bf16 where native): oneDNN (:func:`conv_transpose_onednn`) where ``kernels.native``
    builds it.
    Otherwise 1D/2D: the forward pass is ``lax`` (faster there) and the backward pass the adjoint strided
    convolution (:func:`_conv_transpose_adjoint_vjp`) when the kernel overlaps (``K > stride`` on some axis),
    else the phase form's VJP; 3D: the phase form both ways.
    """
    if resolve_conv_lowering() == "cpu":
        nd = _check(x, w, 1)
        st = _tuple(strides, nd, "strides")
        lows = _transpose_padding(w, st, padding, nd)
        # oneDNN (every output count: measured faster than the col2im form too), where its padding fits
        if nd >= 2 and all(lo - s + 1 >= 0 for lo, s in zip(lows, st)) and _onednn_ok(x, w, (1,) * nd, 1):
            return lax.platform_dependent(
                x, w, cpu=lambda x, w: conv_transpose_onednn(x, w, st, lows),
                default=lambda x, w: _conv_transpose_nd_xla_cpu(x, w, strides, padding))
        return _conv_transpose_nd_xla_cpu(x, w, strides, padding)
    return conv_transpose_nd_reference(x, w, strides, padding)


def _conv_transpose_nd_xla_cpu(x, w, strides, padding):
    """The XLA forms of :func:`conv_transpose_nd` on CPU (measurements in docs/performance.md)."""
    nd = _check(x, w, 1)
    st = _tuple(strides, nd, "strides")
    if nd == 3:  # 3D: the phase form both ways (lax's 3D lhs-dilated conv is far slower)
        if w.shape[-1] <= FEW_OUTPUT_CHANNELS:
            return _col2im_forward(x, w, st, padding, lambda x, w: conv_transpose_nd_cpu(x, w, st, padding))
        return conv_transpose_nd_cpu(x, w, strides, padding)
    pads = _adjoint_padding(w, st, _transpose_padding(w, st, padding, nd), nd)
    # Kernel <= stride on every axis: the phase form is one 1x1 convolution, and its VJP measured
    # faster than the adjoint's (U-Net 2x2/2 up-convolutions: train step 0.90 vs 1.0 s).
    if pads is not None and any(k > s for k, s in zip(w.shape[:nd], st)):
        return _conv_transpose_adjoint_vjp(x, w, st, padding, pads)
    return _lax_forward_cpu_backward(lambda x, w: conv_transpose_nd_reference(x, w, strides, padding),
                                     lambda x, w: conv_transpose_nd_cpu(x, w, strides, padding), x, w)
