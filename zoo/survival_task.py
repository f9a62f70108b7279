"""Survival task: time-to-event heads on the outcome net (EHR only, or image + EHR fusion).

Batches hold ``covariates [B, F]`` (and ``image [B, *S, C]`` for fused models), ``time [B]`` float32 and
``event [B]`` (1 observed, 0 censored); the discrete-time head also reads ``time_bin [B]`` int32 (the interval
of ``time``, :func:`zoo.survival.discretise`). The model's output width picks the head:

* ``K = 1``: **Cox** proportional hazards. The logit is the log relative hazard ``eta``; the loss is the
  negative Cox partial log-likelihood over the batch with **Efron**'s handling of tied event times, divided by
  the number of events (``loss_name="cox"``). Survival curves need a baseline hazard (Breslow, fitted on the
  training split after training: :mod:`zoo.survival`).
* ``K >= 2``: **discrete-time logistic hazard** (Gensheimer & Narasimhan 2019; pycox ``LogisticHazard``). Logit
  ``k`` is the logit of the hazard ``h_k = P(T in interval k | T >= interval k)``; a patient censored in
  interval ``j`` survived intervals ``0..j``, one with an event in ``j`` survived ``0..j-1`` then failed
  (``loss_name="hazard"``: binary cross-entropy over the intervals at risk, mean over patients).
  ``S(t_k | x) = prod_{m <= k} (1 - h_m)``.

``predict`` gives a risk score ``[B]`` (higher: earlier event) for the C-index: ``eta`` for Cox, and for the
hazard head the sum over intervals of the cumulative hazard ``-log S(t_k)`` (scikit-survival's random-forest
"mortality" convention). ``predict_proba`` gives the head's raw quantity: ``eta [B, 1]`` (Cox) or the discrete
hazards ``h [B, K]``. ``best_metric``: Harrell's C on validation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo.outcome_task import _inputs

__all__ = ["SurvivalTask", "SURVIVAL_LOSSES", "cox_efron_loss", "logistic_hazard_loss", "survival_from_hazard"]

SURVIVAL_LOSSES = ("cox", "hazard")


def cox_efron_loss(eta, time, event):
    """Negative Efron partial log-likelihood of log relative hazards ``eta [B]`` / number of events (0 if none).

    For an event time ``t`` with ``d`` tied events ``D`` and risk set ``R = {j: t_j >= t}``:
    ``sum_{i in D} eta_i - sum_{l=0}^{d-1} log(sum_{j in R} e^{eta_j} - l/d sum_{i in D} e^{eta_i})``. Here each
    event takes its own ``l`` (its rank among the tied events), which is the same sum, computed with ``[B, B]``
    masks so it jits and differentiates.
    """
    eta = eta.astype(jnp.float32)
    time = time.astype(jnp.float32)
    ev = event.astype(jnp.float32)
    m = jax.lax.stop_gradient(jnp.max(eta))
    w = jnp.exp(eta - m)
    at_risk = (time[None, :] >= time[:, None]).astype(jnp.float32)  # [i, j]: j at risk at t_i
    same = (time[None, :] == time[:, None]).astype(jnp.float32)
    tied_events = same * ev[None, :]
    risk_sum = at_risk @ w
    tie_sum = tied_events @ w
    d = tied_events.sum(axis=1)
    n = eta.shape[0]
    earlier = jnp.tril(jnp.ones((n, n), jnp.float32), k=-1)  # j < i
    rank = (tied_events * earlier).sum(axis=1)
    denom = risk_sum - jnp.where(d > 0, rank / jnp.maximum(d, 1.0), 0.0) * tie_sum
    log_term = jnp.log(jnp.maximum(denom, jnp.finfo(jnp.float32).tiny)) + m
    ll = jnp.sum(ev * (eta - log_term))
    return -ll / jnp.maximum(ev.sum(), 1.0)


def logistic_hazard_loss(logits, time_bin, event):
    """Discrete-time logistic-hazard negative log-likelihood of ``logits [B, K]``, mean over patients."""
    logits = logits.astype(jnp.float32)
    k = jnp.arange(logits.shape[-1])[None, :]
    j = time_bin.astype(jnp.int32)[:, None]
    target = ((k == j) & (event.astype(jnp.int32)[:, None] == 1)).astype(jnp.float32)
    at_risk = (k <= j).astype(jnp.float32)
    bce = jnp.maximum(logits, 0) - logits * target + jnp.log1p(jnp.exp(-jnp.abs(logits)))
    return jnp.mean(jnp.sum(bce * at_risk, axis=-1))


def survival_from_hazard(hazard):
    """``S(t_k) = prod_{m <= k} (1 - h_m)`` for discrete hazards ``[..., K]``."""
    return jnp.cumprod(1.0 - hazard, axis=-1)


def _risk_from_logits(logits):
    if logits.shape[-1] == 1:
        return logits[:, 0]
    cum_hazard = jnp.cumsum(jax.nn.softplus(logits), axis=-1)  # -log(1 - sigmoid(z)) = softplus(z)
    return cum_hazard.sum(axis=-1)


class SurvivalTask:
    """Time-to-event prediction (Cox or logistic-hazard head) from EHR covariates, optionally with the image."""

    name = "survival"
    best_metric = "harrell_c"

    @staticmethod
    def loss(model, variables, batch, rng, train: bool, loss_name: str = "cox"):
        if loss_name not in SURVIVAL_LOSSES:
            raise ValueError(f"loss_name must be one of {SURVIVAL_LOSSES} for the survival task, got {loss_name!r}")
        need = ("time", "event") + (("time_bin",) if loss_name == "hazard" else ())
        missing = [k for k in need if k not in batch]
        if missing:
            raise ValueError(f"survival task ({loss_name}): the batch has no {missing} (keys: {sorted(batch)})")
        image, cov = _inputs(model, batch)
        mutable = [k for k in variables if k != "params"] if train else False
        out = model.apply(variables, image, cov, train=train, rngs={"dropout": rng}, mutable=mutable)
        logits, new_state = out if train else (out, {})
        k = logits.shape[-1]
        if (loss_name == "cox") != (k == 1):
            raise ValueError(f"survival task: loss {loss_name!r} needs {'1 output' if loss_name == 'cox' else '>= 2 '}"
                             f"{'' if loss_name == 'cox' else 'outputs (time intervals)'}; the model has {k}")
        if loss_name == "cox":
            loss = cox_efron_loss(logits[:, 0], batch["time"], batch["event"])
        else:
            loss = logistic_hazard_loss(logits, batch["time_bin"], batch["event"])
        return loss, (dict(new_state), {"loss": loss})

    @staticmethod
    def predict_proba(model, variables, batch):
        """Cox: log relative hazard ``[B, 1]``; logistic hazard: discrete hazards ``[B, K]`` (float32)."""
        image, cov = _inputs(model, batch)
        logits = model.apply(variables, image, cov, train=False).astype(jnp.float32)
        return logits if logits.shape[-1] == 1 else jax.nn.sigmoid(logits)

    @staticmethod
    def predict(model, variables, batch):
        """Risk score ``[B]`` float32 (higher: earlier event)."""
        image, cov = _inputs(model, batch)
        return _risk_from_logits(model.apply(variables, image, cov, train=False).astype(jnp.float32))
