"""The train step: augmentation on device, gradient accumulation, one optimiser update.

``make_train_step(model, tx, task, loss_name)`` gives a pure ``(state, batch, lr_scale=None) -> (state,
metrics)`` for any task (:mod:`zoo.tasks`); the caller jits it with its shardings.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from kernels import augment
from zoo.training.state import TrainState

__all__ = ["make_augment_fn", "make_train_step"]


def make_augment_fn(config):
    """Per-sample augmentation ``(key, image [*S, C], label [*S]) -> (image, label)`` or ``None``."""
    aug = config.get("augment", None)
    if aug is None or not aug.get("enabled", False):
        return None
    spec = aug.get("spec", {})
    spec = spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else dict(spec)
    # An empty spec means "the default segmentation augmentation", not "no transform".
    return augment.make_pipeline(spec or augment.default_segmentation_spec())


def _augment_batch(augment_fn, key, batch):
    """Apply ``augment_fn`` per sample with split keys; instance maps get the same geometry as labels."""
    keys = jax.random.split(key, batch["image"].shape[0])
    image, label = jax.vmap(augment_fn)(keys, batch["image"], batch["label"])
    out = dict(batch, image=image, label=label.astype(jnp.int32))
    if "instances" in batch:  # same key -> same geometric transform, nearest-neighbour like the labels
        _, inst = jax.vmap(augment_fn)(keys, batch["image"], batch["instances"])
        out["instances"] = inst.astype(jnp.int32)
    return out


def _microbatch(batch, i, n):
    """Rows ``i, i+n, i+2n, ...``: every data shard keeps its rows local (no cross-device traffic)."""

    def take(x):
        return x.reshape(x.shape[0] // n, n, *x.shape[1:])[:, i]

    return jax.tree.map(take, batch)


def make_train_step(model, tx, task, loss_name: str, *, grad_accum: int = 1, augment_fn=None,
                    skip_nonfinite: bool = False):
    """``(state, batch, lr_scale=None) -> (state, metrics)``, pure; jit it with shardings by the caller.

    ``grad_accum`` > 1 splits the batch into that many micro-batches (a ``lax.scan``) and averages
    their gradients. ``lr_scale`` (a scalar array) multiplies the update: the optimisers here are
    linear in the learning rate, so this is a run with ``learning_rate * lr_scale`` (used to vmap
    trials over learning rates in :mod:`zoo.hparam`).

    ``metrics["finite"]`` is 1 when the loss and the gradient norm are finite. With ``skip_nonfinite`` a step
    whose loss or gradients are not finite changes nothing but the step counter and the RNG (the update is
    skipped, as with ``optax.apply_if_finite``); otherwise the trainer stops at such a step.
    """
    grad_accum = int(grad_accum)
    if grad_accum < 1:
        raise ValueError(f"train.grad_accum must be >= 1, got {grad_accum}")

    def grads_of(params, model_state, batch, rng):
        def loss_fn(p):
            return task.loss(model, {"params": p, **model_state}, batch, rng, True, loss_name)

        (loss, (new_state, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, (new_state or model_state), metrics, grads

    def step_fn(state: TrainState, batch, lr_scale=None):
        rng = jax.random.wrap_key_data(state.rng)
        rng, step_rng = jax.random.split(rng)
        step_rng = jax.random.fold_in(step_rng, state.step)
        drop_rng, aug_rng = jax.random.split(step_rng)
        if augment_fn is not None:
            batch = _augment_batch(augment_fn, aug_rng, batch)
        if grad_accum == 1:
            loss, model_state, metrics, grads = grads_of(state.params, state.model_state, batch, drop_rng)
        else:
            def body(carry, i):
                model_state, gsum, msum = carry
                mb = _microbatch(batch, i, grad_accum)
                loss, model_state, metrics, g = grads_of(state.params, model_state, mb,
                                                         jax.random.fold_in(drop_rng, i))
                gsum = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), gsum, g)
                msum = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), msum, metrics)
                return (model_state, gsum, msum), None

            zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
            m_shape = jax.eval_shape(lambda: grads_of(state.params, state.model_state,
                                                      _microbatch(batch, 0, grad_accum), drop_rng)[2])
            m0 = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), m_shape)
            (model_state, gsum, msum), _ = jax.lax.scan(body, (state.model_state, zeros, m0),
                                                        jnp.arange(grad_accum))
            grads = jax.tree.map(lambda g, p: (g / grad_accum).astype(p.dtype), gsum, state.params)
            metrics = jax.tree.map(lambda m: m / grad_accum, msum)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        if lr_scale is not None:
            updates = jax.tree.map(lambda u: u * lr_scale.astype(u.dtype), updates)
        params = jax.tree.map(lambda p, u: p + u, state.params, updates)
        gnorm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))
        finite = jnp.isfinite(metrics["loss"].astype(jnp.float32)) & jnp.isfinite(gnorm)
        metrics = dict(metrics, grad_norm=gnorm, finite=finite.astype(jnp.float32))
        if skip_nonfinite:
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
            model_state = keep(model_state, state.model_state)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state,
                               model_state=model_state, rng=jax.random.key_data(rng))
        return new_state, metrics

    return step_fn
