"""The nnU-Net head-to-head (``python -m eval.studies.compare_nnunet``): the zoo and nnU-Net v2 on the same
patient-level folds, the same CPU budget per fold, scored by the same call against the same reference files.

:func:`run_study` does, under ``out``:

1. ``nnUNet_raw/Dataset<ID>_<family>``: the family's cases in nnU-Net's raw layout (``eval.studies.nnunet_raw``);
2. nnU-Net's own fingerprint, planning and preprocessing (``eval.studies.nnunet_worker plan`` in a subprocess:
   torch never shares a process with jax) into ``nnUNet_preprocessed``, then ``splits_final.json`` from the folds
   the zoo's cross-validation uses (``data_pipelines.splits.patient_kfold`` on the patient ids, the data set's seed;
   checked equal to ``zoo.training.kfold.patient_folds`` over the zoo's training arrays);
3. per fold ``folds/fold<i>/``: nnU-Net trains for the budget (``nnunet_worker train``, the budget-sized trainer)
   and predicts the held-out cases (``nnunet_worker predict``, ``nnUNetPredictor``, mirroring as asked); the zoo
   trains the family's paper recipe (``zoo/configs/paper.py``) through the training core for the same seconds
   (``train.time_limit_s``) and predicts the held-out cases' original files through ``zoo.prediction``; both
   label maps are scored by :func:`score_folder` (``eval.folders.evaluate_folder``, nnU-Net's evaluate_folder's
   rules: Dice per foreground label, or per BraTS region) against ``ref/``, the fold's converted reference
   files; ``done.json`` is written last, and a rerun skips every fold that has one (its models, predictions and
   scores stay) and redoes any other from scratch;
4. ``table.md`` / ``table.json``, from every finished fold under ``OUT`` (whichever run finished it): per
   contender Dice mean ± std over the held-out cases and per case, the training iterations per fold beside
   nnU-Net's default (1,000 epochs x 250 iterations), seconds per case.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from data_pipelines.atomic import write_bytes, write_json, write_text
from data_pipelines.datasets import load_dataset
from eval.folders import evaluate_folder
from eval.studies.nnunet_raw import (BRATS_REGIONS, convert, dataset_folder_name, fold_patients, read_raw_cases,
                                     write_label_map, write_splits)
from eval.studies.reference_table import QUICK, QUICK_KW, SEC_PER_STEP, make_config
from zoo.configs import apply_overrides
from zoo.prediction import predict_case, read_case
from zoo.pretrained import load_pretrained
from zoo.training import kfold, train_and_evaluate

__all__ = ["CONFIGS", "CLOCKS", "nnunet_env", "run_worker", "score_folder", "CpuBudget", "run_study",
           "table_markdown"]

CONFIGS = ("2d", "3d_fullres")
CLOCKS = ("wall", "cpu")  # the budget's clock: wall seconds, or the training process's CPU seconds
TRAINER = "nnUNetTrainerBudget"  # eval.studies.nnunet_worker's trainer: its results folder's name
DEFAULT_EPOCHS, DEFAULT_ITERATIONS = 1000, 250  # nnU-Net's default schedule


def nnunet_env(out: str, threads: int | None = None) -> dict:
    """The environment of an nnU-Net subprocess: its three folders under ``out``, data augmentation in the
    training process (``nnUNet_n_proc_DA=0``: no worker processes on a small CPU), ``threads`` torch threads."""
    env = dict(os.environ)
    for var, sub in (("nnUNet_raw", "nnUNet_raw"), ("nnUNet_preprocessed", "nnUNet_preprocessed"),
                     ("nnUNet_results", "nnUNet_results")):
        env[var] = os.path.abspath(os.path.join(out, sub))
        os.makedirs(env[var], exist_ok=True)
    env["nnUNet_n_proc_DA"] = "0"
    env["OMP_NUM_THREADS"] = str(threads or os.cpu_count() or 1)
    return env


def run_worker(out: str, args: list[str], log_path: str, threads: int | None = None) -> dict:
    """Run ``python -m eval.studies.nnunet_worker <args>`` with :func:`nnunet_env`; its output goes to
    ``log_path``; returns the ``RESULT`` record. A failure raises ``ValueError`` with the log's last lines."""
    env = nnunet_env(out, threads)
    if args[0] == "plan":
        env["nnUNet_n_proc_DA"] = "1"  # the planner sets torch's threads from it
    cmd = [sys.executable, "-m", "eval.studies.nnunet_worker", *args]
    if threads:
        cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    write_text(log_path, proc.stdout)
    results = [ln[len("RESULT "):] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not results:
        tail = "\n".join(proc.stdout.strip().splitlines()[-6:])
        how = f"exit {proc.returncode}"
        if proc.returncode == -signal.SIGKILL:  # the kernel's OOM killer, or a person
            how += " (SIGKILL: killed, most often by the out-of-memory killer; 3d_fullres training takes ~8 GB)"
        raise ValueError(f"nnU-Net {args[0]} failed ({how}; log {log_path}):\n{tail}")
    return json.loads(results[-1])


def score_folder(pred_dir: str, ref_dir: str, num_classes: int, regions: bool) -> dict:
    """The one scoring call of both tools: ``eval.folders.evaluate_folder`` (Dice of every foreground label
    ``1..num_classes-1``, or of the BraTS regions) → ``{"cases": {case: {structure: dice}}, "structures"}``."""
    labels = None if regions else list(range(1, num_classes))
    res = evaluate_folder(pred_dir, ref_dir, labels=labels, regions="brats" if regions else None,
                          metrics=("dice",), workers=1, progress=False)
    cases: dict[str, dict] = {}
    for row in res["rows"]:
        cases.setdefault(row["case"], {})[row["structure"]] = row["dice"]
    return {"cases": cases, "structures": res["structures"]}


class CpuBudget:
    """The zoo's CPU clock: while the training core trains in this process, a watchdog thread starts counting
    this process's CPU seconds (``time.process_time``: user + system of all threads, XLA's included) when
    ``started`` (a path) appears, i.e. when the core logs its first step (``train.log_every=1``: compile and set-up
    excluded, as nnU-Net's clock starts at its first iteration), and at ``budget_s`` asks the core to stop through
    its preemption protocol (SIGTERM: save at the next step boundary, stop). Checked every ``poll_s``.
    ``cpu_s`` / ``wall_s``: CPU / wall seconds counted; ``fired``: whether the budget stopped training. Use as a context manager
    around the training call, in the main thread (a SIGTERM after the core's own handler is gone is ignored
    until the block ends)."""

    def __init__(self, budget_s: float, started: str, poll_s: float = 0.05):
        self.budget_s, self.started, self.poll_s = float(budget_s), started, float(poll_s)
        self.cpu_s, self.wall_s, self.fired = None, None, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._previous = None

    def _watch(self) -> None:
        while not os.path.exists(self.started):
            if self._stop.wait(self.poll_s):
                return
        c0, w0 = time.process_time(), time.time()
        while not self._stop.wait(self.poll_s):
            self.cpu_s, self.wall_s = time.process_time() - c0, time.time() - w0
            if self.cpu_s >= self.budget_s:
                self.fired = True
                os.kill(os.getpid(), signal.SIGTERM)
                return
        self.cpu_s, self.wall_s = time.process_time() - c0, time.time() - w0  # ended before the budget

    def __enter__(self):
        self._previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        signal.signal(signal.SIGTERM, self._previous)
        return False


def _mean_std(values) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not v.size:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "n": int(v.size)}


