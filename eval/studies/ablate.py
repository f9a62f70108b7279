"""The study's ablations as config variants: ``python -m eval.ablate [--quick] [--only skips,loss] --out DIR``.

Each ablation compares a *reference* run with a *treatment* run that differs in one config
field; both are trained by ``python -m zoo.train`` in a subprocess (eval never imports
``zoo.train``), then evaluated on the same validation cases, and the paired per-case delta
``treatment - reference`` is reported with a bootstrap 95% CI next to the study's claim:

==============  ==================================  ==================================  ===========
ablation        reference                           treatment                           study says
==============  ==================================  ==================================  ===========
skips           U-Net with skip connections         without (model.kwargs.skip_...)     -5..-10 %
attention       U-Net                               Attention U-Net (model.name)        +2..+5 %
augmentation    augment.enabled=False               augment.enabled=True                +3..+7 %
normalisation   model.kwargs.norm=none              the recipe's norm (instance)        +2..+4 %
loss            train.loss=ce                       train.loss=dice                     +3..+6 %
==============  ==================================  ==================================  ===========

Runs shared between ablations are trained once (the recipe itself is the reference of
``skips``/``attention``/``augmentation`` and the treatment of ``normalisation``); a run whose
work directory already holds a finished checkpoint is reused. ``--quick`` uses the smoke
recipe with few steps: it checks the machinery, its deltas mean nothing.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

from eval.bootstrap import bootstrap_ci, paired_delta_ci

__all__ = ["Ablation", "ABLATIONS", "plan", "train_run", "compare", "ablation_markdown", "main"]


@dataclasses.dataclass(frozen=True)
class Ablation:
    name: str
    description: str
    reference: dict
    treatment: dict
    study_range: tuple[float, float]  # relative Dice change the study reports, in percent
    requires_model: str | None = None


ABLATIONS = {
    "skips": Ablation("skips", "U-Net without skip connections", {}, {"model.kwargs.skip_connections": "False"},
                      (-10.0, -5.0)),
    "attention": Ablation("attention", "attention gates (Attention U-Net vs U-Net)", {},
                          {"model.name": "attention_unet"}, (2.0, 5.0), requires_model="attention_unet"),
    "augmentation": Ablation("augmentation", "data augmentation on vs off", {"augment.enabled": "False"},
                             {"augment.enabled": "True"}, (3.0, 7.0)),
    "normalisation": Ablation("normalisation", "normalisation layers on vs off", {"model.kwargs.norm": "none"},
                              {}, (2.0, 4.0)),
    "loss": Ablation("loss", "Dice loss vs cross-entropy", {"train.loss": "ce"}, {"train.loss": "dice"},
                     (3.0, 6.0)),
}


def _run_name(overrides: dict) -> str:
    if not overrides:
        return "recipe"
    return "__".join(f"{k.removeprefix('model.kwargs.')}={v}" for k, v in sorted(overrides.items())).replace("/", "_")


def _drop_defaults(overrides: dict, base_config) -> dict:
    """Overrides minus those that equal the recipe's value (so equal runs share one name)."""
    if base_config is None:
        return dict(overrides)
    from zoo.configs import apply_overrides

    out = {}
    for k, v in overrides.items():
        node = base_config
        try:
            for part in k.split("."):
                node = node[part]
            current = node
        except (KeyError, AttributeError):
            out[k] = v
            continue
        import copy

        probe = apply_overrides(copy.deepcopy(base_config), {k: v})
        node = probe
        for part in k.split("."):
            node = node[part]
        if node != current:
            out[k] = v
    return out


