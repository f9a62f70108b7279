"""benchmarks/: the throughput code path on tiny shapes, so it cannot rot (no timing assertions)."""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pytest

from benchmarks import common, throughput, throughput_cases

TINY = json.dumps({"unet": {"features": 2, "depth": 2, "norm": "batch"}})


def test_throughput_cli_writes_json_markdown_png(tmp_path):
    out = tmp_path / "bench"
    rc = throughput.main(["--models=unet", "--dims=2", "--size=8", "--batch=2", "--repeats=1", "--number=1",
                          "--warmup=0", "--devices=1", "--inprocess", f"--model_kwargs={TINY}", f"--out={out}"])
    assert rc == 0
    data = json.loads((out / "results.json").read_text(encoding="utf-8"))
    (r,) = data["results"]
    assert r["status"] == "ok", r.get("traceback")
    assert r["model"] == "unet" and r["dims"] == 2 and r["batch"] == 2
    for key in ("compile_train_s", "compile_infer_s", "train_steps_per_s", "infer_images_per_s", "peak_bytes"):
        assert r[key] > 0, key
    assert r["infer_voxels_per_s"] == pytest.approx(r["infer_images_per_s"] * 64)
    assert np.isfinite(r["final_loss"])
    assert r["num_params"] > 0 and r["env"]["jax"] and r["env"]["device_kind"]
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "| unet | 2D | float32 | 1 | 2 × 8×8 |" in md and r["env"]["device_kind"] in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_model_is_a_row_not_a_crash(tmp_path, capsys):
    bad = json.dumps({"unet": {"depth": 0}})
    rc = throughput.main(["--models=unet", "--dims=2", "--size=8", "--batch=1", "--devices=1", "--inprocess",
                          f"--model_kwargs={bad}", f"--out={tmp_path}"])
    # Every case failed: still a row in the table, but the run exits 1 saying so (issue #24; it exited 0).
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: all 1 benchmark case(s) failed (first: unet 2D: ValueError") and "depth" in err[-1]
    (r,) = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))["results"]
    assert r["status"] == "error" and "depth" in r["error"]
    assert "error: ValueError" in (tmp_path / "results.md").read_text(encoding="utf-8")


def test_failure_summary_counts_failed_cases():
    ok = {"model": "unet", "dims": 2, "status": "ok"}
    bad = {"model": "fcn", "dims": 3, "status": "error", "error": "RuntimeError: boom"}
    assert throughput_cases.failure_summary([ok, ok]) == ("", 0)
    line, rc = throughput_cases.failure_summary([ok, bad, ok])
    assert rc == 0 and line == "warning: 1 of 3 benchmark case(s) failed (first: fcn 3D: RuntimeError: boom)"
    line, rc = throughput_cases.failure_summary([bad, dict(bad, model="segnet")])
    assert rc == 1 and line.startswith("error: all 2 benchmark case(s) failed (first: fcn 3D")


@pytest.mark.parametrize("argv,match", [
    (["--models=nonexistent"], "unknown"), (["--dims=4"], "dims"), (["--dtype=float64"], "dtype"),
    (["--batch=0"], "batch"), (["--model_kwargs=[1]"], "model_kwargs"),
])
def test_bad_cli_arguments_exit_2(argv, match, capsys, tmp_path):
    assert throughput.main(argv + [f"--out={tmp_path}"]) == 2
    assert match in capsys.readouterr().err


