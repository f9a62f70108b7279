"""The zoo's BraTS recipes, leave one patient out: ``python -m eval.studies.brats_recipe --data_dir DIR --out OUT
[--recipes paper_unet_brats brats3d ...] [--budget_min N] [--steps N] [--curves] [--sizes 1,2] [--holdout ID,...] [--tta]
[--postprocess brain_lcc] [--quick] [--table_only]``.

For every recipe (a BraTS config: ``paper_<arch>_brats`` in ``zoo/configs/paper.py``, ``brats3d``; ``NAME@field=value``
a variant of one) and every held-out patient,
a model trains on the other patients (``n = P - 1``; ``--curves`` adds ``n = 1 .. P - 2``: the learning
curve, the ``n`` patients that follow the held-out one in sorted order) and predicts the held-out patient's
original files through ``zoo.prediction`` (whole volume, native resolution). The prediction, after
``--postprocess`` (default the table's ``brain_lcc``: ``eval.studies.reference_table.postprocess_mask``), is
scored per BraTS region (whole tumour, tumour core, enhancing tumour) with ``scoring.brats_region_metrics``,
the function ``python -m eval.evaluate --regions brats`` scores with; each run also records the Dice of the raw
prediction, the Dice of every tumour slice (``slice_dice``: where the misses are), and the missed tumour by label
and by FLAIR intensity (``misses``).

Budget: each run trains for ``--budget_min`` minutes (``train.time_limit_s``, the trainer's clock) within the
recipe's step cap, or exactly ``--steps`` steps (no time limit). Runs are resumable: a run's folder
``OUT/runs/<recipe>/n<k>/<patient>/`` gets ``done.json`` last, and a rerun skips every run that has one
(``--table_only``: trains nothing, tables the runs done so far; several processes may share one ``OUT`` when
their ``--holdout`` / ``--sizes`` differ).

Outputs: ``OUT/results.json`` (every run) and ``OUT/table.md``: per recipe the Dice per region, mean ± std over
held-out patients and per patient, and with ``--curves`` the whole-tumour Dice per held-out patient for each
number of training patients. ``--quick`` (tiny sizes, 3 steps) checks the machinery; its numbers mean nothing.
Bad input: ``error: <message>`` and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

import numpy as np

from data_pipelines.atomic import write_json, write_text
from data_pipelines.brats import map_brats_labels
from data_pipelines.datasets import load_dataset
from data_pipelines.families import get_family
from data_pipelines.sources import patch_sources, wants_patches
from eval.studies.reference_table import (POSTPROCESS, QUICK, QUICK_KW, family_cases, postprocess_mask,
                                          read_reference)
from scoring import brats_region_metrics, overlap
from zoo.cli import command_parser, run_command
from zoo.configs import apply_overrides, load_config
from zoo.prediction import predict_case_proba, read_case
from zoo.pretrained import load_pretrained
from zoo.training import kfold, train_and_evaluate

__all__ = ["main"]

REGIONS = ("WT", "TC", "ET")


def recipe_config(recipe: str, data_dir: str, quick: bool):
    """The config of ``recipe``: a config name (``paper_unet_brats``, ``brats3d``, ...) optionally followed by
    ``@field=value`` overrides (``paper_unet_brats@model.kwargs.norm=batch``: a variant, for A/B runs), with
    ``data_dir``; ``quick``: the tiny sizes of ``eval.studies.reference_table``."""
    name, *sets = recipe.split("@")
    over = {}
    for s in sets:
        key, eq, value = s.partition("=")
        if not eq or not key:
            raise ValueError(f"--recipes {recipe!r}: expected NAME[@field=value...], got {s!r}")
        over[key] = value
    c = load_config(name)
    if c.data.name != "brats":
        raise ValueError(f"--recipes: {name!r} is not a BraTS recipe (its data.name is {c.data.name!r})")
    if quick:
        over = {**QUICK, **QUICK_KW.get(c.model.name, {}), **over}
        if int(c.data.spatial_dims) == 3:
            over["data.patch_size"] = "8,8,8"
    return apply_overrides(c, {**over, "data.data_dir": data_dir})


def training_sets(patients: list[str], curves: bool, sizes=None) -> list[tuple[str, int, list[str]]]:
    """``(held-out patient, n, training patients)``: all other patients, and with ``curves`` also the first
    ``n = 1 .. P - 2`` of the patients that follow the held-out one (sorted, cyclic); ``sizes``: only these n."""
    ps = sorted(patients)
    bad = sorted(set(sizes or []) - set(range(1, len(ps))))
    if bad:
        raise ValueError(f"--sizes {bad}: training sets hold 1 .. {len(ps) - 1} patients here")
    out = []
    for i, held in enumerate(ps):
        others = ps[i + 1:] + ps[:i]
        ns = sizes or (range(1, len(others) + 1) if curves else [len(others)])
        out += [(held, n, sorted(others[:n])) for n in ns]
    return out


def slice_dice(pred: np.ndarray, truth: np.ndarray) -> list[list]:
    """``[[z, tumour voxels, Dice]]`` for every axial slice (last axis) holding tumour."""
    zs = np.nonzero(truth.any(axis=(0, 1)))[0]
    return [[int(z), int(truth[:, :, z].sum()), round(float(overlap.dice(pred[:, :, z], truth[:, :, z])), 4)]
            for z in zs]


def misses(pred: np.ndarray, truth_labels: np.ndarray, flair: np.ndarray) -> dict:
    """Where the whole tumour is missed: voxels found / missed per label (1 necrosis/non-enhancing, 2 oedema,
    3 enhancing) and the mean first channel (FLAIR) of found, missed and normal brain voxels."""
    t = truth_labels > 0
    found, missed = t & pred, t & ~pred
    brain = flair != flair.min()
    mean = lambda m: round(float(flair[m].mean()), 3) if m.any() else None  # noqa: E731
    return {"found": {int(k): int((found & (truth_labels == k)).sum()) for k in (1, 2, 3)},
            "missed": {int(k): int((missed & (truth_labels == k)).sum()) for k in (1, 2, 3)},
            "flair_found": mean(found), "flair_missed": mean(missed), "flair_normal": mean(brain & ~t)}


def score_prediction(proba: np.ndarray, image: np.ndarray, truth_raw: np.ndarray, truth_path: str,
                     postprocess: str) -> dict:
    """One held-out volume: Dice per region after ``postprocess``, the raw whole-tumour Dice, per-slice Dice and
    the misses (see the module docstring)."""
    labels = proba.argmax(-1).astype(np.int32)
    truth = map_brats_labels(truth_raw, path=truth_path)
    keep = postprocess_mask(labels > 0, image, postprocess)
    pred = np.where(keep, labels, 0)
    regions = brats_region_metrics(pred, truth, metrics=("dice",))
    row = {f"dice_{r.lower()}": float(regions[r]["dice"]) for r in REGIONS}
    row.update(dice_wt_raw=float(overlap.dice(labels > 0, truth > 0)), postprocess=postprocess,
               tumour_voxels=int((truth > 0).sum()), pred_voxels=int(keep.sum()),
               slice_dice=slice_dice(keep, truth > 0), misses=misses(keep, truth, np.asarray(image)[..., 0]))
    return row


def predict_patient(run_dirs: list[str], cases: list[dict], tta: bool, postprocess: str) -> list[dict]:
    """Score each case of one patient with the mean probabilities of the runs' best checkpoints."""
    models = [load_pretrained(os.path.join(d, "best")) for d in run_dirs]
    rows = []
    for case in cases:
        t0 = time.time()
        proba, image = None, None
        for pre in models:
            image, meta, _ = read_case(case["input"], pre)
            p = predict_case_proba(pre, image, meta, tta=tta).proba
            proba = p if proba is None else proba + p
        truth = read_reference(case["truth"], proba.shape[:-1])
        row = score_prediction(proba / len(models), image, truth, case["truth"], postprocess)
        row.update(case=case["id"], predict_s=round(time.time() - t0, 2))
        rows.append(row)
    return rows


