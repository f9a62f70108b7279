"""The reference study's table on the real samples: the study behind ``python -m eval.studies.paper_table``
(:func:`run_table`; the command's flags are its arguments).

For every model x family (recipes ``zoo/configs/paper.py``: ``--config=paper_<arch>_<family>``) it runs
patient-level k-fold cross-validation (``zoo.training.kfold``; every case of a patient in one fold, the train and
validation splits of the loader pooled first). Each fold's model then predicts the **original files** of its
held-out patients through the one prediction path (``zoo.prediction.predict_case``: the loader's scaling, the
model's input size, probabilities resized back to the native grid; BraTS and CT volumes slice by slice over the
whole volume), and ``scoring`` measures Dice, Jaccard, accuracy, sensitivity and specificity of the foreground
(BraTS: the whole tumour, labels > 0) per case at native resolution. A cell is the mean ± sample std over folds
of the fold's mean per-case value, next to the study's number (``REFERENCE_STUDY.md``).

Default runs: the study's ranked models (CNN, FCN, U-Net, SegNet) on every family, Attention U-Net, DeepLabV3+
and Mask R-CNN on isic only; BraTS leave-one-patient-out (4 folds), 2 folds elsewhere (``DEFAULT_FOLDS``; ``--folds``
sets all). BraTS cells also give the sub-regions (tumour core, enhancing tumour) of the same predictions.

Budget (``--budget_minutes``, 60): fixed wall-clock reservations (:class:`Budget`). Each run holds the budget
times its weight (``FAMILY_WEIGHT`` x the model's ``SEC_PER_STEP``) over the sum of weights, spread over its folds.
The models of a family (on the ablation family also the ablation variants) form a group that trains **the same
number of steps**, as a study trains every model for the same epochs: the steps the group's time fits at
``SEC_PER_STEP`` x the speed measured so far, fixed when the group's first run starts (the slower U-Net gets more
time than the CNN, not fewer steps). A fold stops at those steps or at its time (``train.time_limit_s``: the
trainer's own clock, started after the first step's compile; its reservation less its measured overhead),
whichever comes first, and what a fold over- or under-spends moves to the folds left. Every fold of a run has
the same schedule, so folds after the first reuse the compiled programs from JAX's persistent cache
(``DIR/jax_cache``). ``--steps`` fixes a step count.

Post-processing: every held-out case is also scored after keeping the largest connected component (``lcc``),
after dropping voxels outside the brain (``brain``: the first channel at the volume's background value) and
both, so the table shows on held-out patients whether one helps (``POSTPROCESS_DEFAULT``: what the table uses).

Ablations (``eval.studies.ablations.ABLATIONS``; default skips and attention, ``all`` adds augmentation,
normalisation and loss): U-Net variants on one family (isic) with the same folds and the U-Net run's time each,
reported as paired per-case deltas with bootstrap 95% CIs (``eval.deltas.paired_deltas``: on the held-out cases
both runs scored, any other case named); attention reuses the table's Attention U-Net run.
The store entries (``$ZOO_HOME``, ``<arch>-<family>``: ``unet-isic``, ``unet-brats2d``, ``cnn-lung-ct``, ...) are
made by ``eval.studies.paper_table``: by default a refit of each pair on every patient with the table's
cross-validated metrics on its card (``--store fold0``: fold 0's model, as before), the data's licence in the card;
the store is outside the project, and these checkpoints must never be committed.

``--quick``: tiny sizes (32^2, 4-8 features), one fold, 8 steps, two models (cnn, unet) on two families (isic,
cxr), one ablation (loss): it checks the machinery in CI; its numbers mean nothing.

Outputs in ``--out``: ``table.md`` / ``table.json`` (the table, the study's numbers, the allocation, the
post-processing comparison, the ablations, the runs and their steps/time), ``cases.csv`` (every held-out case),
``plots/dice_<family>.svg`` (per-case Dice per model), ``runs/`` (the work directories). Bad input raises
``ValueError`` (the command: ``error: ...`` and exit 2).
"""

from __future__ import annotations

import os
import time

import numpy as np

from data_pipelines import readers
from data_pipelines.datasets import load_dataset
from data_pipelines.families import get_family
from data_pipelines.atomic import write_json, write_text
from eval.deltas import DELTA_METRICS, CaseValues, paired_deltas
from eval.studies.ablations import ABLATIONS, dropped_note, plan as ablation_plan
from data_pipelines.atomic import write_csv
from scoring import overlap
from zoo.configs import apply_overrides, load_config
from zoo.configs import paper
from zoo.prediction import predict_case, read_case
from zoo.pretrained import load_pretrained
from zoo.store import save_pretrained
from zoo.training import kfold, train_and_evaluate

__all__ = ["STUDY", "METRICS", "POSTPROCESS", "family_cases", "score_case", "postprocess_mask", "Budget",
           "run_weight", "default_pairs", "compare_runs", "run_table", "table_markdown", "write_outputs"]