def _zoo_config(family: str, data_dir: str, arch: str, quick: bool):
    over = dict(QUICK, **QUICK_KW.get(arch, {})) if quick else {}
    return make_config(arch, family, data_dir, False, over)


def _zoo_fold(config, arrays, info, tr, va, val_cases, fold_dir, budget_s, ending, quick, log,
              clock: str = "wall") -> dict:
    """Train the zoo's recipe on rows ``tr`` for ``budget_s`` seconds on ``clock`` (wall: the core's own
    ``train.time_limit_s``; cpu: :class:`CpuBudget`), predict ``val_cases``' original files from the final
    checkpoint."""
    arch = config.model.name
    steps = 8 if quick else int(np.clip(budget_s / SEC_PER_STEP.get(arch, 0.4), 20, int(config.train.steps)))
    cpu = clock == "cpu"
    # cpu: the wall limit stays on, far away, only so the core measures its trained wall seconds
    over = {"train.steps": str(steps), "train.eval_every": str(steps), "train.checkpoint_every": str(steps),
            "train.log_every": "1" if cpu else str(min(int(config.train.log_every), steps)),
            "train.time_limit_s": f"{budget_s * (100 if cpu else 1):.1f}"}
    c = apply_overrides(config.copy_and_resolve_references(), over)
    run_dir = os.path.join(fold_dir, "zoo_run")
    data = (kfold.subset(arrays, tr), kfold.subset(arrays, va), info)
    t0, c0 = time.time(), time.process_time()
    if cpu:
        with CpuBudget(budget_s, os.path.join(run_dir, "metrics.jsonl")) as watch:
            res = train_and_evaluate(c, run_dir, progress=False, data=data)
        cpu_s, stopped, wall_s = watch.cpu_s, watch.fired, watch.wall_s
    else:
        res = train_and_evaluate(c, run_dir, progress=False, data=data)
        cpu_s, stopped, wall_s = None, bool(res.get("stopped_by_time")), res.get("timed_seconds")
    train_call = time.time() - t0
    call_cpu = time.process_time() - c0
    pre = load_pretrained(run_dir)  # the newest (final) checkpoint, as nnU-Net's checkpoint_final
    pred_dir = os.path.join(fold_dir, "zoo", "pred")
    os.makedirs(pred_dir, exist_ok=True)
    seconds = {}
    for case in val_cases:
        t1 = time.time()
        image, meta, _ = read_case(case["input"], pre)
        labels = predict_case(pre, image, meta)
        write_label_map(labels, meta, os.path.join(pred_dir, case["case"] + ending))
        seconds[case["case"]] = round(time.time() - t1, 3)
    log(f"[compare_nnunet]   zoo {arch}: {res.get('step')} steps in {wall_s} s wall"
        + (f", {cpu_s:.1f} CPU s" if cpu_s is not None else ""))
    return {"contender": f"zoo-{arch}", "steps": int(res.get("step", steps)), "nominal_steps": steps,
            "batch_size": int(c.train.batch_size), "clock": clock,
            "trained_s": None if wall_s is None else round(wall_s, 2),
            "cpu_s": None if cpu_s is None else round(cpu_s, 2), "train_call_s": round(train_call, 1),
            "train_call_cpu_s": round(call_cpu, 1), "stopped_by_time": stopped,
            "seconds_per_case": seconds, "pred": pred_dir}


