"""Error analysis, subgroup analysis and external validation on per-case / per-lesion numbers.

* **Structure size**: :func:`lesion_table` splits the target into connected components
  (face connectivity) and records each lesion's size, whether the prediction touches it
  (detection) and its lesion-wise Dice (against the predicted components that overlap it);
  :func:`stratify` bands them small / medium / large.
* **Boundary error**: :func:`boundary_error_bands` counts wrong voxels (FP + FN) by their
  distance to the target surface, so "errors sit on the boundary" is a number.
* **Class imbalance**: per-case foreground fraction bands via :func:`stratify`.
* **Worst cases with reasons**: :func:`worst_cases`.
* **Subgroups** (age band, sex, site) and **external validation**: :func:`subgroup_table`,
  :func:`external_validation`, bootstrap 95% CIs and a ``small`` flag when a group has fewer
  than ``min_n`` cases (its CI is then too wide to read much into).
* **A checkpoint**: :func:`analyse_workdir` streams a run's predictions once (``zoo.load_pretrained``, the
  prediction path) and builds every table; :func:`analysis_markdown` writes them (the library behind
  ``python -m eval.analysis``).
"""

from __future__ import annotations

import os

import numpy as np
from scipy import ndimage

import scoring as M
from eval.bootstrap import bootstrap_ci, unpaired_delta_ci
from eval.cases import load_split, structures_for
from scoring import check_spacing, surface_mask

__all__ = ["lesion_table", "stratify", "size_bands", "boundary_error_bands", "BOUNDARY_BANDS",
           "foreground_fraction", "IMBALANCE_EDGES", "worst_cases", "age_bands", "subgroup_table",
           "external_validation", "analyse_workdir", "analysis_markdown"]

BOUNDARY_BANDS = (0.0, 1.0, 2.0, 4.0, 8.0, np.inf)
IMBALANCE_EDGES = (0.0, 0.01, 0.05, 0.2, 1.0)


def _mask_pair(pred, target):
    p, t = np.asarray(pred, bool), np.asarray(target, bool)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} != target shape {t.shape}")
    return p, t


def lesion_table(pred, target, *, spacing=None) -> list[dict]:
    """One row per connected component of ``target`` (face connectivity).

    ``size`` in voxels, ``volume`` in spacing units, ``detected`` (any overlap with the
    prediction) and ``dice``: 2|P_L ∩ L| / (|P_L| + |L|) where ``P_L`` is the union of the
    predicted components that overlap lesion ``L``.
    """
    p, t = _mask_pair(pred, target)
    sp = check_spacing(spacing, t.ndim)
    structure = ndimage.generate_binary_structure(t.ndim, 1)
    lab_t, n_t = ndimage.label(t, structure)
    lab_p, _ = ndimage.label(p, structure)
    rows = []
    voxel = float(np.prod(sp))
    for i in range(1, n_t + 1):
        lesion = lab_t == i
        touching = np.unique(lab_p[lesion])
        touching = touching[touching > 0]
        pl = np.isin(lab_p, touching) if touching.size else np.zeros_like(p)
        size = int(lesion.sum())
        inter = int(np.count_nonzero(pl & lesion))
        rows.append({"lesion": i, "size": size, "volume": size * voxel, "detected": bool(touching.size),
                     "dice": 2.0 * inter / (int(pl.sum()) + size)})
    return rows


def size_bands(sizes, edges=None) -> tuple[list[str], tuple[float, ...]]:
    """Labels ``small|medium|large`` per size; default edges are the tertiles of ``sizes``."""
    s = np.asarray(sizes, np.float64)
    if edges is None:
        if s.size == 0:
            return [], (0.0, np.inf)
        q1, q2 = np.quantile(s, [1 / 3, 2 / 3])
        edges = (q1, q2)
    if len(edges) != 2 or edges[0] > edges[1]:
        raise ValueError(f"size edges must be (small_max, medium_max) ascending, got {edges!r}")
    labels = np.where(s <= edges[0], "small", np.where(s <= edges[1], "medium", "large"))
    return labels.tolist(), tuple(float(e) for e in edges)


