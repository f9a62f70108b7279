"""Faults a hostile user or a crashing machine brings to the trainer (issue: nothing lost, nothing silent).

One tiny run (steps 2 and 4 checkpointed) is trained once; each test copies its work directory and injects
a fault the way the issue's reproducers do.
"""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
import signal

import numpy as np
import pytest

from zoo import load_pretrained, train
from zoo.checkpoint import CheckpointIO
from zoo.training.loop import _Logger, _Preemption
from zoo.training.workdir import WorkdirLock

TINY = ["--config=smoke", "--no_progress", "--config.data.image_size=(16,16)", "--config.data.num_train=8",
        "--config.data.num_val=4", "--config.model.kwargs.features=4", "--config.model.kwargs.depth=2",
        "--config.train.batch_size=4", "--config.train.schedule=constant", "--config.train.warmup_steps=0",
        "--config.train.log_every=1", "--config.train.eval_every=2", "--config.train.checkpoint_every=2"]


def _run(workdir, steps, *extra):
    return train.main([f"--workdir={workdir}", f"--steps={steps}", *TINY, *extra])


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    wd = tmp_path_factory.mktemp("faults") / "run"
    assert _run(wd, 4) == 0
    assert CheckpointIO(str(wd / "checkpoints")).all_steps() == [2, 4]
    return wd


@pytest.fixture
def run_copy(trained, tmp_path):
    wd = tmp_path / "run"
    shutil.copytree(trained, wd)
    os.remove(wd / ".lock")
    return wd