def _nnunet_fold(out, dataset_id, config, fold, val_cases, raw_folder, ending, n_channels, fold_dir, budget_s,
                 mirroring, threads, log, clock: str = "wall") -> dict:
    here = os.path.join(fold_dir, f"nnunet-{config}")
    os.makedirs(here, exist_ok=True)
    train = run_worker(out, ["train", "--dataset_id", str(dataset_id), "--config", config, "--fold", str(fold),
                             "--budget_s", f"{budget_s:.1f}", "--clock", clock], os.path.join(here, "train.log"),
                       threads)
    files = []
    for c in val_cases:
        if ending == ".png" and n_channels == 3:  # one RGB picture holds the three channels
            files.append([c["case"], [os.path.join(raw_folder, "imagesTr", f"{c['case']}_0000{ending}")]])
        else:
            files.append([c["case"], [os.path.join(raw_folder, "imagesTr", f"{c['case']}_{k:04d}{ending}")
                                      for k in range(n_channels)]])
    cases_json = os.path.join(here, "cases.json")
    write_json(cases_json, files)
    pred_dir = os.path.join(here, "pred")
    args = ["predict", "--dataset_id", str(dataset_id), "--config", config, "--fold", str(fold), "--cases",
            cases_json, "--out", pred_dir] + (["--mirroring"] if mirroring else [])
    pred = run_worker(out, args, os.path.join(here, "predict.log"), threads)
    log(f"[compare_nnunet]   nnU-Net {config}: {train['iterations']} iterations in {train['trained_s']} s wall, "
        f"{train['cpu_s']} CPU s")
    return {"contender": f"nnunet-{config}", "steps": int(train["iterations"]), "batch_size": train["batch_size"],
            "epochs": train["epochs"], "planned_epochs": train["planned_epochs"], "clock": clock,
            "trained_s": train["trained_s"], "cpu_s": train["cpu_s"], "validation_s": train.get("validation_s"),
            "patch_size": train["patch_size"], "stopped_by_time": train["stopped_by_time"],
            "seconds_per_case": pred["seconds_per_case"], "mirroring": mirroring, "pred": pred_dir}