METRICS = ("dice", "jaccard", "accuracy", "sensitivity", "specificity")
SUBREGIONS = ("TC", "ET")  # BraTS tumour core and enhancing tumour, beside the whole tumour (the table's cell)
STUDY_ROWS = ("unet", "segnet", "mask_rcnn", "fcn", "cnn")
# REFERENCE_STUDY.md: {model: {family: {metric: value}}}; the study's LUNA column is our lung (CT) family.
_U = dict(zip(METRICS, (.85, .75, .92, .88, .90)))
STUDY = {
    "unet": {"brats": _U, "isic": dict(zip(METRICS, (.88, .78, .93, .90, .91))),
             "lung": dict(zip(METRICS, (.87, .77, .92, .89, .91)))},
    "segnet": {"brats": {"dice": .82}, "isic": {"dice": .84}, "lung": {"dice": .85}},
    "mask_rcnn": {"brats": {"dice": .80}, "isic": {"dice": .83}, "lung": {"dice": .82}},
    "fcn": {"brats": {"dice": .78}, "isic": {"dice": .81}, "lung": {"dice": .80}},
    "cnn": {"brats": {"dice": .75}, "isic": {"dice": .78}, "lung": {"dice": .76}},
}
STORE_FAMILY = {"brats": "brats2d", "isic": "isic", "lung": "lung-ct", "cxr": "cxr"}
LICENCES = {
    "brats": "CC BY-NC-SA 3.0 CH (BraTS 2015 via deepmedic; non-commercial, share-alike, attribution; cite BraTS)",
    "isic": "PH2 database: research/benchmarking only, redistribution terms unknown (cite Mendonca et al. 2013)",
    "lung": "pyradiomics 3.0.1 test data (package BSD-3-Clause, no separate data licence, source unknown): "
            "research/evaluation only (cite van Griethuysen et al. 2017)",
    "cxr": "non-commercial, share-alike, research/evaluation only (images mostly CC BY-NC-SA via ieee8023 "
           "covid-chestxray-dataset; masks CC BY 4.0, GeneralBlockchain)",
}
QUICK = {"data.image_size": "32,32", "model.kwargs.features": "4", "train.batch_size": "4",
         "train.warmup_steps": "1", "train.log_every": "4", "augment.enabled": "False"}
QUICK_KW = {"unet": {"model.kwargs.depth": "2"}, "attention_unet": {"model.kwargs.depth": "2"},
            "cnn": {"model.kwargs.depth": "2"}, "segnet": {"model.kwargs.depth": "2"}}


def store_name(arch: str, family: str) -> str:
    return f"{arch.replace('_', '-')}-{STORE_FAMILY[family]}"


# ------------------------------------------------------------------------------------------------ cases

def family_cases(config) -> dict[str, list[dict]]:
    """{patient_id: [{"id", "input", "truth"}]}: the original files of each patient (``input`` goes to
    ``zoo.prediction.read_case``; ``truth`` is a label file), from the data family's ``case_files``; cases
    without a label file on disk are left out."""
    out: dict[str, list[dict]] = {}
    for c in get_family(config.data.name).case_files(config.data):
        if c.truth:
            out.setdefault(c.patient_id, []).append({"id": c.case_id, "input": c.input, "truth": c.truth})
    return out


POSTPROCESS = ("none", "lcc", "brain", "brain_lcc")
# The table's post-processing per family (``--postprocess`` overrides); every run also records the others' Dice.
# BraTS: measured 2026-12-02, before the recipes' brain z-scoring (data.brats_intensity=zscore_fg; to re-measure)
# (U-Net, 2 leave-one-out folds, ~80 steps, held-out whole volumes): Dice 0.53 raw,
# 0.79 largest component, 0.61 brain mask, 0.79 both; at ~180 steps 0.83 raw, 0.89 both (pat0003 0.86, pat0004
# 0.92): the whole-volume false positives are scattered islands in slices without tumour. Training with as many
# tumour-free slices as tumour slices (empty_slice_ratio 1.0 vs 0.25) was worse (0.62 vs 0.79, both post-processed). isic: largest component 0.891 vs 0.888 raw (40 held-out cases, mixed): not used.
# cxr has two lungs and lung CT may have several nodules: never the largest component there.
POSTPROCESS_DEFAULT: dict[str, str] = {"brats": "brain_lcc"}


def postprocess_mask(pred: np.ndarray, image: np.ndarray, how: str) -> np.ndarray:
    """Foreground ``pred`` (bool) after ``how``: ``none``; ``lcc`` keeps the largest connected component (as
    nnU-Net's post-processing does when it helps in CV); ``brain`` drops voxels outside the body/brain (where the
    first channel holds the volume's constant background, its minimum: skull-stripped MRI); ``brain_lcc`` both."""
    if how not in POSTPROCESS:
        raise ValueError(f"postprocess {how!r}; expected one of {POSTPROCESS}")
    p = pred.copy()
    if how in ("brain", "brain_lcc"):
        first = image[..., 0]
        p &= first != first.min()
    if how in ("lcc", "brain_lcc") and p.any():
        from scipy import ndimage

        lab, n = ndimage.label(p)
        if n > 1:
            sizes = np.bincount(lab.ravel())
            sizes[0] = 0
            p = lab == int(np.argmax(sizes))
    return p


