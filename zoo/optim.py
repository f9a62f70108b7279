"""Optimisers and learning-rate schedules from a ``train`` config section."""

from __future__ import annotations

import optax

__all__ = ["make_schedule", "make_optimizer"]


def make_schedule(cfg):
    lr, steps, warmup = float(cfg.learning_rate), int(cfg.steps), int(cfg.get("warmup_steps", 0))
    if cfg.schedule == "constant":
        sched = optax.constant_schedule(lr)
    elif cfg.schedule == "cosine":
        sched = optax.cosine_decay_schedule(lr, max(steps - warmup, 1))
    elif cfg.schedule == "poly":  # nnU-Net: lr * (1 - t/T)^0.9
        sched = optax.polynomial_schedule(lr, 0.0, 0.9, max(steps - warmup, 1))
    elif cfg.schedule == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warmup, 1), max(steps, warmup + 1))
    else:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; expected constant | cosine | poly | warmup_cosine")
    if warmup > 0:
        sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), sched], [warmup])
    return sched


def make_optimizer(cfg):
    sched = make_schedule(cfg)
    name = cfg.optimizer
    if name == "adam":
        opt = optax.adam(sched)
    elif name == "adamw":
        opt = optax.adamw(sched, weight_decay=float(cfg.get("weight_decay", 0.0)) or 1e-4)
    elif name == "sgd":
        opt = optax.sgd(sched, momentum=float(cfg.get("momentum", 0.99)), nesterov=bool(cfg.get("nesterov", True)))
    elif name == "rmsprop":
        opt = optax.rmsprop(sched, momentum=float(cfg.get("momentum", 0.0)) if "momentum" in cfg else 0.0)
    else:
        raise ValueError(f"unknown optimizer {name!r}; expected adam | adamw | sgd | rmsprop")
    chain = []
    if float(cfg.get("grad_clip", 0.0)) > 0:
        chain.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
    if name != "adamw" and float(cfg.get("weight_decay", 0.0)) > 0:
        chain.append(optax.add_decayed_weights(float(cfg.weight_decay)))
    chain.append(opt)
    return optax.chain(*chain), sched