def test_plan_and_scaling_summary():
    reps = {"repeats": 1, "number": 1, "warmup": 0}
    cases = throughput_cases.plan_cases(["unet", "fcn"], [2, 3], ["float32"], [1, 2, 4], {2: 16, 3: 8}, {2: 4, 3: 2}, reps)
    assert [(c["model"], c["dims"], c["devices"]) for c in cases if c["kind"] == "throughput"] == \
        [("unet", 2, 1), ("unet", 3, 1), ("fcn", 2, 1), ("fcn", 3, 1)]
    scaling = [c for c in cases if c["kind"] == "scaling"]
    assert [(c["devices"], c["batch"]) for c in scaling] == [(1, 2), (2, 4), (4, 8)]  # weak scaling, 2 per device
    results = [dict(c, status="ok", train_images_per_s=ips) for c, ips in zip(scaling, (10.0, 15.0, 20.0))]
    summary = throughput_cases.scaling_summary(results)
    assert [s["speedup"] for s in summary] == pytest.approx([1.0, 1.5, 2.0])
    assert [s["efficiency"] for s in summary] == pytest.approx([1.0, 0.75, 0.5])
    # Strong scaling: one global batch (the 2D batch) split over the devices; the 1-device point is the
    # throughput case itself, not a second run of it.
    cases = throughput_cases.plan_cases(["unet"], [2], ["float32"], [1, 2, 4], {2: 16}, {2: 4}, reps, scaling="strong")
    assert [(c["kind"], c["devices"], c["batch"]) for c in cases] == \
        [("throughput", 1, 4), ("scaling", 2, 4), ("scaling", 4, 4)]
    assert cases[0]["scaling_base"] == "strong"
    results = [dict(c, status="ok", train_images_per_s=t, infer_images_per_s=i)
               for c, t, i in zip(cases, (10.0, 12.0, 8.0), (40.0, 60.0, 50.0))]
    summary = throughput_cases.scaling_summary(results)
    assert [s["speedup"] for s in summary] == pytest.approx([1.0, 1.2, 0.8])
    assert [s["infer_speedup"] for s in summary] == pytest.approx([1.0, 1.5, 1.25])
    assert "strong scaling" in throughput_cases.format_markdown(results, {"env": {"platform": "cpu"}})
    with pytest.raises(ValueError, match="divide"):
        throughput_cases.plan_cases(["unet"], [2], ["float32"], [1, 3], {2: 16}, {2: 4}, reps, scaling="strong")


def test_xla_flags_with_cpu_devices():
    flags = "--xla_cpu_use_onednn=true --xla_force_host_platform_device_count=8"
    assert common.xla_flags_with_cpu_devices(flags, 2) == \
        "--xla_cpu_use_onednn=true --xla_force_host_platform_device_count=2"
    assert common.xla_flags_with_cpu_devices(flags, 1) == "--xla_cpu_use_onednn=true"
    assert common.xla_flags_with_cpu_devices("", 4) == "--xla_force_host_platform_device_count=4"


def test_scaling_subprocess_on_two_fake_devices(tmp_path):
    """The scaling path: a subprocess with XLA_FLAGS faking 2 CPU devices, batch sharded over them."""
    case = dict(model="unet", dims=2, dtype="float32", devices=2, size=8, batch=2, kind="scaling",
                model_kwargs={"features": 2, "depth": 2, "norm": "none"}, repeats=1, number=1, warmup=0)
    r = throughput_cases.run_subprocess(case, timeout=600)  # generous: the machine is shared
    assert r["status"] == "ok", r.get("error")
    assert r["env"]["num_devices"] == 2 and r["train_images_per_s"] > 0


def test_time_calls_and_memory():
    calls = []
    t = common.time_calls(lambda: calls.append(1) or np.zeros(1), warmup=2, repeats=3, number=2, sync=lambda x: x)
    assert len(calls) == 2 + 3 * 2 and len(t["samples_s"]) == 3 and t["min_s"] <= t["median_s"]
    with pytest.raises(ValueError, match="repeats"):
        common.time_calls(lambda: None, repeats=0)
    # A budget stops slow cases after min_repeats samples, with one warm-up and number=1.
    slow = []
    t = common.time_calls(lambda: slow.append(time.sleep(0.02)), warmup=3, repeats=50, number=4,
                          sync=lambda x: x, budget_s=0.05)
    assert len(t["samples_s"]) == 3 and t["number"] == 1 and len(slow) == 1 + 3
    mem = common.peak_memory()
    assert mem["peak_bytes"] > 1 << 20 and mem["source"]


