"""The study's ablations as config variants, and how their runs are trained (the library behind
``python -m eval.studies.ablate`` and the paper table's ablations).

Each ablation compares a *reference* run with a *treatment* run that differs in one config
field; both are trained by ``python -m zoo.train`` in a subprocess (:func:`train_run`), then evaluated on the
same validation cases, and the paired per-case delta ``treatment - reference`` is reported with a bootstrap
95% CI (``eval.deltas.paired_deltas``) next to the study's claim:

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
``skips``/``attention``/``augmentation`` and the treatment of ``normalisation``, :func:`plan`); a run whose
work directory already holds a finished evaluation is reused.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
import time

import numpy as np

from zoo.configs import apply_overrides

__all__ = ["Ablation", "ABLATIONS", "plan", "train_run", "ablation_markdown", "dropped_note"]


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
    with open(path, encoding="utf-8") as f:
        return int(json.load(f).get("step", -1)) >= steps


def train_run(config: str, workdir: str, overrides: dict, *, steps: int | None = None,
              extra: dict | None = None, timeout: float | None = None) -> dict:
    """Train one variant with ``python -m zoo.train`` in a subprocess (run from the repository root); returns
    ``{rc, seconds, log, reused}``."""
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
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=root, timeout=timeout)
    return {"rc": proc.returncode, "seconds": round(time.time() - t0, 1), "log": log, "reused": False}


def _f(x, d=3):
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{d}f}" if d < 0 else f"{x:.{d}f}"


def dropped_note(rows) -> str:
    """A line naming the cases a paired delta left out (scored by one run only), or ``""``."""
    dropped = {(r["ablation"], r["reference"], r["treatment"]): r["dropped_cases"] for r in rows
               if r.get("dropped_cases")}
    if not dropped:
        return ""
    return "Cases scored by one run only, left out of the pair: " + "; ".join(
        f"{ab} ({ref} vs {treat}): {', '.join(map(str, cases[:10]))}" + (f" and {len(cases) - 10} more"
                                                                         if len(cases) > 10 else "")
        for (ab, ref, treat), cases in dropped.items()) + "."


def ablation_markdown(rows, skipped=(), runs_info=None, title="Ablations") -> str:
    """The ablation table of :func:`eval.deltas.paired_deltas` rows, the skipped ablations and the runs."""
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
    if dropped_note(rows):
        out += ["", dropped_note(rows)]
    if runs_info:
        out += ["", "| run | overrides | exit | train s | reused |", "|---|---|---:|---:|---|"]
        for name, info in runs_info.items():
            ov = ", ".join(f"{k}={v}" for k, v in info["overrides"].items()) or "(recipe)"
            out.append(f"| {name} | {ov} | {info['rc']} | {info['seconds']} | {info.get('reused', False)} |")
    return "\n".join(out) + "\n"
