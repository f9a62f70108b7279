"""What a user waits for: ``python -m zoo.predict`` on a whole case, timed from process start, cold and warm, beside
MONAI and nnU-Net.

    python -m benchmarks.case_latency [--brats_model M2D] [--brats3d_model M3D] [--isic_model M]
        [--nnunet_model NNUNET_FOLDER [--nnunet_fold 0]] [--brats_dir ../shared/data/brats]
        [--isic_dir ../shared/data/isic_like] [--cases 1] [--tta both] [--no_monai] [--out latency.json]

For each case (a whole BraTS volume: FLAIR + T1c, 240 x 240 x 155; a dermoscopy picture) and each mirroring setting
(``--tta`` off and on):

* **total** (from outside): ``python -m zoo.predict --model M --input CASE --output L`` as a new user runs it, the
  wall time of the whole process; **cold** with an empty compilation cache (a fresh folder through
  ``MEDZOO_COMPILATION_CACHE``), then **warm: new process**, the same command again with the cache the cold run
  filled;
* **phases** (from inside): the same steps in ``python -m benchmarks.case_worker`` (import, model load, read,
  predict = preprocess + sliding window + restore, write, and the seconds jax spent getting executables), again
  cold then warm in another fresh cache folder; the cold process predicts the case a second time, as
  ``zoo.predict`` does with several ``--input`` cases: **warm: same process** (total = that case's read + predict
  + write, like the peers' warm rows);
* **MONAI** (when PyTorch + MONAI are installed; ``--no_monai`` leaves it out): the same case through MONAI's
  ``sliding_window_inference`` in its own process (``benchmarks.monai_case_worker``): for a model with a 3D plan
  (``--brats3d_model``, the planned 3D ``residual_unet``) the plan's crop, normalisation, spacing and patch with
  MONAI's ``UNet`` of the same arguments (the same network), else MONAI's ``UNet`` on ``--monai_size``² slices as
  the zoo's no-plan 2D path; mirroring as the zoo's (every spatial axis);
* **nnU-Net** (``--nnunet_model``, a trained nnU-Net v2 model folder): the BraTS cases through ``nnUNetPredictor``'s
  own steps in its own process (``benchmarks.nnunet_case_worker``: read + preprocess, sliding window with or
  without mirroring, export), torch threads = cores.

MONAI and nnU-Net have no compilation cache: their process predicts the case twice; **cold** is from process start
to the first label map written (the process's wall time less the second case's seconds), **warm: same process**
the second case in the same process (what a running predictor costs per case). Compare the zoo's and the peers'
"warm: same process" rows with each other; the zoo's "warm: new process" row is what a command-line user waits for
again (import and load included), which the peers, with no cache, have no row for.

A model-store entry that carries compiled programs (``python -m zoo.prepare_programs``) is cold without compiling
on a host of its type: the table says whether the entry had them. The models are the caller's (store names or
work directories; train small ones into /tmp: the data's licences keep trained models out of the project):
``python -m zoo.train --config=paper_unet_brats --config.train.steps=10 --workdir /tmp/m2d``; the planned 3D
residual U-Net: ``python -m data_pipelines.planning --data_dir ../shared/data/brats --dataset brats --modalities
FLAIR,T1c --crop nonzero --out /tmp/plan3d.json`` (3D, 1 mm, patch 128³), then ``python -m zoo.train
--config=default --dataset=brats --data_dir=../shared/data/brats --model=residual_unet
--config.model.kwargs.norm=batch --config.data.modalities=FLAIR,T1c --config.data.spatial_dims=3
--config.data.plan=/tmp/plan3d.json --config.train.steps=3 --config.train.batch_size=2 --workdir /tmp/m3d``; an
nnU-Net model: ``python -m eval.studies.compare_nnunet --data_dir ../shared/data/brats --family brats
--budget_min 0.02 --fold_ids 0 --configs 3d_fullres --quick --out /tmp/nn``, then ``--nnunet_model
/tmp/nn/nnUNet_results/Dataset500_brats/nnUNetTrainerBudget__nnUNetPlans__3d_fullres``.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from benchmarks import frameworks
from zoo.cli import command_parser, run_command
from zoo.compilation_cache import ENV
from zoo.executables import PROGRAMS
from data_pipelines.brats import BRATS_PATTERNS
from zoo.store import resolve

__all__ = ["find_cases", "format_table", "main"]

PHASES = ("import_s", "load_s", "read_s", "predict_s", "write_s", "compile_s")


def find_cases(family: str, folder: str, n: int) -> list[str]:
    """The first ``n`` cases of ``folder``: BraTS case folders, or dermoscopy pictures (masks left out)."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--{family}_dir {folder} does not exist")
    if family == "brats":
        cases = sorted(p for p in glob.glob(os.path.join(folder, "*")) if os.path.isdir(p))
    else:
        cases = sorted(p for p in glob.glob(os.path.join(folder, "*.png")) if not p.endswith("_mask.png"))
    if not cases:
        raise ValueError(f"--{family}_dir {folder} holds no {family} case")
    return cases[:n]