def stratify(values, strata, *, min_n: int = 10, n_boot: int = 2000, seed: int = 0, order=None) -> list[dict]:
    """Mean and bootstrap CI of ``values [N]`` per stratum label ``strata [N]``; ``small`` when n < ``min_n``."""
    v = np.asarray(values, np.float64)
    g = np.asarray(strata, object)
    if v.shape != g.shape or v.ndim != 1:
        raise ValueError(f"values {v.shape} and strata {g.shape} must be aligned 1-D arrays")
    levels = list(order) if order is not None else sorted(set(g.tolist()), key=str)
    rows = []
    for lev in levels:
        sel = v[g == lev]
        ci = bootstrap_ci(sel, n_boot=n_boot, seed=seed) if sel.size else None
        n = 0 if ci is None else ci.n
        rows.append({"stratum": lev, "n": n, "mean": ci.estimate if ci else float("nan"),
                     "ci_low": ci.low if ci else float("nan"), "ci_high": ci.high if ci else float("nan"),
                     "small": n < min_n})
    return rows


def boundary_error_bands(pred, target, *, spacing=None, bands=BOUNDARY_BANDS) -> dict:
    """Counts of voxels and of errors (FP, FN) by distance to the target surface, per band.

    Band ``i`` holds voxels with ``bands[i] <= d < bands[i+1]`` (the surface itself has d = 0).
    An empty target puts every voxel in the last band (no boundary to be near). Sum the
    returned count arrays over cases to pool a data set.
    """
    p, t = _mask_pair(pred, target)
    b = np.asarray(bands, np.float64)
    if b.ndim != 1 or b.size < 2 or np.any(np.diff(b) <= 0):
        raise ValueError(f"bands must be strictly increasing edges, got {bands!r}")
    if t.any():
        d = ndimage.distance_transform_edt(~surface_mask(t), sampling=check_spacing(spacing, t.ndim))
    else:
        d = np.full(t.shape, np.inf)
    idx = np.clip(np.searchsorted(b, d, side="right") - 1, 0, b.size - 2)
    k = b.size - 1
    return {"edges": b.tolist(), "voxels": np.bincount(idx.ravel(), minlength=k),
            "fp": np.bincount(idx[p & ~t], minlength=k), "fn": np.bincount(idx[~p & t], minlength=k)}


def foreground_fraction(target) -> float:
    """Share of foreground voxels: the class-imbalance ratio of a case."""
    t = np.asarray(target, bool)
    return float(t.mean()) if t.size else float("nan")


