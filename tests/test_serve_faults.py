"""The server under faults in flight: a worker process killed during a segmentation, a request past its time limit,
more requests than the queue holds, the temporary folder's disk full, the server stopped with SIGTERM mid-request;
and its logs (no file contents, no covariate values). Each answer is JSON naming the problem, the server answers
``/api/health`` afterwards, and nothing is left in its temporary folders."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from _serve_models import tiny_models
from _server_tmp import four_channel_nifti, scratch  # noqa: F401 (scratch: a fixture)
from zoo import app as zoo_app
from zoo.app.services import segmentation, uploads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def models(paths):
    m = zoo_app.load_model(paths["seg"])
    m.name = "unet-tiny"
    o = zoo_app.load_model(paths["outcome"])
    o.name = "outcome-tiny"
    return {"unet-tiny": m, "outcome-tiny": o}


def _leftovers(folder, keep=("zoo-sessions-",)) -> list:
    """What lies in ``folder`` but the MONAI Label session store (created with the app, empty until a client
    uploads a session)."""
    return sorted(n for n in os.listdir(folder) if not any(n.startswith(k) for k in keep))


# Stand-ins for the segmentation service, sent to the worker process by reference (pickled by name: the worker
# imports this module).
def dies_mid_segmentation(m, folder, **kwargs):
    """A worker killed by the kernel (OOM killer, a segfault in native code) while it segments."""
    with open(os.path.join(folder, "half-written.nii.gz"), "wb") as f:
        f.write(b"\x1f\x8b partial")
    os.kill(os.getpid(), signal.SIGKILL)


def hangs(m, folder, **kwargs):
    """A segmentation that never ends (a pathological input, a deadlock)."""
    time.sleep(3600)


def disk_full_mid_write(m, folder, **kwargs):
    """The label map's write fails half-way: the temporary folder's disk is full."""
    with open(os.path.join(folder, "prediction.nii.gz"), "wb") as f:
        f.write(b"\x1f\x8b partial")
    raise OSError(errno.ENOSPC, "No space left on device", os.path.join(folder, "prediction.nii.gz"))


def _wait_ready(pool, seconds=240.0):
    end = time.monotonic() + seconds
    while pool.ready < 1:
        assert time.monotonic() < end, "no worker process came up"
        time.sleep(0.2)


def test_worker_processes_crash_timeout_and_full_queue(models, paths, scratch, monkeypatch):
    app = zoo_app.create_app(models, workers=1, queue=0, timeout=12.0, explain=False,
                             sources={"unet-tiny": paths["seg"]})
    pool = app.state.pool
    c = TestClient(app)
    try:
        _wait_ready(pool)
        first = pool.processes
        ok = c.post("/api/segment", data={"model": "unet-tiny", "sample": "1", "pdf": "false"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["dice"] is not None and pool.processes == first  # predicted in the worker process

        # a worker killed during a segmentation: 503 with the reason, a new worker, the server answering
        monkeypatch.setattr(segmentation, "segment_case", dies_mid_segmentation)
        r = c.post("/api/segment", data={"model": "unet-tiny"}, files={"file": ("scan.nii.gz", four_channel_nifti())})
        assert r.status_code == 503 and "worker process died" in r.json()["detail"], r.text
        assert r.headers["retry-after"] == "1"
        assert c.get("/api/health").status_code == 200
        assert _leftovers(scratch) == []  # the request folder, the half-written file in it included
        _wait_ready(pool)
        assert pool.processes and pool.processes != first

        # a request past its time limit: 504, and its worker ended (the slot free again) ...
        monkeypatch.setattr(segmentation, "segment_case", hangs)
        hung = pool.processes
        answers = {}
        t = threading.Thread(target=lambda: answers.update(
            slow=c.post("/api/segment", data={"model": "unet-tiny", "sample": "0"})))
        start = time.monotonic()
        t.start()
        while pool.pending < 1:
            time.sleep(0.05)
        # ... while it runs, the queue (0 places) is full: 503 at once
        scan = {"file": ("scan.nii.gz", four_channel_nifti())}
        busy = c.post("/api/segment", data={"model": "unet-tiny"}, files=scan)
        assert busy.status_code == 503 and "busy" in busy.json()["detail"], busy.text
        t.join(60)
        slow = answers["slow"]
        assert slow.status_code == 504 and "longer than 12 s" in slow.json()["detail"], slow.text
        assert time.monotonic() - start < 12.0 + 5.0
        assert c.get("/api/health").json()["pending"] == 0

        # the replaced worker serves again
        monkeypatch.undo()
        monkeypatch.setattr(tempfile, "tempdir", str(scratch))
        _wait_ready(pool)
        assert pool.processes != hung
        again = c.post("/api/segment", data={"model": "unet-tiny"}, files=scan)
        assert again.status_code == 200, again.text
        # work that cannot travel to a worker process is refused here, and the worker stays free
        with pytest.raises(RuntimeError, match="cannot be sent to a worker process"):
            asyncio.run(pool.run(lambda: 1))
        assert pool.ready == 1 and pool.pending == 0
        assert _leftovers(scratch) == []
    finally:
        pool.close()
    assert pool.processes == []


def test_disk_full_while_saving_the_upload_is_507(models, scratch, monkeypatch):
    real_open = open

    class FullDisk(io.RawIOBase):
        """A file whose second write finds the disk full (the first chunk landed)."""

        def __init__(self, path, mode):
            self.f, self.writes = real_open(path, mode), 0

        def write(self, b):
            self.writes += 1
            if self.writes > 1:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(b)

        def close(self):
            self.f.close()
            super().close()

    monkeypatch.setattr(uploads, "open", lambda path, mode="r", *a, **k: FullDisk(path, mode), raising=False)
    c = TestClient(zoo_app.create_app(models, explain=False))
    big = four_channel_nifti(shape=(128, 128, 16), seed=1)  # > 1 MiB: written in several chunks
    assert len(big) > 2 << 20
    r = c.post("/api/segment", data={"model": "unet-tiny"}, files={"file": ("scan.nii.gz", big)})
    assert r.status_code == 507 and "storage is full" in r.json()["detail"], r.text
    assert _leftovers(scratch) == []  # the partial upload went with its folder
    assert c.get("/api/health").status_code == 200


def test_disk_full_in_the_worker_is_507(models, scratch, monkeypatch):
    monkeypatch.setattr(segmentation, "segment_case", disk_full_mid_write)
    c = TestClient(zoo_app.create_app(models, explain=False))
    r = c.post("/api/segment", data={"model": "unet-tiny", "sample": "0"})
    assert r.status_code == 507 and r.json()["detail"], r.text
    assert _leftovers(scratch) == []


def test_logs_carry_no_file_contents_or_covariates(models, scratch, caplog):
    caplog.set_level(logging.DEBUG)
    c = TestClient(zoo_app.create_app(models, explain=True))
    scan = four_channel_nifti(seed=7)
    r = c.post("/api/segment", data={"model": "unet-tiny"}, files={"file": ("patient-smith.nii.gz", scan)})
    assert r.status_code == 200, r.text
    fields = {"age": 73.25, "sex": "F", "diabetes": 1, "smoker": 1}
    r = c.post("/api/outcome", json={"model": "outcome-tiny", "sample": 2, "fields": fields})
    assert r.status_code == 200, r.text
    bad = c.post("/api/outcome", json={"model": "outcome-tiny", "fields": {"age": "81.5 years"}})
    assert bad.status_code == 400
    text = "\n".join(f"{rec.name} {rec.getMessage()} {rec.args}" for rec in caplog.records)
    for secret in ("73.25", "81.5", "patient-smith", scan[10:40].hex(), repr(scan[10:40])):
        assert secret not in text, secret


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_sigterm_mid_request_finishes_it_and_leaves_nothing(paths, tmp_path):
    tmp = tmp_path / "server-tmp"
    tmp.mkdir()
    port = _free_port()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=ROOT)
    server = subprocess.Popen([sys.executable, "-m", "zoo.serve", "--models", paths["seg"], "--port", str(port)],
                              cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 240
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            try:
                if httpx.get(f"{base}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < end, "the server did not come up"
            time.sleep(0.5)
        scan, boundary = four_channel_nifti(seed=3), "ff00ff"
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nseg\r\n--{boundary}\r\n'
                f'Content-Disposition: form-data; name="file"; filename="scan.nii.gz"\r\n'
                f"Content-Type: application/gzip\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        sent = threading.Event()

        def body():  # the upload trickles in: SIGTERM arrives while the request is in flight
            yield head
            for i in range(0, len(scan), 4096):
                yield scan[i:i + 4096]
                if i == 0:
                    sent.set()
                time.sleep(1.5 / (len(scan) / 4096))
            yield tail

        answers = {}

        def post():
            try:
                answers["r"] = httpx.post(f"{base}/api/segment", content=body(), timeout=60,
                                          headers={"content-type": f"multipart/form-data; boundary={boundary}"})
            except httpx.HTTPError as e:
                answers["error"] = e

        t = threading.Thread(target=post)
        t.start()
        assert sent.wait(30)
        server.send_signal(signal.SIGTERM)
        t.join(90)
        code = server.wait(60)
        out = server.stdout.read().decode()
        assert code in (0, -signal.SIGTERM), out  # uvicorn re-raises the signal once it has shut down cleanly
        assert "Traceback" not in out, out
        r = answers.get("r")
        assert r is not None, answers  # the request in flight was finished, not cut
        assert r.status_code == 200 and r.json()["shape"] == [32, 32, 8], r.text
        assert os.listdir(tmp) == []  # no request folder, no session store, nothing half-written
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
