"""The outcome's classical baselines: the models a deep outcome model is compared with.

* :func:`logistic_regression`: the one logistic regression (scikit-learn, covariates standardised on the
  training rows) for a binary outcome; :func:`logistic_baselines` fits it on the phantom cohort's covariates, the
  image-derived tumour volume (:func:`tumour_volume`) and both, as ``zoo.outcome`` reports them.
* :class:`SurvivalBaseline`: Cox proportional hazards (``coxph``), a random survival forest (``rsf``) and
  gradient-boosted Cox survival (``gbsa``) from scikit-survival (a test extra, imported when used), with
  ``fit(x, time, event)``, ``risk(x)`` and ``survival(x, times)`` as ``eval.studies.outcome_report`` uses them.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.covariates import check_covariates
from scoring import outcome_metrics

__all__ = ["logistic_regression", "logistic_baselines", "tumour_volume", "SurvivalBaseline", "SURVIVAL_BASELINES"]

SURVIVAL_BASELINES = ("coxph", "rsf", "gbsa")


def logistic_regression(x, y, seed: int = 0):
    """A standardised logistic regression (scikit-learn pipeline) fitted on ``x [N, F]`` and 0/1 ``y [N]``;
    ``predict_proba`` gives ``[N, 2]``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    return clf.fit(np.asarray(x), np.asarray(y))


def tumour_volume(label) -> np.ndarray:
    """Tumour volume in voxels per case (``label > 0``) from the segmentation ``[N, *S]``."""
    label = np.asarray(label)
    return (label > 0).reshape(label.shape[0], -1).sum(axis=1).astype(np.float64)


def logistic_baselines(train: dict, val: dict, seed: int = 0) -> dict:
    """Traditional predictive models of the binary outcome: :func:`logistic_regression` on the covariates and
    the tumour volume.

    ``ehr+volume`` uses the covariates plus the image-derived tumour volume (from the segmentation, as a
    clinician's contour would give it); ``ehr`` and ``volume`` are its single-source ablations. Returns
    ``{name: outcome_metrics}`` on ``val``.
    """
    def features(d, which):
        cols = []
        if "ehr" in which:
            cols.append(check_covariates(d["covariates"]).astype(np.float64))
        if "volume" in which:
            cols.append(tumour_volume(d["label"])[:, None])
        return np.concatenate(cols, axis=1)

    y_tr = np.asarray(train["outcome"])
    if len(np.unique(y_tr)) < 2:
        raise ValueError("train: the outcome has a single class; logistic regression needs both")
    out = {}
    for name in ("ehr+volume", "ehr", "volume"):
        clf = logistic_regression(features(train, name), y_tr, seed)
        out[f"logreg[{name}]"] = outcome_metrics(val["outcome"], clf.predict_proba(features(val, name)))
    return out


class SurvivalBaseline:
    """A scikit-survival estimator (``name``: one of ``SURVIVAL_BASELINES``): ``risk(X)`` and
    ``survival(X, times)``. ``rsf_trees`` / ``gbsa_trees``: the ensembles' sizes."""

    def __init__(self, name: str, seed: int = 0, *, rsf_trees: int = 100, gbsa_trees: int = 100):
        if name not in SURVIVAL_BASELINES:
            raise ValueError(f"unknown survival baseline {name!r}; expected one of {SURVIVAL_BASELINES}")
        try:
            from sksurv.ensemble import GradientBoostingSurvivalAnalysis, RandomSurvivalForest
            from sksurv.linear_model import CoxPHSurvivalAnalysis
        except ImportError as e:  # a test extra, not a run-time dependency
            raise ValueError("models coxph/rsf/gbsa need scikit-survival (pip install scikit-survival), or pass "
                             "--models deep_cox,deep_hazard") from e
        self.name = name
        if name == "coxph":
            self.est = CoxPHSurvivalAnalysis(alpha=1e-6)
        elif name == "rsf":
            self.est = RandomSurvivalForest(n_estimators=rsf_trees, min_samples_leaf=15, max_features="sqrt",
                                            n_jobs=2, random_state=seed)
        else:
            self.est = GradientBoostingSurvivalAnalysis(n_estimators=gbsa_trees, learning_rate=0.1, max_depth=3,
                                                        random_state=seed)

    def fit(self, x, time, event) -> "SurvivalBaseline":
        y = np.empty(len(time), dtype=[("event", bool), ("time", np.float64)])
        y["event"], y["time"] = np.asarray(event).astype(bool), time
        self.est.fit(np.asarray(x, np.float64), y)
        return self

    def risk(self, x) -> np.ndarray:
        """Risk scores ``[N]`` (higher: earlier event)."""
        return np.asarray(self.est.predict(np.asarray(x, np.float64)), np.float64)

    def survival(self, x, times) -> np.ndarray:
        """``S(t | x)`` ``[N, T]`` at ``times`` (a step function of the training event times)."""
        arr = self.est.predict_survival_function(np.asarray(x, np.float64), return_array=True)
        ut = self.est.unique_times_
        idx = np.searchsorted(ut, np.asarray(times, np.float64), side="right") - 1
        return np.where(idx[None, :] >= 0, arr[:, np.maximum(idx, 0)], 1.0)
