"""The reference study's table on the real samples: ``python -m eval.studies.paper_table --data_root ../shared/data
--out DIR [--quick] [--budget_minutes 60] [--folds K] [--models cnn,unet] [--families isic,brats] [--steps N]
[--ablations skips,attention | all | none] [--postprocess none|lcc|brain|brain_lcc] [--store refit|fold0|none]
[--no_store] [--dry_run]``.

Every model x family trained with patient-level k-fold CV, each fold's held-out patients predicted from their
original files and scored at native resolution, the ablations as paired deltas: ``eval.studies.reference_table``
(what each flag does, the budget, the outputs). ``--quick`` checks the machinery in a few minutes; its numbers
mean nothing. Bad input: ``error: <message>`` and exit 2.

The model store (``$ZOO_HOME``; never commit its entries: the data licences) gets one entry per model x family,
``<arch>-<family>`` (``unet-isic``, ``unet-brats2d``...). ``--store refit`` (the default), as nnU-Net and
scikit-learn do after cross-validation: after the table, the same recipe is refit on every patient of the family
(``zoo.training.kfold.refit``: the folds' mean steps, no validation split, the last step is the model), and its card
carries the cross-validated metrics it came from (``metrics.cross_validation``: per fold with its held-out
patients and steps, mean ± std of Dice, Jaccard, accuracy, sensitivity, specificity and for BraTS the tumour core
and enhancing tumour, at native resolution after the table's post-processing; the splitter and seed;
``training.refit: true``). The refits train outside ``--budget_minutes`` (about one more fold per entry); the
folds' models stay in ``runs/<arch>_<family>/fold<i>`` and the refit beside them in ``refit/``; ``store.json``
lists the entries. ``--store fold0``: fold 0's model instead (no refit); ``--store none`` / ``--no_store``: none.
``python -m zoo.store_cli show unet-isic`` prints a card.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

import numpy as np

from data_pipelines.atomic import dumps, write_json
from data_pipelines.datasets import load_dataset
from eval.studies.ablations import ABLATIONS
from eval.studies.reference_table import (LICENCES, METRICS, SUBREGIONS, make_config, run_table, store_name,
                                          table_markdown)
from zoo.cli import command_parser, run_command
from zoo.configs import paper
from zoo.crossval import cross_validation_record, refit_card
from zoo.store import save_pretrained
from zoo.training import kfold

__all__ = ["main"]


def _parser():
    p = command_parser("python -m eval.studies.paper_table", __doc__, out="output folder (a new one)",
                       out_required=True)
    p.add_argument("--data_root", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--budget_minutes", type=float, default=60.0)
    p.add_argument("--folds", type=int, default=None,
                   help="folds for every family (default: brats 4 = leave one patient out, isic, cxr and lung 2)")
    p.add_argument("--models", default="", help="these models on every family (default: cnn,fcn,unet,segnet "
                                                "everywhere, attention_unet,deeplabv3plus,mask_rcnn on isic)")
    p.add_argument("--families", default="")
    p.add_argument("--steps", type=int, default=None, help="a fixed step count per fold instead of training by time")
    p.add_argument("--ablations", default="", help="comma list, 'all' or 'none' (default: skips,attention)")
    p.add_argument("--ablation_family", default="isic")
    p.add_argument("--postprocess", default=None,
                   help="the table's post-processing for every family (default: per family, POSTPROCESS_DEFAULT)")
    p.add_argument("--store", default="refit", choices=("refit", "fold0", "none"),
                   help="the store entries: refit on every patient with the CV metrics on the card (default), fold "
                        "0's model, or none")
    p.add_argument("--no_store", action="store_true", help="same as --store none")
    p.add_argument("--dry_run", action="store_true", help="print the runs and their reserved seconds, train nothing")
    return p


def _run(args) -> int:
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    archs = split(args.models) or (["cnn", "unet"] if args.quick else None)
    families = split(args.families) or (["isic", "cxr"] if args.quick else list(paper.FAMILIES))
    if args.ablations == "none":
        abl = []
    elif args.ablations == "all":
        abl = list(ABLATIONS)
    else:
        abl = split(args.ablations) or (["loss"] if args.quick else ["skips", "attention"])
    steps = args.steps if args.steps is not None else (8 if args.quick else None)
    if args.folds is not None and args.folds < 2:
        raise ValueError(f"--folds must be >= 2, got {args.folds}")
    if args.budget_minutes <= 0 or not np.isfinite(args.budget_minutes):
        raise ValueError(f"--budget_minutes must be positive, got {args.budget_minutes}")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if args.no_store and args.store != "refit":
        raise ValueError(f"--no_store and --store {args.store}: give one")
    mode = "none" if args.no_store else args.store
    out = os.path.abspath(args.out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = run_table(args.data_root, out, archs=archs, families=families,
                           folds=args.folds, budget_minutes=args.budget_minutes, quick=args.quick, steps=steps,
                           ablations=abl, ablation_family=args.ablation_family, store=mode == "fold0",
                           postprocess=args.postprocess, dry_run=args.dry_run)
    if args.dry_run:
        print(dumps(result, indent=1))
        return 0
    print(table_markdown(result), flush=True)
    if mode == "refit":
        entries = refit_store_entries(result, args.data_root, out, args.quick)
        write_json(os.path.join(out, "store.json"), {"mode": "refit", "entries": entries})
        print("\n## Model store entries (refit on every patient; the card holds the cross-validated metrics)\n")
        for e in entries:
            print(f"- {e['name']}: {e['patients']} patients, {e['steps']} steps, refit in {e['refit_s']:.0f} s; "
                  f"cross-validated Dice {e['cv_dice_mean']:.3f}"
                  + (f" ± {e['cv_dice_std']:.3f}" if e["cv_dice_std"] is not None else "")
                  + f" ({e['folds_run']} of {e['folds']} folds)")
    return 0


def refit_store_entries(result: dict, data_root: str, out: str, quick: bool, log=print) -> list[dict]:
    """After the table: every model x family of ``result`` refit on all its family's patients
    (``runs/<arch>_<family>/refit``, the folds' mean steps) and saved as its store entry, the card holding the
    folds' native-resolution metrics (``zoo.crossval.refit_card``). Returns one summary row per entry. A refit
    that fails saves nothing for its entry (the store writes an entry whole or not at all)."""
    rows, data_cache = [], {}
    for arch, cells in result["results"].items():
        for f, cell in cells.items():
            summ = cell["folds"]
            if not summ:
                continue
            config = make_config(arch, f, os.path.join(data_root, paper.FOLDERS[f]), quick)
            key = (f, tuple(config.data.image_size))
            if key not in data_cache:  # the table's arrays: the loader's train and validation splits pooled
                tr, va, info = load_dataset(config.data)
                data_cache[key] = (kfold.concat(tr, va), info)
            arrays, info = data_cache[key]
            steps = kfold.refit_steps([s["steps"] for s in summ])
            wd = os.path.join(out, "runs", f"{arch}_{f}", "refit")
            log(f"[paper_table] refit {arch} on {f}: {len(set(arrays['patient_id']))} patients, {steps} steps",
                flush=True)
            t0 = time.time()
            fit = kfold.refit(config, wd, arrays, info, steps)
            if fit.get("preempted"):
                raise RuntimeError(f"refit of {arch} on {f} was stopped (SIGTERM); nothing saved for it")
            keys = [m for m in METRICS + tuple(f"dice_{n.lower()}" for n in SUBREGIONS) if m in summ[0]]
            per_fold = [{"fold": s["fold"], "val_patients": s["val_patients"], "steps": s["steps"],
                         "metrics": {m: s[m] for m in keys}} for s in summ]
            cv = cross_validation_record(
                per_fold, folds=int(cell["k"]), seed=int(config.data.seed),
                measured_on=f"each held-out patient's original files at native resolution after the table's "
                            f"post-processing ({cell['postprocess']}); a fold's value is its held-out cases' mean; "
                            "dice: the foreground (BraTS: whole tumour, labels > 0), dice_tc / dice_et: BraTS "
                            "tumour core / enhancing tumour")
            entry = save_pretrained(wd, store_name(arch, f), step=int(fit["step"]), overwrite=True, card={
                "data_licence": LICENCES[f], "recipe": f"paper_{arch}_{f}", "postprocess_in_table": cell["postprocess"],
                "intended_use": "research/evaluation only; never redistribute (data licence)",
                **refit_card(cv, fit, "dice", [s["workdir"] for s in summ])})
            rows.append({"name": entry.name, "path": entry.path, "model": arch, "family": f,
                         "patients": len(fit["patients"]), "cases": fit["cases"], "steps": int(fit["step"]),
                         "refit_s": round(time.time() - t0, 1), "folds": cv["folds"], "folds_run": cv["folds_run"],
                         "cv_dice_mean": cv["mean"]["dice"], "cv_dice_std": cv["std"]["dice"]})
            cell["store"] = entry.name
    return rows


def main(argv=None) -> int:
    return run_command(_parser(), argv, _run)


if __name__ == "__main__":
    sys.exit(main())
