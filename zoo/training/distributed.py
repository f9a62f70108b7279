"""Multi-host set-up and coordination: ``jax.distributed`` from flags or the ``JAX_*`` environment."""

from __future__ import annotations

import os

import jax

__all__ = ["init_distributed", "sync"]


def init_distributed(coordinator: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None) -> bool:
    """``jax.distributed.initialize`` from flags, else ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID``; a no-op (``False``) when neither names a coordinator."""
    env = os.environ
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if not coordinator:
        if num_processes not in (None, 1) or process_id not in (None, 0):
            raise ValueError("--num_processes/--process_id need --coordinator=HOST:PORT")
        return False
    try:
        num_processes = int(num_processes if num_processes is not None else env["JAX_NUM_PROCESSES"])
        process_id = int(process_id if process_id is not None else env["JAX_PROCESS_ID"])
    except KeyError as e:
        raise ValueError(f"--coordinator needs --num_processes and --process_id (or {e.args[0]})") from None
    except (TypeError, ValueError):
        raise ValueError(f"--num_processes/--process_id must be integers, got {num_processes!r}/{process_id!r}") \
            from None
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in [0, --num_processes={num_processes})")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)
    return True


def sync(name: str) -> None:
    """Multi-process: wait for every process at a coordination-service barrier (generous timeout)."""
    if jax.process_count() > 1:
        from jax._src import distributed

        distributed.global_state.client.wait_at_barrier(f"medzoo_{name}", 30 * 60 * 1000)
