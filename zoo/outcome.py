"""Outcome entry point: ``python -m zoo.outcome --config=outcome_smoke [--workdir=DIR] [--config.a.b=v ...]``.

Trains the multimodal outcome net (image + EHR covariates) and its image-only / EHR-only
ablations on the phantom outcome cohort (``data_pipelines.outcome_data``), compares them with
traditional predictive models (scikit-learn logistic regression on the covariates plus the
image-derived tumour volume, and on each alone), and reports accuracy, precision, recall
(sensitivity), specificity and AUC-ROC on the patient-level validation split.

Writes ``<workdir>/config.json`` (resolved config, data info, versions, git revision),
``<workdir>/<variant>/checkpoints`` (Orbax, via :class:`zoo.checkpoint.CheckpointIO`; a rerun
resumes), ``<workdir>/<variant>/metrics.jsonl`` and ``<workdir>/metrics.json`` (all results).

This is an entry point like ``zoo.train``'s ``__main__``, so it reuses ``zoo.train``'s pieces
(``TrainState``, ``make_train_step``, ``batch_indices``) instead of duplicating them; the trainer
itself evaluates segmentation Dice, which is why the outcome model has its own loop.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from data_pipelines import outcome_data
from zoo import optim
from zoo.checkpoint import CheckpointIO
from zoo.provenance import run_info
from zoo.configs import apply_overrides, load_config, split_overrides
from zoo.outcome_task import OutcomeTask
from zoo.registry import create_model, get_spec

__all__ = ["outcome_metrics", "logistic_baselines", "load_outcome_data", "build_outcome_model",
           "init_outcome_state", "predict_proba_np", "train_outcome_model", "pretrain_unet_encoder",
           "run_outcome", "main"]

BATCH_KEYS = ("image", "covariates", "outcome")


# ---------------------------------------------------------------------------------------- metrics

def outcome_metrics(y_true, proba) -> dict:
    """Accuracy, precision, recall, specificity, F1 and AUC-ROC of ``proba [N, K]`` against ``y_true [N]``.

    Binary (``K = 2``): class 1 is the positive (adverse) outcome; the prediction is the argmax
    (threshold 0.5). ``K > 2``: precision/recall/F1 are macro averages, AUC is one-vs-rest macro,
    specificity is omitted. Undefined values (no positive predictions; a single class in
    ``y_true`` for AUC) are NaN, not 0, so they cannot pass for a score.
    """
    from sklearn import metrics as skm

    y = np.asarray(y_true).astype(np.int64)
    p = np.asarray(proba, np.float64)
    if p.ndim != 2 or p.shape[0] != y.shape[0]:
        raise ValueError(f"proba must be [N, K] with N = len(y_true) = {y.shape[0]}; got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or Inf")
    k = p.shape[1]
    pred = p.argmax(axis=1)
    out = {"n": int(len(y)), "prevalence": float(np.mean(y == 1)) if k == 2 else None,
           "accuracy": float(np.mean(pred == y))}
    nan = float("nan")
    if k == 2:
        tp = int(np.sum((pred == 1) & (y == 1)))
        fp = int(np.sum((pred == 1) & (y == 0)))
        fn = int(np.sum((pred == 0) & (y == 1)))
        tn = int(np.sum((pred == 0) & (y == 0)))
        prec = tp / (tp + fp) if tp + fp else nan
        rec = tp / (tp + fn) if tp + fn else nan
        out.update(precision=prec, recall=rec, specificity=tn / (tn + fp) if tn + fp else nan,
                   f1=2 * prec * rec / (prec + rec) if tp else (0.0 if tp + fp and tp + fn else nan),
                   confusion={"tp": tp, "fp": fp, "fn": fn, "tn": tn})
        out["auc_roc"] = float(skm.roc_auc_score(y, p[:, 1])) if len(np.unique(y)) == 2 else nan
    else:
        labels = list(range(k))
        out.update(precision=float(skm.precision_score(y, pred, labels=labels, average="macro", zero_division=0)),
                   recall=float(skm.recall_score(y, pred, labels=labels, average="macro", zero_division=0)),
                   f1=float(skm.f1_score(y, pred, labels=labels, average="macro", zero_division=0)))
        present = np.unique(y)
        out["auc_roc"] = (float(skm.roc_auc_score(y, p / p.sum(1, keepdims=True), multi_class="ovr",
                                                  labels=labels)) if len(present) == k else nan)
    return out


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


# ---------------------------------------------------------------------------------------- data + model

def load_outcome_data(data_cfg) -> tuple[dict, dict, dict]:
    """``(train, val, info)`` from a config's ``data`` section (``data.name = "outcome_phantoms"``)."""
    if data_cfg.name != "outcome_phantoms":
        raise ValueError(f"data.name must be 'outcome_phantoms' for the outcome task, got {data_cfg.name!r}")
    size = tuple(int(s) for s in data_cfg.image_size)
    if len(size) != int(data_cfg.spatial_dims):
        raise ValueError(f"data.image_size {size} does not have data.spatial_dims={data_cfg.spatial_dims} entries")
    cfg = outcome_data.OutcomeDataConfig(
        kind=data_cfg.kind, shape=size, channels=int(data_cfg.channels) or None,
        num_patients=int(data_cfg.num_patients), val_fraction=float(data_cfg.val_fraction),
        noise_sd=float(data_cfg.noise_sd), seed=int(data_cfg.seed))
    train, val, info = outcome_data.make_outcome_dataset(cfg)
    for split, d in (("train", train), ("val", val)):
        outcome_data.check_covariates(d["covariates"], name=f"{split} covariates")
        if len(np.unique(d["outcome"])) < 2:
            raise ValueError(f"{split}: the outcome has a single class; use more data.num_patients")
    return train, val, info


