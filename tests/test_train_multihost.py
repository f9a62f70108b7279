"""Two ``jax.distributed`` CPU processes on localhost train together and agree with one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The same tiny run as test_train_resume.py (so the single-process programs come from the shared cache).
TINY = ["--config=smoke", "--no_progress", "--steps=3", "--config.data.image_size=(16,16)",
        "--config.data.num_train=16", "--config.data.num_val=4", "--config.model.kwargs.features=4",
        "--config.model.kwargs.depth=2", "--config.train.batch_size=4", "--config.train.schedule=constant",
        "--config.train.warmup_steps=0", "--config.train.log_every=1", "--config.train.eval_every=1000000",
        "--config.train.checkpoint_every=1000000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
def test_two_processes_agree_with_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT,
               JAX_COMPILATION_CACHE_DIR=os.path.join(tempfile.gettempdir(), "medzoo-test-jax-cache"),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    port = _free_port()
    multi = tmp_path / "multi"
    procs = [subprocess.Popen([sys.executable, "-m", "zoo.train", f"--workdir={multi}",
                               f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}", *TINY],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    single = tmp_path / "single"
    ref = subprocess.run([sys.executable, "-m", "zoo.train", f"--workdir={single}", *TINY], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=500)
    outs = [p.communicate(timeout=500) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "workdir:" in outs[0][0] and "workdir:" not in outs[1][0]  # only process 0 talks

    got, want = _records(multi), _records(single)
    train_got = [r for r in got if r["split"] == "train"]
    assert [r["step"] for r in train_got] == [1, 2, 3]  # written once (process 0), not per process
    train_want = [r for r in want if r["split"] == "train"]
    np.testing.assert_allclose([r["loss"] for r in train_got], [r["loss"] for r in train_want], atol=1e-5, rtol=0)
    meta = json.loads((multi / "config.json").read_text())
    assert meta["run"]["process_count"] == 2 and meta["mesh"] == {"data": 2, "model": 1}
    val_got = [r for r in got if r["split"] == "val"][-1]
    val_want = [r for r in want if r["split"] == "val"][-1]
    assert abs(val_got["mean_dice"] - val_want["mean_dice"]) < 1e-6
    assert os.path.isdir(multi / "checkpoints" / "3")