def read_reference(path: str, shape) -> np.ndarray:
    """A held-out case's reference label map, as read (a trailing channel of 1 dropped), checked to have the
    prediction's ``shape`` (the study predicts in the original file's geometry, so they must agree)."""
    truth = np.asarray(readers.read_label(path)[0])
    if truth.ndim == len(shape) + 1 and truth.shape[-1] == 1:
        truth = truth[..., 0]
    if truth.shape != tuple(shape):
        raise ValueError(f"{path}: label shape {truth.shape} differs from the prediction {tuple(shape)}")
    return truth


def score_case(pre, case: dict, foreground: str = "nonzero", postprocess: str = "none") -> dict:
    """Foreground metrics of one original case predicted at its native resolution, after ``postprocess``;
    also the Dice of every other post-processing (``dice_<how>``), so each run measures whether one helps."""
    image, meta, _ = read_case(case["input"], pre)
    pred = predict_case(pre, image, meta)
    truth = read_reference(case["truth"], pred.shape)
    t = truth > 0 if foreground == "nonzero" else truth == 0
    raw = pred > 0
    img = np.asarray(image)
    p = postprocess_mask(raw, img, postprocess)
    row = {"case": case["id"], "voxels": int(t.size), "fg_voxels": int(t.sum()), "pred_voxels": int(p.sum()),
           "postprocess": postprocess}
    for m in METRICS:
        row[m] = float(getattr(overlap, m)(p, t))
    family = get_family(pre.config.data.name)
    if family.region_dice is not None:  # the family's sub-regions of the post-processed prediction
        for name, value in family.region_dice(np.where(p, pred, 0), truth, case["truth"]).items():
            row[f"dice_{name.lower()}"] = float(value)
    for how in POSTPROCESS:
        if how.startswith("brain") and raw.ndim != 3:
            continue  # the body/brain mask is for volumes
        q = p if how == postprocess else postprocess_mask(raw, img, how)
        row[f"dice_{how}"] = float(overlap.dice(q, t))
    return row


# ------------------------------------------------------------------------------------------------ runs

# Seconds per training step at the recipe's 128^2, batch 8, the study's augmentation inside the step, on 2 idle
# CPU cores (Xeon, AVX-512; measured 2026-12-02: cnn/fcn/unet from the trainer's own clock in a table run,
# segnet/attention_unet/deeplabv3plus from benchmarks.common's train step, mask_rcnn scaled from an earlier
# ratio to U-Net), multiplied by the speed the trainer measured on the runs so far; they set the steps a group's
# time fits, the fold's time limit stops it if it runs slower.
SEC_PER_STEP = {"cnn": 0.18, "fcn": 0.14, "unet": 0.36, "segnet": 0.29, "attention_unet": 0.36,
                "deeplabv3plus": 0.09, "mask_rcnn": 0.65}
# Share of the budget per run: its family's weight times its SEC_PER_STEP (every model of a family trains the same
# steps). isic and brats carry the study's targets; brats (4 folds: every fold trains on 3 of the 4 patients and
# scores the 4th over its whole volume) needs the most; cxr and lung are small and quick to learn or, for lung
# (2 patients, so every fold trains on one CT and one lesion), not learnable at all.
FAMILY_WEIGHT = {"isic": 1.3, "brats": 2.5, "cxr": 0.8, "lung": 0.3}


def run_weight(arch: str, family: str) -> float:
    """A run's share of the budget (see ``FAMILY_WEIGHT``): family x seconds per step relative to the ranked
    models' mean, so the runs of one family train the same number of steps in their shares."""
    mean = float(np.mean([SEC_PER_STEP[a] for a in CORE]))
    return FAMILY_WEIGHT[family] * SEC_PER_STEP.get(arch, mean) / mean


# Folds: brats leave-one-patient-out (4: with 4 patients, 2 folds train on 2 and held-out Dice swung 0.43-0.94 per
# patient); 2 elsewhere (a fold's steps fall as 1/k while its training cases grow only as (k-1)/k; every case is
# still held out once).
DEFAULT_FOLDS = {"isic": 2, "brats": 4, "cxr": 2, "lung": 2}
CORE = ("cnn", "fcn", "unet", "segnet")          # the study's ranking: on every family
EXTRA = ("attention_unet", "deeplabv3plus", "mask_rcnn")  # on isic only by default