def build_outcome_model(config, info, modalities: str = "both"):
    kwargs = dict(config.model.kwargs.to_dict()) if "kwargs" in config.model else {}
    kwargs["modalities"] = modalities
    dtype = config.train.get("dtype", "float32")
    if dtype != "float32":
        if dtype not in ("bfloat16", "float16"):
            raise ValueError(f"train.dtype must be float32 | bfloat16 | float16, got {dtype!r}")
        kwargs["dtype"] = getattr(jnp, dtype)
    spec = get_spec(config.model.name)
    if spec.task != "outcome":
        raise ValueError(f"model.name={config.model.name!r} is a {spec.task!r} model; the outcome entry point "
                         f"needs a model registered with task='outcome'")
    return create_model(config.model.name, spatial_dims=int(info["spatial_dims"]),
                        in_channels=len(info["channel_names"]), num_classes=int(info["num_classes"]),
                        num_covariates=len(info["covariate_names"]), **kwargs)


def init_outcome_state(model, tx, sample: dict, seed: int):
    """A ``zoo.train.TrainState`` for ``model`` from one sample batch (image + covariates)."""
    from zoo.train import TrainState, jit_init

    def init(key):
        key, init_key = jax.random.split(key)
        image = jnp.zeros((1, *sample["image"].shape[1:]), jnp.float32)
        cov = jnp.zeros((1, *sample["covariates"].shape[1:]), jnp.float32)
        variables = dict(model.init({"params": init_key, "dropout": init_key}, image, cov, train=False))
        params = variables.pop("params")
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                          model_state=variables, rng=jax.random.key_data(key))

    return jit_init(init)(jax.random.key(seed))


def _rows(arrays: dict, idx) -> dict:
    return {"image": np.asarray(arrays["image"][idx], np.float32),
            "covariates": np.asarray(arrays["covariates"][idx], np.float32),
            "outcome": np.asarray(arrays["outcome"][idx], np.int32)}


def predict_proba_np(model, variables, arrays: dict, batch_size: int, proba_fn=None) -> np.ndarray:
    """Probabilities ``[N, K]`` for every case of ``arrays`` (batches padded to ``batch_size``)."""
    outcome_data.check_covariates(arrays["covariates"], getattr(model, "num_covariates", None))
    if proba_fn is None:
        proba_fn = jax.jit(functools.partial(OutcomeTask.predict_proba, model))
    n = len(arrays["covariates"])
    out = []
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        idx = np.concatenate([idx, np.repeat(idx[-1:], batch_size - len(idx))])
        b = _rows(arrays, idx)
        b.pop("outcome")
        out.append(np.asarray(proba_fn(variables, b))[:min(batch_size, n - start)])
    return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------------------------------- transfer learning

