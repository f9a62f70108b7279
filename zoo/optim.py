"""Optimisers and learning-rate schedules from a ``train`` config section.

Schedules: ``constant``, ``cosine``, ``poly`` (nnU-Net: ``lr * (1 - t/T)^0.9``), ``warmup_cosine``;
``warmup_steps > 0`` prepends a linear warm-up from 0 to any of them. Optimisers: ``adam``, ``adamw``
(decoupled weight decay), ``sgd`` (momentum, optionally Nesterov), ``rmsprop``; ``grad_clip > 0`` clips
by global norm first. Every optimiser here is linear in the learning rate (the update is
``-lr(t) * direction``), which :mod:`zoo.hparam` relies on to vmap trials over learning rates.
"""

from __future__ import annotations

import jax
import optax

__all__ = ["SCHEDULES", "OPTIMIZERS", "make_schedule", "make_optimizer"]

SCHEDULES = ("constant", "cosine", "poly", "warmup_cosine")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")


def make_schedule(cfg):
    lr, steps, warmup = float(cfg.learning_rate), int(cfg.steps), int(cfg.get("warmup_steps", 0))
    if lr <= 0:
        raise ValueError(f"train.learning_rate must be positive, got {lr}")
    if steps < 1:
        raise ValueError(f"train.steps must be >= 1, got {steps}")
    if warmup < 0:
        raise ValueError(f"train.warmup_steps must be >= 0, got {warmup}")
    decay = max(steps - warmup, 1)
    if cfg.schedule == "constant":
        sched = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        sched = optax.cosine_decay_schedule(lr, decay)
    elif cfg.schedule == "poly":  # nnU-Net: lr * (1 - t/T)^0.9
        sched = optax.polynomial_schedule(lr, 0.0, 0.9, decay)
    elif cfg.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(steps, warmup + 1))
    else:
        raise ValueError(f"unknown train.schedule {cfg.schedule!r}; expected one of {' | '.join(SCHEDULES)}")
    if warmup > 0:
        sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
    return sched


def make_optimizer(cfg):
    """``(optax transformation, schedule)`` from ``cfg`` (the ``train`` section)."""
    sched = make_schedule(cfg)
    name = cfg.optimizer
    wd = float(cfg.get("weight_decay", 0.0))
    momentum = cfg.get("momentum", None)
    if wd < 0:
        raise ValueError(f"train.weight_decay must be >= 0, got {wd}")
    if name == "adam":
        opt = optax.adam(sched)
    elif name == "adamw":
        opt = optax.adamw(sched, weight_decay=wd)
    elif name == "sgd":  # nnU-Net: SGD, Nesterov momentum 0.99
        opt = optax.sgd(sched, momentum=0.99 if momentum is None else float(momentum),
                        nesterov=bool(cfg.get("nesterov", True)))
    elif name == "rmsprop":
        opt = optax.rmsprop(sched, momentum=0.0 if momentum is None else float(momentum))
    else:
        raise ValueError(f"unknown train.optimizer {name!r}; expected one of {' | '.join(OPTIMIZERS)}")
    chain = []
    clip = float(cfg.get("grad_clip", 0.0))
    if clip > 0:
        chain.append(optax.clip_by_global_norm(clip))
    if name != "adamw" and wd > 0:  # coupled (L2-style) decay for the others
        chain.append(optax.add_decayed_weights(wd))
    chain.append(opt)
    return _standard_promotion(optax.chain(*chain)), sched


def _standard_promotion(tx):
    """Run ``tx.update`` under standard dtype promotion: optax mixes Python floats with int32 step
    counts (``1 - b1 ** count``), which ``jax_numpy_dtype_promotion="strict"`` (the test suite) rejects."""

    def update(updates, state, params=None):
        with jax.numpy_dtype_promotion("standard"):
            return tx.update(updates, state, params)

    return optax.GradientTransformation(tx.init, update)
