"""Evaluate a folder of predicted label maps against a folder of references (nnU-Net's ``evaluate_folder``).

The library behind ``python -m eval.evaluate --pred DIR --ref DIR [--labels 1,2,3 | --regions brats]
[--metrics dice,hd95,...] [--workers N] [--allow_missing] --out DIR`` scores the predictions of any tool: files
are read with ``data_pipelines.readers.read_label`` (NIfTI, NRRD, MHD/MHA, PNG and the other formats it reads)
and each structure is scored with ``scoring.binary_metrics``, the surface metrics in millimetres from the files'
voxel spacing.

Rules (chosen and stated):
  * **Case id**: the file name without its image extension, the longest of
    ``readers.VOLUME_SUFFIXES + readers.PICTURE_SUFFIXES`` that it ends with, case-insensitively
    (``BraTS_001.nii.gz`` → ``BraTS_001``). Other files (an ``.mhd``'s ``.raw`` payload, ``.json``, hidden
    files) and sub-folders are ignored. Prediction and reference of a case may differ in format. Two files of
    one folder with the same case id are an error.
  * **Missing cases**: a reference case without a prediction is an error naming the cases, as in nnU-Net
    (without ``-chill``). With ``--allow_missing`` it is scored as an **empty prediction** (Dice 0, distances
    ``--one_empty_distance``): nnU-Net's ``-chill`` drops such cases instead, which flatters a tool that
    skipped its hard cases. A prediction without a reference is an error too; with ``--allow_missing`` it is
    skipped (there is nothing to score it against) and listed in the summary.
  * **Geometry**: prediction and reference must share shape, spacing, origin and direction
    (``data_pipelines.geometry.check_same_geometry``); a mismatch is an error naming the case, never a
    resample.
  * **Structures**: ``--labels 1,2,3`` scores each label as one structure; ``--regions brats`` the BraTS
    regions WT/TC/ET (``scoring.BRATS_REGIONS``); by default every non-zero label found in any reference or
    prediction. A structure absent from both masks of a case gets the metrics' both-empty values (NaN).
  * **Outputs** (``--out``): ``per_case.csv`` (one row per case and structure, with the voxel counts
    ``n_ref`` / ``n_pred``), ``summary.json`` and ``summary.md`` (per structure and metric the mean over
    cases with a percentile bootstrap CI over cases, ``eval.bootstrap.bootstrap_ci``: NaN values, where a
    metric is undefined, are left out, and so are infinite distances, which are counted in ``n_inf``; strict
    JSON: a statistic with no finite value is ``null``), and ``boxplots.png`` (finite values per structure,
    one panel per metric), each written atomically.

Cases run in parallel in a process pool (``--workers``; 1 runs in this process) with a progress bar on a
terminal. Workers start from a fresh process (forkserver, or spawn), not a fork of the caller, so calling
:func:`evaluate_folder` after using JAX is safe; a script that calls it with ``workers > 1`` needs the usual
``if __name__ == "__main__":`` guard. Bad input raises ``ValueError`` (``FileNotFoundError`` for a missing
folder); the command line turns it into ``error: <message>`` on stderr and exit status 2.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os

import numpy as np

import scoring as M
from data_pipelines import readers
from data_pipelines.geometry import check_same_geometry
from data_pipelines.atomic import atomic_path, write_json, write_text
from eval.bootstrap import bootstrap_ci
from data_pipelines.atomic import write_csv

__all__ = ["DEFAULT_METRICS", "case_id", "list_cases", "pair_cases", "evaluate_case", "evaluate_folder",
           "summarize", "write_outputs", "config_number"]

DEFAULT_METRICS = ("dice", "jaccard", "sensitivity", "precision", "hd95", "assd", "surface_dice")
_SUFFIXES = tuple(sorted(readers.VOLUME_SUFFIXES + readers.PICTURE_SUFFIXES, key=len, reverse=True))


def case_id(filename: str) -> str | None:
    """The case id of an image file name (see the module docstring), or ``None`` for a non-image file."""
    low = filename.lower()
    if filename.startswith("."):
        return None
    for suffix in _SUFFIXES:
        if low.endswith(suffix) and len(filename) > len(suffix):
            return filename[:-len(suffix)]
    return None


def list_cases(folder: str, what: str) -> dict[str, str]:
    """``{case id: path}`` of the image files directly in ``folder`` (``what`` names it in errors)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--{what}: {folder}: no such directory")
    out: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        cid = case_id(name)
        if cid is None or not os.path.isfile(path):
            continue
        if cid in out:
            raise ValueError(f"--{what}: two files for case {cid!r}: {os.path.basename(out[cid])}, {name}")
        out[cid] = path
    return out


