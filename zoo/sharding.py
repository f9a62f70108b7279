"""Device mesh and shardings, named in one place (big_vision / MaxText style).

One ``Mesh`` with axes ``("data", "model")``. Batches are sharded on ``data``; parameters are
replicated (``model`` sharding rules can map parameter paths to ``PartitionSpec``s).
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["make_mesh", "batch_sharding", "replicated", "check_batch"]

AXES = ("data", "model")


def make_mesh(shape: Sequence[int] = (-1, 1), devices=None) -> Mesh:
    """Mesh over ``devices`` (default: all) with shape ``(data, model)``; one ``-1`` is inferred."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    shape = [int(s) for s in shape]
    if len(shape) != 2:
        raise ValueError(f"mesh shape must be (data, model), got {tuple(shape)}")
    if shape.count(-1) > 1 or any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"bad mesh shape {tuple(shape)}: use positive sizes and at most one -1")
    if -1 in shape:
        known = int(np.prod([s for s in shape if s != -1]))
        if n % known:
            raise ValueError(f"mesh shape {tuple(shape)} does not divide the {n} available devices")
        shape[shape.index(-1)] = n // known
    if int(np.prod(shape)) != n:
        raise ValueError(f"mesh shape {tuple(shape)} needs {int(np.prod(shape))} devices; {n} are available")
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch(mesh: Mesh, batch_size: int) -> None:
    n = mesh.shape["data"]
    if batch_size % n:
        raise ValueError(f"batch size {batch_size} is not divisible by the mesh's data axis ({n} devices)")