def _fold_data(config, cache: dict, train_ids, held: str):
    """``(train, val, info)`` for one run: the recipe's arrays (2D slices; train and validation splits pooled,
    loaded once per data config) or, for a patch recipe (``brats3d``), patch sources of the full-resolution
    cases with a plan from the training patients; validation is the held-out patient."""
    key = json.dumps(config.data.to_dict(), sort_keys=True, default=str)
    if wants_patches(config.data):
        if key not in cache:
            tr, va, info = get_family(config.data.name).full_cases(config.data)
            cache[key] = (tr + va, info)
        cases, info = cache[key]
        return patch_sources(config.data, [c for c in cases if c["patient_id"] in train_ids],
                             [c for c in cases if c["patient_id"] == held], info)
    if key not in cache:
        tr, va, info = load_dataset(config.data)
        cache[key] = (kfold.concat(tr, va), info)
    arrays, info = cache[key]
    pids = np.asarray(arrays["patient_id"])
    tr, va = np.nonzero(np.isin(pids, train_ids))[0], np.nonzero(pids == held)[0]
    if not len(tr) or not len(va):
        raise ValueError(f"no training rows for {train_ids} or no rows for held-out {held!r}")
    return kfold.subset(arrays, tr), kfold.subset(arrays, va), info


def run_one(config, run_dir: str, data, train_ids, held: str, cases: list[dict], *, steps: int | None,
            budget_s: float | None, tta: bool, postprocess: str) -> dict:
    """Train on ``data`` (``(train, val, info)`` of :func:`_fold_data`), score ``held``'s cases; ``done.json``."""
    n = int(steps) if steps else int(config.train.steps)
    over = {"train.steps": str(n), "train.eval_every": str(n), "train.checkpoint_every": str(n),
            "train.log_every": str(min(int(config.train.log_every), n))}
    if budget_s and not steps:
        over["train.time_limit_s"] = f"{budget_s:.1f}"
    c = apply_overrides(config.copy_and_resolve_references(), over)
    t0 = time.time()
    res = train_and_evaluate(c, os.path.join(run_dir, "model"), progress=False, data=data)
    train_call = time.time() - t0
    rows = predict_patient([os.path.join(run_dir, "model")], cases, tta, postprocess)
    out = {"held_out": held, "train_patients": list(train_ids), "n_train": len(train_ids),
           "steps": int(res.get("step", n)), "step_cap": n, "time_limit_s": over.get("train.time_limit_s"),
           "trained_s": res.get("timed_seconds"), "train_call_s": round(train_call, 1),
           "stopped_by_time": bool(res.get("stopped_by_time")), "batch_size": int(c.train.batch_size),
           "load_1min": round(os.getloadavg()[0], 2), "cases": rows,
           **{k: float(np.mean([r[k] for r in rows])) for k in ("dice_wt", "dice_tc", "dice_et", "dice_wt_raw")}}
    write_json(os.path.join(run_dir, "done.json"), out)
    return out


