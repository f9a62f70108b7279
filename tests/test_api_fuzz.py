"""Schema-driven fuzzing of every route the application publishes (schemathesis over ``/openapi.json``).

Every operation in the published document (the JSON API and whatever routers join it later, e.g. the MONAI Label
routes) is called with schema-valid and schema-invalid requests, seeded and bounded (a few hundred examples in
all), with the bearer token and without it. Each answer must be no 5xx, declared by the document with a body
matching its schema (schemathesis' checks), come back within the server's time limit, and leave nothing in the
temporary folder. schemathesis' ``positive_data_acceptance`` check is left out: a request can be schema-valid
and still name an unknown model or carry bytes that are no image, which the application refuses with a 4xx by
design (the document lists those answers). MONAI Label's sessions also run statefully (a session made, then
read, used and deleted). ``FUZZ_EXAMPLES=N`` (default 25 per operation and mode) sets the size of a longer run.
"""

from __future__ import annotations

import os
import time

import pytest
import schemathesis
from hypothesis import strategies as st
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance

from _serve_models import tiny_models
from _server_tmp import four_channel_nifti, scratch  # noqa: F401 (scratch: a fixture)
from zoo import app as zoo_app
from zoo.app.middleware import OPEN_PATHS

TOKEN = "fuzz-token-0123"
TIMEOUT = 20.0  # the server's time limit in these runs (seconds)
# Examples per operation and mode with the token (a longer run: FUZZ_EXAMPLES=200), and without it.
N = int(os.environ.get("FUZZ_EXAMPLES", "25"))
EXAMPLES = {GenerationMode.POSITIVE: N, GenerationMode.NEGATIVE: N}
EXAMPLES_NO_TOKEN = max(N // 3, 8)
MODEL_NAMES = ("unet-tiny", "outcome-tiny")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = tiny_models(tmp_path_factory)
    out = dict(zip(MODEL_NAMES, (zoo_app.load_model(paths["seg"]), zoo_app.load_model(paths["outcome"]))))
    for name, m in out.items():
        m.name = name
    return out


def _session_root(app) -> str | None:
    store = getattr(app.state, "sessions", None)
    return getattr(store, "root", None)


def _operations(app) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Authorization": f"Bearer {TOKEN}"})
    ops = [r.ok() for r in schema.get_all_operations()]
    assert ops, "the application publishes no operation"
    return ops


def _files(folder, keep: str | None) -> set:
    """Every file and folder under ``folder`` except those under ``keep`` (the MONAI Label session store, whose
    uploads outlive their request by design, until they expire)."""
    out = set()
    for sub, dirs, files in os.walk(folder):
        if keep and os.path.abspath(sub).startswith(os.path.abspath(keep)):
            continue
        out.update(os.path.join(sub, n) for n in dirs + files)
    return out - ({os.path.abspath(keep)} if keep else set())


def _fuzz(op, mode, examples: int, headers: dict, scratch, seen: list, expect=None, keep: str | None = None):
    """``examples`` seeded cases of ``op`` in ``mode``, each checked (see the module docstring)."""

    @given(case=op.as_strategy(generation_mode=mode), served=st.sampled_from([None, *MODEL_NAMES]))
    @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case, served):
        if served is not None:  # a model the server holds, so requests get past the name to the files and fields
            if isinstance(case.body, dict) and "model" in case.body:
                case.body["model"] = served
            if case.path_parameters and "model" in case.path_parameters:
                case.path_parameters["model"] = served
        before = _files(scratch, keep)
        start = time.monotonic()
        response = case.call(headers=headers)
        elapsed = time.monotonic() - start
        seen.append(response.status_code)
        case.validate_response(response, excluded_checks=[positive_data_acceptance], headers=headers)
        assert elapsed < TIMEOUT + 5, f"{op.label}: {elapsed:.1f} s, past the {TIMEOUT:g} s time limit"
        if response.status_code >= 400:  # JSON, one line naming the problem
            assert response.headers.get("content-type", [""])[0].startswith("application/json"), response.text[:200]
            assert isinstance(response.json()["detail"], str) and response.json()["detail"], response.text[:200]
        assert expect is None or response.status_code == expect, (op.label, response.status_code, response.text)
        left = _files(scratch, keep) - before
        assert not left, f"{op.label}: files left in the temporary folder after the response: {sorted(left)}"

    run()


def test_every_route_with_the_token(models, scratch):
    app = zoo_app.create_app(models, token=TOKEN, max_upload_mb=0.25, timeout=TIMEOUT, explain=False)
    ops = _operations(app)
    labels = {op.label for op in ops}
    assert {"GET /api/health", "GET /api/models", "POST /api/segment", "POST /api/outcome"} <= labels
    auth = {"Authorization": f"Bearer {TOKEN}"}
    unbreakable: list = []
    for op in ops:
        seen: list = []
        t0 = time.monotonic()
        takes_input = bool(op.definition.raw.get("parameters") or op.definition.raw.get("requestBody"))
        for mode, n in EXAMPLES.items():
            if mode == GenerationMode.NEGATIVE and not takes_input:
                continue  # nothing to get wrong in a request without parameters or body
            try:
                _fuzz(op, mode, n, auth, scratch, seen, keep=_session_root(app))
            except Unsatisfiable:
                if mode != GenerationMode.NEGATIVE:
                    raise
                unbreakable.append(op.label)  # e.g. only free-text parameters: every request is schema-valid
            print(op.label, mode.value, f"{len(seen)} calls, {time.monotonic() - t0:.1f} s", sorted(set(seen)))
        assert seen and all(s < 500 for s in seen), (op.label, sorted(set(seen)))
        if op.label.startswith("GET /api/"):
            assert 200 in seen, (op.label, sorted(set(seen)))


