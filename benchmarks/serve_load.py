"""Bounded load test of ``zoo.serve`` on localhost: ``python -m benchmarks.serve_load --model NAME_OR_PATH
[--requests 50] [--clients 8] [--workers 2] [--warmup 25] [--every 25] [--out FILE.json]``.

Starts ``python -m zoo.serve`` on 127.0.0.1 (a free port) as a child process (an entry point is imported by
nothing), sends ``--warmup`` then ``--requests`` segmentation requests (a phantom NIfTI upload each) from
``--clients`` concurrent threads, and prints failures, p50/p95 latency of the measured requests and the
server's resident memory: at the start (server up, models compiled), after the warm-up, every ``--every``
completed requests, at the end, and the least-squares slope of RSS over the measured requests (MiB per 100
requests). "Flat" is a measured statement: ``rss_slope_mb_per_100`` near 0 and ``rss_end - rss_after_warmup``
small against the RSS itself. Only 127.0.0.1 traffic.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import socket
import sys
import time

import numpy as np

from zoo.cli import command_parser, run_command


class LoadTestFailed(RuntimeError):
    """The server did not start or a warm-up request failed: ``error: <message>`` and exit status 1."""

    exit_code = 1


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.serve_load", __doc__, out="also write the result as JSON here")
    p.add_argument("--model", required=True)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--warmup", type=int, default=25, help="requests sent first, not timed (allocator warm-up)")
    p.add_argument("--every", type=int, default=25, help="record the server's RSS every this many requests")
    p.add_argument("--no-pdf", action="store_true", help="ask for no PDF summary (pdf=false; ~0.3 s less each)")
    return run_command(p, sys.argv[1:] if argv is None else argv, _load_test)


def _load_test(args) -> int:
    if args.requests < 1 or args.clients < 1 or args.workers < 1 or args.warmup < 0 or args.every < 1:
        raise ValueError(f"--requests, --clients, --workers and --every must be >= 1 and --warmup >= 0 (got "
                         f"{args.requests}, {args.clients}, {args.workers}, {args.every}, {args.warmup})")

    import httpx
    import nibabel as nib
    import psutil
    import uvicorn

    import subprocess

    from zoo import app as zoo_app

    m = zoo_app.load_model(args.model, warm=False)  # only for the sample's shape
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
    from zoo import app as zoo_app

    deadline = time.time() + 300
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if child.poll() is not None or time.time() > deadline:
            raise LoadTestFailed("the server did not start")
        time.sleep(0.5)
    name = httpx.get(f"http://127.0.0.1:{port}/api/models").json()[0]["name"]
    image, _, _ = zoo_app.phantom_sample(m, 0)
    vol = image[:, :, None, :] if image.ndim == 3 else image  # NIfTI keeps modalities on the 4th axis
    body = gzip.compress(nib.Nifti1Image(vol, np.eye(4)).to_bytes())
    url = f"http://127.0.0.1:{port}/api/segment"
    proc = psutil.Process(child.pid)

    def one(i):
        t = time.perf_counter()
        r = httpx.post(url, data={"model": name, "gradcam": "false", "pdf": "false" if args.no_pdf else "true"},
                       files={"file": ("case.nii.gz", body)}, timeout=120)
        return r.status_code, time.perf_counter() - t

    def rss_mb():
        return proc.memory_info().rss / 2**20

    rss_start = rss_mb()
    for s, _ in _run(one, args.warmup, args.clients, None, None):
        if s != 200:
            raise LoadTestFailed(f"a warm-up request failed with HTTP {s}")
    series = [(0, rss_mb())]
    results = _run(one, args.requests, args.clients, args.every, lambda done: series.append((done, rss_mb())))
    if series[-1][0] != args.requests:
        series.append((args.requests, rss_mb()))
    lat = np.array([t for _, t in results]) * 1000
    failed = sum(s != 200 for s, _ in results)
    n, r = np.array([d for d, _ in series], np.float64), np.array([m for _, m in series])
    slope = float(np.polyfit(n, r, 1)[0] * 100) if len(series) > 2 else float("nan")
    out = {"model": name, "requests": args.requests, "warmup": args.warmup, "clients": args.clients, "pdf": not args.no_pdf,
           "workers": args.workers, "failed": failed, "p50_ms": float(np.percentile(lat, 50)),
           "p95_ms": float(np.percentile(lat, 95)), "rss_start_mb": rss_start, "rss_after_warmup_mb": series[0][1],
           "rss_end_mb": series[-1][1], "rss_growth_after_warmup_mb": series[-1][1] - series[0][1],
           "rss_slope_mb_per_100": slope,
           "rss_series_mb": [{"requests": int(d), "rss_mb": round(m, 1)} for d, m in series]}
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        from data_pipelines import atomic

        atomic.write_json(args.out, out, indent=1)
    return 0 if failed == 0 else 1


def _run(one, count, clients, every, record):
    """``count`` calls of ``one`` from ``clients`` threads; ``record(done)`` after every ``every`` completions."""
    import threading

    lock, done, out = threading.Lock(), [0], []

    def wrapped(i):
        res = one(i)
        with lock:
            out.append(res)
            done[0] += 1
            if every and done[0] % every == 0:
                record(done[0])
        return res

    with concurrent.futures.ThreadPoolExecutor(clients) as ex:
        list(ex.map(wrapped, range(count)))
    return out


if __name__ == "__main__":
    sys.exit(main())
