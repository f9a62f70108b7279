"""Splits by patient: k-fold, train/val/test and external validation by site.

Every function takes one ``patient_id`` per *sample* (slices and repeated images of one patient
share an id) and returns sample indices, so no patient ever sits on both sides of a split.
Stratification (label presence, outcome) is decided per patient: the most frequent stratum among
the patient's samples (ties: the smallest value). Results depend only on the ids, strata and
``seed`` (not on the order the samples come in).
"""

from __future__ import annotations

import dataclasses
from typing import Hashable, Sequence

import numpy as np

__all__ = ["Fold", "patient_kfold", "patient_split", "train_val_test_split", "site_split"]


@dataclasses.dataclass(frozen=True)
class Fold:
    """Sample indices of one fold (sorted ``int64`` arrays); unpacks as ``train, val = fold``."""

    train: np.ndarray
    val: np.ndarray

    def __iter__(self):
        return iter((self.train, self.val))


def _groups(patient_ids, stratify=None, name="patient_ids"):
    ids = [str(p) for p in patient_ids]
    if not ids:
        raise ValueError(f"{name} is empty")
    uniq = sorted(set(ids))
    index = {p: i for i, p in enumerate(uniq)}
    sample_group = np.array([index[p] for p in ids], np.int64)
    if stratify is None:
        strata = np.zeros(len(uniq), np.int64)
    else:
        strat = list(stratify)
        if len(strat) != len(ids):
            raise ValueError(f"stratify has {len(strat)} entries but {name} has {len(ids)}")
        strat_keys = sorted({repr(s) for s in strat})
        code = {k: i for i, k in enumerate(strat_keys)}
        counts = np.zeros((len(uniq), len(strat_keys)), np.int64)
        for g, s in zip(sample_group, strat):
            counts[g, code[repr(s)]] += 1
        strata = counts.argmax(axis=1)
    return uniq, sample_group, strata


def _deal(uniq, strata, n_bins: int, seed: int, weights=None) -> np.ndarray:
    """Assign each patient a bin: shuffle within each stratum, deal round-robin (continuing across strata).

    ``weights`` (fractions per bin) deals proportionally instead of evenly.
    """
    rng = np.random.default_rng(seed)
    # Shuffle a canonical (sorted) order so the result does not depend on input order.
    assign = np.empty(len(uniq), np.int64)
    if weights is None:
        pos = int(rng.integers(n_bins))
        for s in np.unique(strata):
            members = np.flatnonzero(strata == s)
            members = members[rng.permutation(len(members))]
            for m in members:
                assign[m] = pos % n_bins
                pos += 1
        return assign
    w = np.asarray(weights, np.float64)
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        members = members[rng.permutation(len(members))]
        n = len(members)
        counts = np.floor(w * n).astype(int)
        # Largest remainders get the leftovers.
        for i in np.argsort(-(w * n - counts), kind="stable")[: n - counts.sum()]:
            counts[i] += 1
        assign[members] = np.repeat(np.arange(n_bins), counts)
    return assign


def patient_kfold(patient_ids: Sequence[Hashable], k: int, seed: int = 0, stratify=None, *,
                  name: str = "k") -> list[Fold]:
    """``k`` folds by patient: each patient is in exactly one fold's ``val``. The one k-fold splitter (the
    training core's folds, ``zoo.training.kfold``, and the studies use it).

    ``patient_ids``: one id per sample; ``stratify``: optional one value per sample (e.g. label
    presence or outcome) balanced across folds. Returns ``k`` ``Fold(train, val)`` of sample indices.
    ``name``: what the errors call ``k`` (``folds`` for a command line's ``--folds``).
    """
    try:
        ok = not isinstance(k, bool) and int(k) == k and k >= 2
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= 2, got {k!r}")
    uniq, sample_group, strata = _groups(patient_ids, stratify)
    if k > len(uniq):
        raise ValueError(f"{name}={k} is more than the {len(uniq)} patients; {k} folds need at least {k} patients")
    fold_of_patient = _deal(uniq, strata, int(k), seed)
    fold_of_sample = fold_of_patient[sample_group]
    return [Fold(np.flatnonzero(fold_of_sample != f), np.flatnonzero(fold_of_sample == f)) for f in range(int(k))]