def pretrain_unet_encoder(config, train: dict, info: dict, steps: int) -> dict:
    """Train a U-Net whose encoder matches the outcome net's built-in one on the training images'
    tumour segmentation (``train["label"]``, never the validation split); return its params."""
    from zoo.tasks import get_task
    from zoo.train import batch_at_step, create_train_state, make_train_step

    kw = dict(config.model.kwargs.to_dict()).get("encoder_kwargs", None) or {}
    if dict(config.model.kwargs.to_dict()).get("encoder", "unet") != "unet":
        raise ValueError("outcome.pretrain_unet_steps needs model.kwargs.encoder='unet'")
    num_classes = int(np.max(train["label"])) + 1
    unet = create_model("unet", spatial_dims=int(info["spatial_dims"]), in_channels=len(info["channel_names"]),
                        num_classes=max(num_classes, 2), **{k: v for k, v in kw.items()
                                                            if k in ("features", "depth", "norm", "max_features")})
    tx, _ = optim.make_optimizer(config.train)
    bs = int(config.train.batch_size)
    state = create_train_state(unet, tx, train["image"][:bs], int(config.seed))
    step_fn = jax.jit(make_train_step(unet, tx, get_task("segmentation"), "dice_ce"))
    for step in range(int(steps)):
        state, _ = step_fn(state, batch_at_step(train, step, bs, int(config.data.seed)))
    return jax.device_get(state.params)


# ---------------------------------------------------------------------------------------- training

def _log(path: str, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def train_outcome_model(config, train: dict, val: dict, info: dict, modalities: str, workdir: str | None,
                        pretrained_unet: dict | None = None) -> dict:
    """Train one variant; returns ``{"val": outcome_metrics, "step", "train_seconds", "variables"}``.

    With ``workdir``, checkpoints go to ``<workdir>/checkpoints`` (resumed when present) and
    metrics to ``<workdir>/metrics.jsonl``.
    """
    from zoo.train import batch_indices, make_train_step

    model = build_outcome_model(config, info, modalities)
    tx, schedule = optim.make_optimizer(config.train)
    bs = int(config.train.batch_size)
    if bs < 1:
        raise ValueError(f"train.batch_size must be >= 1, got {bs}")
    state = init_outcome_state(model, tx, _rows(train, np.arange(1)), int(config.seed))
    if pretrained_unet is not None and model.uses_image:
        from zoo.models.outcome import transfer_unet_encoder

        params = transfer_unet_encoder(state.params, pretrained_unet)
        state = type(state)(step=state.step, params=params, opt_state=tx.init(params),
                            model_state=state.model_state, rng=state.rng)
    step_fn = jax.jit(make_train_step(model, tx, OutcomeTask, config.train.loss), donate_argnums=(0,))
    proba_fn = jax.jit(functools.partial(OutcomeTask.predict_proba, model))
    ckpt, metrics_path = None, None
    meta = {"model": config.model.name, "modalities": modalities, "task": "outcome",
            "kwargs": dict(config.model.kwargs.to_dict()), "data": {k: v for k, v in info.items()}}
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        metrics_path = os.path.join(workdir, "metrics.jsonl")
        ckpt = CheckpointIO(os.path.join(workdir, "checkpoints"), max_to_keep=int(config.train.keep_checkpoints))
        if ckpt.latest_step() is not None:
            state, _ = ckpt.restore(None, state)
    total, t0, last = int(config.train.steps), time.time(), None
    n = len(train["covariates"])
    for step in range(int(state.step), total):
        state, m = step_fn(state, _rows(train, batch_indices(n, step, bs, int(config.data.seed))))
        done = step + 1
        if metrics_path and (done % int(config.train.log_every) == 0 or done == total):
            rec = {k: float(v) for k, v in jax.device_get(m).items()}
            _log(metrics_path, {"split": "train", "step": done, "lr": float(schedule(step)), **rec})
        if done % int(config.train.eval_every) == 0 or done == total:
            last = outcome_metrics(val["outcome"], predict_proba_np(model, state.variables, val, bs, proba_fn))
            if metrics_path:
                _log(metrics_path, {"split": "val", "step": done, **{k: v for k, v in last.items()
                                                                     if k != "confusion"}})
        if ckpt is not None and (done % int(config.train.checkpoint_every) == 0 or done == total):
            ckpt.save(done, state, meta)
    if ckpt is not None:
        ckpt.close()
    if last is None:  # a finished run resumed: evaluate what was restored
        last = outcome_metrics(val["outcome"], predict_proba_np(model, state.variables, val, bs, proba_fn))
    return {"val": last, "step": int(state.step), "train_seconds": round(time.time() - t0, 2),
            "variables": state.variables, "model": model}


def _run_info(config) -> dict:
    return run_info(config.seed)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (tuple, set)):
        return list(o)
    return str(o)


