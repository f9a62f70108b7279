"""The one paired-delta table: per-case ``treatment - reference`` of two runs, with bootstrap 95% CIs.

Used by the ablations (``eval.studies.ablate``, ``eval.studies.paper_table``). Each run is a
:class:`CaseValues` (case ids and one value per case and metric: from an evaluated checkpoint,
:meth:`CaseValues.of_eval`, or from per-case rows, :meth:`CaseValues.of_rows`).

Pairing (chosen and stated): a delta is paired, so it is computed on the cases **both** runs scored, in the
reference run's order; a case id that occurs several times in a run (2D slices of one patient) pairs by
occurrence. Cases only one run scored are left out and **reported** in the row (``dropped_cases``, and a note in
the markdown), never silently: a study that ran for an hour still writes its table when one run lost a case,
and the table says so. A pair with no case in common, or a run with no results, gives a row with ``error``.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from eval.bootstrap import bootstrap_ci, paired_delta_ci

__all__ = ["CaseValues", "paired_deltas", "DELTA_METRICS"]

DELTA_METRICS = ("dice", "jaccard", "sensitivity", "specificity")


@dataclasses.dataclass(frozen=True)
class CaseValues:
    """One run's per-case values: ``case_ids [N]`` and ``values {metric: [N]}``."""

    case_ids: tuple
    values: dict

    @classmethod
    def of_eval(cls, ev, metrics=DELTA_METRICS) -> "CaseValues":
        """From an evaluated checkpoint (``eval.checkpoints.ModelEval``: ``acc.case_ids``, ``per_case(m)``)."""
        return cls(tuple(map(str, ev.acc.case_ids)), {m: np.asarray(ev.per_case(m), np.float64) for m in metrics})

    @classmethod
    def of_rows(cls, rows, metrics=DELTA_METRICS, key: str = "case") -> "CaseValues":
        """From per-case rows (dicts holding ``key`` and each metric)."""
        return cls(tuple(str(r[key]) for r in rows),
                   {m: np.asarray([r[m] for r in rows], np.float64) for m in metrics})


def _keys(case_ids) -> list[tuple[str, int]]:
    seen: collections.Counter = collections.Counter()
    out = []
    for c in case_ids:
        out.append((c, seen[c]))
        seen[c] += 1
    return out


def _error(ablation, ref: str, treat: str, message: str) -> dict:
    return {"ablation": ablation.name, "reference": ref, "treatment": treat, "metric": "-", "error": message}


def paired_deltas(runs: dict, pairs, *, metrics=DELTA_METRICS, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Rows of paired deltas ``treatment - reference`` per pair and metric (see the module docstring).

    ``runs``: ``{run name: CaseValues}``; ``pairs``: ``[(ablation, reference run, treatment run)]`` where
    ``ablation`` has ``name``, ``description`` and ``study_range`` (the relative change a study reports, in
    percent). A row: reference and treatment means over the paired cases, the delta with its paired bootstrap
    CI, ``n`` (paired cases), ``relative_delta_pct`` (against the reference mean), ``identical`` (the two runs'
    values are equal: the factor had no effect) and ``dropped_cases`` (case ids only one run scored).
    """
    rows = []
    for ab, ref, treat in pairs:
        missing = [r for r in (ref, treat) if r not in runs or not len(runs[r].case_ids)]
        if missing:
            rows.append(_error(ab, ref, treat, f"run(s) {missing} produced no evaluated cases"))
            continue
        a, b = runs[ref], runs[treat]
        ka, kb = _keys(a.case_ids), _keys(b.case_ids)
        ib = {k: i for i, k in enumerate(kb)}
        shared = [(i, ib[k]) for i, k in enumerate(ka) if k in ib]
        if not shared:
            rows.append(_error(ab, ref, treat, f"runs {ref} and {treat} share no case"))
            continue
        ia, jb = np.array([i for i, _ in shared]), np.array([j for _, j in shared])
        dropped = sorted({case for case, _ in set(ka) ^ set(kb)})
        for m in metrics:
            va, vb = np.asarray(a.values[m])[ia], np.asarray(b.values[m])[jb]
            d = paired_delta_ci(va, vb, n_boot=n_boot, seed=seed)
            ra, rb = bootstrap_ci(va, n_boot=n_boot, seed=seed), bootstrap_ci(vb, n_boot=n_boot, seed=seed)
            rel = 100.0 * d.estimate / ra.estimate if ra.estimate and np.isfinite(ra.estimate) else float("nan")
            rows.append({"ablation": ab.name, "description": ab.description, "reference": ref, "treatment": treat,
                         "metric": m, "reference_mean": ra.estimate, "treatment_mean": rb.estimate,
                         "delta": d.estimate, "delta_ci_low": d.low, "delta_ci_high": d.high, "n": len(shared),
                         "relative_delta_pct": rel, "study_range_pct": list(ab.study_range),
                         "identical": bool(np.array_equal(va, vb, equal_nan=True)), "dropped_cases": dropped})
    return rows