def plan(names, *, available_models=None, base_config=None) -> tuple[dict, list, list]:
    """``(runs, pairs, skipped)``: ``runs`` = {run name: overrides}; ``pairs`` = [(ablation, ref, treat)].

    With ``base_config`` (the recipe), overrides equal to the recipe's values are dropped so a
    variant that is the recipe itself is trained once.
    """
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablations {unknown}; expected some of {list(ABLATIONS)}")
    runs, pairs, skipped = {}, [], []
    for n in names:
        ab = ABLATIONS[n]
        if ab.requires_model and available_models is not None and ab.requires_model not in available_models:
            skipped.append((n, f"model {ab.requires_model!r} is not registered"))
            continue
        ref_over = _drop_defaults(ab.reference, base_config)
        treat_over = _drop_defaults(ab.treatment, base_config)
        if ref_over == treat_over:
            skipped.append((n, "reference and treatment are the same config for this recipe"))
            continue
        ref, treat = _run_name(ref_over), _run_name(treat_over)
        runs.setdefault(ref, ref_over)
        runs.setdefault(treat, treat_over)
        pairs.append((ab, ref, treat))
    return runs, pairs, skipped


def _finished(workdir: str, steps: int | None) -> bool:
    path = os.path.join(workdir, "eval.json")
    if not os.path.exists(path):
        return False
    if steps is None:
        return True
    with open(path) as f:
        return int(json.load(f).get("step", -1)) >= steps


def train_run(config: str, workdir: str, overrides: dict, *, steps: int | None = None,
              extra: dict | None = None, timeout: float | None = None) -> dict:
    """Train one variant with ``python -m zoo.train`` in a subprocess; returns ``{rc, seconds, log}``."""
    os.makedirs(workdir, exist_ok=True)
    log = os.path.join(workdir, "train.log")
    if _finished(workdir, steps):
        return {"rc": 0, "seconds": 0.0, "log": log, "reused": True}
    cmd = [sys.executable, "-m", "zoo.train", f"--config={config}", f"--workdir={workdir}", "--no_progress"]
    all_over = dict(extra or {})
    all_over.update(overrides)
    if steps is not None:
        all_over["train.steps"] = str(steps)
    cmd += [f"--config.{k}={v}" for k, v in all_over.items()]
    t0 = time.time()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=root, timeout=timeout)
    return {"rc": proc.returncode, "seconds": round(time.time() - t0, 1), "log": log, "reused": False}


