"""The FastAPI application: the routers, the guard (token, upload limit) and the server's state put together."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from zoo.app.dependencies import ServerState
from zoo.app.middleware import RequestGuard
from zoo.app.openapi import install_openapi
from zoo.app.routers import api, monailabel, page
from zoo.app.services.pool import InferencePool
from zoo.app.services.sessions import SessionStore

__all__ = ["create_app"]


async def _invalid(request, exc):
    errors = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(errors)}, status_code=422)


def create_app(models: dict, *, token: str | None = None, max_upload_mb: float = 512, keep: bool = False,
               workers: int = 2, queue: int = 8, timeout: float = 120.0, explain: bool = True,
               sources: dict | None = None, credentials: dict | None = None,
               session_expiry: int = 3600) -> FastAPI:
    """The application serving ``models`` (``{name: zoo.app.services.served.ServedModel}``): ``token`` (if given)
    on every route, uploads of at most ``max_upload_mb`` MiB, requests run ``workers`` at a time with ``queue``
    more waiting for at most ``timeout`` seconds, request folders kept with ``keep``, Grad-CAM and SHAP with
    ``explain``; with ``sources`` (``{name: store name / work dir / export folder}`` of ``models``) the requests
    run in ``workers`` worker processes that load those (a crash or a time-out ends one worker, not the server),
    else in threads of this process. The document at ``/openapi.json`` declares every error answer
    (``zoo.app.openapi``). The MONAI Label routes (``zoo.app.routers.monailabel``) exchange ``credentials``
    (``{username: password}``; they need ``token``) for the token and keep uploaded images at most
    ``session_expiry`` seconds after their last use."""
    if credentials and token is None:
        raise ValueError("credentials need a token to hand out (--credentials-file needs --token-file)")
    page.page_html()  # a missing page fails at start-up, not at the first visit
    pool = InferencePool(workers=workers, queue=queue, timeout=timeout, sources=sources)

    @contextlib.asynccontextmanager
    async def lifespan(running):
        yield
        # on shutdown (SIGTERM included: uvicorn re-raises it after this, so no atexit handler would run) the
        # worker processes end and the uploaded sessions are removed
        pool.close()
        running.state.sessions.close()

    app = FastAPI(title="medzoo", version="0.1.0", lifespan=lifespan,
                  description="Segmentation and outcome models of the medzoo model store.")
    app.add_middleware(RequestGuard, token=token, max_upload_mb=max_upload_mb)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.include_router(page.router)
    app.include_router(api.router)
    app.include_router(monailabel.router)
    install_openapi(app)
    app.state.server = ServerState(models=models, pool=pool, max_upload_mb=float(max_upload_mb), keep=keep,
                                   timeout=float(timeout), explain=explain)
    app.state.pool = pool
    app.state.sessions = SessionStore(max_expiry=session_expiry)
    app.state.token, app.state.credentials = token, dict(credentials or {})
    return app
