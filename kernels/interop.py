"""Call the kernels with arrays of any DLPack framework (NumPy, PyTorch, CuPy...) and get the caller's kind back.

``dlpack_compatible(fn)`` wraps a kernel: every argument that exports ``__dlpack__`` (and is not a jax array)
becomes a jax array through ``jax.dlpack.from_dlpack`` (no copy where the device and layout allow), and every
array the kernel returns goes back to the framework of the first such argument through that framework's own
``from_dlpack`` (found from the argument's type, so this module imports no framework). NumPy arguments stay
NumPy; with only jax arguments nothing is converted.

    from kernels.interop import elastic_deform
    img, lab = elastic_deform(key, torch_image, torch_label, alpha=4.0, sigma=3.0)   # torch tensors back
"""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from kernels import augment, geometry, intensity, spatial

__all__ = ["to_jax", "from_jax", "dlpack_compatible", "elastic_deform", "affine_transform", "zscore", "resize",
           "make_pipeline"]


def _is_foreign(x) -> bool:
    return hasattr(x, "__dlpack__") and not isinstance(x, jax.Array)


def to_jax(x):
    """A jax array sharing ``x``'s memory where possible (``x``: any DLPack exporter)."""
    if isinstance(x, jax.Array):
        return x
    if isinstance(x, np.ndarray):
        return jnp.asarray(x)
    if getattr(x, "requires_grad", False):  # torch refuses to export tensors that track gradients
        x = x.detach()
    if hasattr(x, "is_contiguous") and not x.is_contiguous():
        x = x.contiguous()
    return jax.dlpack.from_dlpack(x)


def _framework_from_dlpack(x):
    if isinstance(x, np.ndarray):
        return np.from_dlpack
    root = sys.modules.get(type(x).__module__.split(".")[0])
    fn = getattr(root, "from_dlpack", None) or getattr(getattr(root, "utils", None), "dlpack", None)
    if fn is None or not callable(fn):
        raise TypeError(f"cannot return arrays to {type(x).__module__}: it has no from_dlpack")
    return fn


def from_jax(y, like):
    """``y`` (a jax array) as an array of ``like``'s framework."""
    if not isinstance(y, jax.Array) or isinstance(like, jax.Array):
        return y
    if isinstance(like, np.ndarray):
        return np.asarray(y)
    return _framework_from_dlpack(like)(y)


def dlpack_compatible(fn):
    """``fn`` taking and returning arrays of the caller's DLPack framework (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        like = next((a for a in list(args) + list(kwargs.values()) if _is_foreign(a)), None)
        args = [to_jax(a) if _is_foreign(a) else a for a in args]
        kwargs = {k: to_jax(v) if _is_foreign(v) else v for k, v in kwargs.items()}
        out = fn(*args, **kwargs)
        if like is None:
            return out
        return jax.tree_util.tree_map(lambda y: from_jax(y, like), out)

    return wrapper


elastic_deform = dlpack_compatible(geometry.elastic_deform)
affine_transform = dlpack_compatible(geometry.affine_transform)
zscore = dlpack_compatible(intensity.zscore)
resize = dlpack_compatible(spatial.resize)


def make_pipeline(spec: dict):
    """``kernels.augment.make_pipeline(spec)`` on DLPack arrays."""
    return dlpack_compatible(augment.make_pipeline(spec))
