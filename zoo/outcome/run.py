"""The outcome net's comparison run: the multimodal net (image + covariates), its image-only / covariates-only
ablations and the logistic baselines on the phantom outcome cohort (``data_pipelines.outcome_data``).

:func:`run_outcome` trains every variant through the training core (:func:`zoo.training.train_and_evaluate`,
with the outcome task's validation metrics and ``best/`` by AUC-ROC), so each ``<workdir>/<variant>`` is a work
directory that ``zoo.load_pretrained`` opens and ``eval.report`` reports: ``config.json``, ``checkpoints/`` (a
rerun resumes), ``best/``, ``metrics.jsonl``, ``eval.json``. ``<workdir>/config.json`` and
``<workdir>/metrics.json`` hold the whole comparison (accuracy, precision, recall (sensitivity), specificity,
AUC-ROC on the patient-level validation split). ``python -m zoo.outcome`` is its command line.
"""

from __future__ import annotations

import copy
import functools
import os
import tempfile

import jax
import ml_collections
import numpy as np

from data_pipelines import loader
from data_pipelines.atomic import write_json
from data_pipelines.datasets import load_dataset
from zoo import optim
from zoo.build import build_model
from zoo.models.outcome import transfer_unet_encoder
from zoo.outcome.baselines import logistic_baselines
from zoo.provenance import run_metadata
from zoo.registry import create_model, get_spec
from zoo.tasks import get_task
from zoo.training import create_train_state, make_train_step, prepare_run, train_and_evaluate

__all__ = ["VARIANTS", "METRIC_KEYS", "variant_config", "pretrain_unet_encoder", "run_outcome"]

VARIANTS = ("both", "image", "ehr")
#: What ``outcome_metrics`` reports; the rows of ``metrics.json`` carry these plus the run's step and time.
METRIC_KEYS = ("n", "prevalence", "accuracy", "precision", "recall", "specificity", "f1", "confusion", "auc_roc")


def variant_config(config, modalities: str) -> ml_collections.ConfigDict:
    """``config`` for one variant: the model's ``modalities`` (``both``, ``image``, ``ehr``) in its kwargs, so
    the saved run rebuilds exactly this model."""
    spec = get_spec(config.model.name)
    if spec.task != "outcome":
        raise ValueError(f"model.name={config.model.name!r} is a {spec.task!r} model; the outcome entry point "
                         f"needs a model registered with task='outcome'")
    c = copy.deepcopy(config)
    with c.unlocked():
        c.model.kwargs.modalities = modalities
    return c


def pretrain_unet_encoder(config, train: dict, info, steps: int) -> dict:
    """Train a U-Net whose encoder matches the outcome net's built-in one on the training images'
    tumour segmentation (``train["label"]``, never the validation split); return its params."""
    kw = dict(config.model.kwargs.to_dict()).get("encoder_kwargs", None) or {}
    if dict(config.model.kwargs.to_dict()).get("encoder", "unet") != "unet":
        raise ValueError("outcome.pretrain_unet_steps needs model.kwargs.encoder='unet'")
    num_classes = int(np.max(train["label"])) + 1
    unet = create_model("unet", spatial_dims=int(info.spatial_dims), in_channels=len(info.channel_names),
                        num_classes=max(num_classes, 2), **{k: v for k, v in kw.items()
                                                            if k in ("features", "depth", "norm", "max_features")})
    tx, _ = optim.make_optimizer(config.train)
    bs = int(config.train.batch_size)
    state = create_train_state(unet, tx, train["image"][:bs], int(config.seed))
    step_fn = jax.jit(make_train_step(unet, tx, get_task("segmentation"), "dice_ce"))
    source = loader.ArraysSource({"image": train["image"], "label": train["label"]})
    for step in range(int(steps)):
        idx = loader.batch_indices(len(source), step, bs, int(config.data.seed))
        state, _ = step_fn(state, loader.gather(source, idx, ("image", "label")))
    return jax.device_get(state.params)


def run_outcome(config: ml_collections.ConfigDict, workdir: str | None, progress: bool = False) -> dict:
    """Train every variant of ``config.outcome.variants`` (each in ``<workdir>/<variant>``), run the baselines,
    write ``metrics.json``. Without ``workdir`` the variants train in a temporary folder that is removed."""
    variants = tuple(config.outcome.variants)
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        raise ValueError(f"outcome.variants must be a non-empty subset of {VARIANTS}, got {variants}")
    configs = {v: variant_config(config, v) for v in variants}
    setups = {v: prepare_run(c) for v, c in configs.items()}  # a bad training config fails before any data
    train, val, info = load_dataset(config.data)
    for c in configs.values():  # a bad model config fails before any training (pretraining included)
        build_model(c, info)
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="medzoo-outcome-") as tmp:
            return _run(config, configs, setups, (train, val, info), tmp, progress, write=False)
    return _run(config, configs, setups, (train, val, info), workdir, progress, write=True)


def _transfer(unet_params, params):
    return transfer_unet_encoder(params, unet_params)


def _run(config, configs, setups, data, workdir: str, progress: bool, write: bool) -> dict:
    train, val, info = data
    os.makedirs(workdir, exist_ok=True)
    if write:
        write_json(os.path.join(workdir, "config.json"), run_metadata(config, "outcome", info))
    transfer = None
    steps = int(config.outcome.get("pretrain_unet_steps", 0))
    if steps > 0:
        transfer = functools.partial(_transfer, pretrain_unet_encoder(config, train, info, steps))

    results = {"data": {**info.extra, "name": info.name, "covariate_names": list(info.covariate_names),
                        "num_train": len(train["outcome"]), "num_val": len(val["outcome"]),
                        "train_prevalence": float(np.mean(train["outcome"])),
                        "val_prevalence": float(np.mean(val["outcome"]))},
               "models": {}}
    for v, c in configs.items():
        r = train_and_evaluate(c, os.path.join(workdir, v), progress=progress, data=data, setup=setups[v],
                               init_params=transfer if v != "ehr" else None)
        if r.get("preempted"):
            return {**results, "preempted": True, "variant": v}
        results["models"][f"outcome_net[{v}]"] = {
            **{k: r[k] for k in METRIC_KEYS if k in r}, "step": r["step"], "train_seconds": r["train_seconds"],
            "best_step": r["best_step"], "best_auc_roc": r["best_auc_roc"]}
    if config.outcome.get("baseline", True):
        results["models"].update(logistic_baselines(train, val, int(config.seed)))
    if write:
        write_json(os.path.join(workdir, "metrics.json"), results)
    return results