def run_study(data_dir: str, out: str, recipes: list[str], *, budget_min: float | None, steps: int | None,
              curves: bool, holdout: list[str] | None, tta: bool, postprocess: str, quick: bool,
              sizes: list[int] | None = None, table_only: bool = False, log=print) -> dict:
    """Every recipe x held-out patient x training-set size (see the module docstring); returns the results."""
    if postprocess not in POSTPROCESS:
        raise ValueError(f"--postprocess {postprocess!r}; expected one of {POSTPROCESS}")
    if not recipes:
        raise ValueError("--recipes: name at least one recipe")
    configs = {r: recipe_config(r, data_dir, quick) for r in recipes}
    cases = family_cases(next(iter(configs.values())))
    if len(cases) < 2:
        raise ValueError(f"{data_dir}: {len(cases)} patient(s) with labels; leave-one-patient-out needs 2")
    unknown = sorted(set(holdout or []) - set(cases))
    if unknown:
        raise ValueError(f"--holdout: unknown patients {unknown}; the data have {sorted(cases)}")
    if quick and steps is None:
        steps = 3
    budget_s = None if budget_min is None else budget_min * 60.0
    data_cache: dict = {}
    results = []
    for recipe, config in configs.items():
        for held, n, train_ids in training_sets(list(cases), curves, sizes):
            if holdout and held not in holdout:
                continue
            run_dir = os.path.join(out, "runs", recipe, f"n{n}", held)
            done = os.path.join(run_dir, "done.json")
            if os.path.exists(done):
                with open(done, encoding="utf-8") as f:
                    r = json.load(f)
                log(f"[brats_recipe] {recipe} n={n} {held}: done before (WT {r['dice_wt']:.3f}), skipped")
            elif table_only:
                continue
            else:
                log(f"[brats_recipe] {recipe} n={n} held out {held}: training on {train_ids}", flush=True)
                r = run_one(config, run_dir, _fold_data(config, data_cache, train_ids, held), train_ids, held, cases[held], steps=steps,
                            budget_s=budget_s, tta=tta, postprocess=postprocess)
                log(f"[brats_recipe] {recipe} n={n} {held}: WT {r['dice_wt']:.3f} (raw {r['dice_wt_raw']:.3f}) "
                    f"TC {r['dice_tc']:.3f} ET {r['dice_et']:.3f}, {r['steps']} steps, {r['train_call_s']} s, "
                    f"load {r['load_1min']}", flush=True)
            results.append({"recipe": recipe, "n_train": n, **{k: v for k, v in r.items() if k != "n_train"}})
    summary = {"data_dir": data_dir, "recipes": recipes, "budget_min": budget_min, "steps": steps, "tta": tta,
               "postprocess": postprocess, "quick": quick, "runs": results}
    write_json(os.path.join(out, "results.json"), summary)
    write_text(os.path.join(out, "table.md"), table_markdown(summary) + "\n")
    return summary


def _mean_std(values) -> str:
    v = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return f"{np.nanmean(v):.3f} ± {(np.nanstd(v, ddof=1) if len(v) > 1 else 0.0):.3f}"


