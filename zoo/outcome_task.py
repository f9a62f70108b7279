"""Outcome task: per-patient logits ``[B, K]`` against outcomes ``[B]`` (image + EHR covariates).

Same interface as :class:`zoo.tasks.SegmentationTask`, so ``zoo.train.make_train_step`` drives it:
``loss(model, variables, batch, rng, train, loss_name) -> (loss, (model_state, metrics))`` reads
``batch["image"] [B, *S, C]``, ``batch["covariates"] [B, F]`` float32 and ``batch["outcome"] [B]``
int32. ``predict`` gives the predicted class ``[B]``; ``predict_proba`` the class probabilities
``[B, max(K, 2)]`` (a single binary logit, ``K = 1``, becomes ``[1 - p, p]``).

Losses: ``ce`` (softmax cross-entropy; sigmoid binary cross-entropy when ``K = 1``), ``focal``
(gamma 2, for imbalanced outcomes), ``dice_ce`` is accepted as ``ce`` so segmentation configs'
default does not need changing.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from data_pipelines.outcome_data import check_covariates

__all__ = ["OutcomeTask", "OUTCOME_LOSSES", "outcome_loss"]

OUTCOME_LOSSES = ("ce", "focal", "dice_ce")


def _two_class_logits(logits):
    # One binary logit z is the two-class softmax [0, z].
    return jnp.concatenate([jnp.zeros_like(logits), logits], axis=-1) if logits.shape[-1] == 1 else logits


def outcome_loss(logits, outcome, loss_name: str = "ce"):
    """Mean loss of ``logits [B, K]`` against integer ``outcome [B]``."""
    if loss_name not in OUTCOME_LOSSES:
        raise ValueError(f"loss_name must be one of {OUTCOME_LOSSES} for the outcome task, got {loss_name!r}")
    if logits.ndim != 2 or outcome.shape != logits.shape[:1]:
        raise ValueError(f"logits must be [B, K] and outcome [B]; got {tuple(logits.shape)} and "
                         f"{tuple(outcome.shape)}")
    logits = _two_class_logits(logits.astype(jnp.float32))
    logp = jax.nn.log_softmax(logits, axis=-1)
    logp_t = jnp.take_along_axis(logp, outcome[:, None].astype(jnp.int32), axis=-1)[:, 0]
    if loss_name == "focal":
        return jnp.mean(-((1.0 - jnp.exp(logp_t)) ** 2) * logp_t)
    return jnp.mean(-logp_t)


def _inputs(model, batch):
    """``(image, covariates)`` for the model, checked on the host when the values are concrete."""
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


class OutcomeTask:
    """Patient-level classification of the surgical outcome from image + EHR covariates."""

    name = "outcome"
    best_metric = "auc_roc"

    @staticmethod
    def loss(model, variables, batch, rng, train: bool, loss_name: str = "ce"):
        if loss_name not in OUTCOME_LOSSES:
            raise ValueError(f"loss_name must be one of {OUTCOME_LOSSES} for the outcome task, got {loss_name!r}")
        if "outcome" not in batch:
            raise ValueError(f"batch has no 'outcome' [B] int32 (keys: {sorted(batch)})")
        image, cov = _inputs(model, batch)
        mutable = [k for k in variables if k != "params"] if train else False
        out = model.apply(variables, image, cov, train=train, rngs={"dropout": rng}, mutable=mutable)
        logits, new_state = out if train else (out, {})
        outcome = batch["outcome"].astype(jnp.int32)
        loss = outcome_loss(logits, outcome, loss_name)
        pred = jnp.argmax(_two_class_logits(logits), axis=-1)
        acc = jnp.mean((pred == outcome).astype(jnp.float32))
        return loss, (dict(new_state), {"loss": loss, "accuracy": acc})

    @staticmethod
    def predict_proba(model, variables, batch):
        """Class probabilities ``[B, max(K, 2)]`` float32 for a batch dict (``image``, ``covariates``)."""
        image, cov = _inputs(model, batch)
        logits = model.apply(variables, image, cov, train=False)
        return jax.nn.softmax(_two_class_logits(logits.astype(jnp.float32)), axis=-1)

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

