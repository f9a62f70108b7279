"""What a user waits for: ``python -m zoo.predict`` on a whole case, timed from process start, cold and warm.

    python -m benchmarks.case_latency --brats_model M2D [--isic_model M] [--brats_dir ../shared/data/brats]
        [--isic_dir ../shared/data/isic_like] [--cases 1] [--tta both] [--out latency.json]

For each case (a whole BraTS volume: FLAIR + T1c, 240 x 240 x 155; a dermoscopy picture) and each mirroring setting
(``--tta`` off and on):

* **total** (from outside): ``python -m zoo.predict --model M --input CASE --output L`` as a new user runs it, the
  wall time of the whole process; **cold** with an empty compilation cache (a fresh folder through
  ``MEDZOO_COMPILATION_CACHE``), then **warm**, the same command again with the cache the cold run filled;
* **MONAI** (when PyTorch + MONAI are installed; ``--no_monai`` leaves it out): the same case through MONAI's
  ``sliding_window_inference`` with a MONAI ``UNet`` at the same window (``--monai_size``, default 128²), resized
  and mirrored as the zoo's 2D path does, in its own process (``benchmarks.monai_case_worker``), run twice;
* **phases** (from inside): the same steps in ``python -m benchmarks.case_worker`` (import, model load, read,
  predict = preprocess + sliding window + restore, write, and the seconds jax spent getting executables), again
  cold then warm in another fresh cache folder.

A model-store entry that carries compiled programs (``python -m zoo.prepare_programs``) is cold without compiling
on a host of its type: the table says whether the entry had them. The models are the caller's (``--brats_model``,
``--isic_model``: store names or work directories; train small ones into /tmp, e.g. ``python -m zoo.train
--config=paper_unet_brats --config.train.steps=10 --workdir /tmp/m``): the data's licences keep trained models out
of the project.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import frameworks
from zoo.cli import command_parser, run_command
from zoo.compilation_cache import ENV
from zoo.executables import PROGRAMS
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


def measure(model: str, case: str, tta: bool, out_dir: str, timeout: float) -> list[dict]:
    """Cold and warm rows for one case and mirroring setting (module docstring)."""
    ext = ".png" if case.lower().endswith(".png") else ".nii.gz"
    output = os.path.join(out_dir, "labels" + ext)
    args = ["--model", model, "--input", case, "--output", output] + (["--tta"] if tta else [])
    rows = {state: {"case": os.path.basename(case.rstrip(os.sep)), "tta": tta, "state": state}
            for state in ("cold", "warm")}
    with tempfile.TemporaryDirectory(dir=out_dir) as cache:
        for state in ("cold", "warm"):
            rows[state]["total_s"], _ = _run([sys.executable, "-m", "zoo.predict"] + args, cache, timeout)
    with tempfile.TemporaryDirectory(dir=out_dir) as cache:
        for state in ("cold", "warm"):
            wall, stdout = _run([sys.executable, "-m", "benchmarks.case_worker"] + args, cache, timeout)
            lines = [ln for ln in stdout.splitlines() if ln.startswith(frameworks.RESULT_PREFIX)]
            if not lines:
                raise ValueError(f"benchmarks.case_worker printed no result for {case}")
            rows[state].update(json.loads(lines[-1][len(frameworks.RESULT_PREFIX):]), worker_total_s=wall)
    return [rows["cold"], rows["warm"]]


def measure_monai(case: str, tta: bool, size: int, out_dir: str, timeout: float) -> list[dict]:
    """MONAI's rows for one case (``benchmarks.monai_case_worker``, its own process, twice: no cache to fill, the
    second run shows the file system's cache)."""
    ext = ".png" if case.lower().endswith(".png") else ".nii.gz"
    spec = json.dumps({"input": case, "output": os.path.join(out_dir, "monai" + ext), "tta": tta, "size": size})
    rows = []
    for state in ("cold", "warm"):
        wall, stdout = _run([sys.executable, "-m", "benchmarks.monai_case_worker", spec], "0", timeout)
        lines = [ln for ln in stdout.splitlines() if ln.startswith(frameworks.RESULT_PREFIX)]
        if not lines:
            raise ValueError(f"benchmarks.monai_case_worker printed no result for {case}")
        rows.append(dict(json.loads(lines[-1][len(frameworks.RESULT_PREFIX):]), total_s=wall, tta=tta, state=state,
                         case=os.path.basename(case.rstrip(os.sep))))
    return rows