def test_make_batch_has_foreground_and_background():
    b = common.make_batch(3, (16, 16), num_classes=2, seed=1)
    assert b["image"].shape == (3, 16, 16, 1) and b["image"].dtype == np.float32
    assert b["label"].dtype == np.int32 and set(np.unique(b["label"])) == {0, 1}


# A stand-in for benchmarks.framework_worker (no PyTorch needed): logs its spec, answers with fixed timings
# (MONAI's train step 0.5 s, the zoo's 0.25 s, in bfloat16 0.4 s; inference 0.1 s both; elastic: scipy 2 s a
# batch, the zoo 0.1 s), or fails when asked to.
FAKE_WORKER = """
import json, sys
log, spec = sys.argv[1], json.loads(sys.argv[2])
with open(log, "a") as f:
    f.write(json.dumps(spec) + "\\n")
if spec["framework"] == "monai" and spec["dims"] == 3 and "fail" in log:
    sys.exit("error: monai exploded")
print("noise line")
fw, n = spec["framework"], spec["repeats"]
out = {"framework": fw, "params": None, "setup_s": 1.0, "info": {"jax": "0.10.2"} if fw == "zoo" else {}}
if spec["suite"] == "elastic":
    t = 2.0 if fw == "scipy" else 0.1
    out["elastic"] = {"median_s": t, "samples_s": [t] * n, "number": 1}
    out["info"] = {"scipy": "1.17.1"} if fw == "scipy" else out["info"]
else:
    train = 0.5 if fw == "monai" else (0.4 if spec["dtype"] == "bfloat16" else 0.25)
    out.update(params=1627597, train={"median_s": train, "samples_s": [train] * n, "number": 1},
               infer={"median_s": 0.1, "samples_s": [0.1] * n, "number": 3})
    out["info"] = {"torch": "2.13.0", "threads": 2} if fw == "monai" else out["info"]
print("RESULT " + json.dumps(out))
"""
IDLE = {"loadavg": [0.0, 0.0, 0.0], "cpus": 2, "busy": 0.0}


def _fake_worker(tmp_path, name="log.jsonl"):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER, encoding="utf-8")
    return tmp_path / name, f"{sys.executable} {script} {tmp_path / name}"


