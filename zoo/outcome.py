"""Outcome entry point: ``python -m zoo.outcome --config=outcome_smoke [--workdir=DIR] [--config.a.b=v ...]``.

Trains the multimodal outcome net (image + EHR covariates) and its image-only / EHR-only
ablations on the phantom outcome cohort (``data_pipelines.outcome_data``), compares them with
traditional predictive models (scikit-learn logistic regression on the covariates plus the
image-derived tumour volume, and on each alone), and reports accuracy, precision, recall
(sensitivity), specificity and AUC-ROC on the patient-level validation split.

Every variant trains through the training core (:func:`zoo.training.train_and_evaluate`, with the outcome
task's validation metrics and ``best/`` by AUC-ROC), so each ``<workdir>/<variant>`` is a work directory
that ``zoo.load_pretrained`` opens and ``eval.report`` reports: ``config.json``, ``checkpoints/`` (a rerun
resumes), ``best/``, ``metrics.jsonl``, ``eval.json``. ``<workdir>/config.json`` and
``<workdir>/metrics.json`` hold the whole comparison.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
import tempfile

import jax
import ml_collections
import numpy as np

from data_pipelines import loader, outcome_data
from data_pipelines.datasets import load_dataset
from scoring import outcome_metrics
from zoo import optim
from zoo.build import build_model
from zoo.cli import default_workdir, parse_run_args, run_cli, run_parser
from zoo.configs import apply_overrides, load_config
from zoo.models.outcome import transfer_unet_encoder
from data_pipelines.atomic import write_json
from zoo.provenance import run_metadata
from zoo.registry import create_model, get_spec
from zoo.tasks import get_task
from zoo.training import create_train_state, format_outcome_table, make_train_step, prepare_run, train_and_evaluate

__all__ = ["logistic_baselines", "tumour_volume", "variant_config", "pretrain_unet_encoder", "run_outcome", "main"]

VARIANTS = ("both", "image", "ehr")
#: What ``outcome_metrics`` reports; the rows of ``metrics.json`` carry these plus the run's step and time.
METRIC_KEYS = ("n", "prevalence", "accuracy", "precision", "recall", "specificity", "f1", "confusion", "auc_roc")


# ---------------------------------------------------------------------------------------- baseline

def tumour_volume(label) -> np.ndarray:
    """Tumour volume in voxels per case (``label > 0``) from the segmentation ``[N, *S]``."""
    label = np.asarray(label)
    return (label > 0).reshape(label.shape[0], -1).sum(axis=1).astype(np.float64)


def logistic_baselines(train: dict, val: dict, seed: int = 0) -> dict:
    """Traditional predictive models: standardised logistic regression (scikit-learn).

    ``ehr+volume`` uses the covariates plus the image-derived tumour volume (from the
    segmentation, as a clinician's contour would give it); ``ehr`` and ``volume`` are its
    single-source ablations. Returns ``{name: outcome_metrics}`` on ``val``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def features(d, which):
        cols = []
        if "ehr" in which:
            cols.append(outcome_data.check_covariates(d["covariates"]).astype(np.float64))
        if "volume" in which:
            cols.append(tumour_volume(d["label"])[:, None])
        return np.concatenate(cols, axis=1)

    y_tr = np.asarray(train["outcome"])
    if len(np.unique(y_tr)) < 2:
        raise ValueError("train: the outcome has a single class; logistic regression needs both")
    out = {}
    for name in ("ehr+volume", "ehr", "volume"):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
        clf.fit(features(train, name), y_tr)
        out[f"logreg[{name}]"] = outcome_metrics(val["outcome"], clf.predict_proba(features(val, name)))
    return out


# ---------------------------------------------------------------------------------------- variants

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


# ---------------------------------------------------------------------------------------- transfer learning

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


# ---------------------------------------------------------------------------------------- training

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


# ---------------------------------------------------------------------------------------- CLI

def parse_args(argv):
    p = run_parser("python -m zoo.outcome", __doc__.splitlines()[0], default_config="outcome_smoke")
    return parse_run_args(p, argv)


def main(argv=None) -> int:
    known, overrides = parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        config = apply_overrides(load_config(known.config), overrides)
        if "outcome" not in config:
            raise ValueError(f"config {known.config!r} has no 'outcome' section; use an outcome recipe "
                             f"(e.g. outcome_smoke)")
        workdir = default_workdir(known, config)
        print(f"workdir: {workdir}", flush=True)
        results = run_outcome(config, workdir, progress=not known.no_progress)
        if results.get("preempted"):
            print(f"preempted while training {results['variant']}; rerun the same command to resume", flush=True)
            return 143
        d = results["data"]
        print(f"\nvalidation ({d['num_val']} patients, prevalence {d['val_prevalence']:.2f}; "
              f"train {d['num_train']}):")
        print(format_outcome_table(results["models"]))
        print(f"\nmetrics: {os.path.join(workdir, 'metrics.json')}")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