def _run(cmd: list[str], cache: str, timeout: float) -> tuple[float, str]:
    env = dict(os.environ, **{ENV: cache})
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ValueError(f"{' '.join(cmd[2:4])} ran past --timeout {timeout:g} s") from None
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{' '.join(cmd[1:3])} failed with exit status {r.returncode}: {last}")
    return wall, r.stdout


#: How each row's process ran: the zoo's first case with an empty compilation cache; the zoo's first case in a new
#: process on the cache the cold run filled (what a command-line user waits for again); the next case in the same
#: process (the zoo with several ``--input`` cases, MONAI's and nnU-Net's second case: a running predictor).
STATES = {"cold": "cold", "warm_new_process": "warm: new process, filled cache",
          "warm_same_process": "warm: same process, next case"}


def measure(model: str, case: str, tta: bool, out_dir: str, timeout: float) -> list[dict]:
    """The zoo's rows for one case and mirroring setting (module docstring): cold, warm in a new process, and warm
    in the same process (the phase worker given the case twice; total = the second case's read + predict +
    write)."""
    ext = ".png" if case.lower().endswith(".png") else ".nii.gz"
    output = os.path.join(out_dir, "labels" + ext)
    args = ["--model", model, "--input", case, "--output", output] + (["--tta"] if tta else [])
    rows = {state: {"case": os.path.basename(case.rstrip(os.sep)), "tta": tta, "state": state} for state in STATES}
    with tempfile.TemporaryDirectory(dir=out_dir) as cache:
        for state in ("cold", "warm_new_process"):
            rows[state]["total_s"], _ = _run([sys.executable, "-m", "zoo.predict"] + args, cache, timeout)
    with tempfile.TemporaryDirectory(dir=out_dir) as cache:
        for state in ("cold", "warm_new_process"):
            again = [case] if state == "cold" else []  # the cold process predicts the case a second time
            wall, stdout = _run([sys.executable, "-m", "benchmarks.case_worker"] + args[:4] + again + args[4:],
                                cache, timeout)
            lines = [ln for ln in stdout.splitlines() if ln.startswith(frameworks.RESULT_PREFIX)]
            if not lines:
                raise ValueError(f"benchmarks.case_worker printed no result for {case}")
            result = json.loads(lines[-1][len(frameworks.RESULT_PREFIX):])
            nxt = result.pop("next", [])
            again = sum(nxt[0][k] for k in ("read_s", "predict_s", "write_s")) if nxt else 0.0
            rows[state].update(result, worker_total_s=wall - again)
            if nxt:
                rows["warm_same_process"].update(nxt[0], import_s=0.0, load_s=0.0, total_s=again)
    return [rows[state] for state in STATES]


def _peer_rows(module: str, spec: dict, timeout: float) -> list[dict]:
    """A peer's cold and warm rows: ``module`` (``benchmarks.monai_case_worker`` or ``benchmarks.nnunet_case_worker``)
    predicts the same case twice in one fresh process; cold: from process start to the first case written (the
    process's wall time less the second case's seconds), warm: the second case (read + predict + write)."""
    wall, stdout = _run([sys.executable, "-m", module, json.dumps(spec)], "0", timeout)
    lines = [ln for ln in stdout.splitlines() if ln.startswith(frameworks.RESULT_PREFIX)]
    if not lines:
        raise ValueError(f"{module} printed no result")
    cold, warm = json.loads(lines[-1][len(frameworks.RESULT_PREFIX):])["cases"][:2]
    again = sum(warm[k] for k in ("read_s", "predict_s", "write_s"))
    return [dict(cold, state="cold", total_s=wall - again), dict(warm, state="warm_same_process", total_s=again)]


def measure_monai(case: str, tta: bool, size: int, out_dir: str, timeout: float, plan: dict | None = None,
                  network: dict | None = None) -> list[dict]:
    """MONAI's rows for one case (``benchmarks.monai_case_worker``; :func:`_peer_rows`): the zoo model's ``plan``
    and network (``residual_unet`` kwargs) when it has them, else the no-plan 2D path at ``size``²."""
    spec = {"inputs": [case, case], "output_dir": out_dir, "tta": tta, "size": size, "plan": plan,
            "network": network or {}}
    return [dict(r, tta=tta, case=os.path.basename(case.rstrip(os.sep)))
            for r in _peer_rows("benchmarks.monai_case_worker", spec, timeout)]


