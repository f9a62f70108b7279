"""The outcome's survival heads: deep time-to-event models on the training core (train, attach survival curves,
reload).

``fit_deep_survival(config, train, val, info, workdir)`` trains the survival outcome net
(``outcome_net_survival``, task ``survival``: :mod:`zoo.outcome.tasks`) with
:func:`zoo.training.train_and_evaluate` (``best/`` by validation Harrell's C), then stores beside the
checkpoints what turns its output into survival curves, ``<workdir>/survival.json``:

* the covariate standardisation (mean / sd of the training split, the one covariate encoder
  :class:`data_pipelines.covariates.CovariateEncoder` with ``standardise``; the network sees standardised
  covariates),
* Cox head: the **Breslow** baseline cumulative hazard ``H0(t) = sum_{t_i <= t} d_i / sum_{j: t_j >= t_i}
  exp(eta_j)`` on the training split, with ``eta`` from the selected checkpoint, so
  ``S(t | x) = exp(-H0(t) exp(eta(x)))``;
* logistic-hazard head: the interval edges (``time_bins``: quantiles of the training event times), with
  ``S(t | x)`` linear between the edges (constant density within an interval).

``SurvivalModel.load(workdir)`` reloads both through ``zoo.load_pretrained`` and gives ``risk(covariates,
image=None)`` and ``survival(covariates, times, image=None)`` on raw (unstandardised) covariates.
``survival_config(...)`` builds the run config (covariates only or image + covariates fusion). The outcome
report (``eval.studies.outcome_report``) and the application call these; nothing here is an entry point.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from data_pipelines.atomic import write_json
from data_pipelines.covariates import CovariateEncoder
from data_pipelines.info import DatasetInfo
from scoring.survival import check_survival
from zoo.pretrained import load_pretrained
from zoo.training import train_and_evaluate

__all__ = ["survival_config", "time_bins", "discretise", "breslow", "fit_deep_survival", "SurvivalModel",
           "HEADS", "SURVIVAL_FILE"]

HEADS = ("cox", "hazard")
SURVIVAL_FILE = "survival.json"


def survival_config(head: str = "cox", modalities: str = "ehr", *, num_bins: int = 20, steps: int = 400,
                    batch_size: int = 256, learning_rate: float = 1e-3, weight_decay: float = 1e-4,
                    ehr_hidden=(32, 32), embed_dim: int = 32, head_hidden: int = 16, dropout: float = 0.1,
                    encoder_kwargs=None, eval_every: int = 50, seed: int = 0) -> ml_collections.ConfigDict:
    """Run config of a deep survival model (``head`` cox | hazard; ``modalities`` ehr | both)."""
    if head not in HEADS:
        raise ValueError(f"head must be one of {HEADS}, got {head!r}")
    if modalities not in ("ehr", "both"):
        raise ValueError(f"modalities must be 'ehr' or 'both', got {modalities!r}")
    if head == "hazard" and int(num_bins) < 2:
        raise ValueError(f"num_bins must be >= 2 for the hazard head, got {num_bins}")
    c = ml_collections.ConfigDict()
    c.seed = int(seed)
    c.workdir = ""
    c.data = ml_collections.ConfigDict({"name": "cohort", "seed": int(seed)})
    kwargs = {"modalities": modalities, "ehr_hidden": tuple(int(h) for h in ehr_hidden), "embed_dim": int(embed_dim),
              "head_hidden": int(head_hidden), "dropout": float(dropout), "fusion": "concat"}
    if modalities == "both":
        enc = dict(encoder_kwargs or {"features": 8, "depth": 3, "norm": "none"})
        # pool every level: the stride-1 level sees the tumour's area directly
        kwargs.update(encoder="unet", encoder_kwargs=enc, pool="avg", pool_levels=int(enc.get("depth", 4)))
    c.model = ml_collections.ConfigDict({"name": "outcome_net_survival", "kwargs": kwargs})
    c.survival = ml_collections.ConfigDict({"head": head, "num_bins": int(num_bins) if head == "hazard" else 1})
    c.train = ml_collections.ConfigDict({
        "steps": int(steps), "batch_size": int(batch_size), "optimizer": "adamw", "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay), "schedule": "cosine", "warmup_steps": min(20, int(steps) // 10),
        "grad_clip": 1.0, "loss": head, "log_every": max(1, min(50, int(steps))),
        "eval_every": max(1, min(int(eval_every), int(steps))), "checkpoint_every": int(steps),
        "keep_checkpoints": 1, "dtype": "float32", "tensorboard": False})
    return c


def time_bins(time, event, num_bins: int) -> np.ndarray:
    """Interval edges ``[0, q_1, ..., t_max]`` (``num_bins`` intervals at quantiles of the event times)."""
    event, time = check_survival(event, time, "time_bins")
    qs = np.quantile(time[event], np.linspace(0, 1, int(num_bins) + 1)[1:-1])
    edges = np.unique(np.r_[0.0, qs, time.max()])
    if len(edges) < 3:
        raise ValueError(f"time_bins: the event times give fewer than 2 distinct intervals ({edges})")
    return edges


def discretise(time, edges) -> np.ndarray:
    """Interval ``k`` of each time, ``edges[k] < t <= edges[k+1]`` (times beyond the last edge: the last)."""
    k = np.searchsorted(np.asarray(edges), np.asarray(time, np.float64), side="left") - 1
    return np.clip(k, 0, len(edges) - 2).astype(np.int32)


def breslow(eta, time, event) -> tuple[np.ndarray, np.ndarray]:
    """Breslow baseline cumulative hazard ``(unique times, H0)`` from log relative hazards ``eta``."""
    event, time = check_survival(event, time, "breslow")
    eta = np.asarray(eta, np.float64)
    uniq, inv = np.unique(time, return_inverse=True)
    w = np.exp(eta - eta.max())
    risk = np.bincount(inv, weights=w, minlength=len(uniq))[::-1].cumsum()[::-1]
    d = np.bincount(inv, weights=event.astype(np.float64), minlength=len(uniq))
    return uniq, np.cumsum(d / risk) * np.exp(-eta.max())


def _checked(name, d, info):
    if "covariates" not in d or "time" not in d or "event" not in d:
        raise ValueError(f"{name}: needs 'covariates', 'time' and 'event' (has {sorted(d)})")
    cov = np.asarray(d["covariates"], np.float64)
    if cov.ndim != 2 or cov.shape[1] != len(info.covariate_names) or not np.all(np.isfinite(cov)):
        raise ValueError(f"{name}: covariates must be finite [N, {len(info.covariate_names)}], got {cov.shape}")
    check_survival(d["event"], d["time"], name)


def fit_deep_survival(config, train: dict, val: dict, info: DatasetInfo, workdir: str, *, progress: bool = False,
                      extra: dict | None = None) -> "SurvivalModel":
    """Train ``config`` (:func:`survival_config`) on ``train`` (``covariates`` raw, ``time``, ``event``, optional
    ``image``), select the checkpoint on ``val``, write ``survival.json`` and return the loaded model.
    ``info.num_classes`` must be 1 (Cox) or the number of intervals (hazard); ``extra`` is stored as is."""
    head = config.survival.head
    for name, d in (("train", train), ("val", val)):
        _checked(name, d, info)
    names = tuple(info.covariate_names)
    enc = CovariateEncoder(names, standardise=True).fit(np.asarray(train["covariates"], np.float64))

    def prep(d):
        out = {k: np.asarray(v) for k, v in d.items() if k in ("image", "covariates", "time", "event")}
        out["covariates"] = enc.transform(np.asarray(d["covariates"], np.float64))
        out["time"] = np.asarray(d["time"], np.float32)
        out["event"] = np.asarray(d["event"], np.int32)
        return out

    tr, va = prep(train), prep(val)
    edges = None
    if head == "hazard":
        edges = time_bins(train["time"], train["event"], int(config.survival.num_bins))
        tr["time_bin"], va["time_bin"] = discretise(tr["time"], edges), discretise(va["time"], edges)
    k = 1 if head == "cox" else len(edges) - 1
    info = DatasetInfo(info.name, k, tuple(info.channel_names), (), int(info.spatial_dims),
                       covariate_names=tuple(info.covariate_names), extra=dict(info.extra))
    result = train_and_evaluate(config, workdir, progress=progress, data=(tr, va, info))
    meta = {"head": head, "covariate_names": list(info.covariate_names),
            "standardise": {"mean": [enc.scale[c][0] for c in names], "sd": [enc.scale[c][1] for c in names]},
            "best_harrell_c_val": result.get("best_harrell_c"), "best_step": result.get("best_step"),
            "extra": dict(extra or {})}
    model = SurvivalModel(load_pretrained(_best(workdir)), meta)
    if head == "cox":
        t, h0 = breslow(model.risk(train["covariates"], train.get("image")), train["time"], train["event"])
        meta["breslow"] = {"times": t.tolist(), "cum_hazard": h0.tolist()}
    else:
        meta["edges"] = edges.tolist()
    write_json(os.path.join(workdir, SURVIVAL_FILE), meta)
    return SurvivalModel(model.pretrained, meta)


def _best(workdir):
    best = os.path.join(workdir, "best")
    return best if os.path.isdir(best) and os.listdir(best) else workdir


class SurvivalModel:
    """A trained deep survival model: ``risk`` and ``survival`` on raw covariates (``[N, F]``, the encoder's
    features) and, for fused models, images ``[N, *S, C]``."""

    def __init__(self, pretrained, meta: dict):
        self.pretrained, self.meta = pretrained, meta
        names = tuple(meta["covariate_names"])
        #: the training split's covariate means and standard deviations ``[F]`` (a form's defaults)
        self.mean = np.asarray(meta["standardise"]["mean"], np.float64)
        self.sd = np.asarray(meta["standardise"]["sd"], np.float64)
        scale = zip(self.mean.tolist(), self.sd.tolist())
        # no medians: a missing value stays NaN and the model refuses it
        self.encoder = CovariateEncoder.from_dict({"covariates": names, "standardise": dict(zip(names, scale))})

    @classmethod
    def load(cls, workdir: str) -> "SurvivalModel":
        path = os.path.join(workdir, SURVIVAL_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no survival model metadata (was it trained by fit_deep_survival?)")
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
        return cls(load_pretrained(_best(workdir)), meta)

    @property
    def head(self) -> str:
        return self.meta["head"]

    def _inputs(self, covariates, image):
        out = {"covariates": self.encoder.transform(np.asarray(covariates, np.float64))}
        if image is not None:
            out["image"] = np.asarray(image, np.float32)
        return out

    def risk(self, covariates, image=None, batch_size: int = 512) -> np.ndarray:
        """Risk scores ``[N]`` (higher: earlier event)."""
        return self.pretrained.predict(self._inputs(covariates, image), batch_size).astype(np.float64)

    def survival(self, covariates, times, image=None, batch_size: int = 512) -> np.ndarray:
        """``S(t | x)`` ``[N, T]`` at ``times``."""
        times = np.atleast_1d(np.asarray(times, np.float64))
        out = self.pretrained.predict_proba(self._inputs(covariates, image), batch_size).astype(np.float64)
        if self.head == "cox":
            if "breslow" not in self.meta:
                raise ValueError("this Cox model has no Breslow baseline yet")
            bt, bh = (np.asarray(self.meta["breslow"][k]) for k in ("times", "cum_hazard"))
            idx = np.searchsorted(bt, times, side="right") - 1
            h0 = np.where(idx >= 0, bh[np.maximum(idx, 0)], 0.0)
            return np.exp(-np.exp(out[:, :1]) * h0[None, :])
        edges = np.asarray(self.meta["edges"])
        s = np.concatenate([np.ones((len(out), 1)), np.cumprod(1.0 - out, axis=1)], axis=1)
        return np.stack([np.interp(times, edges, row) for row in s])