def format_table(out: dict) -> str:
    h = out["host"]
    lines = [f"`python -m zoo.predict` on whole cases, {h['cpu_model']}, {h['cpus']} CPUs, 1-min load before: "
             f"{out['load']['loadavg'][0]:.2f}; total: the whole process from outside; phases: "
             f"benchmarks.case_worker, the same steps timed inside (compile: jax getting executables)", "",
             "| model | case (shape) | mirroring | cache | total s | import | load | read | predict | write | "
             "compile | programs compiled / loaded |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in out["rows"]:
        shape = "×".join(str(s) for s in r.get("shape", []))
        lines.append(f"| {r['model']}{' (+programs)' if r['entry_programs'] else ''} | {r['case']} ({shape}) | "
                     f"{'on' if r['tta'] else 'off'} | {r['state']} | {r['total_s']:.1f} | "
                     + " | ".join(f"{r[k]:.2f}" for k in PHASES)
                     + f" | {r['programs_compiled']} / {r['programs_loaded']} |")
    return "\n".join(lines) + "\n"


def _body(args) -> int:
    models = {f: m for f, m in (("brats", args.brats_model), ("isic", args.isic_model)) if m}
    if not models:
        raise ValueError("give --brats_model and/or --isic_model (a store name or a work directory)")
    if args.cases < 1 or args.timeout <= 0:
        raise ValueError(f"--cases must be >= 1 and --timeout > 0; got {args.cases}, {args.timeout}")
    cases = {f: find_cases(f, args.brats_dir if f == "brats" else args.isic_dir, args.cases) for f in models}
    for f, m in models.items():
        resolve(m)  # an unknown model fails here, before any run
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.tta]
    peer = args.monai and all(importlib.util.find_spec(m) is not None for m in ("torch", "monai"))
    if args.monai and not peer:
        print("MONAI rows skipped: PyTorch/MONAI not installed (pip install -e \".[compare]\")", flush=True)
    load = frameworks.machine_load()
    rows = []
    with tempfile.TemporaryDirectory(prefix="case-latency-") as out_dir:
        for family, model in models.items():
            has_programs = os.path.isdir(os.path.join(resolve(model), PROGRAMS))
            for case in cases[family]:
                for tta in modes:
                    mine = [dict(r, model=os.path.basename(os.path.normpath(model)), entry_programs=has_programs)
                            for r in measure(model, case, tta, out_dir, args.timeout)]
                    if peer:
                        mine += [dict(r, model=f"MONAI UNet, {args.monai_size}² windows", entry_programs=False)
                                 for r in measure_monai(case, tta, args.monai_size, out_dir, args.timeout)]
                    for r in mine:
                        rows.append(dict(r, family=family))
                        print(f"{r['model']} {r['case']} tta={'on' if tta else 'off'} {r['state']}: {r['total_s']:.1f}"
                              f" s (predict {r['predict_s']:.1f} s, compile {r['compile_s']:.1f} s)", flush=True)
    out = {"host": {"cpu_model": frameworks.cpu_model(), "cpus": os.cpu_count()}, "load": load,
           "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "rows": rows}
    frameworks.report(args.out, out, format_table(out))
    return 0


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.case_latency", __doc__, out="write the rows here as JSON (+ .md table)")
    p.add_argument("--brats_model", default=None, help="a 2D or 3D BraTS model (FLAIR + T1c): store name or workdir")
    p.add_argument("--isic_model", default=None, help="a dermoscopy model: store name or workdir")
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
