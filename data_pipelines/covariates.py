"""Covariates: the one encoder of a patient's clinical variables (age, sex, comorbidities, lab values...) into
the ``[N, F]`` float32 matrix the outcome models read, and the check every such matrix passes.

:class:`CovariateEncoder` is fitted on the training split only and then applied, unchanged, to validation,
test and external rows:

* numeric covariates: missing values imputed with the training **median**; ``standardise`` (all numeric
  covariates, or the ones named) z-scores them with the training mean and standard deviation (a constant
  column keeps sd 1);
* categorical covariates: missing values imputed with the training **mode**, then one-hot. With
  ``drop_reference`` (the default) the most frequent training level is the reference and has no column, so an
  unpenalised Cox model stays identifiable; without it every level has a column. ``levels`` fixes a
  covariate's levels and their order instead of reading them from the training rows. A level seen only
  outside the training split raises ``ValueError``.

``to_dict`` / ``from_dict`` store and restore a fitted encoder (a model's metadata keeps it, so prediction
encodes new patients exactly as training did). A restored encoder without a median for a column leaves its
missing values as NaN, for the model's own check to refuse. The phantom cohort's fixed encoding
(``data_pipelines.ehr.encode_covariates``) is an encoder restored from constants.

It lives in ``data_pipelines`` so that the data sets (``data_pipelines.outcome_data``) and the outcome home
(``zoo.outcome``) use the same one.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["CovariateEncoder", "check_covariates"]


def check_covariates(covariates, num_covariates: int | None = None, name: str = "covariates") -> np.ndarray:
    """Validate ``covariates [B, F]``: 2-D, ``F == num_covariates`` when given, all finite."""
    cov = np.asarray(covariates)
    if cov.ndim != 2:
        raise ValueError(f"{name} must be [B, F], got shape {cov.shape}")
    if num_covariates is not None and cov.shape[1] != num_covariates:
        raise ValueError(f"{name} has {cov.shape[1]} features per patient; the model expects {num_covariates}")
    if not np.all(np.isfinite(cov)):
        bad = sorted(set(np.nonzero(~np.isfinite(cov))[1].tolist()))
        raise ValueError(f"{name} contains NaN or Inf (feature columns {bad}); impute them first")
    return cov


class CovariateEncoder:
    """Covariates -> ``[N, F]`` float32, fitted on the training split (see the module docstring).

    ``data`` (``fit``/``transform``) is a ``pandas.DataFrame``, a dict of columns, anything with a ``frame``
    (a :class:`zoo.outcome.cohorts.Cohort`) or a 2-D array whose columns are ``covariates`` in order.
    ``feature_names``: ``name`` for a numeric covariate, ``name=level`` for each level column.
    """

    def __init__(self, covariates: Sequence[str], categorical: Sequence[str] = (), *,
                 standardise: bool | Sequence[str] = False, drop_reference: bool = True,
                 levels: Mapping[str, Sequence[str]] | None = None):
        self.covariates, self.categorical = tuple(covariates), tuple(categorical)
        outside = [c for c in self.categorical if c not in self.covariates]
        if outside:
            raise ValueError(f"categorical {outside} are not among the covariates {list(self.covariates)}")
        numeric = [c for c in self.covariates if c not in self.categorical]
        self.standardise = tuple(numeric) if standardise is True else tuple(standardise or ())
        bad = [c for c in self.standardise if c not in numeric]
        if bad:
            raise ValueError(f"standardise: {bad} are not numeric covariates ({numeric})")
        self.drop_reference = bool(drop_reference)
        self.declared = {c: tuple(str(v) for v in lv) for c, lv in dict(levels or {}).items()}
        bad = [c for c in self.declared if c not in self.categorical]
        if bad:
            raise ValueError(f"levels: {bad} are not categorical covariates ({list(self.categorical)})")
        self.medians: dict[str, float] = {}
        self.scale: dict[str, tuple[float, float]] = {}  # name -> (mean, sd)
        self.levels: dict[str, tuple[str, ...]] = {}  # reference level (the training mode) first unless declared
        self.fitted = False

    @classmethod
    def for_cohort(cls, cohort, **kwargs) -> "CovariateEncoder":
        """An encoder of ``cohort``'s covariates (a :class:`zoo.outcome.cohorts.Cohort`)."""
        return cls(cohort.covariates, cohort.categorical, **kwargs)

    @property
    def feature_names(self) -> tuple[str, ...]:
        names = []
        for c in self.covariates:
            if c in self.categorical:
                names += [f"{c}={lv}" for lv in self.levels[c][1 if self.drop_reference else 0:]]
            else:
                names.append(c)
        return tuple(names)

    def _frame(self, data):
        import pandas as pd

        data = getattr(data, "frame", data)
        if isinstance(data, np.ndarray):
            if data.ndim != 2 or data.shape[1] != len(self.covariates):
                raise ValueError(f"covariates must be [N, {len(self.covariates)}] ({', '.join(self.covariates)}), "
                                 f"got {data.shape}")
            data = pd.DataFrame(data, columns=list(self.covariates))
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(dict(data))
        missing = [c for c in self.covariates if c not in frame.columns]
        if missing:
            raise ValueError(f"unknown covariate name(s) {missing}; columns are {list(frame.columns)}")
        return frame

    def fit(self, data) -> "CovariateEncoder":
        """Imputation values, levels and standardisation from the training rows ``data``."""
        import pandas as pd

        frame = self._frame(data)
        for c in self.covariates:
            if c in self.categorical:
                s = frame[c].dropna().astype(str)
                if s.empty:
                    raise ValueError(f"covariate {c!r}: no values in the training split")
                counts = s.value_counts()
                # most frequent first (ties by name), so the reference level is deterministic
                mode_first = sorted(counts.index, key=lambda lv: (-int(counts[lv]), lv))
                if c in self.declared:
                    unknown = sorted(set(mode_first) - set(self.declared[c]))
                    if unknown:
                        raise ValueError(f"covariate {c!r}: level(s) {unknown} in the training split are not "
                                         f"among its levels {list(self.declared[c])}")
                    self.levels[c] = self.declared[c]
                else:
                    self.levels[c] = tuple(mode_first)
                self.medians[c] = mode_first[0]  # categorical: the mode
            else:
                v = pd.to_numeric(frame[c], errors="coerce").dropna().to_numpy(np.float64)
                if not len(v):
                    raise ValueError(f"covariate {c!r}: no values in the training split")
                self.medians[c] = float(np.median(v))
                if c in self.standardise:
                    sd = float(v.std())
                    self.scale[c] = (float(v.mean()), sd if sd > 0 else 1.0)
        self.fitted = True
        return self

    def transform(self, data, split: str = "validation") -> np.ndarray:
        """``[N, len(feature_names)]`` float32; ``split`` names the rows in error messages."""
        import pandas as pd

        if not self.fitted:
            raise ValueError("CovariateEncoder: not fitted; call fit() on the training split first")
        frame = self._frame(data)
        cols = []
        for c in self.covariates:
            if c in self.categorical:
                fill = self.medians.get(c, self.levels[c][0])
                s = frame[c].astype(object).where(frame[c].notna(), fill).astype(str)
                unseen = sorted(set(s) - set(self.levels[c]))
                if unseen:
                    raise ValueError(f"covariate {c!r}: level(s) {unseen} in the {split} split were not seen in "
                                     f"training (levels {list(self.levels[c])})")
                cols += [(s.to_numpy() == lv).astype(np.float64)
                         for lv in self.levels[c][1 if self.drop_reference else 0:]]
            else:
                v = pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
                if c in self.medians:
                    v = np.where(np.isnan(v), self.medians[c], v)
                if c in self.scale:
                    mean, sd = self.scale[c]
                    v = (v - mean) / sd
                cols.append(v)
        return np.stack(cols, axis=1).astype(np.float32)

    def fit_transform(self, data) -> np.ndarray:
        return self.fit(data).transform(data, "training")

    def to_dict(self) -> dict:
        """The fitted encoder as plain JSON values (:meth:`from_dict` restores it)."""
        numeric = {c: v for c, v in self.medians.items() if c not in self.categorical}
        return {"covariates": list(self.covariates), "categorical": list(self.categorical),
                "medians": numeric, "modes": {c: self.medians[c] for c in self.categorical if c in self.medians},
                "levels": {k: list(v) for k, v in self.levels.items()}, "drop_reference": self.drop_reference,
                "standardise": {c: list(ms) for c, ms in self.scale.items()},
                "imputation": "numeric: training median; categorical: training mode",
                "feature_names": list(self.feature_names)}

    @classmethod
    def from_dict(cls, d: Mapping) -> "CovariateEncoder":
        """A fitted encoder from :meth:`to_dict`'s values (or constants in the same form)."""
        scale = {c: (float(m), float(s)) for c, (m, s) in dict(d.get("standardise") or {}).items()}
        enc = cls(d["covariates"], d.get("categorical", ()), standardise=tuple(scale),
                  drop_reference=d.get("drop_reference", True))
        enc.levels = {c: tuple(str(v) for v in lv) for c, lv in dict(d.get("levels") or {}).items()}
        missing = [c for c in enc.categorical if c not in enc.levels]
        if missing:
            raise ValueError(f"CovariateEncoder.from_dict: no levels for the categorical covariate(s) {missing}")
        enc.medians = {**{c: float(v) for c, v in dict(d.get("medians") or {}).items()},
                       **{c: str(v) for c, v in dict(d.get("modes") or {}).items()}}
        enc.scale, enc.fitted = scale, True
        return enc