def test_compare_torch_runs_each_framework_in_its_own_process_interleaved(tmp_path, monkeypatch, capsys):
    from benchmarks import compare_torch, frameworks

    monkeypatch.setattr(frameworks, "machine_load", lambda: dict(IDLE))
    log, cmd = _fake_worker(tmp_path)
    out = tmp_path / "r" / "cmp.json"
    assert compare_torch.main([f"--worker_cmd={cmd}", "--repeats=5", f"--out={out}"]) == 0
    specs = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    unet = [s for s in specs if s["suite"] == "unet"]
    assert [(s["dims"], s["framework"]) for s in unet] == \
        [(2, "zoo"), (2, "monai")] * 2 + [(3, "zoo"), (3, "monai")] * 2
    assert {(s["dims"], s["train_batch"], s["infer_batch"], s["size"]) for s in unet} == \
        {(2, 8, 16, 128), (3, 2, 2, 64)}
    assert all(s["repeats"] == 5 and s["warmup"] == 2 and s["dtype"] == "float32" for s in unet)
    # The elastic suite by default in the same run, after the U-Net: zoo and scipy interleaved, image only.
    elastic = specs[len(unet):]
    assert [(s["suite"], s["dims"], s["framework"]) for s in elastic] == \
        [("elastic", 2, "zoo"), ("elastic", 2, "scipy")] * 2 + [("elastic", 3, "zoo"), ("elastic", 3, "scipy")] * 2
    assert {(s["dims"], s["batch"], s["size"], s["labels"]) for s in elastic} == \
        {(2, 32, 256, False), (3, 2, 96, False)}
    assert all("train_batch" not in s and s["alpha"] == 30.0 and s["sigma"] == 4.0 for s in elastic)
    data = json.loads(out.read_text(encoding="utf-8"))
    rows = {(r["suite"], r["dims"], r["work"]): r for r in data["rows"]}
    train2 = rows[("unet", 2, "train")]
    assert train2["ratio"] == pytest.approx(2.0) and train2["monai"]["samples"] == 10
    assert rows[("unet", 2, "infer")]["zoo"]["rate"] == pytest.approx(160.0)
    assert rows[("unet", 2, "infer")]["ratio"] == pytest.approx(1.0)
    assert rows[("unet", 3, "infer")]["shape"] == "2×1×64³" and rows[("unet", 3, "infer")]["unit"] == "vol/s"
    assert rows[("elastic", 2, "elastic")]["ratio"] == pytest.approx(20.0)
    assert rows[("elastic", 3, "elastic")]["zoo"]["rate"] == pytest.approx(20.0)
    assert rows[("elastic", 3, "elastic")]["scipy"]["rate"] == pytest.approx(1.0)
    assert len(data["processes"]) == 16 and all(p["load"]["cpus"] == 2 for p in data["processes"])
    assert set(data["host"]["bf16"]) == {"avx512_bf16", "amx_bf16"}
    md = (tmp_path / "r" / "cmp.md").read_text(encoding="utf-8")
    assert "| 2D train step | float32 | 8×1×128² | 2 steps/s | 4 steps/s | 2.00× |" in md
    assert "| 2D inference | float32 | 16×1×128² |" in md and "own process" in md and "PyTorch 2.13.0" in md
    assert "| 2D elastic + affine | float32 | 32×1×256² | 16 img/s | 320 img/s | 20.00× |" in md
    assert "| 3D elastic + affine | float32 | 2×1×96³ | 1 vol/s | 20 vol/s | 20.00× |" in md
    assert "scipy 1.17.1 loop" in md and "image only" in md and "AVX512-BF16: " in md and "AMX-BF16: " in md


def test_compare_torch_bfloat16_rows_beside_float32(tmp_path, monkeypatch, capsys):
    from benchmarks import compare_torch, frameworks

    monkeypatch.setattr(frameworks, "machine_load", lambda: dict(IDLE))
    monkeypatch.setattr(frameworks, "cpu_bf16", lambda: {"avx512_bf16": True, "amx_bf16": False})
    log, cmd = _fake_worker(tmp_path)
    out = tmp_path / "bf.json"
    argv = [f"--worker_cmd={cmd}", "--suite=unet", "--dims=3", "--dtype=bfloat16,float32", "--groups=2",
            "--repeats=3", f"--out={out}"]
    assert compare_torch.main(argv) == 0
    specs = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    # Each round runs both precisions, float32 first, zoo before MONAI; one process per (framework, dtype).
    assert [(s["dtype"], s["framework"]) for s in specs] == \
        [("float32", "zoo"), ("float32", "monai"), ("bfloat16", "zoo"), ("bfloat16", "monai")] * 2
    rows = {(r["dtype"], r["work"]): r for r in json.loads(out.read_text(encoding="utf-8"))["rows"]}
    assert rows[("bfloat16", "train")]["ratio"] == pytest.approx(0.5 / 0.4)
    assert rows[("float32", "train")]["ratio"] == pytest.approx(2.0)
    assert rows[("bfloat16", "train")]["zoo"]["samples"] == 6
    md = (tmp_path / "bf.md").read_text(encoding="utf-8")
    assert "| 3D train step | bfloat16 | 2×1×64³ | 2 steps/s | 2.5 steps/s | 1.25× |" in md
    assert "AVX512-BF16: yes, AMX-BF16: no" in md and 'torch.autocast("cpu", dtype=torch.bfloat16)' in md
    assert md.index("| 3D train step | float32 |") < md.index("| 3D train step | bfloat16 |")
    assert "elastic" not in md