def worst_cases(case_ids, values, *, metric: str = "dice", volumes=None, extra: dict | None = None,
                k: int = 5, small_size: int = 50, ndim: int = 3) -> list[dict]:
    """The ``k`` lowest cases by ``values[metric]`` with the reasons that explain them.

    ``values``: ``{metric: [N]}`` (an ``hd95`` entry enables the outlier reason: HD95 above twice
    the structure's size ``target_voxels ** (1 / ndim)``); ``volumes``: ``[N, 2]`` target and
    predicted voxel counts; ``extra``: more ``{name: [N]}`` columns to show (e.g. ``n_lesions``).
    Reasons: false positive on an empty target, missed structure, under-/over-segmentation
    (volume ratio < 0.5 or > 2), small structure (< ``small_size`` voxels), boundary outlier.
    """
    if metric not in values:
        raise ValueError(f"metric {metric!r} not in values ({sorted(values)})")
    v = np.asarray(values[metric], np.float64)
    ids = list(case_ids)
    if len(ids) != v.size:
        raise ValueError(f"{len(ids)} case ids for {v.size} values")
    vol = None if volumes is None else np.asarray(volumes)
    order = np.argsort(np.where(np.isnan(v), np.inf, v), kind="stable")[:k]
    out = []
    for i in order:
        reasons = []
        if vol is not None:
            tv, pv = int(vol[i, 0]), int(vol[i, 1])
            if tv == 0 and pv > 0:
                reasons.append(f"false positive: {pv} voxels predicted on an empty target")
            elif tv > 0 and pv == 0:
                reasons.append("missed: nothing predicted")
            elif tv > 0:
                ratio = pv / tv
                if ratio < 0.5:
                    reasons.append(f"under-segmentation: predicted volume {ratio:.2f}× target")
                elif ratio > 2.0:
                    reasons.append(f"over-segmentation: predicted volume {ratio:.2f}× target")
                if tv < small_size:
                    reasons.append(f"small structure ({tv} voxels)")
        hd = values.get("hd95")
        if hd is not None and np.isfinite(hd[i]) and vol is not None and vol[i, 0] > 0:
            scale = float(vol[i, 0]) ** (1.0 / ndim)
            if hd[i] > 2 * scale:
                reasons.append(f"boundary/outlier error: HD95 {hd[i]:.1f} voxels")
        if not reasons:
            reasons.append("boundary disagreement (volumes similar)")
        row = {"case": ids[i], metric: float(v[i]), "reasons": reasons}
        for name, col in (extra or {}).items():
            row[name] = col[i]
        if vol is not None:
            row["target_voxels"], row["pred_voxels"] = int(vol[i, 0]), int(vol[i, 1])
        out.append(row)
    return out


def age_bands(ages, edges=(0, 40, 60, 80, np.inf)) -> list[str]:
    """Band labels like ``40-59`` / ``80+``; NaN ages become ``unknown``."""
    a = np.asarray(ages, np.float64)
    e = list(edges)
    if any(x >= y for x, y in zip(e, e[1:])):
        raise ValueError(f"age edges must be increasing, got {edges!r}")
    out = []
    for x in a:
        if np.isnan(x):
            out.append("unknown")
            continue
        i = int(np.searchsorted(e, x, side="right")) - 1
        if i < 0 or i >= len(e) - 1:
            out.append("out of range")
        elif np.isinf(e[i + 1]):
            out.append(f"{e[i]:g}+")
        else:
            out.append(f"{e[i]:g}-{e[i + 1] - 1:g}")
    return out