def _finished_fold(done: str, fold: int, out: str, clock: str, budget_s: float) -> dict:
    """A finished fold's record (its ``done.json``), refused when it was run on another clock or budget: one table
    compares the tools at one budget."""
    with open(done, encoding="utf-8") as fh:
        rec = json.load(fh)
    if (rec.get("clock", "wall"), rec["budget_s"]) != (clock, budget_s):
        raise ValueError(f"fold {fold} in {out} was run with --clock {rec.get('clock', 'wall')} and "
                         f"{rec['budget_s'] / 60:g} min; this run asks --clock {clock} and {budget_s / 60:g} "
                         f"min (use another --out, or the same settings)")
    return rec


def run_study(data_dir: str, family: str, out: str, *, budget_min: float, folds: int, fold_ids=None,
              configs=("2d",), arch: str = "unet", dataset_id: int = 500, mirroring: bool = False,
              regions: bool | None = None, threads: int | None = None, quick: bool = False, clock: str = "wall",
              log=print) -> dict:
    """The study (module docstring). ``folds``: k of the patient-level k-fold; ``fold_ids``: which of them to run
    now (default all; the others can follow in a later run). ``regions``: nnU-Net trains BraTS regions (default:
    for the brats family). ``clock``: the budget's clock, ``wall`` or ``cpu`` (each tool's training process's CPU
    seconds). Returns the table's record."""
    if not os.path.isdir(data_dir):
        raise ValueError(f"--data_dir {data_dir!r} is not a directory")
    if not budget_min > 0:
        raise ValueError(f"--budget_min must be > 0, got {budget_min}")
    if clock not in CLOCKS:
        raise ValueError(f"--clock must be one of {CLOCKS}, got {clock!r}")
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        raise ValueError(f"--configs: unknown {bad or 'none given'}; expected some of {CONFIGS}")
    config = _zoo_config(family, data_dir, arch, quick)
    regions = (family == "brats") if regions is None else regions
    out = os.path.abspath(out)
    os.makedirs(out, exist_ok=True)
    env = nnunet_env(out, threads)
    raw_folder = os.path.join(env["nnUNet_raw"], dataset_folder_name(dataset_id, family))
    if not os.path.isfile(os.path.join(raw_folder, "dataset.json")):
        log(f"[compare_nnunet] converting {family} cases into {raw_folder}")
        convert(family, config.data, env["nnUNet_raw"], dataset_id, family, regions=BRATS_REGIONS if regions else None)
    cases = read_raw_cases(raw_folder)
    with open(os.path.join(raw_folder, "dataset.json"), encoding="utf-8") as fh:
        dataset = json.load(fh)
    ending, n_channels = dataset["file_ending"], len(dataset["channel_names"])
    pre_folder = os.path.join(env["nnUNet_preprocessed"], os.path.basename(raw_folder))
    missing = [c for c in configs if not os.path.isdir(os.path.join(pre_folder, f"nnUNetPlans_{c}"))]
    if missing:
        log(f"[compare_nnunet] nnU-Net fingerprint, planning and preprocessing ({','.join(missing)})")
        run_worker(out, ["plan", "--dataset_id", str(dataset_id), "--configs", ",".join(missing)],
                   os.path.join(out, "nnunet_plan.log"), threads)
    fold_sets = fold_patients([c["patient_id"] for c in cases], folds, int(config.data.seed))
    write_splits(pre_folder, cases, fold_sets)
    tr_arrays, va_arrays, info = load_dataset(config.data)
    arrays = kfold.concat(tr_arrays, va_arrays)
    zoo_folds = kfold.patient_folds(arrays["patient_id"], folds, int(config.data.seed))
    for i, (tr, va) in enumerate(zoo_folds):
        zoo_val = sorted({str(arrays["patient_id"][j]) for j in va})
        if zoo_val != fold_sets[i]["val"]:
            raise ValueError(f"fold {i}: the zoo's held-out patients {zoo_val[:5]} differ from the converted cases' "
                             f"{fold_sets[i]['val'][:5]} (the family's loader and find_cases name patients "
                             f"differently)")
    fold_ids = list(range(folds)) if fold_ids is None else list(fold_ids)
    for i in fold_ids:
        if not 0 <= i < folds:
            raise ValueError(f"--fold_ids: {i} is not a fold of {folds}")
    budget_s = budget_min * 60.0
    n_classes = len(dataset["labels"]) if not regions else 4
    for i in fold_ids:
        fold_dir = os.path.join(out, "folds", f"fold{i}")
        done = os.path.join(fold_dir, "done.json")
        if os.path.isfile(done):
            log(f"[compare_nnunet] fold {i}: done.json present, skipped (its models, predictions and scores kept)")
            _finished_fold(done, i, out, clock, budget_s)
            continue
        # A fold without done.json starts clean (an interrupted fold's partial models would be resumed otherwise).
        shutil.rmtree(fold_dir, ignore_errors=True)
        for cfg in configs:
            shutil.rmtree(os.path.join(env["nnUNet_results"], os.path.basename(raw_folder),
                                       f"{TRAINER}__nnUNetPlans__{cfg}", f"fold_{i}"), ignore_errors=True)
        val_cases = [c for c in cases if c["patient_id"] in set(fold_sets[i]["val"])]
        log(f"[compare_nnunet] fold {i}: {len(fold_sets[i]['train'])} training patients, {len(val_cases)} held-out "
            f"cases, {budget_s:.0f} s per tool")
        ref_dir = os.path.join(fold_dir, "ref")
        os.makedirs(ref_dir, exist_ok=True)
        for c in val_cases:
            with open(os.path.join(raw_folder, "labelsTr", c["case"] + ending), "rb") as fh:
                write_bytes(os.path.join(ref_dir, c["case"] + ending), fh.read())
        contenders = [_nnunet_fold(out, dataset_id, cfg, i, val_cases, raw_folder, ending, n_channels, fold_dir,
                                   budget_s, mirroring, threads, log, clock) for cfg in configs]
        tr, va = zoo_folds[i]
        contenders.append(_zoo_fold(config, arrays, info, tr, va, val_cases, fold_dir, budget_s, ending, quick, log,
                                    clock))
        for rec in contenders:
            rec["scores"] = score_folder(rec["pred"], ref_dir, n_classes, regions)
        record = {"fold": i, "train_patients": fold_sets[i]["train"], "val_patients": fold_sets[i]["val"],
                  "budget_s": budget_s, "clock": clock, "contenders": contenders}
        write_json(done, record)  # last: a fold with done.json is finished
    # The table holds every finished fold under OUT, also those run by an earlier invocation with other --fold_ids.
    fold_records = [_finished_fold(os.path.join(out, "folds", f"fold{i}", "done.json"), i, out, clock, budget_s)
                    for i in range(folds) if os.path.isfile(os.path.join(out, "folds", f"fold{i}", "done.json"))]
    result = summarize(fold_records, family=family, budget_min=budget_min, folds=folds, quick=quick, clock=clock)
    write_json(os.path.join(out, "table.json"), result)
    write_text(os.path.join(out, "table.md"), table_markdown(result))
    return result


