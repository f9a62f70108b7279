"""Bounded load test of ``zoo.serve`` on localhost: ``python -m benchmarks.serve_load --model NAME_OR_PATH
[--requests 50] [--clients 8]``.

Starts ``python -m zoo.serve`` on 127.0.0.1 (a free port) as a child process (an entry point is imported by
nothing), sends ``--requests`` segmentation
requests (a phantom NIfTI upload each) from ``--clients`` concurrent threads, and prints failures, p50/p95
latency and the server's RSS before and after (memory should stay flat: the pool bounds what is in flight).
Only 127.0.0.1 traffic.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import socket
import sys
import time

import numpy as np


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.serve_load", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    import httpx
    import nibabel as nib
    import psutil
    import uvicorn

    import os
    import subprocess

    from zoo import service

    m = service.load_model(args.model, warm=False)  # only for the sample's shape
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    child = subprocess.Popen([sys.executable, "-m", "zoo.serve", "--models", args.model, "--port", str(port),
                              "--workers", str(args.workers), "--queue", str(args.clients)])
    try:
        return _load(args, m, port, child, httpx, nib, psutil)
    finally:
        child.terminate()
        child.wait(timeout=30)


def _load(args, m, port, child, httpx, nib, psutil) -> int:
    from zoo import service

    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if child.poll() is not None or time.time() > deadline:
            raise SystemExit("error: the server did not start")
        time.sleep(0.5)
    name = httpx.get(f"http://127.0.0.1:{port}/api/models").json()[0]["name"]
    image, _, _ = service.phantom_sample(m, 0)
    vol = image[:, :, None, :] if image.ndim == 3 else image  # NIfTI keeps modalities on the 4th axis
    body = gzip.compress(nib.Nifti1Image(vol, np.eye(4)).to_bytes())
    url = f"http://127.0.0.1:{port}/api/segment"
    proc = psutil.Process(child.pid)

    def one(i):
        t = time.perf_counter()
        r = httpx.post(url, data={"model": name, "gradcam": "false"}, files={"file": ("case.nii.gz", body)},
                       timeout=120)
        return r.status_code, time.perf_counter() - t

    one(0)  # warm the HTTP path
    rss0 = proc.memory_info().rss
    with concurrent.futures.ThreadPoolExecutor(args.clients) as ex:
        results = list(ex.map(one, range(args.requests)))
    rss1 = proc.memory_info().rss
    lat = np.array([t for _, t in results]) * 1000
    failed = sum(s != 200 for s, _ in results)
    out = {"model": name, "requests": args.requests, "clients": args.clients, "workers": args.workers,
           "failed": failed, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
           "rss_before_mb": rss0 / 2**20, "rss_after_mb": rss1 / 2**20}
    print(json.dumps(out, indent=1))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