class Budget:
    """Fixed wall-clock reservations. Run ``r`` (a model x family, or an ablation variant) holds
    ``budget * weight_r / sum(weights)``, spread evenly over its folds; every fold starts with the time left
    shared by the weights of the folds left, so what one fold over- or under-spends moves to the others
    pro rata. A fold trains by time (``train.time_limit_s``, the trainer's own clock, compile excluded) for
    its reservation less its overhead (compile, validation, scoring), which is measured: on the run's first
    fold (a compile) and on later folds (the persistent compilation cache) separately. ``steps`` (``--steps``)
    fixes a step count instead (no time limit)."""

    def __init__(self, seconds: float, steps: int | None = None, min_train: float = 10.0):
        self.t0 = time.time()
        self.seconds = float(seconds)
        self.fixed = steps
        self.min_train = min_train
        self.weights: dict[str, tuple[float, int]] = {}  # run -> (weight, folds)
        self.done: dict[str, int] = {}
        self.arch: dict[str, str] = {}
        self.group: dict[str, str] = {}  # run -> group whose runs train the same steps
        self.group_steps: dict[str, int] = {}
        self.overhead = {"first": 30.0, "later": 12.0}  # priors (2 idle cores), replaced by measurements
        self.speed, self.measured = 1.0, False  # measured seconds per step / SEC_PER_STEP, over the runs so far

    def add(self, run: str, weight: float, folds: int, arch: str = "", group: str | None = None) -> None:
        """``group``: runs that train the same number of steps (the models of one family), fixed when the
        group's first run starts from the time the group's runs hold then."""
        self.weights[run] = (float(weight), int(folds))
        self.done.setdefault(run, 0)
        self.arch[run] = arch
        if group is not None:
            self.group[run] = group

    def reservation(self, run: str) -> float:
        """The run's planned seconds (all its folds) at the start."""
        w, _ = self.weights[run]
        return self.seconds * w / sum(v[0] for v in self.weights.values())

    def fold_seconds(self, run: str) -> float:
        """This fold's reservation from the time left."""
        left = max(self.seconds - (time.time() - self.t0), 0.0)
        w_left = sum(w * (k - self.done[r]) / k for r, (w, k) in self.weights.items() if self.done[r] < k)
        w, k = self.weights[run]
        return left * (w / k) / max(w_left, 1e-9)

    def train_limit(self, run: str) -> tuple[float, float]:
        """``(fold reservation, training seconds)`` for the run's next fold."""
        res = self.fold_seconds(run)
        over = self.overhead["first" if self.done[run] == 0 else "later"]
        return res, max(res - over, self.min_train, 0.25 * res)

    def nominal_steps(self, run: str, arch: str, recipe_steps: int) -> int:
        """The run's steps per fold (the cosine schedule's length, the same for all folds, so later folds reuse
        the compiled step), at most the recipe's: what the run's first fold fits from the time left at
        ``SEC_PER_STEP`` x the measured speed; for a group, what the group's runs fit together, fixed for the
        whole group when its first run starts (every run of the group trains that many steps)."""
        if self.fixed is not None:
            return int(self.fixed)
        g = self.group.get(run)
        if g is not None and g in self.group_steps:
            return self.group_steps[g]
        members = [r for r in self.weights if self.group.get(r) == g and self.done[r] == 0] if g else [run]
        if run not in members:
            members.append(run)
        sps = lambda r: SEC_PER_STEP.get(self.arch.get(r) or arch, 0.8)  # noqa: E731
        train = sum(max(self.fold_seconds(r) - self.overhead["first"], 0.0) for r in members)
        steps = int(np.clip(train / (self.speed * sum(sps(r) for r in members)), 20, recipe_steps))
        if g is not None:
            self.group_steps[g] = steps
        return steps

    def record(self, run: str, total_seconds: float, trained_seconds: float | None, steps: int = 0,
               arch: str = "") -> None:
        key = "first" if self.done[run] == 0 else "later"
        if trained_seconds is not None:
            self.overhead[key] = 0.5 * self.overhead[key] + 0.5 * max(total_seconds - trained_seconds, 2.0)
            if steps > 5 and arch in SEC_PER_STEP:  # the clock starts after step 1
                ratio = trained_seconds / (steps - 1) / SEC_PER_STEP[arch]
                self.speed = 0.5 * self.speed + 0.5 * ratio if self.measured else ratio
                self.measured = True
        self.done[run] += 1


def make_config(arch: str, family: str, data_dir: str, quick: bool, overrides: dict | None = None):
    c = load_config(f"paper_{arch}_{family}")
    over = {"data.data_dir": data_dir}
    if quick:
        over.update(QUICK)
        over.update(QUICK_KW.get(arch, {}))
    over.update(overrides or {})
    return apply_overrides(c, over)


def run_cv(config, workdir: str, arrays, info, cases, k: int, budget: Budget, run: str, *,
           fold_limit: int | None, postprocess: str = "none"):
    """k-fold on ``arrays``, one fold at a time (each trains by time for its reservation of ``budget``), each
    fold scored on its held-out patients' original files. Returns ``(fold summaries, per-case rows)``."""
    folds = kfold.patient_folds(arrays["patient_id"], k, int(config.data.seed))
    rows, summaries = [], []
    fg = config.data.get("mask_foreground", "nonzero")
    steps = budget.nominal_steps(run, config.model.name, int(config.train.steps))
    for i, (tr, va) in enumerate(folds[:fold_limit]):
        reserved, limit = budget.train_limit(run)
        over = {"train.steps": str(steps), "train.eval_every": str(steps), "train.checkpoint_every": str(steps),
                "train.log_every": str(min(int(config.train.log_every), steps))}
        if budget.fixed is None:
            over["train.time_limit_s"] = f"{limit:.1f}"
        c = apply_overrides(config.copy_and_resolve_references(), over)
        fold_dir = os.path.join(workdir, f"fold{i}")
        t0 = time.time()
        res = train_and_evaluate(
            c, fold_dir, progress=False, data=(kfold.subset(arrays, tr), kfold.subset(arrays, va), info))
        trained = time.time() - t0
        pre = load_pretrained(os.path.join(fold_dir, "best"))
        held = sorted(set(arrays["patient_id"][j] for j in va))
        fold_rows = []
        for pid in held:
            for case in cases.get(pid, []):
                r = score_case(pre, case, fg, postprocess)
                r.update(fold=i, patient_id=pid)
                fold_rows.append(r)
        total = time.time() - t0
        budget.record(run, total, res.get("timed_seconds"), int(res.get("step", 0)), config.model.name)
        means = {m: _nanmean([r[m] for r in fold_rows]) for m in METRICS + _region_keys(fold_rows)}
        variants = {f"dice_{v}": _nanmean([r[f"dice_{v}"] for r in fold_rows]) for v in POSTPROCESS
                    if fold_rows and f"dice_{v}" in fold_rows[0]}
        summaries.append({"fold": i, "steps": int(res.get("step", steps)), "nominal_steps": steps,
                          "reserved_s": round(reserved, 1), "time_limit_s": None if budget.fixed else round(limit, 1),
                          "trained_s": res.get("timed_seconds"), "train_call_s": round(trained, 1),
                          "seconds": round(total, 1), "stopped_by_time": bool(res.get("stopped_by_time")),
                          "workdir": fold_dir, "val_patients": held,
                          "train_patients": len(set(arrays["patient_id"][j] for j in tr)),
                          "val_mean_dice_resized": res.get("mean_dice"), **means, **variants})
        rows += fold_rows
    return summaries, rows