def test_compare_torch_refuses_a_loaded_machine(tmp_path, monkeypatch, capsys):
    from benchmarks import compare_torch, frameworks

    log, cmd = _fake_worker(tmp_path)
    monkeypatch.setattr(frameworks, "machine_load", lambda: {"loadavg": [3.0, 2.0, 1.0], "cpus": 2, "busy": 0.9})
    assert compare_torch.main([f"--worker_cmd={cmd}", "--dims=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "load 3.00 on 2 CPUs (1.50 per core) is above --max-load 0.5" in err[0]
    assert not log.exists()  # no worker ran
    # Idle at the start, then other processes take the CPUs between workers: stops before the next worker.
    loads = iter([dict(IDLE), {"loadavg": [1.0, 0.5, 0.1], "cpus": 2, "busy": 0.8}])
    monkeypatch.setattr(frameworks, "machine_load", lambda: next(loads))
    assert compare_torch.main([f"--worker_cmd={cmd}", "--dims=2"]) == 2
    assert "80% of the CPUs busy" in capsys.readouterr().err
    assert len(log.read_text(encoding="utf-8").splitlines()) == 1


def test_compare_torch_names_a_failing_worker(tmp_path, monkeypatch, capsys):
    from benchmarks import compare_torch, frameworks

    monkeypatch.setattr(frameworks, "machine_load", lambda: dict(IDLE))
    _, cmd = _fake_worker(tmp_path, "fail.jsonl")
    assert compare_torch.main([f"--worker_cmd={cmd}", "--groups=1", "--repeats=1"]) == 2
    assert "error: the monai worker (3D) failed with exit status 1: error: monai exploded" in capsys.readouterr().err


@pytest.mark.parametrize("argv,match", [
    (["--dims=4"], "--dims"), (["--groups=0"], "--groups"), (["--size=20"], "--size"),
    (["--infer_batch=0"], "--infer_batch"), (["--max-load=-1"], "--max-load"), (["--suite=resnet"], "--suite"),
    (["--dtype=float16"], "--dtype"), (["--dtype=,"], "--dtype"), (["--elastic_size=2"], "--elastic_size"),
    (["--sigma=0"], "--sigma"),
])
def test_compare_torch_bad_arguments_exit_2(argv, match, capsys):
    from benchmarks import compare_torch

    never = f"{sys.executable} -c 'import sys; sys.exit(\"error: no worker should start\")'"
    assert compare_torch.main([f"--worker_cmd={never}", "--max-load=1000"] + argv) == 2
    assert match in capsys.readouterr().err


def test_a_worker_refuses_to_share_its_process_with_the_other_framework(monkeypatch, capsys):
    import types

    from benchmarks import framework_worker, frameworks

    spec = {"suite": "unet", "framework": "monai", "dims": 2, "dtype": "float32", "train_batch": 1,
            "infer_batch": 1, "size": 16, "warmup": 1, "repeats": 1, "min_repeat_s": 0.0, "torch_threads": None}
    assert "jax" in sys.modules  # this test process has JAX: MONAI may not be timed here
    assert framework_worker.main([json.dumps(spec)]) == 2
    assert "refusing to time monai in a process that has imported jax" in capsys.readouterr().err
    # The scipy side of the elastic suite may share its process with neither JAX nor PyTorch.
    elastic = {"suite": "elastic", "framework": "scipy", "dims": 2, "batch": 1, "size": 8, "labels": False,
               "alpha": 1.0, "sigma": 1.0, "control": "bspline", "warmup": 1, "repeats": 1, "min_repeat_s": 0.0}
    assert framework_worker.main([json.dumps(elastic)]) == 2
    assert "refusing to time scipy in a process that has imported jax" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))
    with pytest.raises(ValueError, match="refusing to time zoo in a process that has imported torch"):
        frameworks.run_spec(dict(spec, framework="zoo"))
    with pytest.raises(ValueError, match="suite elastic compares zoo and scipy, got framework 'monai'"):
        frameworks.run_spec(dict(elastic, framework="monai"))
    with pytest.raises(ValueError, match=r"worker spec lacks \['sigma'\]"):
        frameworks.run_spec({k: v for k, v in elastic.items() if k != "sigma"})