def train_val_test_split(patient_ids, fractions=(0.7, 0.15, 0.15), seed: int = 0, stratify=None) -> dict:
    """``{"train", "val", "test"}`` -> sample indices, split by patient in the given ``fractions``.

    Each split with a non-zero fraction gets at least one patient when there are enough patients.
    """
    f = np.asarray(fractions, np.float64)
    if f.shape != (3,) or np.any(f < 0) or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    uniq, sample_group, strata = _groups(patient_ids, stratify)
    need = int((f > 0).sum())
    if len(uniq) < need:
        raise ValueError(f"{need} non-empty splits need at least {need} patients; got {len(uniq)}")
    assign = _deal(uniq, strata, 3, seed, weights=f)
    # Guarantee a patient in every requested split (small cohorts), taking from the largest split.
    for b in np.flatnonzero(f > 0):
        if not np.any(assign == b):
            donor = int(np.argmax(np.bincount(assign, minlength=3)))
            assign[np.flatnonzero(assign == donor)[0]] = b
    per_sample = assign[sample_group]
    return {name: np.flatnonzero(per_sample == b) for b, name in enumerate(("train", "val", "test"))}


def patient_split(patient_ids, val_fraction: float, seed=0, stratify=None,
                  method: str = "deal") -> tuple[np.ndarray, np.ndarray]:
    """Train/val sample indices by patient; both sides get at least one patient.

    ``seed``: an int or a sequence of ints (``numpy.random.default_rng`` entropy). ``method``:

    * ``"deal"`` (default): shuffle the patients of each stratum and deal them to train/val in
      proportion (largest remainders), as ``train_val_test_split`` does;
    * ``"permute"``: one seeded permutation of the sorted patients; its first
      ``round(n * val_fraction)`` patients (at least 1, at most ``n - 1``) are validation. No
      ``stratify``. The outcome cohort (``data_pipelines.outcome_data``) is split this way.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    if method not in ("deal", "permute"):
        raise ValueError(f"method must be 'deal' or 'permute', got {method!r}")
    if method == "permute" and stratify is not None:
        raise ValueError("method='permute' does not stratify; use method='deal' with stratify")
    uniq, sample_group, strata = _groups(patient_ids, stratify)
    if len(uniq) < 2:
        raise ValueError(f"a train/val split needs at least 2 patients; got {len(uniq)} ({uniq})")
    if method == "permute":
        perm = np.random.default_rng(seed).permutation(len(uniq))
        n_val = min(max(int(round(len(uniq) * val_fraction)), 1), len(uniq) - 1)
        assign = np.zeros(len(uniq), np.int64)
        assign[perm[:n_val]] = 1
    else:
        assign = _deal(uniq, strata, 2, seed, weights=(1.0 - val_fraction, val_fraction))
        for b in (0, 1):
            if not np.any(assign == b):
                assign[np.flatnonzero(assign == 1 - b)[0]] = b
    per_sample = assign[sample_group]
    return np.flatnonzero(per_sample == 0), np.flatnonzero(per_sample == 1)


def site_split(sites: Sequence[Hashable], external: Sequence[Hashable] | Hashable,
               patient_ids=None) -> tuple[np.ndarray, np.ndarray]:
    """External validation: ``(internal, external)`` sample indices, ``external`` naming held-out site(s).

    With ``patient_ids`` given, a patient seen at two sites raises ``ValueError`` (it would leak).
    """
    sites = [str(s) for s in sites]
    ext = {str(external)} if isinstance(external, (str, int)) else {str(e) for e in external}
    unknown = ext - set(sites)
    if unknown:
        raise ValueError(f"external site(s) {sorted(unknown)} not in the data; sites are {sorted(set(sites))}")
    if ext == set(sites):
        raise ValueError(f"external sites {sorted(ext)} cover every site; nothing left for development")
    is_ext = np.array([s in ext for s in sites])
    if patient_ids is not None:
        pids = [str(p) for p in patient_ids]
        if len(pids) != len(sites):
            raise ValueError(f"patient_ids has {len(pids)} entries but sites has {len(sites)}")
        inside = {p for p, e in zip(pids, is_ext) if not e}
        both = sorted({p for p, e in zip(pids, is_ext) if e} & inside)
        if both:
            raise ValueError(f"patients {both[:5]} appear at both internal and external sites")
    return np.flatnonzero(~is_ext), np.flatnonzero(is_ext)
