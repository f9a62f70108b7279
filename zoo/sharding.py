"""Device mesh and shardings, named in one place (big_vision / MaxText style).

One ``Mesh`` with axes ``("data", "model")``. Batches are sharded on ``data``. Parameters (and
every pytree leaf that mirrors them, such as Adam's moments) get a ``PartitionSpec`` from a
list of rules ``(path regex, spec)``: the first rule whose regex matches the leaf's path
("params/enc3/Conv_0/kernel", "opt_state/1/0/mu/enc3/Conv_0/kernel") and whose sharded axes
divide evenly wins; leaves no rule matches are replicated. The default rule shards the output
channels (last axis) of large convolution kernels over ``model``.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["AXES", "DEFAULT_RULES", "parse_mesh_shape", "resolve_mesh_shape", "make_mesh", "batch_sharding",
           "replicated", "check_batch", "path_name", "partition_spec", "tree_shardings", "put_global"]

AXES = ("data", "model")

# (path regex, spec builder): the builder gets the leaf's shape and returns a PartitionSpec.
# Convolution kernels [*K, Cin, Cout]: shard Cout over `model` (a column-parallel conv: each model
# shard computes a slice of the output channels; XLA inserts the all-gather the next layer needs).
DEFAULT_RULES: tuple = (
    (r"kernel$", lambda shape: P(*([None] * (len(shape) - 1)), "model") if len(shape) >= 3 else P()),
)
# Leaves smaller than this stay replicated: sharding tiny kernels costs more in collectives than it saves.
DEFAULT_MIN_SIZE = 2 ** 14


def parse_mesh_shape(value) -> tuple[int, int]:
    """``"4,2"`` / ``(4, 2)`` / ``[-1, 1]`` → ``(data, model)``; raises ``ValueError`` otherwise."""
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
        try:
            value = tuple(int(p) for p in parts)
            if len(value) != 2:
                raise ValueError
        except ValueError:
            raise ValueError(f"mesh shape must be DATA,MODEL integers, got {value!r}") from None
    try:
        shape = tuple(int(s) for s in value)
    except (TypeError, ValueError):
        raise ValueError(f"mesh shape must be (data, model) integers, got {value!r}") from None
    if len(shape) != 2:
        raise ValueError(f"mesh shape must be (data, model), got {shape}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"bad mesh shape {shape}: use positive sizes and at most one -1")
    return shape


def resolve_mesh_shape(shape, num_devices: int, batch_size: int | None = None) -> tuple[int, int]:
    """Fill in a ``-1`` and check ``shape`` against the device count and batch size (no devices touched)."""
    shape = list(parse_mesh_shape(shape))
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if num_devices % known:
            raise ValueError(f"mesh shape {tuple(shape)} does not divide the {num_devices} available devices")
        shape[shape.index(-1)] = num_devices // known
    if int(np.prod(shape)) != num_devices:
        raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices; "
                         f"{num_devices} are available")
    if batch_size is not None and batch_size % shape[0]:
        raise ValueError(f"batch size {batch_size} is not divisible by the mesh's data axis ({shape[0]}); "
                         f"mesh shape {tuple(shape)}")
    return tuple(shape)


def make_mesh(shape: Sequence[int] | str = (-1, 1), devices=None, batch_size: int | None = None) -> Mesh:
    """Mesh over ``devices`` (default: all, every process) with shape ``(data, model)``; one ``-1`` is inferred."""
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(shape, len(devices), batch_size)
    # Sort so that the devices of one process are contiguous along `data` (per-host batch slices).
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch(mesh: Mesh, batch_size: int) -> None:
    n = mesh.shape["data"]
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the mesh's data axis ({n} devices)")


def path_name(path) -> str:
    """``jax.tree_util`` key path → ``"a/b/0/c"``."""
    out = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                out.append(str(getattr(k, attr)))
                break
        else:
            out.append(str(k))
    return "/".join(out)


def partition_spec(name: str, shape: Sequence[int], mesh_shape: dict, rules=DEFAULT_RULES,
                   min_size: int = DEFAULT_MIN_SIZE) -> P:
    """Spec of one leaf: the first matching rule whose sharded axes divide evenly, else replicated."""
    if int(np.prod(shape or (1,))) < min_size:
        return P()
    for pattern, spec in rules:
        if not re.search(pattern, name):
            continue
        spec = spec(tuple(shape)) if callable(spec) else spec
        if len(spec) > len(shape):
            continue
        ok = True
        for dim, axes in zip(shape, spec):
            if axes is None:
                continue
            size = int(np.prod([mesh_shape[a] for a in ((axes,) if isinstance(axes, str) else axes)]))
            ok &= dim % size == 0
        if ok:
            return spec
    return P()


def tree_shardings(mesh: Mesh, tree: Any, rules=DEFAULT_RULES, min_size: int = DEFAULT_MIN_SIZE):
    """A ``NamedSharding`` per leaf of ``tree`` (arrays or ``ShapeDtypeStruct``s) from the path rules.

    With a model axis of size 1 every leaf is replicated.
    """
    shape = dict(mesh.shape)

    def one(path, leaf):
        if shape.get("model", 1) == 1 or not hasattr(leaf, "shape"):
            return NamedSharding(mesh, P())
        return NamedSharding(mesh, partition_spec(path_name(path), leaf.shape, shape, rules, min_size))

    return jax.tree_util.tree_map_with_path(one, tree)


def put_global(tree, shardings):
    """Host values (identical on every process) → global ``jax.Array``s with ``shardings``.

    Each process materialises only the shards its own devices hold; works single- and multi-host.
    """

    def one(x, s):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, s, lambda idx: x[idx])

    return jax.tree.map(one, tree, shardings)
