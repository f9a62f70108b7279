"""The OpenAPI document the application publishes (``/openapi.json``), telling the truth about its error answers.

FastAPI's own document declares only the success answer and a 422 body of pydantic's error list; the
application answers every error as ``{"detail": "<one line>"}`` (:class:`zoo.app.schemas.Error`), 422 included
(the validation handler of ``zoo.app.application``), and gives answers FastAPI cannot see: the guard's 401/413
(``zoo.app.middleware``) and the services' 400/404/415/503/504/507 (``zoo.app.dependencies.http_errors``). Every
operation of every router (those added later included) gets them here, so a client generated from the document,
or a schema-driven fuzzer, meets no undeclared answer.
"""

from __future__ import annotations

from fastapi.openapi.utils import get_openapi

from zoo.app.schemas import Error

__all__ = ["ERROR_ANSWERS", "BODY_ANSWERS", "install_openapi", "openapi_document"]

ERROR_ANSWERS = {
    "400": "bad input: a file that cannot be read, a wrong model kind, missing fields",
    "401": "missing or wrong bearer token (servers started with --token-file)",
    "404": "unknown model or item",
    "422": "a parameter or body field of the wrong type or out of range",
    "503": "busy (the queue is full) or the worker process died; retry after Retry-After seconds",
    "504": "the request ran past the server's time limit",
    "507": "the server's temporary storage is full",
}
BODY_ANSWERS = {  # only where a request carries a body
    "413": "the body is larger than the upload limit (--max-upload-mb), inflated size included",
    "415": "an upload of a file type the server does not read",
}
_REF = {"$ref": "#/components/schemas/Error"}


def openapi_document(app) -> dict:
    """``app``'s OpenAPI document with the error answers declared on every operation (422 replaced)."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = Error.model_json_schema()
    for item in doc.get("paths", {}).values():
        for op in item.values():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            answers = dict(ERROR_ANSWERS, **(BODY_ANSWERS if "requestBody" in op else {}))
            for code, why in answers.items():
                declared = op["responses"].get(code, {})
                if code == "422" or "content" not in declared:
                    op["responses"][code] = {"description": declared.get("description") or why,
                                             "content": {"application/json": {"schema": _REF}}}
    text = str(doc["paths"])
    for name in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body, no longer referenced
        if f"#/components/schemas/{name}'" not in text:
            schemas.pop(name, None)
    return doc


def install_openapi(app) -> None:
    """Serve :func:`openapi_document` (built once, on the first request for it) as ``app``'s document."""
    def openapi():
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app)
        return app.openapi_schema

    app.openapi = openapi
