"""Memory of ``zoo.serve`` under concurrent large uploads: ``python -m benchmarks.serve_memory [--model NAME_OR_PATH]
[--uploads 8] [--max-upload-mb 64] [--workers 2] [--out FILE.json]``.

Starts ``python -m zoo.serve --max-upload-mb M --queue N`` on 127.0.0.1 (a free port, its own ``TMPDIR``) as a
child process, then sends ``--uploads`` segmentation requests at once, each an uncompressed one-channel float32
NIfTI just under the limit (the multipart body fits ``M`` MiB), and samples the resident memory of the server's
process tree (the server and any worker processes) every 50 ms. Prints the RSS once the server is up, the peak
during the uploads, the answers' status codes (a model taking other channels answers 400 after reading the
whole image: the upload is still received, saved and parsed) and whether the server's temporary folder is
empty afterwards. The issue's bound: a peak under 3 GiB with 8 uploads of 64 MiB; a server holding uploads in
memory would need 8 x 64 MiB more for the bodies alone, before parsing. Only 127.0.0.1 traffic.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from zoo.cli import command_parser, run_command

HEADER = 352  # a NIfTI-1 single file's header and extension flag


def main(argv=None) -> int:
    p = command_parser("python -m benchmarks.serve_memory", __doc__, out="also write the result as JSON here")
    p.add_argument("--model", default="unet-phantoms-brain2d", help="store name, work directory or export")
    p.add_argument("--uploads", type=int, default=8, help="concurrent uploads")
    p.add_argument("--max-upload-mb", type=float, default=64.0)
    p.add_argument("--workers", type=int, default=2)
    return run_command(p, sys.argv[1:] if argv is None else argv, _measure)


def nifti_body(max_upload_mb: float) -> bytes:
    """An uncompressed float32 NIfTI ``[256, 256, k]`` whose multipart body stays just under the limit."""
    import nibabel as nib
    import numpy as np

    voxels = (int(max_upload_mb * 2**20) - HEADER - 4096) // 4
    k = voxels // (256 * 256)
    if k < 1:
        raise ValueError(f"--max-upload-mb {max_upload_mb:g} is too small for a 256 x 256 slice")
    image = np.random.default_rng(0).normal(size=(256, 256, k)).astype(np.float32)
    return nib.Nifti1Image(image, np.eye(4)).to_bytes()


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _measure(args) -> int:
    if args.uploads < 1 or args.workers < 1 or args.max_upload_mb <= 0:
        raise ValueError(f"--uploads and --workers must be >= 1 and --max-upload-mb > 0 (got {args.uploads}, "
                         f"{args.workers}, {args.max_upload_mb})")
    import httpx

    body = nifti_body(args.max_upload_mb)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    tmp = tempfile.mkdtemp(prefix="serve-memory-")
    server = subprocess.Popen([sys.executable, "-m", "zoo.serve", "--models", args.model, "--port", str(port),
                               "--max-upload-mb", f"{args.max_upload_mb:g}", "--workers", str(args.workers),
                               "--queue", str(args.uploads)], env=dict(os.environ, TMPDIR=tmp))
    base = f"http://127.0.0.1:{port}"
    try:
        up_by = time.time() + 300
        while not _answers(httpx, f"{base}/api/health"):
            if server.poll() is not None or time.time() > up_by:
                raise RuntimeError("the server did not start")
            time.sleep(0.5)
        name = httpx.get(f"{base}/api/models").json()[0]["name"]
        idle = _tree_rss(server.pid)
        peak, stop = [idle], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _tree_rss(server.pid))
                time.sleep(0.05)

        def upload(i):
            r = httpx.post(f"{base}/api/segment", data={"model": name, "gradcam": "false", "pdf": "false"},
                           files={"file": (f"big{i}.nii", body)}, timeout=600)
            return r.status_code, r.json().get("detail", "")

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.uploads) as ex:
            answers = list(ex.map(upload, range(args.uploads)))
        seconds = time.perf_counter() - start
        stop.set()
        sampler.join()
        left = [n for n in os.listdir(tmp) if not n.startswith("zoo-sessions-")]
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    out = {"model": name, "uploads": args.uploads, "upload_mib": round(len(body) / 2**20, 2),
           "max_upload_mb": args.max_upload_mb, "workers": args.workers, "seconds": round(seconds, 1),
           "rss_idle_mib": round(idle / 2**20, 1), "rss_peak_mib": round(peak[0] / 2**20, 1),
           "under_3_gib": peak[0] < 3 * 2**30, "status_codes": sorted(s for s, _ in answers),
           "details": sorted({d for _, d in answers if d}), "temp_files_left": left}
    import json

    print(json.dumps(out, indent=1))
    if args.out:
        from data_pipelines import atomic

        atomic.write_json(args.out, out, indent=1)
    return 0


def _answers(httpx, url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