def _nanmean(v) -> float:
    v = np.asarray(v, np.float64)
    if not v.size or np.all(np.isnan(v)):
        return float("nan")
    return float(np.nanmean(v))


def _region_keys(rows) -> tuple:
    return tuple(f"dice_{n.lower()}" for n in SUBREGIONS if any(f"dice_{n.lower()}" in r for r in rows))


def _cell(summaries) -> dict:
    out = {}
    for m in METRICS + _region_keys(summaries):
        mean, std = kfold.nan_stats([s[m] for s in summaries])
        out[m] = {"mean": float(mean), "std": float(std)}
    return out


def default_pairs(families, archs=None) -> list[tuple[str, str]]:
    """``(arch, family)`` runs: ``archs`` on every family (Mask R-CNN only where instances exist); by default the
    study's four ranked models (CNN, FCN, U-Net, SegNet) on every family and Attention U-Net, DeepLabV3+ and
    Mask R-CNN on isic only (the budget does not hold seven models on four families)."""
    ok = lambda a, f: a != "mask_rcnn" or f in paper.INSTANCE_FAMILIES  # noqa: E731
    if archs:
        return [(a, f) for f in families for a in archs if ok(a, f)]
    return [(a, f) for f in families for a in CORE + (EXTRA if f == "isic" else ()) if ok(a, f)]