def table_markdown(summary: dict) -> str:
    """Per recipe at ``n = P - 1`` the Dice per region (mean ± std over held-out patients, then per patient),
    and, when the runs hold smaller training sets, the learning curve of the whole-tumour Dice."""
    runs = summary["runs"]
    budget = (f"{summary['steps']} steps per run" if summary["steps"] else
              f"{summary['budget_min']} min per run" if summary["budget_min"] else "the recipes' steps")
    lines = [f"# BraTS recipes, leave one patient out ({budget}, post-processing {summary['postprocess']}"
             f"{', mirrored TTA' if summary['tta'] else ''})", "",
             "| recipe | steps | WT | TC | ET | WT raw | WT per patient |", "|---|---:|---|---|---|---|---|"]
    for recipe in summary["recipes"]:
        mine = [r for r in runs if r["recipe"] == recipe]
        if not mine:
            continue
        top = max(r["n_train"] for r in mine)
        full = sorted((r for r in mine if r["n_train"] == top), key=lambda r: r["held_out"])
        per = " / ".join(f"{r['held_out']} {r['dice_wt']:.2f}" for r in full)
        lines.append(f"| {recipe} (n={top}) | {int(np.median([r['steps'] for r in full]))} | "
                     + " | ".join(_mean_std([r[k] for r in full]) for k in ("dice_wt", "dice_tc", "dice_et",
                                                                           "dice_wt_raw")) + f" | {per} |")
    sizes = sorted({r["n_train"] for r in runs})
    if len(sizes) > 1:
        lines += ["", "## Learning curve: whole-tumour Dice per held-out patient by training patients", "",
                  "| recipe | held out | " + " | ".join(f"n={n}" for n in sizes) + " |",
                  "|---|---|" + "---:|" * len(sizes)]
        for recipe in summary["recipes"]:
            for held in sorted({r["held_out"] for r in runs if r["recipe"] == recipe}):
                cell = {r["n_train"]: r["dice_wt"] for r in runs if r["recipe"] == recipe and r["held_out"] == held}
                lines.append(f"| {recipe} | {held} | " + " | ".join(
                    f"{cell[n]:.3f}" if n in cell else "-" for n in sizes) + " |")
            means = [[r["dice_wt"] for r in runs if r["recipe"] == recipe and r["n_train"] == n] for n in sizes]
            lines.append(f"| {recipe} | **mean** | " + " | ".join(
                f"{np.mean(m):.3f}" if m else "-" for m in means) + " |")
    return "\n".join(lines)


def _parser():
    p = command_parser("python -m eval.studies.brats_recipe", __doc__, out="output folder (reruns resume it)",
                       out_required=True)
    p.add_argument("--data_dir", required=True, help="the BraTS cases (one folder per patient)")
    p.add_argument("--recipes", nargs="+", default=["paper_unet_brats"],
                   help="BraTS configs (paper_unet_brats, brats3d, ...), each NAME[@field=value...]")
    p.add_argument("--budget_min", type=float, default=None, help="training minutes per run (train.time_limit_s)")
    p.add_argument("--steps", type=int, default=None, help="exactly this many steps per run (no time limit)")
    p.add_argument("--curves", action="store_true", help="also train on 1 .. P-2 patients (the learning curve)")
    p.add_argument("--sizes", default="", help="only these training-set sizes (comma list, e.g. 1,2)")
    p.add_argument("--holdout", default="", help="only these held-out patients (comma list)")
    p.add_argument("--tta", action="store_true", help="mirrored test-time augmentation at prediction")
    p.add_argument("--postprocess", default="brain_lcc", help=f"one of {POSTPROCESS}")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 3 steps: checks the machinery")
    p.add_argument("--table_only", action="store_true", help="train nothing: the table of the runs done so far")
    return p


def _sizes(text: str) -> list[int] | None:
    try:
        return [int(v) for v in text.split(",") if v.strip()] or None
    except ValueError:
        raise ValueError(f"--sizes expects comma-separated integers, got {text!r}") from None


def _run(args) -> int:
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.budget_min is not None and not (args.budget_min > 0 and np.isfinite(args.budget_min)):
        raise ValueError(f"--budget_min must be positive, got {args.budget_min}")
    if not os.path.isdir(args.data_dir):
        raise FileNotFoundError(f"--data_dir {args.data_dir}: no such folder")
    summary = run_study(args.data_dir, os.path.abspath(args.out), list(args.recipes), budget_min=args.budget_min,
                        steps=args.steps, curves=args.curves, holdout=split(args.holdout), tta=args.tta,
                        postprocess=args.postprocess, quick=args.quick, sizes=_sizes(args.sizes),
                        table_only=args.table_only)
    print(table_markdown(summary))
    return 0


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
