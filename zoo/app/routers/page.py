"""The clinician page, ``GET /``: ``static/index.html`` with ``static/app.js`` inlined (one document, so one token
check serves it)."""

from __future__ import annotations

import functools
import os

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

__all__ = ["STATIC", "page_html", "router"]

STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")

router = APIRouter()


@functools.lru_cache(maxsize=1)
def page_html() -> str:
    """The page as served: ``index.html`` with the script ``app.js`` written into it."""
    with open(os.path.join(STATIC, "index.html"), encoding="utf-8") as f, \
            open(os.path.join(STATIC, "app.js"), encoding="utf-8") as g:
        return f.read().replace('<script src="/static/app.js"></script>', f"<script>\n{g.read()}\n</script>")


@router.get("/", include_in_schema=False)
async def page():
    return HTMLResponse(page_html())