def _enable_compile_cache(folder: str):
    """Folds of one run compile the same programs: JAX's persistent cache (``folder``, unless
    ``JAX_COMPILATION_CACHE_DIR`` names one) makes folds 2.. skip the compile. Returns the undo."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as cc

    if jax.config.jax_compilation_cache_dir:
        return lambda: None
    os.makedirs(folder, exist_ok=True)
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    cc.reset_cache()  # a process that compiled before starts using the folder now

    def undo():
        jax.config.update("jax_compilation_cache_dir", None)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", before)
        cc.reset_cache()

    return undo


def run_table(data_root: str, out: str, *, archs, families, folds: int | None, budget_minutes: float, quick: bool,
              steps: int | None, ablations, ablation_family: str, store: bool, postprocess: str | None = None,
              dry_run: bool = False, log=print) -> dict:
    if not os.path.isdir(data_root):
        raise ValueError(f"--data_root {data_root!r} is not a directory")
    for a in archs or ():
        if a not in paper.ARCHS:
            raise ValueError(f"--models: unknown model {a!r}; expected some of {paper.ARCHS}")
    for f in families:
        if f not in paper.FAMILIES:
            raise ValueError(f"--families: unknown family {f!r}; expected some of {paper.FAMILIES}")
    unknown = [a for a in ablations if a not in ABLATIONS]
    if unknown:
        raise ValueError(f"--ablations: unknown {unknown}; expected some of {list(ABLATIONS)}, 'all' or 'none'")
    if postprocess is not None and postprocess not in POSTPROCESS:
        raise ValueError(f"--postprocess {postprocess!r}; expected one of {POSTPROCESS}")
    if not dry_run and os.path.isdir(os.path.join(out, "runs")):
        # A fold's work directory would resume its earlier checkpoints (another budget, another schedule).
        raise ValueError(f"--out {out!r} holds an earlier table's runs/; pass a new folder (nothing was changed)")
    os.makedirs(out, exist_ok=True)
    undo = _enable_compile_cache(os.path.join(out, "jax_cache"))
    try:
        return _run_table(data_root, out, archs=archs, families=families, folds=folds, budget_minutes=budget_minutes,
                          quick=quick, steps=steps, ablations=ablations, ablation_family=ablation_family,
                          store=store, postprocess=postprocess, dry_run=dry_run, log=log)
    finally:
        undo()


def _run_table(data_root, out, *, archs, families, folds, budget_minutes, quick, steps, ablations, ablation_family,
               store, postprocess, dry_run, log) -> dict:
    fold_limit = 1 if quick else None
    present, skipped = [], []
    for f in families:
        if os.path.isdir(os.path.join(data_root, paper.FOLDERS[f])):
            present.append(f)
        else:
            skipped.append({"family": f, "why": f"{os.path.join(data_root, paper.FOLDERS[f])} is missing"})
    if not present:
        raise ValueError(f"--data_root {data_root!r}: none of the families' folders "
                         f"({', '.join(paper.FOLDERS[f] for f in families)}) is there")
    pairs = default_pairs(present, archs)
    abl_runs, abl_pairs, abl_skipped = {}, [], []
    if ablations and ablation_family in present:
        base = make_config("unet", ablation_family, os.path.join(data_root, paper.FOLDERS[ablation_family]), quick)
        abl_runs, abl_pairs, abl_skipped = ablation_plan(list(ablations), base_config=base)
    elif ablations:
        abl_skipped = [(a, f"family {ablation_family!r} is not in the table") for a in ablations]

    # Folds per family from the patients in its file index (the loader's patients; 2 at least).
    k_of = {}
    for f in present:
        n_pat = len(family_cases(make_config("unet", f, os.path.join(data_root, paper.FOLDERS[f]), quick)))
        if n_pat < 2:
            raise ValueError(f"family {f}: {n_pat} patient(s); k-fold needs 2")
        k_of[f] = max(2, min(folds or DEFAULT_FOLDS[f], n_pat))
    post_of = {f: postprocess or POSTPROCESS_DEFAULT.get(f, "none") for f in present}
    data_cache = {}

    def family_data(f, config):
        key = (f, tuple(config.data.image_size))
        if key not in data_cache:
            tr, va, info = load_dataset(config.data)
            data_cache[key] = (kfold.concat(tr, va), info, family_cases(config))
        return data_cache[key]

    def reused(name, over, f):  # an ablation variant that is a table run (the recipe, or another model's recipe)
        if not over:
            return "unet"
        if set(over) == {"model.name"} and (over["model.name"], f) in pairs:
            return over["model.name"]
        return None

    n_folds = lambda f: 1 if quick else k_of[f]  # noqa: E731
    budget = Budget(budget_minutes * 60.0, steps)
    for arch, f in pairs:
        # Every model of a family trains the same steps (on the ablation family the ablation variants too: paired
        # deltas at equal steps).
        budget.add(f"{arch}_{f}", run_weight(arch, f), n_folds(f), arch, group=f)
    for name, over in abl_runs.items():
        if reused(name, over, ablation_family) is None:
            budget.add(f"ablation_{name}", run_weight("unet", ablation_family), n_folds(ablation_family), "unet",
                       group=ablation_family)
    plan_rows = [{"run": r, "folds": k, "reserved_s": round(budget.reservation(r), 1),
                  "per_fold_s": round(budget.reservation(r) / k, 1)} for r, (_, k) in budget.weights.items()]
    log(f"[paper_table] {len(plan_rows)} runs in {budget_minutes:g} min: " + ", ".join(
        f"{p['run']} {p['folds']}x{p['per_fold_s']:.0f}s" for p in plan_rows), flush=True)
    if dry_run:
        return {"allocation": plan_rows, "folds": k_of, "pairs": [list(p) for p in pairs],
                "ablations": list(abl_runs), "postprocess": post_of, "budget_minutes": budget_minutes}
    results, all_rows, runs_info = {}, [], []
    t_start = time.time()
    for arch, f in pairs:
        config = make_config(arch, f, os.path.join(data_root, paper.FOLDERS[f]), quick)
        arrays, info, cases = family_data(f, config)
        wd = os.path.join(out, "runs", f"{arch}_{f}")
        log(f"[paper_table] {arch} on {f}: {k_of[f]}-fold CV, {len(set(arrays['patient_id']))} patients, "
            f"{len(arrays['image'])} training images, {budget.reservation(f'{arch}_{f}'):.0f} s reserved",
            flush=True)
        summ, rows = run_cv(config, wd, arrays, info, cases, k_of[f], budget, f"{arch}_{f}", fold_limit=fold_limit,
                            postprocess=post_of[f])
        for r in rows:
            r.update(model=arch, family=f)
        all_rows += rows
        results.setdefault(arch, {})[f] = {"folds": summ, "cv": _cell(summ), "k": k_of[f],
                                          "n_cases": len(rows), "postprocess": post_of[f]}
        runs_info.append(_run_info(arch, f, summ))
        log(f"[paper_table]   Dice {results[arch][f]['cv']['dice']['mean']:.3f} ± "
            f"{results[arch][f]['cv']['dice']['std']:.3f} ({len(rows)} held-out cases; steps "
            f"{[s['steps'] for s in summ]})", flush=True)
        if store and summ:
            entry = save_pretrained(summ[0]["workdir"], store_name(arch, f), overwrite=True, card={
                "data_licence": LICENCES[f], "recipe": f"paper_{arch}_{f}",
                "training": f"fold 0 of {k_of[f]}-fold patient-level CV ({summ[0]['steps']} steps); "
                            f"held-out patients {summ[0]['val_patients']}",
                "heldout_native_metrics": {m: summ[0][m] for m in METRICS},
                "postprocess_in_table": post_of[f],
                "intended_use": "research/evaluation only; never redistribute (data licence)"})
            results[arch][f]["store"] = entry.name

    ablation_rows = []
    if abl_pairs:
        f = ablation_family
        evals = {}
        for name, over in abl_runs.items():
            table_arch = reused(name, over, f)
            if table_arch is not None and table_arch in results and f in results[table_arch]:
                evals[name] = [r for r in all_rows if r["model"] == table_arch and r["family"] == f]
                continue
            config = make_config("unet", f, os.path.join(data_root, paper.FOLDERS[f]), quick, over)
            arrays, info, cases = family_data(f, config)
            log(f"[paper_table] ablation run {name} on {f}", flush=True)
            summ, rows = run_cv(config, os.path.join(out, "ablations", name), arrays, info, cases, k_of[f], budget,
                                f"ablation_{name}", fold_limit=fold_limit, postprocess=post_of[f])
            evals[name] = rows
            runs_info.append(_run_info(f"unet[{name}]", f, summ))
        ablation_rows = compare_runs(evals, abl_pairs)
    result = {"families": present, "skipped_families": skipped, "models": sorted({a for a, _ in pairs},
                                                                                key=_model_order),
              "pairs": [list(p) for p in pairs], "folds": {f: k_of[f] for f in present},
              "quick": quick, "budget_minutes": budget_minutes, "wall_minutes": round((time.time() - t_start) / 60, 2),
              "allocation": plan_rows, "postprocess": post_of,
              "results": results, "study": STUDY, "ablations": ablation_rows,
              "ablations_skipped": [list(s) for s in abl_skipped], "ablation_family": ablation_family,
              "runs": runs_info, "baseline": baseline(all_rows), "postprocess_dice": postprocess_summary(all_rows)}
    write_outputs(out, result, all_rows)
    return result


def _model_order(m: str) -> int:
    order = list(STUDY_ROWS) + [a for a in paper.ARCHS if a not in STUDY_ROWS]
    return order.index(m) if m in order else len(order)


def _run_info(model, family, summ) -> dict:
    return {"model": model, "family": family, "steps": [s["steps"] for s in summ],
            "trained_s": [s["trained_s"] for s in summ], "reserved_s": [s["reserved_s"] for s in summ],
            "seconds": sum(s["seconds"] for s in summ)}


def postprocess_summary(rows) -> dict:
    """{family: {model: {how: mean Dice over held-out cases}}}: what each post-processing would have given."""
    out: dict = {}
    for r in rows:
        for how in POSTPROCESS:
            v = r.get(f"dice_{how}")
            if v is not None:
                out.setdefault(r["family"], {}).setdefault(r["model"], {}).setdefault(how, []).append(v)
    return {f: {m: {h: _nanmean(v) for h, v in d.items()} for m, d in fm.items()} for f, fm in out.items()}


def baseline(rows) -> dict:
    """The all-background prediction's mean Dice per family (0 on every case with foreground; NaN when empty)."""
    out = {}
    for r in rows:
        out.setdefault(r["family"], []).append(0.0 if r["fg_voxels"] > 0 else float("nan"))
    return {f: _nanmean(v) for f, v in out.items()}


