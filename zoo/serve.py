"""The clinician-facing web application: ``python -m zoo.serve [--host 127.0.0.1] [--port 8000] [--models NAME,...]
[--token-file F [--credentials-file C]] [--max-upload-mb 512] [--workers 2] [--worker-processes] [--queue 8]
[--timeout 120] [--keep]
[--session-expiry 3600]``.

One page (``zoo/app/static/index.html``) and a JSON API (OpenAPI at ``/docs``): ``GET /api/health``,
``GET /api/models``, ``POST /api/segment`` (multipart: ``model``, ``file`` or ``sample``, optional
``reference``, ``tta``, ``gradcam``, ``pdf``, ``seg``, ``seg_probabilities``: the label map, overlay PNG, entropy
map (and with ``tta`` the mutual-information map), JSON and PDF summaries come back as downloads, and for a zipped
DICOM series a DICOM SEG), ``POST /api/outcome`` (JSON; every risk with its interval and how it was made; for a
time-to-event model the answer holds the predicted survival curve and its band). Routes parse and validate, then call ``zoo.app.services`` (the functions the
tests call), which predict through ``zoo.prediction.predict_case`` and explain through ``zoo.explain``.

Models (store names, work directories or ``zoo.export`` folders; default: the whole store) are loaded and
compiled at start-up; when ``--models`` names no outcome model, the store's first one (real-data first) is added,
and the page opens on the first real-data model of each kind. A work directory written by ``zoo.outcome.survival.fit_deep_survival`` (it holds
``survival.json``; ``python -m eval.studies.outcome_report`` writes them for ``deep_cox`` / ``deep_hazard``) is
served as a time-to-event model. Requests run in a bounded pool (``--workers`` threads, or with
``--worker-processes`` worker processes that each load the models, so that a crash answers 503 and a time-out
kills and replaces its worker; ``--queue`` waiting, then 503; ``--timeout`` seconds, then 504). Uploads: at most ``--max-upload-mb`` MiB (checked on the Content-Length and
counted while the body streams: 413), parsed by content (a wrong type or a corrupt file: 4xx naming it), saved
under names chosen by the server in a temporary folder removed after the response (kept with ``--keep``).
``--token-file``: every route, the page included, needs ``Authorization: Bearer <token>`` (the page
asks for it; ``?token=`` for the page itself). Binds to 127.0.0.1 unless told otherwise.

3D Slicer's MONAI Label module connects to the same address (``zoo.app.routers.monailabel``: ``/info/``,
``/session/``, ``/infer/{model}``, ``/datastore/``, ``/train/``, ``/auth/``; docs/slicer.md). With
``--token-file``, ``/auth/`` says authentication is enabled and ``POST /auth/token`` hands the token to the users
of ``--credentials-file`` (one ``username:password`` a line; ``zoo.app.services.credentials``); images the module
uploads are kept ``--session-expiry`` seconds after their last use.

This is the thin entry point (DESIGN.md: entry points sit on top, imported by nothing); the application is the
sub-package ``zoo.app``.
"""

from __future__ import annotations

import sys

from zoo.app import create_app, load_models
from zoo.app.middleware import read_token
from zoo.app.services.credentials import read_credentials
from zoo.cli import command_parser, run_command

__all__ = ["main"]


def _serve(args) -> int:
    import uvicorn

    if args.max_upload_mb <= 0:
        raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
    token = read_token(args.token_file)
    credentials = read_credentials(args.credentials_file)
    if credentials and token is None:  # before the models load
        raise ValueError("--credentials-file needs --token-file (the token the credentials are exchanged for)")
    if args.session_expiry < 1:
        raise ValueError(f"--session-expiry must be >= 1 s, got {args.session_expiry}")
    models = load_models([n for n in args.models.split(",") if n.strip()])
    app = create_app(models, token=token, max_upload_mb=args.max_upload_mb, keep=args.keep,
                     workers=args.workers, queue=args.queue, timeout=args.timeout, credentials=credentials,
                     session_expiry=args.session_expiry,
                     sources={n: m.source for n, m in models.items()} if args.worker_processes else None)
    print(f"serving {', '.join(models)} on http://{args.host}:{args.port}/ (API docs: /docs)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def main(argv=None) -> int:
    p = command_parser("python -m zoo.serve", __doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--models", default="", help="comma-separated store names / work dirs / export folders")
    p.add_argument("--token-file", default=None, help="file holding the bearer token every route requires")
    p.add_argument("--credentials-file", default=None,
                   help="username:password lines; POST /auth/token gives these users the token (3D Slicer login)")
    p.add_argument("--session-expiry", type=int, default=3600,
                   help="seconds an image uploaded by 3D Slicer is kept after its last use")
    p.add_argument("--max-upload-mb", type=float, default=512.0)
    p.add_argument("--workers", type=int, default=2, help="requests predicted at once")
    p.add_argument("--worker-processes", action="store_true",
                   help="predict in worker processes (each loads the models): a crash or a time-out ends one "
                        "worker, not the server, at the cost of one copy of the models per worker")
    p.add_argument("--queue", type=int, default=8, help="requests waiting beyond the workers (then 503)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (then 504)")
    p.add_argument("--keep", action="store_true", help="keep each request's temporary folder")
    return run_command(p, sys.argv[1:] if argv is None else argv, _serve)


if __name__ == "__main__":
    sys.exit(main())