def _names(ids, limit: int = 10) -> str:
    ids = sorted(ids)
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def pair_cases(pred: dict[str, str], ref: dict[str, str], allow_missing: bool = False):
    """``([(case, pred path or None, ref path)], skipped prediction ids)``: cases matched by id."""
    if not ref:
        raise ValueError("--ref: no reference images found (expected files ending in one of "
                         f"{', '.join(_SUFFIXES)})")
    no_pred = set(ref) - set(pred)
    no_ref = set(pred) - set(ref)
    if not allow_missing and (no_pred or no_ref):
        parts = []
        if no_pred:
            parts.append(f"{len(no_pred)} reference case(s) have no prediction: {_names(no_pred)}")
        if no_ref:
            parts.append(f"{len(no_ref)} prediction(s) have no reference: {_names(no_ref)}")
        raise ValueError("; ".join(parts) + " (--allow_missing scores a missing prediction as empty)")
    return [(c, pred.get(c), ref[c]) for c in sorted(ref)], sorted(no_ref)


def _structures(labels, regions) -> dict[str, tuple[int, ...]] | None:
    if regions == "brats":
        return {name: tuple(v) for name, v in M.BRATS_REGIONS.items()}
    if labels is not None:
        return {str(v): (int(v),) for v in labels}
    return None


def _mask(label_map: np.ndarray, values: tuple[int, ...]) -> np.ndarray:
    return label_map == values[0] if len(values) == 1 else np.isin(label_map, values)


def evaluate_case(case: str, pred_path: str | None, ref_path: str, structures, metrics, *,
                  tolerance: float = 1.0, one_empty_distance: float = float("inf")) -> list[dict]:
    """Rows ``{case, structure, <metric>..., n_ref, n_pred}`` of one case.

    ``pred_path=None`` scores an empty prediction. ``structures``: ``{name: label values}``, or ``None`` for
    every non-zero label of either map (then only those are returned; :func:`evaluate_folder` fills the rest).
    """
    ref, ref_meta = readers.read_label(ref_path)
    if pred_path is None:
        pred = np.zeros_like(ref)
    else:
        pred, pred_meta = readers.read_label(pred_path)
        if pred.ndim != ref.ndim:
            raise ValueError(f"case {case!r}: prediction {pred_path} has {pred.ndim} axes, reference "
                             f"{ref_path} has {ref.ndim}")
        try:
            check_same_geometry(ref.shape, ref_meta, pred.shape, pred_meta)
        except ValueError as e:
            raise ValueError(f"case {case!r}: {e} (reference vs prediction; predictions are never "
                             f"resampled)") from None
    if structures is None:
        found = np.union1d(np.unique(ref), np.unique(pred))
        structures = {str(int(v)): (int(v),) for v in found if v != 0}
    spacing = tuple(ref_meta.spacing)
    rows = []
    for name, values in structures.items():
        p, t = _mask(pred, values), _mask(ref, values)
        row = {"case": case, "structure": name}
        row.update(M.binary_metrics(p, t, metrics, spacing=spacing, tolerance=tolerance,
                                    one_empty_distance=one_empty_distance))
        row["n_ref"], row["n_pred"] = int(np.count_nonzero(t)), int(np.count_nonzero(p))
        rows.append(row)
    return rows


def _empty_row(case: str, name: str, metrics, tolerance: float, one_empty_distance: float) -> dict:
    e = np.zeros((2, 2), bool)
    row = {"case": case, "structure": name}
    row.update(M.binary_metrics(e, e, metrics, tolerance=tolerance, one_empty_distance=one_empty_distance))
    row["n_ref"] = row["n_pred"] = 0
    return row


def _sort_key(name: str):
    return (0, int(name), "") if name.lstrip("-").isdigit() else (1, 0, name)