def compare(evals: dict, pairs, *, metrics=("dice", "jaccard", "sensitivity", "specificity"),
            n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Rows of paired deltas ``treatment - reference`` per ablation and metric.

    ``evals``: {run name: ``eval.report.ModelEval``}; both runs of a pair must cover the same cases.
    """
    rows = []
    for ab, ref, treat in pairs:
        if ref not in evals or treat not in evals:
            missing = [r for r in (ref, treat) if r not in evals]
            rows.append({"ablation": ab.name, "reference": ref, "treatment": treat, "metric": "-",
                         "error": f"run(s) {missing} did not produce a checkpoint"})
            continue
        a, b = evals[ref], evals[treat]
        if list(map(str, a.acc.case_ids)) != list(map(str, b.acc.case_ids)):
            raise ValueError(f"ablation {ab.name}: runs {ref} and {treat} were evaluated on different cases")
        for m in metrics:
            va, vb = a.per_case(m), b.per_case(m)
            d = paired_delta_ci(va, vb, n_boot=n_boot, seed=seed)
            ra, rb = bootstrap_ci(va, n_boot=n_boot, seed=seed), bootstrap_ci(vb, n_boot=n_boot, seed=seed)
            rel = 100.0 * d.estimate / ra.estimate if ra.estimate and np.isfinite(ra.estimate) else float("nan")
            identical = bool(np.array_equal(va, vb, equal_nan=True))
            rows.append({"ablation": ab.name, "description": ab.description, "reference": ref, "treatment": treat,
                         "metric": m, "reference_mean": ra.estimate, "treatment_mean": rb.estimate,
                         "delta": d.estimate, "delta_ci_low": d.low, "delta_ci_high": d.high, "n": d.n,
                         "relative_delta_pct": rel, "study_range_pct": list(ab.study_range),
                         "identical": identical})
    return rows


def _f(x, d=3):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{d}f}" if d < 0 else f"{x:.{d}f}"


def ablation_markdown(rows, skipped=(), runs_info=None, title="Ablations") -> str:
    out = [f"# {title}", "", "Delta = treatment - reference on the same validation cases (paired bootstrap "
           "95% CI). Relative delta is against the reference mean.", "",
           "| ablation | metric | reference | treatment | delta [95% CI] | relative | study says | note |",
           "|---|---|---:|---:|---|---:|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['ablation']} | - | - | - | - | - | - | {r['error']} |")
            continue
        lo, hi = r["study_range_pct"]
        note = "identical predictions: the factor had no effect (does the trainer honour it?)" if r["identical"] \
            else ""
        out.append(f"| {r['ablation']} | {r['metric']} | {_f(r['reference_mean'])} | {_f(r['treatment_mean'])} | "
                   f"{r['delta']:+.3f} [{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}] | "
                   f"{r['relative_delta_pct']:+.1f}% | {lo:+g}..{hi:+g}% | {note} |")
    for name, why in skipped:
        out.append(f"| {name} | - | - | - | - | - | - | skipped: {why} |")
    if runs_info:
        out += ["", "| run | overrides | exit | train s | reused |", "|---|---|---:|---:|---|"]
        for name, info in runs_info.items():
            ov = ", ".join(f"{k}={v}" for k, v in info["overrides"].items()) or "(recipe)"
            out.append(f"| {name} | {ov} | {info['rc']} | {info['seconds']} | {info.get('reused', False)} |")
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.ablate", description=__doc__.splitlines()[0])
    p.add_argument("--config", default="default", help="recipe to ablate (default: default)")
    p.add_argument("--quick", action="store_true", help="smoke recipe, few steps: checks the machinery")
    p.add_argument("--steps", type=int, default=None, help="train.steps for every run (quick: 4)")
    p.add_argument("--only", default=",".join(ABLATIONS), help=f"comma-separated subset of {list(ABLATIONS)}")
    p.add_argument("--out", default="", help="output folder (default: workdirs/ablate-<config>)")
    p.add_argument("--set", action="append", default=[], help="FIELD=VALUE override for every run (repeatable)")
    p.add_argument("--n_boot", type=int, default=2000)
    p.add_argument("--batch_size", type=int, default=8)
    args = p.parse_args(argv)
    try:
        config = "smoke" if args.quick else args.config
        steps = args.steps if args.steps is not None else (4 if args.quick else None)
        extra = {}
        for item in args.set:
            if "=" not in item:
                raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
            k, v = item.split("=", 1)
            extra[k.removeprefix("config.")] = v
        from zoo.registry import list_models

        names = [n.strip() for n in args.only.split(",") if n.strip()]
        from zoo.configs import apply_overrides, load_config

        base = apply_overrides(load_config(config), extra)
        runs, pairs, skipped = plan(names, available_models=set(list_models()), base_config=base)
        out = os.path.abspath(args.out or os.path.join("workdirs", f"ablate-{config}"))
        os.makedirs(out, exist_ok=True)
        from eval.report import evaluate_workdir

        evals, info = {}, {}
        for name, overrides in runs.items():
            wd = os.path.join(out, "runs", name)
            print(f"[ablate] training {name} ({overrides or 'recipe'})", flush=True)
            res = train_run(config, wd, overrides, steps=steps, extra=extra)
            info[name] = {"overrides": overrides, **res}
            if res["rc"] != 0:
                print(f"[ablate] run {name} failed (exit {res['rc']}); see {res['log']}", file=sys.stderr)
                continue
            ev, _, _ = evaluate_workdir(wd, "val", metrics=("dice", "jaccard", "sensitivity", "specificity"),
                                        batch_size=args.batch_size, label=name, with_auc=False)
            evals[name] = ev
        rows = compare(evals, pairs, n_boot=args.n_boot)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    md = ablation_markdown(rows, skipped, info, title=f"Ablations of {config}" + (" (quick)" if args.quick else ""))
    with open(os.path.join(out, "ablation.md"), "w", encoding="utf-8") as f:
        f.write(md)
    with open(os.path.join(out, "ablation.json"), "w", encoding="utf-8") as f:
        json.dump({"rows": rows, "skipped": skipped, "runs": info}, f, indent=1, default=str)
    good = [r for r in rows if "error" not in r]
    if good:
        with open(os.path.join(out, "ablation.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(good[0]))
            w.writeheader()
            w.writerows(good)
    print(md)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
