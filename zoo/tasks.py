"""Training tasks: how a model's output becomes a loss and a label map.

A task has ``loss(model, variables, batch, rng, train, loss_name) -> (loss, (model_state, metrics))``,
``predict(model, variables, inputs) -> labels`` and ``predict_proba(model, variables, inputs) -> probabilities``
(``inputs``: images ``[B, *S, C]`` or a batch dict), and names the validation metric that picks the best
checkpoint (``best_metric``). Registry entries name their task; :mod:`zoo.inference` is the one place
that runs ``predict``/``predict_proba`` over data.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zoo import losses

__all__ = ["SegmentationTask", "InstanceTask", "get_task", "TASKS"]


def _images(inputs):
    return inputs["image"] if isinstance(inputs, dict) else inputs


class SegmentationTask:
    """Semantic segmentation: logits ``[B, *S, K]`` against labels ``[B, *S]``.

    Auxiliary outputs that a model ``sow``s into the ``aux_logits`` collection (deep
    supervision, full resolution) are added to the loss with weights halving per head.
    """

    name = "segmentation"
    best_metric = "mean_dice"

    @staticmethod
    def loss(model, variables, batch, rng, train: bool, loss_name: str = "dice_ce"):
        loss_fn = losses.get_loss(loss_name)
        mutable = [k for k in variables if k != "params"] + ["aux_logits"] if train else False
        out = model.apply(variables, batch["image"], train=train, rngs={"dropout": rng}, mutable=mutable)
        logits, new_state = out if train else (out, {})
        loss = loss_fn(logits, batch["label"])
        aux = new_state.pop("aux_logits", {}) if train else {}
        for i, a in enumerate(jax.tree.leaves(aux)):
            loss = loss + 0.5 ** (i + 1) * loss_fn(a, batch["label"])
        new_state = {k: v for k, v in new_state.items() if k != "aux_logits"}
        return loss, (new_state, {"loss": loss})

    @staticmethod
    def predict(model, variables, inputs):
        logits = model.apply(variables, _images(inputs), train=False)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)

    @staticmethod
    def predict_proba(model, variables, inputs):
        """Softmax ``[B, *S, K]`` float32."""
        logits = model.apply(variables, _images(inputs), train=False)
        return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


TASKS = {"segmentation": SegmentationTask}

from zoo.outcome.tasks import OutcomeTask, SurvivalTask  # noqa: E402  (image + covariates -> class / time to event)

TASKS["outcome"] = OutcomeTask
TASKS["survival"] = SurvivalTask


class InstanceTask:
    """Instance segmentation (Mask R-CNN): the model derives boxes, classes and masks from
    ``batch["instances"] [B, *S]`` (+ ``batch["label"]``) itself and returns its loss terms.

    The model provides ``losses(x, instances, labels, key, train)`` → dict with ``loss`` and
    ``semantic_labels(x)`` → ``[B, *S]``. ``loss_name`` is ignored (the loss is the model's own).
    """

    name = "instance"
    best_metric = "mean_dice"
    proba_from_labels = True  # zoo.inference one-hots the labels instead of compiling the detector twice

    @staticmethod
    def loss(model, variables, batch, rng, train: bool, loss_name: str = "mask_rcnn"):
        if "instances" not in batch:
            raise ValueError("instance task: the batch needs 'instances' [B, *S] int32 (0 = none, 1..M object ids)")
        mutable = [k for k in variables if k != "params"] if train else False
        out = model.apply(variables, batch["image"], batch["instances"], batch["label"], rng, train=train,
                          method="losses", mutable=mutable)
        terms, new_state = out if train else (out, {})
        return terms["loss"], (dict(new_state), terms)

    @staticmethod
    def predict(model, variables, inputs):
        return model.apply(variables, _images(inputs), method="semantic_labels")

    @staticmethod
    def predict_proba(model, variables, inputs):
        """One-hot ``[B, *S, K]`` float32 of the semantic label map (detections are thresholded, not soft)."""
        labels = InstanceTask.predict(model, variables, inputs)
        return jax.nn.one_hot(labels, model.num_classes, dtype=jnp.float32)


TASKS["instance"] = InstanceTask


def get_task(name: str):
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name]