def run_outcome(config: ml_collections.ConfigDict, workdir: str | None) -> dict:
    """Train every variant of ``config.outcome.variants``, run the baselines, write ``metrics.json``."""
    variants = tuple(config.outcome.variants)
    bad = [v for v in variants if v not in ("both", "image", "ehr")]
    if bad or not variants:
        raise ValueError(f"outcome.variants must be a non-empty subset of ('both', 'image', 'ehr'), got {variants}")
    train, val, info = load_outcome_data(config.data)
    for v in variants:  # fail on a bad model config before any training (pretraining included)
        build_outcome_model(config, info, v)
    if workdir:
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump({"config": config.to_dict(), "data": info, "run": _run_info(config)}, f, indent=2,
                      default=_json_default)
    pretrained = None
    steps = int(config.outcome.get("pretrain_unet_steps", 0))
    if steps > 0:
        pretrained = pretrain_unet_encoder(config, train, info, steps)
    results = {"data": {**info, "num_train": len(train["outcome"]), "num_val": len(val["outcome"]),
                        "train_prevalence": float(np.mean(train["outcome"])),
                        "val_prevalence": float(np.mean(val["outcome"]))},
               "models": {}}
    for v in variants:
        r = train_outcome_model(config, train, val, info, v, os.path.join(workdir, v) if workdir else None,
                                pretrained)
        results["models"][f"outcome_net[{v}]"] = {**r["val"], "step": r["step"], "train_seconds": r["train_seconds"]}
    if config.outcome.get("baseline", True):
        results["models"].update(logistic_baselines(train, val, int(config.seed)))
    if workdir:
        with open(os.path.join(workdir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2, default=_json_default)
    return results


def format_table(results: dict) -> str:
    cols = ("accuracy", "precision", "recall", "specificity", "auc_roc")
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in results["models"].items():
        lines.append(f"| {name} | " + " | ".join(f"{m.get(c, float('nan')):.3f}" for c in cols) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- CLI

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m zoo.outcome", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="outcome_smoke", help="recipe name in zoo/configs (default: outcome_smoke)")
    p.add_argument("--workdir", default="", help="output directory (default: workdirs/<config>-<time>)")
    p.add_argument("--steps", default=None, help="shortcut for --config.train.steps")
    known, rest = p.parse_known_args(argv)
    overrides = split_overrides(rest, p.error)
    if known.steps is not None:
        overrides.setdefault("train.steps", known.steps)
    return known, overrides


def main(argv=None) -> int:
    known, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        config = apply_overrides(load_config(known.config), overrides)
        if "outcome" not in config:
            raise ValueError(f"config {known.config!r} has no 'outcome' section; use an outcome recipe "
                             f"(e.g. outcome_smoke)")
        workdir = os.path.abspath(known.workdir or config.workdir or os.path.join(
            "workdirs", f"{known.config}-{datetime.datetime.now():%Y%m%d-%H%M%S}"))
        print(f"workdir: {workdir}", flush=True)
        results = run_outcome(config, workdir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    d = results["data"]
    print(f"\nvalidation ({d['num_val']} patients, prevalence {d['val_prevalence']:.2f}; "
          f"train {d['num_train']}):")
    print(format_table(results))
    print(f"\nmetrics: {os.path.join(workdir, 'metrics.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