def _pool_context():
    """Workers start from a fresh process (forkserver; spawn where there is none), never a fork of this one:
    a caller that has used JAX has threads that a fork would copy in an unknown state (deadlock risk)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def evaluate_folder(pred_dir: str, ref_dir: str, *, labels=None, regions=None, metrics=DEFAULT_METRICS,
                    workers: int = 1, allow_missing: bool = False, tolerance: float = 1.0,
                    one_empty_distance: float = float("inf"), progress: bool | None = None) -> dict:
    """Per-case rows of every case → ``{"rows", "structures", "cases", "missing_predictions",
    "skipped_predictions"}`` (see the module docstring for the rules)."""
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in M.METRICS]
    if unknown or not metrics:
        raise ValueError(f"--metrics: unknown {unknown or 'none given'}; expected some of {sorted(M.METRICS)}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be a positive int, got {workers!r}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"--tolerance must be a finite number >= 0 (mm), got {tolerance}")
    structures = _structures(labels, regions)
    pairs, skipped = pair_cases(list_cases(pred_dir, "pred"), list_cases(ref_dir, "ref"), allow_missing)
    kw = {"tolerance": tolerance, "one_empty_distance": one_empty_distance}
    from tqdm import tqdm

    bar = tqdm(total=len(pairs), desc="cases", unit="case", disable=None if progress is None else not progress)
    results: dict[str, list[dict]] = {}
    try:
        if workers == 1 or len(pairs) == 1:
            for case, p, r in pairs:
                results[case] = evaluate_case(case, p, r, structures, metrics, **kw)
                bar.update()
        else:
            with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(pairs)),
                                                        mp_context=_pool_context()) as pool:
                futures = {pool.submit(evaluate_case, case, p, r, structures, metrics, **kw): case
                           for case, p, r in pairs}
                try:
                    for f in concurrent.futures.as_completed(futures):
                        results[futures[f]] = f.result()
                        bar.update()
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
    names = list(structures) if structures is not None else sorted(
        {row["structure"] for rows in results.values() for row in rows}, key=_sort_key)
    if not names:
        raise ValueError("no structure to score: no reference or prediction has a non-zero label "
                         "(name them with --labels)")
    rows = []
    for case, _, _ in pairs:
        have = {row["structure"]: row for row in results[case]}
        rows.extend(have.get(n) or _empty_row(case, n, metrics, tolerance, one_empty_distance) for n in names)
    return {"rows": rows, "structures": names, "metrics": list(metrics), "cases": [c for c, _, _ in pairs],
            "missing_predictions": [c for c, p, _ in pairs if p is None], "skipped_predictions": skipped}


def summarize(result: dict, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> dict:
    """``{structure: {metric: {mean, low, high, n, median, n_nan, n_inf}}}`` over the cases of ``result``."""
    out = {}
    for s in result["structures"]:
        rows = [r for r in result["rows"] if r["structure"] == s]
        out[s] = {}
        for m in result["metrics"]:
            v = np.asarray([r[m] for r in rows], np.float64)
            finite = v[np.isfinite(v)]
            ci = bootstrap_ci(finite, n_boot=n_boot, level=level, seed=seed) if finite.size else None
            out[s][m] = {"mean": ci.estimate if ci else float("nan"), "low": ci.low if ci else float("nan"),
                         "high": ci.high if ci else float("nan"), "n": int(finite.size),
                         "median": float(np.median(finite)) if finite.size else float("nan"),
                         "n_nan": int(np.isnan(v).sum()), "n_inf": int(np.isinf(v).sum())}
    return out


def config_number(x):
    """A number of the run's settings as ``summary.json`` records it: an infinity (``--one_empty_distance``'s
    default) as the string ``"inf"``, so the setting stays readable (strict JSON would make it ``null``)."""
    return x if isinstance(x, (int, str)) or x is None or math.isfinite(x) else str(x)


def write_outputs(result: dict, summary: dict, out: str, *, config: dict, level: float = 0.95) -> dict:
    """Write ``per_case.csv``, ``summary.json``, ``summary.md``, ``boxplots.png`` into ``out`` → their paths."""
    os.makedirs(out, exist_ok=True)
    paths = {k: os.path.join(out, f) for k, f in (("csv", "per_case.csv"), ("json", "summary.json"),
                                                   ("md", "summary.md"), ("png", "boxplots.png"))}
    fields = ["case", "structure", *result["metrics"], "n_ref", "n_pred"]
    # Floats as repr: every digit, and nan / inf where a metric is undefined or infinite.
    write_csv(paths["csv"], [{k: (repr(float(row[k])) if isinstance(row[k], float) else row[k]) for k in fields}
                             for row in result["rows"]], fields)
    doc = {"config": config, "num_cases": len(result["cases"]), "level": level,
           "missing_predictions": result["missing_predictions"],
           "skipped_predictions": result["skipped_predictions"], "summary": summary}
    write_json(paths["json"], doc)  # strict: an undefined mean, low, high or median is null
    lines = [f"# Evaluation of {config['pred']} against {config['ref']}", "",
             f"{len(result['cases'])} cases; mean over cases [{100 * level:.0f}% bootstrap CI over cases]; "
             "NaN (undefined) and infinite values left out, infinite ones counted in n_inf.", ""]
    if result["missing_predictions"]:
        lines += [f"Scored as empty predictions (no file): {_names(result['missing_predictions'])}", ""]
    if result["skipped_predictions"]:
        lines += [f"Predictions without a reference (skipped): {_names(result['skipped_predictions'])}", ""]
    lines += ["| structure | metric | mean [CI] | median | n | n_nan | n_inf |", "|---|---|---|---|---|---|---|"]
    for s, ms in summary.items():
        for m, d in ms.items():
            ci = "n/a" if not math.isfinite(d["mean"]) else f"{d['mean']:.4f} [{d['low']:.4f}, {d['high']:.4f}]"
            med = "n/a" if not math.isfinite(d["median"]) else f"{d['median']:.4f}"
            lines.append(f"| {s} | {m} | {ci} | {med} | {d['n']} | {d['n_nan']} | {d['n_inf']} |")
    write_text(paths["md"], "\n".join(lines) + "\n")
    _boxplots(result, paths["png"])
    return paths


def _boxplots(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, names = result["metrics"], result["structures"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.0, 0.6 * len(names) + 1.5) * len(metrics), 3.6),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        data = []
        for s in names:
            v = np.asarray([r[m] for r in result["rows"] if r["structure"] == s], np.float64)
            data.append(v[np.isfinite(v)])
        ax.boxplot([d if d.size else [np.nan] for d in data], showmeans=True)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=45 if len(names) > 4 else 0)
        ax.set_title(m + (" (mm)" if m in M.SURFACE_METRICS and m != "surface_dice" else ""))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