def nnunet_case_files(folder: str, model: str) -> list[str]:
    """A BraTS case folder's image files in the channel order of the nnU-Net model's ``dataset.json`` (matched by
    the BraTS file-name patterns, ``data_pipelines.brats.BRATS_PATTERNS``)."""
    path = os.path.join(model, "dataset.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--nnunet_model {model}: no dataset.json (give a trained nnU-Net model folder, "
                                f"<Trainer>__<Plans>__<configuration>)")
    with open(path, encoding="utf-8") as f:
        names = [v for _, v in sorted(json.load(f)["channel_names"].items(), key=lambda kv: int(kv[0]))]
    files = sorted(glob.glob(os.path.join(folder, "*.nii*")))
    chosen = []
    for name in names:
        pattern = BRATS_PATTERNS.get(name)
        hits = [f for f in files if pattern and re.search(pattern, os.path.basename(f).lower())]
        if len(hits) != 1:
            raise ValueError(f"{folder}: expected one file for nnU-Net channel {name!r}, found {len(hits)}")
        chosen.append(hits[0])
    return chosen


def measure_nnunet(case: str, tta: bool, model: str, fold: int, out_dir: str, timeout: float) -> list[dict]:
    """nnU-Net's rows for one BraTS case (``benchmarks.nnunet_case_worker``; :func:`_peer_rows`)."""
    files = nnunet_case_files(case, model)
    spec = {"model": model, "fold": fold, "cases": [files, files], "output_dir": out_dir, "tta": tta}
    return [dict(r, tta=tta, case=os.path.basename(case.rstrip(os.sep)))
            for r in _peer_rows("benchmarks.nnunet_case_worker", spec, timeout)]


def _zoo_model(model: str) -> dict:
    """What the peers need of a zoo model: its plan (or ``None``), its spatial dims, classes and channels, and the
    MONAI ``UNet`` arguments of a ``residual_unet`` (else ``{}``: MONAI's default network)."""
    from zoo.pretrained import load_pretrained

    pre = load_pretrained(model)
    data = pre.meta["data"]
    network = {}
    if pre.config.model.name == "residual_unet":
        network = {k: (list(v) if isinstance(v, (list, tuple)) else v)
                   for k, v in pre.config.model.kwargs.to_dict().items()
                   if k in ("channels", "strides", "num_res_units", "norm")}
        network.update(spatial_dims=int(data["spatial_dims"]), in_channels=len(data["channel_names"]),
                       out_channels=int(data["num_classes"]))
    return {"plan": (data.get("extra") or {}).get("plan"), "network": network, "dims": int(data["spatial_dims"])}


