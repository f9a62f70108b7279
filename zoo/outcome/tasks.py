"""The outcome's two training tasks on the outcome net: classification (``outcome``) and survival (``survival``).

Same interface as :class:`zoo.tasks.SegmentationTask`, so ``zoo.training.make_train_step`` drives them:
``loss(model, variables, batch, rng, train, loss_name) -> (loss, (model_state, metrics))``. Batches hold
``covariates [B, F]`` float32 and, unless the model is covariates-only (``modalities="ehr"``),
``image [B, *S, C]``; :func:`model_inputs` checks them on the host when the values are concrete.

**Classification** (:class:`OutcomeTask`, task ``outcome``): per-patient logits ``[B, K]`` against
``batch["outcome"] [B]`` int32. ``predict`` gives the predicted class ``[B]``; ``predict_proba`` the class
probabilities ``[B, max(K, 2)]`` (a single binary logit, ``K = 1``, becomes ``[1 - p, p]``). Losses: ``ce``
(softmax cross-entropy; sigmoid binary cross-entropy when ``K = 1``), ``focal`` (gamma 2, for imbalanced
outcomes), ``dice_ce`` is accepted as ``ce`` so segmentation configs' default does not need changing.
``best_metric``: AUC-ROC.

**Survival** (:class:`SurvivalTask`, task ``survival``): batches also hold ``time [B]`` float32 and ``event [B]``
(1 observed, 0 censored); the discrete-time head reads ``time_bin [B]`` int32 (the interval of ``time``,
:func:`zoo.outcome.survival.discretise`). The model's output width picks the head:

* ``K = 1``: **Cox** proportional hazards. The logit is the log relative hazard ``eta``; the loss is the
  negative Cox partial log-likelihood over the batch with **Efron**'s handling of tied event times, divided by
  the number of events (``loss_name="cox"``). Survival curves need a baseline hazard (Breslow, fitted on the
  training split after training: :mod:`zoo.outcome.survival`).
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

from data_pipelines.covariates import check_covariates

__all__ = ["OutcomeTask", "SurvivalTask", "OUTCOME_LOSSES", "SURVIVAL_LOSSES", "outcome_loss", "cox_efron_loss",
           "logistic_hazard_loss", "model_inputs"]

OUTCOME_LOSSES = ("ce", "focal", "dice_ce")
SURVIVAL_LOSSES = ("cox", "hazard")


def model_inputs(model, batch):
    """``(image, covariates)`` for the outcome net from a batch dict (``None`` for an input the model does not
    use), checked on the host when the values are concrete (``ValueError`` naming what is missing or bad)."""
    if not isinstance(batch, dict):
        raise ValueError(f"batch must be a dict with 'image' and 'covariates', got {type(batch).__name__}")
    uses_cov = getattr(model, "uses_covariates", True)
    uses_img = getattr(model, "uses_image", True)
    if uses_img and "image" not in batch:
        raise ValueError(f"batch has no 'image' (keys: {sorted(batch)})")
    if uses_cov and "covariates" not in batch:
        raise ValueError(f"batch has no 'covariates' [B, F] (keys: {sorted(batch)})")
    cov = batch.get("covariates") if uses_cov else None
    if cov is not None and not isinstance(cov, jax.core.Tracer):
        check_covariates(cov, getattr(model, "num_covariates", None), "batch['covariates']")
    return batch.get("image") if uses_img else None, cov


def _check_loss_name(loss_name: str, allowed: tuple, task: str):
    if loss_name not in allowed:
        raise ValueError(f"loss_name must be one of {allowed} for the {task} task, got {loss_name!r}")


def _training_apply(model, variables, batch, rng, train: bool, need: tuple = (), task: str = ""):
    """``(logits, new model state)`` of the model on a batch (state updated only when ``train``); the batch must
    hold the targets ``need`` of ``task``."""
    missing = [k for k in need if k not in batch]
    if missing:
        raise ValueError(f"{task} task: the batch has no {missing} (keys: {sorted(batch)})")
    image, cov = model_inputs(model, batch)
    mutable = [k for k in variables if k != "params"] if train else False
    out = model.apply(variables, image, cov, train=train, rngs={"dropout": rng}, mutable=mutable)
    logits, new_state = out if train else (out, {})
    return logits, dict(new_state)


def _eval_logits(model, variables, batch):
    image, cov = model_inputs(model, batch)
    return model.apply(variables, image, cov, train=False).astype(jnp.float32)


# ------------------------------------------------------------------------------------------ classification

def _two_class_logits(logits):
    # One binary logit z is the two-class softmax [0, z].
    return jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1) if logits.shape[-1] == 1 else logits


def outcome_loss(logits, outcome, loss_name: str = "ce"):
    """Mean loss of ``logits [B, K]`` against integer ``outcome [B]``."""
    _check_loss_name(loss_name, OUTCOME_LOSSES, "outcome")
    if logits.ndim != 2 or outcome.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [B, K] and outcome [B]; got {tuple(logits.shape)} and "
                         f"{tuple(outcome.shape)}")
    logits = _two_class_logits(logits.astype(jnp.float32))
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp_t = jnp.take_along_axis(logp, outcome[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if loss_name == "focal":
        return jnp.mean(-((1.0 - jnp.exp(logp_t)) ** 2) * logp_t)
    return jnp.mean(-logp_t)


class OutcomeTask:
    """Patient-level classification of the surgical outcome from image + covariates."""

    name = "outcome"
    best_metric = "auc_roc"

    @staticmethod
    def loss(model, variables, batch, rng, train: bool, loss_name: str = "ce"):
        _check_loss_name(loss_name, OUTCOME_LOSSES, "outcome")
        logits, new_state = _training_apply(model, variables, batch, rng, train, ("outcome",), "outcome")
        outcome = batch["outcome"].astype(jnp.int32)
        loss = outcome_loss(logits, outcome, loss_name)
        pred = jnp.argmax(_two_class_logits(logits), axis=-1)
        acc = jnp.mean((pred == outcome).astype(jnp.float32))
        return loss, (new_state, {"loss": loss, "accuracy": acc})

    @staticmethod
    def predict_proba(model, variables, batch):
        """Class probabilities ``[B, max(K, 2)]`` float32 for a batch dict (``image``, ``covariates``)."""
        return jax.nn.softmax(_two_class_logits(_eval_logits(model, variables, batch)), axis=-1)

    @staticmethod
    def predict(model, variables, images):
        """Predicted class ``[B]`` int32.

        ``images`` is a batch dict with ``image`` and ``covariates`` (the outcome model needs
        both), or a plain image array for an image-only model (``modalities="image"``).
        """
        if not isinstance(images, dict):
            if getattr(model, "uses_covariates", True):
                raise ValueError("images: the outcome model also needs covariates; pass the batch dict "
                                 "{'image': [B, *S, C], 'covariates': [B, F]}")
            images = {"image": images}
        proba = OutcomeTask.predict_proba(model, variables, images)
        return jnp.argmax(proba, axis=-1).astype(jnp.int32)


# ------------------------------------------------------------------------------------------ survival

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


def _risk_from_logits(logits):
    if logits.shape[-1] == 1:
        return logits[:, 0]
    cum_hazard = jnp.cumsum(jax.nn.softplus(logits), axis=-1)  # -log(1 - sigmoid(z)) = softplus(z)
    return cum_hazard.sum(axis=-1)


class SurvivalTask:
    """Time-to-event prediction (Cox or logistic-hazard head) from covariates, optionally with the image."""

    name = "survival"
    best_metric = "harrell_c"

    @staticmethod
    def loss(model, variables, batch, rng, train: bool, loss_name: str = "cox"):
        _check_loss_name(loss_name, SURVIVAL_LOSSES, "survival")
        need = ("time", "event") + (("time_bin",) if loss_name == "hazard" else ())
        logits, new_state = _training_apply(model, variables, batch, rng, train, need, f"survival ({loss_name})")
        k = logits.shape[-1]
        if (loss_name == "cox") != (k == 1):
            raise ValueError(f"survival task: loss {loss_name!r} needs {'1 output' if loss_name == 'cox' else '>= 2 '}"
                             f"{'' if loss_name == 'cox' else 'outputs (time intervals)'}; the model has {k}")
        if loss_name == "cox":
            loss = cox_efron_loss(logits[:, 0], batch["time"], batch["event"])
        else:
            loss = logistic_hazard_loss(logits, batch["time_bin"], batch["event"])
        return loss, (new_state, {"loss": loss})

    @staticmethod
    def predict_proba(model, variables, batch):
        """Cox: log relative hazard ``[B, 1]``; logistic hazard: discrete hazards ``[B, K]`` (float32)."""
        logits = _eval_logits(model, variables, batch)
        return logits if logits.shape[-1] == 1 else jax.nn.sigmoid(logits)

    @staticmethod
    def predict(model, variables, batch):
        """Risk score ``[B]`` float32 (higher: earlier event)."""
        return _risk_from_logits(_eval_logits(model, variables, batch))