def test_every_route_without_the_token_is_401(models, scratch):
    """Every route but MONAI Label's login (``zoo.app.middleware.OPEN_PATHS``) refuses a request without the
    token; the login routes answer within the schema too."""
    app = zoo_app.create_app(models, token=TOKEN, max_upload_mb=0.25, timeout=TIMEOUT, explain=False)
    for op in _operations(app):
        seen: list = []
        expect = None if op.path in OPEN_PATHS else 401
        _fuzz(op, GenerationMode.POSITIVE, EXAMPLES_NO_TOKEN, {}, scratch, seen, expect=expect,
              keep=_session_root(app))
        assert seen and all(s < 500 for s in seen), (op.label, sorted(set(seen)))


def test_the_document_declares_the_answers_the_app_gives(models):
    """The regression of the first fuzz run: 422 bodies carry ``detail`` as one line, and 400/404/413/415/503/
    504/507 were undeclared."""
    from fastapi.testclient import TestClient

    c = TestClient(zoo_app.create_app(models, max_upload_mb=0.25, explain=False))
    doc = c.get("/openapi.json").json()
    seg = doc["paths"]["/api/segment"]["post"]["responses"]
    for code in ("400", "404", "413", "415", "422", "503", "504", "507"):
        assert seg[code]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, code
    assert "413" not in doc["paths"]["/api/health"]["get"]["responses"]  # no body, no upload limit
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    r = c.post("/api/outcome", json={"model": "outcome-tiny", "fields": {}, "sample": 99})
    assert r.status_code == 422 and "sample" in r.json()["detail"]
    r = c.post("/api/segment", data={"model": "nowhere", "sample": "0"})
    assert r.status_code == 404 and "unknown model" in r.json()["detail"]


def _with_session_links(doc: dict) -> dict:
    """``doc`` with OpenAPI links from ``PUT /session/``'s ``session_id`` to the operations that take one."""
    paths = doc["paths"]
    made = paths["/session/"]["put"]["responses"]["200"]
    made["links"] = {
        f"{method.upper()} {path}": {"operationId": paths[path][method]["operationId"],
                                     "parameters": {f"{where}.session_id": "$response.body#/session_id"}}
        for path, method, where in (("/session/{session_id}", "get", "path"),
                                    ("/session/{session_id}", "delete", "path"), ("/infer/{model}", "post", "query"))}
    return doc


def test_sessions_created_and_used_statefully(models, scratch):
    """MONAI Label's sessions as a client uses them (schemathesis' state machine over the links above): a session
    made from a real scan, then read, used for inference and deleted, in seeded random orders with fuzzed
    parameters; every answer checked as in the stateless runs."""
    from fastapi.testclient import TestClient
    from hypothesis import settings as hsettings

    app = zoo_app.create_app(models, token=TOKEN, max_upload_mb=0.25, timeout=TIMEOUT, explain=False)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    doc = TestClient(app).get("/openapi.json", headers=auth).json()
    if "/session/" not in doc["paths"]:
        pytest.skip("the MONAI Label routes are not published")
    schema = schemathesis.openapi.from_dict(_with_session_links(doc))
    schema.app = app
    scan, keep, seen = four_channel_nifti(), _session_root(app), []

    class Client(schema.as_state_machine()):
        def call(self, case, **kwargs):
            if case.meta.generation.mode == GenerationMode.POSITIVE:
                if case.operation.label == "PUT /session/":  # a real scan, so the session exists
                    kwargs["files"] = {"files": ("scan.nii.gz", scan, "application/gzip")}
                if case.operation.label == "POST /infer/{model}":
                    case.path_parameters["model"] = "unet-tiny"
            self.before = _files(scratch, keep)
            return super().call(case, headers=auth, **kwargs)

        def validate_response(self, response, case, **kwargs):
            seen.append((case.operation.label, response.status_code))
            # the case's own validation: the machine's would pass excluded_checks on to the transport
            case.validate_response(response, excluded_checks=[positive_data_acceptance], headers=auth)
            left = _files(scratch, keep) - self.before
            assert not left, f"{case.operation.label}: files left after the response: {sorted(left)}"

    Client.TestCase.settings = hsettings(max_examples=max(N // 2, 12), stateful_step_count=5, derandomize=True,
                                         deadline=None, database=None, suppress_health_check=list(HealthCheck))
    Client.TestCase().runTest()
    print(len(seen), "calls:", sorted(set(seen)))
    assert all(s < 500 for _, s in seen), seen
    assert ("PUT /session/", 200) in seen, seen
    used = {label for label, s in seen if s == 200 and "session_id" in label}
    assert used, f"no session was used after it was made: {sorted(set(seen))}"