def test_elastic_sides_do_the_same_work_in_a_worker_protocol():
    """Both sides of the elastic suite as the worker builds them: a fresh draw per call, the image resampled
    (and the label map with ``labels``); the scipy side imports no JAX (checked in a fresh process)."""
    import subprocess

    from benchmarks import elastic, frameworks

    fn, sync, info = elastic.build_elastic("zoo", 2, 2, 16, alpha=4.0, sigma=2.0)
    a, b = sync(fn()), sync(fn())
    assert a[0].shape == (2, 16, 16, 1) and a[1] is None and info["compile_s"] > 0
    assert not np.allclose(np.asarray(a[0]), np.asarray(b[0]))  # a new random transform per call
    fn, sync, info = elastic.build_elastic("scipy", 3, 1, 8, labels=True, alpha=4.0, sigma=2.0)
    (img, lab), = sync(fn())
    assert img.shape == lab.shape == (8, 8, 8) and set(np.unique(lab)) <= {0, 2} and info["scipy"]
    t = frameworks.time_work(fn, sync, warmup=1, repeats=2, min_repeat_s=0.0)
    assert len(t["samples_s"]) == 2 and t["median_s"] > 0
    with pytest.raises(ValueError, match="elastic framework must be one of"):
        elastic.build_elastic("monai", 2, 1, 8)
    code = ("import sys; from benchmarks import frameworks; spec = dict(suite='elastic', framework='scipy', dims=2, "
            "batch=2, size=16, labels=False, alpha=4.0, sigma=2.0, control='bspline', warmup=1, repeats=2, "
            "min_repeat_s=0.0); r = frameworks.run_spec(spec); assert 'jax' not in sys.modules; "
            "print(r['elastic']['number'], len(r['elastic']['samples_s']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "2"]


def test_check_load_and_machine_load():
    from benchmarks import frameworks

    frameworks.check_load({"loadavg": [0.9, 0, 0], "cpus": 2, "busy": 0.9}, 0.5, first=True)  # 0.45 per core
    with pytest.raises(ValueError, match="per core"):
        frameworks.check_load({"loadavg": [1.2, 0, 0], "cpus": 2, "busy": 0.0}, 0.5, first=True)
    frameworks.check_load({"loadavg": [1.9, 0, 0], "cpus": 2, "busy": 0.1}, 0.5, first=False)  # our own worker's
    with pytest.raises(ValueError, match="busy"):
        frameworks.check_load({"loadavg": [0.0, 0, 0], "cpus": 2, "busy": 0.6}, 0.5, first=False)
    load = frameworks.machine_load(interval_s=0.05)
    assert load["cpus"] >= 1 and len(load["loadavg"]) == 3
    assert load["busy"] is None or 0.0 <= load["busy"] <= 1.0


def test_time_work_calibrates_samples(monkeypatch):
    from benchmarks import frameworks

    # A fake clock (exact binary fractions): every call takes 1/64 s, so a sample of >= 1/16 s is 4 calls,
    # whatever the host's load.
    clock, calls = [0.0], []

    def call():
        clock[0] += 1 / 64
        calls.append(1)

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    t = frameworks.time_work(call, lambda x: x, warmup=1, repeats=3, min_repeat_s=1 / 16)
    assert t["number"] == 4 and len(t["samples_s"]) == 3 and len(calls) == 1 + 3 * 4
    assert t["median_s"] == 1 / 64


def test_gpu_check_sees_the_cpu_lowering_on_cpu_and_reports_problems():
    from benchmarks import gpu_check

    low = gpu_check.lowering_check(16)
    # On this CPU host `auto` is the CPU lowering: a different program from plain lax, with custom VJPs.
    assert low["backend"] == "cpu" and low["auto_resolves_to"] == "cpu"
    assert not low["same_program_as_lax"] and low["custom_vjp_calls"] > 0
    assert low["conv_general_dilated_lax"] > 0
    from kernels import native

    warp = gpu_check.warp_check()
    assert warp["backend"] == "cpu" and warp["calls_native_warp"] == native.available("warp")
    r = {"env": {"device_kind": "cpu", "platform": "cpu", "jax": "x"}, "shape": "quick", "batch": 1, "size": 16,
         "lowering": low, "warp": warp, "auto_vs_lax_train": 1.1, "problems": ["bfloat16/lax: boom"],
         "cases": [{"dtype": "bfloat16", "requested": "lax", "lowering": "lax", "status": "error", "error": "boom"},
                   {"dtype": "float32", "requested": "auto", "lowering": "cpu", "status": "ok",
                    "train_steps_per_s": 2.0, "train_mfu": None, "infer_images_per_s": 3.0, "compile_train_s": 1.0}]}
    md = gpu_check.markdown(r)
    assert "under `auto`: **cpu**" in md and "| bfloat16 | lax | error: boom" in md and "1.10x" in md
    assert "| float32 | auto (cpu) | 2 |" in md
    assert f"augmentation resampling: {'native CPU kernel' if warp['calls_native_warp'] else 'XLA gathers'} on cpu" in md


def test_case_latency_finds_cases_and_fails_in_one_line(tmp_path, capsys):
    from benchmarks import case_latency

    for name in ("b", "a"):
        (tmp_path / "brats" / name).mkdir(parents=True)
    (tmp_path / "isic").mkdir()
    for name in ("IMD2.png", "IMD2_mask.png", "IMD1.png", "IMD1_mask.png"):
        (tmp_path / "isic" / name).write_bytes(b"")
    assert case_latency.find_cases("brats", str(tmp_path / "brats"), 1) == [str(tmp_path / "brats" / "a")]
    assert case_latency.find_cases("isic", str(tmp_path / "isic"), 5) == [str(tmp_path / "isic" / f"IMD{i}.png")
                                                                           for i in (1, 2)]
    assert case_latency.main([]) == 2
    assert "--brats_model" in capsys.readouterr().err
    assert case_latency.main(["--brats_model=unet-phantoms-brain2d", f"--brats_dir={tmp_path / 'none'}"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --brats_dir {tmp_path / 'none'} does not exist"
    assert case_latency.main(["--isic_model=no-such-model", f"--isic_dir={tmp_path / 'isic'}"]) == 2
    assert "unknown model 'no-such-model'" in capsys.readouterr().err


def test_case_latency_table():
    from benchmarks import case_latency

    row = {"model": "m", "entry_programs": True, "case": "pat3", "shape": [240, 240, 155, 2], "tta": True,
           "state": "cold", "total_s": 12.34, "import_s": 2.0, "load_s": 1.0, "read_s": 0.5, "predict_s": 7.0,
           "write_s": 0.25, "compile_s": 3.0, "programs_compiled": 0, "programs_loaded": 5}
    md = case_latency.format_table({"host": {"cpu_model": "AMD EPYC", "cpus": 2}, "load": {"loadavg": [0.1, 0, 0]},
                                    "rows": [row]})
    assert "| m (+programs) | pat3 (240×240×155×2) | on | cold | 12.3 | 2.00 | 1.00 | 0.50 | 7.00 | 0.25 | 3.00 | " \
           "0 / 5 |" in md and "AMD EPYC, 2 CPUs" in md


def test_monai_case_worker_refuses_a_process_with_jax(capsys):
    from benchmarks import monai_case_worker

    spec = {"input": "x.png", "output": "y.png", "tta": False, "size": 128}
    assert monai_case_worker.main([json.dumps(spec)]) == 2
    assert "refusing to time monai in a process that has imported jax" in capsys.readouterr().err
    assert monai_case_worker.main([]) == 2
    assert "usage" in capsys.readouterr().err