def summarize(fold_records: list[dict], **about) -> dict:
    """Per contender: Dice mean ± std over every held-out case (per structure), per case, iterations per fold,
    trained wall and CPU seconds per fold, seconds per case (first case of a fold, the others)."""
    out: dict = {}
    for rec in fold_records:
        for c in rec["contenders"]:
            s = out.setdefault(c["contender"], {"per_case": {}, "steps": [], "batch_size": c["batch_size"],
                                                "trained_s": [], "cpu_s": [], "first_case_s": [],
                                                "other_case_s": []})
            s["steps"].append(c["steps"])
            s["trained_s"].append(c["trained_s"])
            s["cpu_s"].append(c.get("cpu_s"))
            secs = list(c["seconds_per_case"].values())
            s["first_case_s"] += secs[:1]
            s["other_case_s"] += secs[1:]
            for case, dice in c["scores"]["cases"].items():
                s["per_case"][case] = dice
    for s in out.values():
        structures = sorted({k for d in s["per_case"].values() for k in d})
        s["dice"] = {k: _mean_std([d.get(k) for d in s["per_case"].values()]) for k in structures}
        s["first_case_s"] = _mean_std(s["first_case_s"])
        s["other_case_s"] = _mean_std(s["other_case_s"])
    return {**about, "folds_done": sorted(r["fold"] for r in fold_records), "contenders": out,
            "nnunet_default_iterations": DEFAULT_EPOCHS * DEFAULT_ITERATIONS}


