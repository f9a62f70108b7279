"""The clinician-facing web application: ``python -m zoo.serve [--host 127.0.0.1] [--port 8000] [--models NAME,...]
[--token-file F] [--max-upload-mb 512] [--workers 2] [--queue 8] [--timeout 120] [--keep]``.

One page (``zoo/static/index.html``) and a JSON API (OpenAPI at ``/docs``): ``GET /api/health``,
``GET /api/models``, ``POST /api/segment`` (multipart: ``model``, ``file`` or ``sample``, optional
``reference``, ``tta``, ``gradcam``, ``pdf``: the label map, overlay PNG, JSON and PDF summaries come back as
downloads), ``POST /api/outcome`` (JSON; for a time-to-event model the answer holds
the predicted survival curve). Routes parse and validate, then call ``zoo.service`` (the functions the tests
call), which predicts through ``zoo.predict.predict_case``.

Models (store names, work directories or ``zoo.export`` folders; default: the whole store) are loaded and
compiled at start-up. A work directory written by ``zoo.survival.fit_deep_survival`` (it holds
``survival.json``; ``python -m eval.outcome_report`` writes them for ``deep_cox`` / ``deep_hazard``) is served
as a time-to-event model. Requests run in a bounded pool (``--workers`` threads, ``--queue`` waiting, then 503;
``--timeout`` seconds, then 504). Uploads: at most ``--max-upload-mb`` MiB (checked on the Content-Length and
counted while the body streams: 413), parsed by content (a wrong type or a corrupt file: 4xx naming it), saved
under names chosen by the server in a temporary folder removed after the response (kept with ``--keep``).
``--token-file``: every route, the page included, needs ``Authorization: Bearer <token>`` (the page
asks for it; ``?token=`` for the page itself). Binds to 127.0.0.1 unless told otherwise.

This is an entry point (DESIGN.md: entry points sit on top), the one place in ``zoo`` that imports
``eval.interpret`` (Grad-CAM, SHAP), handing those functions to ``zoo.service``.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import os
import shutil
import sys
import tempfile
from typing import Optional

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from zoo import service, store
from zoo.cli import run_cli

__all__ = ["create_app", "main"]

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")


# ------------------------------------------------------------------------------------------------ schemas

class Health(BaseModel):
    status: str
    models: list[str]
    pending: int

class ModelInfo(BaseModel):
    name: str
    task: str
    exported: bool
    card: dict
    channel_names: list[str]
    class_names: list[str]
    spatial_dims: int
    covariate_names: list[str]
    ehr_form: bool
    covariate_defaults: Optional[list[float]] = Field(None, description="time-to-event models: the training means")
    time_unit: str = ""

class Download(BaseModel):
    filename: str
    base64: str

class Display(BaseModel):
    depth: int
    height: int
    width: int
    image_u16: str = Field(description="channel 0, [D, H, W] little-endian uint16 over image_range")
    image_range: list[float]
    labels_u8: str
    gradcam_u8: Optional[str] = None
    gradcam_note: str

class SegmentResult(BaseModel):
    model: str
    shape: list[int]
    spacing_mm: list[float]
    unit: str = Field(description="mL (3D) or mm2 (2D)")
    sizes: dict[str, float]
    dice: Optional[dict[str, Optional[float]]] = None
    class_names: list[str]
    voxels: dict[str, int]
    tta: bool
    display: Display
    downloads: dict[str, Download]

class OutcomeRequest(BaseModel):
    model: str
    fields: dict[str, float | str | bool] = Field(
        description="age, sex ('F'/'M') and 0/1 comorbidities, or one number per covariate name")
    sample: int = Field(0, ge=0, le=63, description="the bundled phantom whose image goes with the fields")
    shap: bool = True
    horizon: Optional[float] = Field(None, gt=0, description="time-to-event models: the time the risk (1 - S(t)) "
                                     "is given at; default: the median training time")

class Shap(BaseModel):
    base_value: float
    values: dict[str, float]

class SurvivalCurve(BaseModel):
    times: list[float]
    survival: list[float] = Field(description="S(t | x) at times")
    lower: Optional[list[float]] = None
    upper: Optional[list[float]] = None
    interval_note: str
    horizon: float
    survival_at_horizon: float
    horizon_range: Optional[list[float]] = None
    median_time: Optional[float] = Field(None, description="first time with S <= 0.5 (null: not reached)")
    time_unit: str
    head: str = Field(description="cox (Breslow baseline) or hazard (discrete-time logistic hazard)")

class OutcomeResult(BaseModel):
    model: str
    kind: str = Field(description="probability (binary outcome) or survival (time-to-event)")
    risk: float = Field(description="probability of the outcome; time-to-event: 1 - S(horizon)")
    risk_range: Optional[list[float]] = None
    risk_range_note: str
    covariates: dict[str, float]
    shap: Optional[Shap] = None
    shap_note: str
    sample: int
    survival: Optional[SurvivalCurve] = None


def _explainers():
    from eval import interpret

    return (interpret.gradcam, interpret.layer_names), interpret.shap_tabular


def create_app(models: dict, *, token: str | None = None, max_upload_mb: float = 512, keep: bool = False,
               workers: int = 2, queue: int = 8, timeout: float = 120.0, explain: bool = True):
    """The FastAPI application serving ``models`` (``{name: zoo.service.ServedModel}``)."""
    limit = int(float(max_upload_mb) * 1024 * 1024)
    pool = service.InferencePool(workers=workers, queue=queue, timeout=timeout)
    explain_image, explain_tabular = _explainers() if explain else (None, None)

    class TooLarge(HTTPException):
        def __init__(self):
            super().__init__(413, f"upload larger than the limit of {max_upload_mb:g} MiB")

    app = FastAPI(title="medzoo", version="0.1.0",
                  description="Segmentation and outcome models of the medzoo model store.")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None:
            got = request.headers.get("authorization", "")
            given = got[7:] if got.lower().startswith("bearer ") else request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return JSONResponse({"detail": f"upload larger than the limit of {max_upload_mb:g} MiB"}, 413)
        receive, seen = request._receive, [0]

        async def counted():  # a body sent without (or with a false) Content-Length is counted as it arrives
            message = await receive()
            if message.get("type") == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > limit:
                    raise TooLarge()
            return message

        request._receive = counted
        try:
            return await call_next(request)
        except TooLarge as e:
            return JSONResponse({"detail": e.detail}, 413)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, exc):
        errors = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(errors)}, status_code=422)

    def _model(name: str, tasks: tuple) -> service.ServedModel:
        if name not in models:
            raise HTTPException(404, f"unknown model {name!r}; served: {', '.join(sorted(models)) or 'none'}")
        m = models[name]
        if m.task not in tasks:
            raise HTTPException(400, f"model {name!r} is a {m.task} model, not {' or '.join(tasks)}")
        return m

    async def _pooled(fn, *args, **kwargs):
        try:
            return await pool.run(fn, *args, **kwargs)
        except service.Busy as e:
            raise HTTPException(503, str(e), headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the prediction took longer than {timeout:g} s") from None
        except (ValueError, FileNotFoundError) as e:
            raise HTTPException(400, str(e)) from None

    async def _save(upload: UploadFile, folder: str, stem: str) -> tuple[str, str]:
        try:
            suffix = service.upload_suffix(upload.filename)
        except ValueError as e:
            raise HTTPException(415 if "unsupported" in str(e) else 400, str(e)) from None
        path = os.path.join(folder, stem + suffix)  # the server's name; the client's name gave only the suffix
        size = 0
        with open(path, "wb") as f:
            while chunk := await upload.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge()
                f.write(chunk)
        if size == 0:
            raise HTTPException(400, f"upload {upload.filename!r} is empty")
        return path, suffix

    with open(os.path.join(STATIC, "index.html"), encoding="utf-8") as f, \
            open(os.path.join(STATIC, "app.js"), encoding="utf-8") as g:  # one document: one token check
        page_html = f.read().replace('<script src="/static/app.js"></script>', f"<script>\n{g.read()}\n</script>")

    @app.get("/", include_in_schema=False)
    async def page():
        return HTMLResponse(page_html)

    @app.get("/api/health", response_model=Health)
    async def health():
        return Health(status="ok", models=sorted(models), pending=pool.pending)

    @app.get("/api/models", response_model=list[ModelInfo])
    async def list_models():
        return [ModelInfo(**service.model_info(m)) for m in models.values()]

    @app.post("/api/segment", response_model=SegmentResult)
    async def segment(model: str = Form(...), file: Optional[UploadFile] = File(None),
                      sample: Optional[int] = Form(None), reference: Optional[UploadFile] = File(None),
                      tta: bool = Form(False), gradcam: bool = Form(True), pdf: bool = Form(True)):
        m = _model(model, ("segmentation", "instance"))
        if (file is None) == (sample is None):
            raise HTTPException(400, "send either a file or a sample number")
        folder = tempfile.mkdtemp(prefix="zoo-serve-")
        try:
            ref_path = None
            if file is not None:
                path, suffix = await _save(file, folder, "upload")
            if reference is not None:
                ref_path, ref_suffix = await _save(reference, folder, "reference")

            def work():
                if file is not None:
                    image, meta, read_path = service.read_upload(path, suffix, folder, f"upload {file.filename!r}")
                    ref = None
                else:
                    image, meta, ref = service.phantom_sample(m, sample)
                    read_path = "phantom.nrrd"
                if ref_path is not None:
                    ref = service.read_reference(ref_path, ref_suffix, folder, image.shape[:-1])
                return service.segment(m, image, meta, read_path, folder, reference=ref, tta=tta,
                                       explain_image=explain_image if gradcam else None, pdf=pdf)

            return await _pooled(work)
        finally:
            if not keep:
                shutil.rmtree(folder, ignore_errors=True)

    @app.post("/api/outcome", response_model=OutcomeResult)
    async def outcome(req: OutcomeRequest):
        m = _model(req.model, ("outcome", "survival"))
        return await _pooled(service.outcome, m, dict(req.fields), req.sample,
                             explain_tabular if req.shap else None, req.horizon)

    app.state.pool = pool
    return app


def load_models(names: list[str] | None) -> dict:
    """``{name: ServedModel}`` for ``names`` (default: every store entry), loaded and compiled."""
    names = names or [e.name for e in store.list_pretrained()]
    if not names:
        raise ValueError(f"--models: the model store is empty ($ZOO_HOME={store.store_home()}); name a work "
                         f"directory, an export folder or a store entry")
    out = {}
    for n in names:
        m = service.load_model(n)
        out[m.name] = m
        print(f"loaded {m.name} ({m.task}{', exported' if m.exported else ''})", flush=True)
    return out


def _read_token(path: str | None) -> str | None:
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if len(token) < 8:
        raise ValueError(f"--token-file {path}: the token must have at least 8 characters")
    return token


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoo.serve", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--models", default="", help="comma-separated store names / work dirs / export folders")
    p.add_argument("--token-file", default=None, help="file holding the bearer token every route requires")
    p.add_argument("--max-upload-mb", type=float, default=512.0)
    p.add_argument("--workers", type=int, default=2, help="requests predicted at once")
    p.add_argument("--queue", type=int, default=8, help="requests waiting beyond the workers (then 503)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request (then 504)")
    p.add_argument("--keep", action="store_true", help="keep each request's temporary folder")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> int:
        import uvicorn

        if args.max_upload_mb <= 0:
            raise ValueError(f"--max-upload-mb must be > 0, got {args.max_upload_mb}")
        token = _read_token(args.token_file)
        models = load_models([n for n in args.models.split(",") if n.strip()])
        app = create_app(models, token=token, max_upload_mb=args.max_upload_mb, keep=args.keep,
                         workers=args.workers, queue=args.queue, timeout=args.timeout)
        print(f"serving {', '.join(models)} on http://{args.host}:{args.port}/ (API docs: /docs)", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
