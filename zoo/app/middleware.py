"""The guard in front of every route: the bearer token and the upload limit, as a pure ASGI middleware.

Written against the ASGI interface itself (``scope``, ``receive``, ``send``), not Starlette's private request
internals: the token is read from the ``Authorization`` header (or ``?token=`` for the page), a body whose
``Content-Length`` is over the limit is refused before it is read, and a body sent without (or with a false)
``Content-Length`` is counted as the application receives it, refused with 413 as soon as the count passes the
limit.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from zoo.app.services.uploads import TooLarge, limit_bytes

__all__ = ["BodyTooLarge", "RequestGuard", "read_token", "OPEN_PATHS"]

# MONAI Label's login: a client asks whether authentication is enabled and exchanges credentials for the token
# before it has one (zoo.app.routers.monailabel); these answer without the token (the upload limit still holds).
OPEN_PATHS = frozenset({"/auth", "/auth/", "/auth/token"})


class BodyTooLarge(HTTPException):
    """Raised from the counted ``receive`` when the body passes the limit; the framework answers 413."""

    def __init__(self, max_upload_mb: float):
        super().__init__(413, str(TooLarge(max_upload_mb)))


class RequestGuard:
    """ASGI middleware: ``token`` (``None``: open) on every route but :data:`OPEN_PATHS`, at most
    ``max_upload_mb`` MiB per body."""

    def __init__(self, app, *, token: str | None = None, max_upload_mb: float = 512.0):
        self.app, self.token, self.max_upload_mb = app, token, float(max_upload_mb)
        self.limit = limit_bytes(max_upload_mb)

    def authorized(self, request: Request) -> bool:
        """Whether ``request`` carries the token (``Authorization: Bearer <token>``, or ``?token=<token>``)."""
        got = request.headers.get("authorization", "")
        given = got[7:] if got.lower().startswith("bearer ") else request.query_params.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)  # headers and query only: the body is left to the application
        if self.token is not None and scope["path"] not in OPEN_PATHS and not self.authorized(request):
            await JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                               headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await JSONResponse({"detail": str(TooLarge(self.max_upload_mb))}, 413)(scope, receive, send)
            return
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.max_upload_mb)
            return message

        async def sending(message):
            nonlocal started
            started = started or message.get("type") == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except BodyTooLarge as e:  # read outside a route (where the framework answers it): answer it here
            if started:
                raise
            await JSONResponse({"detail": e.detail}, 413)(scope, receive, send)


def read_token(path: str | None) -> str | None:
    """The bearer token in file ``path`` (``None`` for no path); shorter than 8 characters is a ``ValueError``."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if len(token) < 8:
        raise ValueError(f"--token-file {path}: the token must have at least 8 characters")
    return token