def _fmt(cell) -> str:
    return "n/a" if not cell or cell.get("mean") is None else f"{cell['mean']:.3f} ± {cell['std']:.3f}"


def _secs(values) -> str:
    return ", ".join("-" if t is None else f"{t:.0f}" for t in values)


def table_markdown(result: dict) -> str:
    """``table.md``: per contender Dice mean ± std per structure, iterations, wall and CPU seconds per fold,
    seconds per case; then Dice per case and structure."""
    names = sorted(result["contenders"])
    structures = sorted({k for s in result["contenders"].values() for k in s["dice"]})
    clock = result.get("clock", "wall")
    lines = [f"# nnU-Net head-to-head: {result['family']}" + (" (--quick: machinery check, numbers mean nothing)"
                                                            if result.get("quick") else ""), "",
             f"Budget {result['budget_min']:g} {'CPU ' if clock == 'cpu' else ''}min of training per fold per tool "
             f"(clock: {clock}{', each tool training process CPU seconds' if clock == 'cpu' else ', wall seconds'}); "
             f"folds run {result['folds_done']} of {result['folds']} (patient-level). Dice per held-out case "
             f"(eval.folders, the same call for both tools), mean ± sample std over cases. nnU-Net's default "
             f"schedule: {result['nnunet_default_iterations']:,} iterations (1,000 epochs x 250).", "",
             "| contender | " + " | ".join(f"Dice {k}" for k in structures)
             + " | iterations per fold (batch) | trained wall s per fold | trained CPU s per fold "
               "| s per case: first / others |",
             "|---|" + "---:|" * len(structures) + "---|---|---|---|"]
    for n in names:
        s = result["contenders"][n]
        lines.append(f"| {n} | " + " | ".join(_fmt(s["dice"].get(k)) for k in structures)
                     + f" | {', '.join(map(str, s['steps']))} ({s['batch_size']}) | {_secs(s['trained_s'])} | "
                     + f"{_secs(s.get('cpu_s', []))} | {_fmt(s['first_case_s'])} / {_fmt(s['other_case_s'])} |")
    cases = sorted({c for s in result["contenders"].values() for c in s["per_case"]})
    cols = [(n, k) for k in structures for n in names]
    lines += ["", "## Per case (Dice)", "",
              "| case | " + " | ".join(f"{n} {k}" if len(structures) > 1 else n for n, k in cols) + " |",
              "|---|" + "---:|" * len(cols)]
    for case in cases:
        vals = [result["contenders"][n]["per_case"].get(case, {}).get(k) for n, k in cols]
        lines.append(f"| {case} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in vals) + " |")
    return "\n".join(lines) + "\n"
