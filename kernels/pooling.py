"""Max-pooling that remembers where the maxima were, and the unpooling that puts values back there.

SegNet's decoder upsamples with the encoder's argmax indices instead of a learned transposed
convolution. Both ops are channels-last, 2D and 3D from one code path, non-overlapping windows
(stride == window), and differentiable with respect to the values (the indices are integers):

* ``max_pool_with_argmax(x, window=2) -> (pooled, indices)``: ``x: [B, *S, C]``, ``pooled`` and
  ``indices`` ``[B, *S / window, C]``. ``indices`` (int32) is the flat spatial index of the
  maximum in ``x`` for that batch element and channel, ``(d * H + h) * W + w`` (PyTorch's
  ``return_indices`` convention); ties go to the first element of the window in row-major order.
* ``max_unpool(x, indices, output_shape) -> [B, *S_out, C]``: zeros everywhere except
  ``out[b, indices[b, i, c], c] = x[b, i, c]``.

The implementation reshapes each window onto a trailing axis, so the gradient of
``max_pool_with_argmax`` flows to exactly the element ``indices`` names, and unpooling is a
select rather than a scatter (no atomics, same cost as the pooling). The ``*_reference``
functions are slow, obvious numpy loops used by the tests.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import jax.numpy as jnp
import numpy as np

__all__ = ["max_pool_with_argmax", "max_unpool", "max_pool_with_argmax_reference", "max_unpool_reference"]


def _window(window, nd: int) -> tuple[int, ...]:
    w = tuple(int(v) for v in window) if isinstance(window, (tuple, list)) else (int(window),) * nd
    if len(w) != nd or any(v < 1 for v in w):
        raise ValueError(f"window must be a positive int or {nd} positive ints, got {window!r}")
    return w


def _check_x(name: str, x, window):
    if x.ndim not in (4, 5):
        raise ValueError(f"{name}: expected x [B, *S, C] with 2 or 3 spatial dims, got shape {tuple(x.shape)}")
    nd = x.ndim - 2
    w = _window(window, nd)
    bad = [(s, k) for s, k in zip(x.shape[1:-1], w) if s % k]
    if bad:
        raise ValueError(f"{name}: spatial sizes {tuple(x.shape[1:-1])} must be divisible by window {w}")
    return nd, w


def _to_windows(x, w):
    """``[B, *S, C] -> [B, *S/w, C, prod(w)]`` with the window elements in row-major order."""
    nd = len(w)
    b, c = x.shape[0], x.shape[-1]
    out_s = [s // k for s, k in zip(x.shape[1:-1], w)]
    shape = [b]
    for o, k in zip(out_s, w):
        shape += [o, k]
    y = x.reshape(shape + [c])
    # axes: 0=B, 1,3,5=outer, 2,4,6=inner, last=C -> B, outer..., C, inner...
    outer = [1 + 2 * i for i in range(nd)]
    inner = [2 + 2 * i for i in range(nd)]
    y = y.transpose([0] + outer + [2 * nd + 1] + inner)
    return y.reshape([b] + out_s + [c, int(np.prod(w))])


def _from_windows(y, w):
    """Inverse of :func:`_to_windows`: ``[B, *O, C, prod(w)] -> [B, *O*w, C]``."""
    nd = len(w)
    b, c = y.shape[0], y.shape[-2]
    out_s = list(y.shape[1:1 + nd])
    y = y.reshape([b] + out_s + [c] + list(w))
    # axes: 0=B, 1..nd=outer, nd+1=C, nd+2..=inner -> B, (outer_i, inner_i)..., C
    perm = [0]
    for i in range(nd):
        perm += [1 + i, nd + 2 + i]
    perm.append(nd + 1)
    y = y.transpose(perm)
    return y.reshape([b] + [o * k for o, k in zip(out_s, w)] + [c])


def _local_to_flat(local, w, in_spatial):
    """Window-local argmax (row-major in the window) -> flat spatial index in the input."""
    nd = len(w)
    out_s = local.shape[1:1 + nd]
    flat = jnp.zeros(local.shape, jnp.int32)
    rem = local
    for i in range(nd):
        inner_stride = int(np.prod(w[i + 1:]))
        off = rem // inner_stride
        rem = rem % inner_stride
        pos = jnp.arange(out_s[i], dtype=jnp.int32).reshape([1] * (1 + i) + [out_s[i]] + [1] * (nd - i))
        coord = pos * w[i] + off
        flat = flat * in_spatial[i] + coord
    return flat


def _flat_to_local(indices, w, out_spatial):
    """Flat spatial index in the output of unpooling -> window-local index (row-major)."""
    nd = len(w)
    local = jnp.zeros(indices.shape, jnp.int32)
    rem = indices
    coords = []
    for i in reversed(range(nd)):
        coords.append(rem % out_spatial[i])
        rem = rem // out_spatial[i]
    coords = coords[::-1]
    for i in range(nd):
        local = local * w[i] + coords[i] % w[i]
    return local


def max_pool_with_argmax(x, window: int | Sequence[int] = 2):
    """Non-overlapping max pool ``[B, *S, C] -> ([B, *S/w, C], int32 flat argmax indices)``."""
    nd, w = _check_x("max_pool_with_argmax", x, window)
    y = _to_windows(x, w)
    local = jnp.argmax(y, axis=-1).astype(jnp.int32)
    pooled = jnp.take_along_axis(y, local[..., None], axis=-1)[..., 0]
    return pooled, _local_to_flat(local, w, x.shape[1:-1])


def max_unpool(x, indices, output_shape: Sequence[int]):
    """Place ``x: [B, *O, C]`` at ``indices`` in zeros of ``output_shape`` (``[B, *S, C]`` or ``S``).

    ``S`` must be ``O * window`` for an integer window (the pooling that made ``indices``).
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"max_unpool: expected x [B, *O, C] with 2 or 3 spatial dims, got shape {tuple(x.shape)}")
    if tuple(indices.shape) != tuple(x.shape):
        raise ValueError(f"max_unpool: indices shape {tuple(indices.shape)} must equal x shape {tuple(x.shape)}")
    nd = x.ndim - 2
    output_shape = tuple(int(s) for s in output_shape)
    if len(output_shape) == nd + 2:
        if output_shape[0] != x.shape[0] or output_shape[-1] != x.shape[-1]:
            raise ValueError(f"max_unpool: output_shape {output_shape} must keep batch and channels of x "
                             f"{tuple(x.shape)}")
        spatial = output_shape[1:-1]
    elif len(output_shape) == nd:
        spatial = output_shape
    else:
        raise ValueError(f"max_unpool: output_shape must have {nd} (spatial) or {nd + 2} entries, got {output_shape}")
    if any(s < 1 or s % o for s, o in zip(spatial, x.shape[1:-1])):
        raise ValueError(f"max_unpool: output spatial size {spatial} must be a positive multiple of the "
                         f"pooled size {tuple(x.shape[1:-1])}")
    w = tuple(s // o for s, o in zip(spatial, x.shape[1:-1]))
    local = _flat_to_local(indices.astype(jnp.int32), w, spatial)
    k = int(np.prod(w))
    y = jnp.where(local[..., None] == jnp.arange(k, dtype=jnp.int32), x[..., None], jnp.zeros((), x.dtype))
    return _from_windows(y, w)


# ----------------------------------------------------------------------------- numpy references


def max_pool_with_argmax_reference(x: np.ndarray, window=2):
    """Loop over every window: the obvious definition (first maximum in row-major order wins)."""
    x = np.asarray(x)
    nd = x.ndim - 2
    w = _window(window, nd)
    spatial = x.shape[1:-1]
    out_s = tuple(s // k for s, k in zip(spatial, w))
    pooled = np.zeros((x.shape[0],) + out_s + (x.shape[-1],), x.dtype)
    idx = np.zeros(pooled.shape, np.int32)
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            for o in itertools.product(*[range(n) for n in out_s]):
                best, best_i = None, None
                for d in itertools.product(*[range(k) for k in w]):
                    p = tuple(oi * k + di for oi, k, di in zip(o, w, d))
                    v = x[(b,) + p + (c,)]
                    if best is None or v > best:
                        best, best_i = v, int(np.ravel_multi_index(p, spatial))
                pooled[(b,) + o + (c,)] = best
                idx[(b,) + o + (c,)] = best_i
    return pooled, idx


def max_unpool_reference(x: np.ndarray, indices: np.ndarray, spatial_shape) -> np.ndarray:
    """Scatter ``x`` into zeros of ``[B, *spatial_shape, C]`` at the flat spatial ``indices``."""
    x, indices = np.asarray(x), np.asarray(indices)
    spatial_shape = tuple(spatial_shape)
    out = np.zeros((x.shape[0], int(np.prod(spatial_shape)), x.shape[-1]), x.dtype)
    for b in range(x.shape[0]):
        for c in range(x.shape[-1]):
            out[b, indices[b, ..., c].ravel(), c] = x[b, ..., c].ravel()
    return out.reshape((x.shape[0],) + spatial_shape + (x.shape[-1],))