def format_table(out: dict) -> str:
    h = out["host"]
    lines = [f"`python -m zoo.predict` on whole cases, {h['cpu_model']}, {h['cpus']} CPUs, 1-min load before: "
             f"{out['load']['loadavg'][0]:.2f}; total: the whole process from outside; phases: "
             f"benchmarks.case_worker, the same steps timed inside (compile: jax getting executables)", "",
             "| model | case (shape) | mirroring | run | total s | import | load | read | predict | write | "
             "compile | programs compiled / loaded |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in out["rows"]:
        shape = "×".join(str(s) for s in r.get("shape", []))
        lines.append(f"| {r['model']}{' (+programs)' if r['entry_programs'] else ''} | {r['case']} ({shape}) | "
                     f"{'on' if r['tta'] else 'off'} | {STATES.get(r['state'], r['state'])} | {r['total_s']:.1f} | "
                     + " | ".join(f"{r[k]:.2f}" for k in PHASES)
                     + f" | {r['programs_compiled']} / {r['programs_loaded']} |")
    lines += [f"\n{f['model']}: no rows ({f['error']})" for f in out.get("peers_failed", [])]
    return "\n".join(lines) + "\n"


def _body(args) -> int:
    models = {f: m for f, m in (("brats", args.brats_model), ("brats3d", args.brats3d_model),
                                ("isic", args.isic_model)) if m}
    if not models:
        raise ValueError("give --brats_model, --brats3d_model and/or --isic_model (a store name or a work directory)")
    if args.cases < 1 or args.timeout <= 0:
        raise ValueError(f"--cases must be >= 1 and --timeout > 0; got {args.cases}, {args.timeout}")
    if args.nnunet_model and not os.path.isfile(os.path.join(args.nnunet_model, "dataset.json")):
        raise FileNotFoundError(f"--nnunet_model {args.nnunet_model}: no dataset.json (give a trained nnU-Net model "
                                f"folder, <Trainer>__<Plans>__<configuration>)")
    cases = {f: find_cases("isic" if f == "isic" else "brats", args.isic_dir if f == "isic" else args.brats_dir,
                           args.cases) for f in models}
    for f, m in models.items():
        resolve(m)  # an unknown model fails here, before any run
    nnunet_cases = []
    if args.nnunet_model:
        nnunet_cases = cases.get("brats3d") or cases.get("brats") or find_cases("brats", args.brats_dir, args.cases)
        nnunet_case_files(nnunet_cases[0], args.nnunet_model)  # a model or case it cannot read fails before any run
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.tta]
    peer = args.monai and all(importlib.util.find_spec(m) is not None for m in ("torch", "monai"))
    if args.monai and not peer:
        print("MONAI rows skipped: PyTorch/MONAI not installed (pip install -e \".[compare]\")", flush=True)
    load = frameworks.machine_load()
    rows, failed = [], []
    with tempfile.TemporaryDirectory(prefix="case-latency-") as out_dir:
        for family, model in models.items():
            has_programs = os.path.isdir(os.path.join(resolve(model), PROGRAMS))
            about = _zoo_model(model) if peer else {}
            plan3d = about.get("plan") if (about.get("plan") or {}).get("spatial_dims") == 3 else None
            for case in cases[family]:
                for tta in modes:
                    mine = [dict(r, model=os.path.basename(os.path.normpath(model)), entry_programs=has_programs)
                            for r in measure(model, case, tta, out_dir, args.timeout)]
                    _record(rows, mine, family)
                    if peer:
                        what = (f"MONAI UNet, {'×'.join(map(str, plan3d['patch_size']))} windows" if plan3d
                                else f"MONAI UNet, {args.monai_size}² windows")
                        _peer(rows, failed, what, family, lambda: measure_monai(
                            case, tta, args.monai_size, out_dir, args.timeout, plan3d,
                            about.get("network") if plan3d else None))
        if nnunet_cases:
            name = "nnU-Net " + os.path.basename(os.path.normpath(args.nnunet_model)).rsplit("__", 1)[-1]
            for case in nnunet_cases:
                for tta in modes:
                    _peer(rows, failed, name, "brats", lambda: measure_nnunet(
                        case, tta, args.nnunet_model, args.nnunet_fold, out_dir, args.timeout))
    out = {"host": {"cpu_model": frameworks.cpu_model(), "cpus": os.cpu_count()}, "load": load,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows, "peers_failed": failed}
    frameworks.report(args.out, out, format_table(out))
    return 0


def _peer(rows: list, failed: list, name: str, family: str, measure_rows) -> None:
    """A peer's rows, or, when its process fails (a peer killed for memory, a torch build without an operator),
    one printed line and an entry in ``failed``: the rows measured so far are kept."""
    try:
        new = measure_rows()
    except ValueError as e:
        print(f"{name}: no rows ({e})", flush=True)
        failed.append({"model": name, "error": str(e)})
        return
    _record(rows, [dict(r, model=name, entry_programs=False) for r in new], family)


def _record(rows: list, new: list, family: str) -> None:
    for r in new:
        rows.append(dict(r, family=family))
        print(f"{r['model']} {r['case']} tta={'on' if r['tta'] else 'off'} {r['state']}: {r['total_s']:.1f} s "
              f"(predict {r['predict_s']:.1f} s, compile {r['compile_s']:.1f} s)", flush=True)


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.case_latency", __doc__, out="write the rows here as JSON (+ .md table)")
    p.add_argument("--brats_model", default=None, help="a 2D or 3D BraTS model (FLAIR + T1c): store name or workdir")
    p.add_argument("--brats3d_model", default=None,
                   help="a second BraTS model, e.g. the planned 3D residual_unet beside a 2D --brats_model")
    p.add_argument("--isic_model", default=None, help="a dermoscopy model: store name or workdir")
    p.add_argument("--nnunet_model", default=None,
                   help="a trained nnU-Net model folder (<Trainer>__<Plans>__<configuration>) to time on the BraTS cases")
    p.add_argument("--nnunet_fold", type=int, default=0, help="the nnU-Net model's fold (default 0)")
    p.add_argument("--brats_dir", default=os.path.join("..", "shared", "data", "brats"))
    p.add_argument("--isic_dir", default=os.path.join("..", "shared", "data", "isic_like"))
    p.add_argument("--cases", type=int, default=1, help="cases per data set (default 1)")
    p.add_argument("--tta", default="both", choices=("both", "on", "off"), help="mirroring settings to time")
    p.add_argument("--timeout", type=float, default=900, help="seconds one process may run")
    p.add_argument("--no_monai", dest="monai", action="store_false",
                   help="leave out MONAI's rows (by default they run when PyTorch + MONAI are installed)")
    p.add_argument("--monai_size", type=int, default=128, help="MONAI's window side (the zoo models' 128² input)")
    return run_command(p, sys.argv[1:] if argv is None else argv, _body)


if __name__ == "__main__":
    sys.exit(main())
