"""Orbax resume: SIGTERM saves and exits, a resumed run repeats the uninterrupted one bit for bit, a
partially written checkpoint is never picked up, latest-N and best-N retention do not delete each other."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import jax.numpy as jnp
import numpy as np
import pytest

from zoo.checkpoint import CheckpointIO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Constant learning rate: the trajectory does not depend on train.steps, so runs of different
# lengths can be compared step by step.
TINY = ["--config=smoke", "--no_progress", "--config.data.image_size=(16,16)", "--config.data.num_train=16",
        "--config.data.num_val=4", "--config.model.kwargs.features=4", "--config.model.kwargs.depth=2",
        "--config.train.batch_size=4", "--config.train.schedule=constant", "--config.train.warmup_steps=0",
        "--config.train.log_every=1", "--config.train.eval_every=1000000",
        "--config.train.checkpoint_every=1000000"]


def _cmd(workdir, steps):
    return [sys.executable, "-m", "zoo.train", f"--workdir={workdir}", f"--steps={steps}", *TINY]


def _env():
    # A persistent compilation cache shared by the runs here and in test_train_multihost.py (same tiny
    # programs): identical programs compile once. Entries are keyed by program and jax version.
    cache = os.path.join(tempfile.gettempdir(), "medzoo-test-jax-cache")
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=cache,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _train_losses(workdir) -> dict[int, float]:
    out = {}
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            if r["split"] == "train":
                out[r["step"]] = r["loss"]
    return out


@pytest.mark.slow
def test_sigterm_save_resume_is_bit_exact_and_ignores_partial_checkpoints(tmp_path):
    run = tmp_path / "run"
    env = _env()
    proc = subprocess.Popen(_cmd(run, 1_000_000), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text(encoding="utf-8").splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err[-2000:]
    ckdir = run / "checkpoints"
    k = CheckpointIO(str(ckdir)).latest_step()
    assert k is not None and k >= 2 and f"saved a checkpoint at step {k}" in out
    assert max(_train_losses(run)) == k  # stopped at the step it saved

    # A save interrupted half-way leaves only Orbax's temporary directory: it must not be resumed from.
    partial = ckdir / f"{k + 50}.orbax-checkpoint-tmp-1234567890"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "garbage").write_text("half written")
    assert CheckpointIO(str(ckdir)).all_steps() == [k]

    resumed = subprocess.run(_cmd(run, k + 2), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from step {k}" in resumed.stdout
    ref = tmp_path / "ref"
    straight = subprocess.run(_cmd(ref, k + 2), cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert straight.returncode == 0, straight.stderr[-2000:]
    got, want = _train_losses(run), _train_losses(ref)
    assert got[k + 1] == want[k + 1] and got[k + 2] == want[k + 2]  # bit-exact, not approximately
    assert all(got[s] == want[s] for s in range(1, k + 1))
    meta = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert meta["run"]["seed"] == 0 and "git_revision" in meta["run"] and "jax" in meta["run"]


def test_latest_and_best_retention_are_independent(tmp_path):
    state = {"w": jnp.arange(4, dtype=jnp.float32)}
    latest = CheckpointIO(str(tmp_path / "checkpoints"), max_to_keep=2, async_save=False)
    best = CheckpointIO(str(tmp_path / "best"), max_to_keep=1, async_save=False, best_metric="mean_dice")
    dice = {1: 0.2, 2: 0.9, 3: 0.5, 4: 0.4, 5: 0.6}
    for step, d in dice.items():
        state = {"w": state["w"] + 1}
        latest.save(step, state, {"step": step})
        best.save(step, state, {"step": step}, metrics={"mean_dice": d})
    latest.close()
    best.close()
    assert CheckpointIO(str(tmp_path / "checkpoints")).all_steps() == [4, 5]
    assert CheckpointIO(str(tmp_path / "best")).all_steps() == [2]
    assert CheckpointIO.best_of(str(tmp_path / "best"), "mean_dice") == (2, 0.9)
    restored, meta = CheckpointIO(str(tmp_path / "best")).restore(None, state)
    assert meta == {"step": 2}
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(4) + 2)


def test_max_to_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="max_to_keep"):
        CheckpointIO(str(tmp_path / "c"), max_to_keep=0)


def test_a_run_checkpointed_before_runs_recorded_their_scaling_still_resumes(tmp_path):
    from zoo.training.workdir import check_resumable

    saved = {"config": {"seed": 0}, "task": "segmentation", "data": {"name": "isic", "extra": {}}}
    new = {"config": {"seed": 0}, "task": "segmentation",
           "data": {"name": "isic", "extra": {"intensity_scaling": {"kind": "unit_range"}}}}
    check_resumable(saved, new, str(tmp_path))  # the record is new, not a change
    other = {**new, "data": {"name": "isic", "extra": {"intensity_scaling": {"kind": "none"}}}}
    with pytest.raises(ValueError, match="intensity_scaling"):
        check_resumable(new, other, str(tmp_path))