def _truncate_state(step_dir):
    files = glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))
    assert files
    for f in files:
        os.truncate(f, os.path.getsize(f) // 2)


def test_corrupt_newest_checkpoint_resumes_from_the_intact_one(run_copy, capsys):
    _truncate_state(run_copy / "checkpoints" / "4")
    assert _run(run_copy, 6) == 0
    out, err = capsys.readouterr()
    assert "checkpoint step 4" in err and "skipped, using step 2" in err
    assert "resumed from step 2" in out
    kept = [n for n in os.listdir(run_copy / "checkpoints") if n.startswith("4.unreadable-")]
    assert len(kept) == 1  # moved aside, not deleted
    assert CheckpointIO(str(run_copy / "checkpoints")).all_steps() == [4, 6]
    steps = [r["step"] for r in map(json.loads, open(run_copy / "metrics.jsonl")) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # the lost attempt's steps 3-4 are not listed twice


def test_load_pretrained_falls_back_past_damaged_steps(run_copy, capsys):
    _truncate_state(run_copy / "checkpoints" / "4")
    pre = load_pretrained(str(run_copy))
    assert pre.step == 2 and "checkpoint step 4" in capsys.readouterr().err
    shutil.rmtree(run_copy / "checkpoints" / "4" / "state")  # a missing item: Orbax's KeyError before
    assert load_pretrained(str(run_copy)).step == 2
    meta_files = [p for p in glob.glob(str(run_copy / "checkpoints" / "4" / "meta" / "*")) if os.path.isfile(p)]
    for p in meta_files:
        open(p, "w").write("{not json")
    assert load_pretrained(str(run_copy)).step == 2
    assert f"{run_copy / 'checkpoints' / '4' / 'meta'}" in capsys.readouterr().err  # names the file
    with pytest.raises(ValueError, match="4/meta cannot be read"):
        load_pretrained(str(run_copy), step=4)


def test_nonfinite_loss_stops_with_exit_3_and_saves_nothing_after_it(tmp_path, capsys):
    wd = tmp_path / "nan"
    assert _run(wd, 8, "--config.train.learning_rate=1e30", "--config.train.grad_clip=0") == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "NaN/Inf at step" in err[0]
    bad = int(err[0].split("at step ")[1].split(";")[0])
    saved = CheckpointIO(str(wd / "checkpoints")).all_steps()
    assert all(s < bad for s in saved)
    for name in glob.glob(str(wd / "best" / "*" / "metrics" / "metrics")):
        assert math.isfinite(_strict(open(name).read())["mean_dice"])
    for line in open(wd / "metrics.jsonl"):
        rec = _strict(line)
        assert rec["step"] < bad


def test_skip_nonfinite_skips_bad_steps_and_keeps_finite_weights(tmp_path):
    wd = tmp_path / "skip"
    assert _run(wd, 4, "--config.train.learning_rate=1e30", "--config.train.grad_clip=0",
                "--config.train.skip_nonfinite=true") == 0
    recs = [_strict(line) for line in open(wd / "metrics.jsonl")]
    assert any(r.get("finite") == 0.0 for r in recs if r["split"] == "train")
    pre = load_pretrained(str(wd))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in __import__("jax").tree.leaves(pre.variables))


def test_a_second_run_on_a_locked_workdir_is_refused(run_copy, capsys):
    with WorkdirLock(str(run_copy)):
        assert _run(run_copy, 6) == 2
    err = capsys.readouterr().err
    assert f"in use by another run (PID {os.getpid()})" in err
    assert CheckpointIO(str(run_copy / "checkpoints")).all_steps() == [2, 4]


@pytest.mark.parametrize("extra,field", [(["--model=segnet"], "model.name"),
                                         (["--config.train.batch_size=2"], "train.batch_size")])
def test_resuming_another_run_is_refused_before_anything_is_written(run_copy, capsys, extra, field):
    before = {p: open(p, "rb").read() for p in (run_copy / "config.json", run_copy / "metrics.jsonl")}
    assert _run(run_copy, 6, *extra) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different run" in err[0] and field in err[0]
    assert all(open(p, "rb").read() == data for p, data in before.items())


def test_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert _run(f, 2) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a directory" in err[0]


def test_logs_are_strict_json(tmp_path):
    log = _Logger(str(tmp_path), True, False)
    log.write({"split": "val", "step": 1, "mean_dice": float("nan"), "x": [1.0, float("inf")]})
    assert _strict(open(tmp_path / "metrics.jsonl").read()) == {"split": "val", "step": 1, "mean_dice": None,
                                                                 "x": [1.0, None]}


def test_first_ctrl_c_asks_for_a_save_second_interrupts():
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the suite runs in a background job (nohup, &)
    p = _Preemption()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert p.flag
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        p.close()
    assert signal.getsignal(signal.SIGINT) is before


def test_prediction_rejects_nan_input(trained):
    pre = load_pretrained(str(trained))
    x = np.zeros((1, 16, 16, 4), np.float32)
    x[0, 3, 3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pre.predict(x)


def test_outcome_cli_zero_interval_is_one_line(tmp_path, capsys):
    from zoo.outcome.__main__ import main as outcome_main

    assert outcome_main(["--config=outcome_smoke", f"--workdir={tmp_path}", "--config.train.log_every=0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.log_every must be a positive integer" in err[0]


# ------------------------------------------------------------------------------------------------ sweep findings

def _zero_files(folder):
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            size = os.path.getsize(path)
            with open(path, "wb") as f:
                f.write(b"\0" * size)


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_damaged_newest_checkpoint_costs_one_warning_line_and_nothing_else(run_copy, tmp_path, damage):
    """eval.report on a run whose newest step is truncated or zeroed: the intact step is used and stderr holds
    only our ``warning:`` lines naming step 4 (no Orbax/TensorStore log lines or tracebacks)."""
    import subprocess
    import sys

    if damage == "truncated":
        _truncate_state(run_copy / "checkpoints" / "4")
    else:
        _zero_files(run_copy / "checkpoints" / "4")
    proc = subprocess.run([sys.executable, "-m", "eval.report", "--workdir", str(run_copy),
                           "--out", str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2 and all(line.startswith("warning: ") for line in lines), proc.stderr[-2000:]
    assert all("4" in line and "using step 2" in line for line in lines)


def test_all_empty_masks_warn_before_training(tmp_path, capsys):
    from data_pipelines.info import DatasetInfo
    from zoo.configs import apply_overrides, load_config
    from zoo.training.loop import train_and_evaluate

    rng = np.random.default_rng(0)

    def split(n):
        return {"image": rng.normal(size=(n, 16, 16, 1)).astype(np.float32),
                "label": np.zeros((n, 16, 16), np.int32)}

    overrides = {a.split("=", 1)[0][len("--config."):]: a.split("=", 1)[1] for a in TINY if a.startswith("--config.")}
    config = apply_overrides(load_config("smoke"), {**overrides, "train.steps": "2"})
    info = DatasetInfo("empty", 2, ("grey",), ("background", "lesion"), 2)
    train_and_evaluate(config, str(tmp_path / "run"), progress=False, data=(split(8), split(4), info))
    err = capsys.readouterr().err
    assert "warning: no foreground in any of the 12 label maps" in err


def test_some_foreground_gives_no_empty_mask_warning():
    from data_pipelines.loader import ArraysSource
    from zoo.training.loop import _no_foreground

    empty = ArraysSource({"image": np.zeros((3, 4, 4, 1)), "label": np.zeros((3, 4, 4), np.int32)})
    one = np.zeros((2, 4, 4), np.int32)
    one[1, 2, 2] = 1
    assert _no_foreground([empty, empty]) == 6
    assert _no_foreground([empty, ArraysSource({"image": np.zeros((2, 4, 4, 1)), "label": one})]) == 0

    class Records:  # a record source without .arrays: up to `limit` records looked at
        def __len__(self):
            return 100

        def __getitem__(self, i):
            return {"image": np.zeros((4, 4, 1)), "label": np.zeros((4, 4), np.int32)}

    assert _no_foreground([Records()], limit=10) == 10