def subgroup_table(values, groups: dict, *, min_n: int = 10, n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Per attribute (``age_band``, ``sex``, ``site``…) and level: n, mean with CI, delta vs the rest with CI.

    ``small`` flags levels with fewer than ``min_n`` cases with a defined value.
    """
    v = np.asarray(values, np.float64)
    rows = []
    for attr, labels in groups.items():
        g = np.asarray(labels, object)
        if g.shape != v.shape:
            raise ValueError(f"subgroup {attr!r} has {g.size} labels for {v.size} cases")
        for r in stratify(v, g, min_n=min_n, n_boot=n_boot, seed=seed):
            rest = v[g != r["stratum"]]
            d = unpaired_delta_ci(rest, v[g == r["stratum"]], n_boot=n_boot, seed=seed)
            rows.append({"attribute": attr, "level": r["stratum"], **{k: r[k] for k in
                                                                      ("n", "mean", "ci_low", "ci_high", "small")},
                         "delta_vs_rest": d.estimate, "delta_ci_low": d.low, "delta_ci_high": d.high})
    return rows


def external_validation(internal, external, *, min_n: int = 10, n_boot: int = 2000, seed: int = 0) -> dict:
    """Internal vs external per-case values: both means with CIs, the drop ``external - internal`` with a CI."""
    ci_i = bootstrap_ci(internal, n_boot=n_boot, seed=seed)
    ci_e = bootstrap_ci(external, n_boot=n_boot, seed=seed)
    d = unpaired_delta_ci(internal, external, n_boot=n_boot, seed=seed)
    return {"internal": ci_i.as_dict(), "external": ci_e.as_dict(), "delta": d.as_dict(),
            "small": ci_e.n < min_n or ci_i.n < min_n}


# --------------------------------------------------------------------------- a checkpoint


def _fmt(x, d=3):
    return "n/a" if x is None or (isinstance(x, float) and not np.isfinite(x)) else f"{x:.{d}f}"


def _strata_md(title, rows):
    out = [f"### {title}", "", "| stratum | n | mean | 95% CI | flag |", "|---|---:|---:|---|---|"]
    for r in rows:
        out.append(f"| {r['stratum']} | {r['n']} | {_fmt(r['mean'])} | [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] "
                   f"| {'small' if r['small'] else ''} |")
    return out + [""]


def analyse_workdir(workdir: str, split: str = "val", *, spacing=None, batch_size: int = 8, min_n: int = 10,
                    metadata: str | None = None, n_boot: int = 2000, k: int = 5) -> dict:
    """Stream a checkpoint's predictions once and build every error-analysis table.

    Segmentation and instance runs (an instance run's semantic label map); outcome runs have no
    voxels to analyse and raise ``ValueError``.
    """
    from zoo import load_pretrained

    pre = load_pretrained(workdir)
    if pre.task not in ("segmentation", "instance"):
        raise ValueError(f"{workdir}: error analysis needs a segmentation or instance run, not {pre.task!r}")
    arrays, info = load_split(pre.config, split)
    structures = structures_for(info.class_names) or {
        info.class_names[c]: (c,) for c in range(1, info.num_classes)}
    fg_labels = tuple(sorted({c for labs in structures.values() for c in labs}))
    lesions, case_dice, case_hd, fg_frac, vols, ids, n_les = [], [], [], [], [], [], []
    band_tot = None
    pids = arrays.get("patient_id")
    for start, proba in pre.iter_proba(arrays["image"], batch_size=batch_size):
        for j, pr in enumerate(np.asarray(proba)):
            i = start + j
            pred = np.isin(pr.argmax(-1), fg_labels)
            tgt = np.isin(arrays["label"][i], fg_labels)
            cid = str(pids[i]) if pids is not None else str(i)
            ids.append(cid)
            case_dice.append(M.dice(pred, tgt))
            case_hd.append(M.hd95(pred, tgt, spacing=spacing, one_empty_value=float("nan")))
            fg_frac.append(foreground_fraction(tgt))
            vols.append((int(tgt.sum()), int(pred.sum())))
            les = lesion_table(pred, tgt, spacing=spacing)
            n_les.append(len(les))
            lesions += [dict(r, case=cid) for r in les]
            b = boundary_error_bands(pred, tgt, spacing=spacing)
            if band_tot is None:
                band_tot = {key: np.zeros_like(b[key]) for key in ("voxels", "fp", "fn")}
            for key in band_tot:
                band_tot[key] += b[key]
    case_dice = np.asarray(case_dice)
    sizes = [r["size"] for r in lesions]
    labels, edges = size_bands(sizes)
    size_rows = stratify([r["dice"] for r in lesions], labels, min_n=min_n, n_boot=n_boot,
                         order=("small", "medium", "large"))
    det_rows = stratify([float(r["detected"]) for r in lesions], labels, min_n=min_n, n_boot=n_boot,
                        order=("small", "medium", "large"))
    imb_labels = [f"[{IMBALANCE_EDGES[i]:g}, {IMBALANCE_EDGES[i + 1]:g})" for i in
                  np.clip(np.searchsorted(IMBALANCE_EDGES, fg_frac, side="right") - 1, 0,
                          len(IMBALANCE_EDGES) - 2)]
    imb_rows = stratify(case_dice, imb_labels, min_n=min_n, n_boot=n_boot)
    worst = worst_cases(ids, {"dice": case_dice, "hd95": np.asarray(case_hd)}, volumes=np.asarray(vols),
                        extra={"n_lesions": n_les}, k=k, ndim=arrays["label"].ndim - 1)
    result = {"workdir": os.path.abspath(workdir), "dataset": info.name, "split": split,
              "num_cases": len(ids), "size_edges_voxels": edges, "lesion_dice_by_size": size_rows,
              "lesion_detection_by_size": det_rows, "dice_by_foreground_fraction": imb_rows,
              "boundary_bands": {"edges": list(BOUNDARY_BANDS), **{k2: v.tolist() for k2, v in band_tot.items()}},
              "worst_cases": worst}
    if metadata:
        import pandas as pd

        meta = pd.read_csv(metadata)
        key = "case_id" if "case_id" in meta.columns else "patient_id"
        if key not in meta.columns:
            raise ValueError(f"metadata {metadata}: needs a case_id or patient_id column")
        meta = meta.set_index(meta[key].astype(str))
        missing = [c for c in ids if c not in meta.index]
        if missing:
            raise ValueError(f"metadata {metadata}: no row for cases {missing[:5]}")
        meta = meta.loc[ids]
        groups = {}
        if "age" in meta.columns:
            groups["age_band"] = age_bands(meta["age"].to_numpy(np.float64))
        for col in ("sex", "site"):
            if col in meta.columns:
                groups[col] = meta[col].astype(str).tolist()
        result["subgroups"] = subgroup_table(case_dice, groups, min_n=min_n, n_boot=n_boot)
    return result


def analysis_markdown(res: dict) -> str:
    out = [f"# Error analysis: {res['dataset']} ({res['split']}, {res['num_cases']} cases)", "",
           f"Lesion size bands (voxels): small <= {res['size_edges_voxels'][0]:g} < medium <= "
           f"{res['size_edges_voxels'][1]:g} < large.", ""]
    out += _strata_md("Lesion-wise Dice by structure size", res["lesion_dice_by_size"])
    out += _strata_md("Lesion detection rate by structure size", res["lesion_detection_by_size"])
    out += _strata_md("Case Dice by foreground fraction (class imbalance)", res["dice_by_foreground_fraction"])
    b = res["boundary_bands"]
    tot = max(sum(b["fp"]) + sum(b["fn"]), 1)
    out += ["### Errors by distance to the target boundary (voxels / spacing units)", "",
            "| band | voxels | FP | FN | error rate | share of all errors |", "|---|---:|---:|---:|---:|---:|"]
    for i in range(len(b["voxels"])):
        lo, hi = b["edges"][i], b["edges"][i + 1]
        err = b["fp"][i] + b["fn"][i]
        rate = err / b["voxels"][i] if b["voxels"][i] else float("nan")
        out.append(f"| [{lo:g}, {hi:g}) | {b['voxels'][i]} | {b['fp'][i]} | {b['fn'][i]} | {_fmt(rate, 4)} | "
                   f"{err / tot:.3f} |")
    out += ["", "### Worst cases", "", "| case | Dice | target / predicted voxels | lesions | reasons |",
            "|---|---:|---|---:|---|"]
    for w in res["worst_cases"]:
        out.append(f"| {w['case']} | {_fmt(w['dice'])} | {w.get('target_voxels')} / {w.get('pred_voxels')} | "
                   f"{w.get('n_lesions')} | {'; '.join(w['reasons'])} |")
    if "subgroups" in res:
        out += ["", "### Subgroups (case Dice; delta vs the other cases)", "",
                "| attribute | level | n | mean [95% CI] | delta vs rest [95% CI] | flag |",
                "|---|---|---:|---|---|---|"]
        for r in res["subgroups"]:
            out.append(f"| {r['attribute']} | {r['level']} | {r['n']} | {_fmt(r['mean'])} [{_fmt(r['ci_low'])}, "
                       f"{_fmt(r['ci_high'])}] | {_fmt(r['delta_vs_rest'])} [{_fmt(r['delta_ci_low'])}, "
                       f"{_fmt(r['delta_ci_high'])}] | {'small (n < min_n)' if r['small'] else ''} |")
    return "\n".join(out) + "\n"