def compare_runs(evals: dict, pairs, metrics=DELTA_METRICS, n_boot=2000):
    """Paired per-case deltas ``treatment - reference`` of the ablation runs' held-out rows
    (``eval.deltas.paired_deltas``: the cases both runs scored, any other case named in ``dropped_cases``)."""
    runs = {name: CaseValues.of_rows(rows, metrics) for name, rows in evals.items()}
    return paired_deltas(runs, pairs, metrics=metrics, n_boot=n_boot)


# ------------------------------------------------------------------------------------------------ output

def _fmt(cell, m):
    v = cell.get(m) if cell else None
    if not v or not np.isfinite(v["mean"]):
        return "n/a"
    return f"{v['mean']:.2f} ± {v['std']:.2f}"


def table_markdown(result: dict) -> str:
    fams = result["families"]
    models = [m for m in STUDY_ROWS if m in result["models"]] + [m for m in result["models"] if m not in STUDY_ROWS]
    lines = ["# The study's table on the real samples" + (" (--quick: machinery check, numbers mean nothing)"
                                                           if result["quick"] else ""), "",
             "Cells: Dice / Jaccard / accuracy / sensitivity / specificity of the foreground per held-out case at "
             "native resolution (zoo.prediction), after the post-processing named below (" + ", ".join(
                 f"{f}: {h}" for f, h in result.get("postprocess", {}).items()) + "), mean ± std over patient-level "
             "CV folds; `study:` the reference "
             "study's numbers (REFERENCE_STUDY.md; its LUNA column is our lung CT family). "
             f"Budget {result['budget_minutes']} min, wall {result['wall_minutes']} min.", "",
             "| model | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
    for m in models:
        cells = []
        for f in fams:
            r = result["results"].get(m, {}).get(f)
            ours = " / ".join(_fmt(r["cv"], k) for k in METRICS) if r else "-"
            st = STUDY.get(m, {}).get(f)
            study = " / ".join(f"{st[k]:.2f}" for k in METRICS if k in st) if st else ""
            ran = f"{len(r['folds'])} of {r['k']} folds" if r and len(r["folds"]) < r["k"] else f"k={r['k']}" \
                if r else ""
            cells.append(ours + (f" ({ran}, {r['n_cases']} cases)" if r else "")
                         + (f"<br>study: {study}" if study else ""))
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "All-background baseline Dice: " + ", ".join(
        f"{f} {v:.2f}" for f, v in result["baseline"].items()), ""]
    for s in result["skipped_families"]:
        lines.append(f"- skipped family {s['family']}: {s['why']}")
    if result["ablations"] or result["ablations_skipped"]:
        lines += ["", f"## Ablations (U-Net on {result['ablation_family']}; paired per-case delta, bootstrap 95% CI)",
                  "", "| ablation | metric | reference | treatment | delta [95% CI] | relative | study says |",
                  "|---|---|---:|---:|---|---:|---|"]
        for r in result["ablations"]:
            if "error" in r:
                lines.append(f"| {r['ablation']} | - | - | - | {r['error']} | - | - |")
                continue
            lo, hi = r["study_range_pct"]
            lines.append(f"| {r['ablation']} | {r['metric']} | {r['reference_mean']:.3f} | {r['treatment_mean']:.3f} "
                         f"| {r['delta']:+.3f} [{r['delta_ci_low']:+.3f}, {r['delta_ci_high']:+.3f}] | "
                         f"{r['relative_delta_pct']:+.1f}% | {lo:+g}..{hi:+g}% |")
        for name, why in result["ablations_skipped"]:
            lines.append(f"| {name} | - | - | - | skipped: {why} | - | - |")
        if dropped_note(result["ablations"]):
            lines += ["", dropped_note(result["ablations"])]
    sub = [(m, f, r["cv"]) for m in models for f in fams
           for r in [result["results"].get(m, {}).get(f)] if r and "dice_tc" in r["cv"]]
    if sub:
        lines += ["", "## BraTS sub-regions (Dice of the same predictions; the table's cell is the whole tumour)", "",
                  "| model | family | WT | TC (necrosis + enhancing) | ET (enhancing) |", "|---|---|---:|---:|---:|"]
        for m, f, cv in sub:
            lines.append(f"| {m} | {f} | {_fmt(cv, 'dice')} | {_fmt(cv, 'dice_tc')} | {_fmt(cv, 'dice_et')} |")
    pp = result.get("postprocess_dice") or {}
    if pp:
        lines += ["", "## Post-processing (mean held-out Dice had each been applied; the table uses "
                  + ", ".join(f"{f}: {h}" for f, h in result.get("postprocess", {}).items()) + ")", "",
                  "| family | model | " + " | ".join(POSTPROCESS) + " |", "|---|---|" + "---:|" * len(POSTPROCESS)]
        for f, fm in pp.items():
            for m, d in fm.items():
                lines.append(f"| {f} | {m} | " + " | ".join(f"{d[h]:.3f}" if h in d else "-" for h in POSTPROCESS)
                             + " |")
    lines += ["", "## Runs (a family's models train the same steps; a fold stops there or at its reservation less its "
              "measured overhead)", "",
              "| model | family | steps per fold | trained s per fold | reserved s per fold | wall s |",
              "|---|---|---|---|---|---:|"]
    for r in result["runs"]:
        tr = ", ".join("-" if t is None else f"{t:.0f}" for t in r.get("trained_s", []))
        rs = ", ".join(f"{t:.0f}" for t in r.get("reserved_s", []))
        lines.append(f"| {r['model']} | {r['family']} | {', '.join(map(str, r['steps']))} | {tr} | {rs} "
                     f"| {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def _svg_strip(rows, family, models, path):
    w, h, pad = 120 + 90 * len(models), 260, 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
             f'font-size="11"><text x="{pad}" y="16">per-case Dice, {family} (held-out patients)</text>']
    for t in (0.0, 0.5, 1.0):
        y = h - pad - t * (h - 2 * pad)
        parts.append(f'<line x1="{pad}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ccc"/>'
                     f'<text x="5" y="{y + 4:.1f}">{t:.1f}</text>')
    for j, m in enumerate(models):
        x0 = pad + 30 + 90 * j
        vals = [r["dice"] for r in rows if r["model"] == m and np.isfinite(r["dice"])]
        for n, v in enumerate(vals):
            y = h - pad - v * (h - 2 * pad)
            parts.append(f'<circle cx="{x0 + (n % 7) * 4 - 12}" cy="{y:.1f}" r="2.5" fill="#1f77b4" '
                         f'fill-opacity="0.7"/>')
        if vals:
            y = h - pad - float(np.mean(vals)) * (h - 2 * pad)
            parts.append(f'<line x1="{x0 - 20}" x2="{x0 + 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d62728"/>')
        parts.append(f'<text x="{x0 - 20}" y="{h - 15}">{m}</text>')
    parts.append("</svg>")
    write_text(path, "\n".join(parts))


def write_outputs(out: str, result: dict, rows) -> None:
    write_json(os.path.join(out, "table.json"), result)
    write_text(os.path.join(out, "table.md"), table_markdown(result))
    if rows:
        keys = ["family", "model", "fold", "patient_id", "case", *METRICS, *_region_keys(rows), "fg_voxels",
                "pred_voxels", "voxels"]
        write_csv(os.path.join(out, "cases.csv"), rows, keys, extrasaction="ignore")
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    for f in result["families"]:
        _svg_strip(rows, f, result["models"], os.path.join(out, "plots", f"dice_{f}.svg"))
