"""The MONAI Label protocol, as 3D Slicer's MONAI Label module speaks it (Project-MONAI/MONAILabel:
``monailabel/endpoints/`` and ``plugins/slicer/MONAILabel/MONAILabelLib/client.py``), over the served segmentation
models:

* ``GET /info/``: the app (``name``, ``description``, ``version``, ``labels``), ``models`` of type
  ``segmentation`` with their ``labels`` ``{name: id}`` and ``dimension``; no ``trainers`` or ``strategies``;
* ``PUT /session/`` (multipart ``files``, query ``expiry``), ``GET`` / ``DELETE /session/{id}``: an image kept on
  the server for later inferences;
* ``POST /infer/{model}`` (query ``image`` (a datastore image or session id), ``session_id``, ``output``
  ``image|json|all|dicom_seg``; form ``params`` (JSON: ``result_extension``, ``result_dtype``) and an optional
  ``file``): the label map in the upload's geometry; ``output=all`` (or none) a ``multipart/form-data`` answer
  with the ``params`` JSON and the ``image`` file, as MONAI Label answers; ``dicom_seg`` a DICOM SEG of an
  uploaded DICOM series (``application/dicom``);
* ``GET /datastore/``, ``PUT /datastore/`` (``/datastore/image``): what the module does when it segments a volume
  loaded in Slicer (upload it under the volume's name, then infer on that name); labels are not kept;
* ``GET /train/`` (404: no training task, the module reads it as "not running"), ``POST`` / ``DELETE /train/``;
* ``GET /auth/``, ``POST /auth/token`` (form ``username``, ``password``), ``GET /auth/token/valid``.

Routes check what they were sent and run the services (``zoo.app.services.sessions``, ``labelmap``) in the worker
pool; errors are one-line JSON ``{"detail": ...}`` (``zoo.app.dependencies.http_errors``).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import tempfile
import uuid
from enum import Enum
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response

from zoo.app.dependencies import ServerState, http_errors, served_model, server_state
from zoo.app.services.credentials import check_credentials
from zoo.app.services.labelmap import describe_upload, label_ids, segment_to_file
from zoo.app.services.sessions import SessionInfo, SessionStore
from zoo.app.services.uploads import ACCEPTED_SUFFIXES, save_upload

__all__ = ["router", "ResultType"]

router = APIRouter(tags=["MONAI Label (3D Slicer)"])
NOT_SAVED = "this server keeps no labels: save the segmentation in 3D Slicer (File > Save)"


_FILE = {"schema": {"type": "string", "format": "binary"}}
INFER_ANSWERS = {200: {"description": "output=all (or none): the params JSON and the label map as multipart parts; "
                                      "output=json: the params; output=image: the label map",
                       "content": {"multipart/form-data": {"schema": {"type": "object", "properties": {
                           "params": {"type": "string"}, "image": {"type": "string", "format": "binary"}}}},
                                   "application/json": {"schema": {"type": "object"}},
                                   "application/octet-stream": _FILE, "application/dicom": _FILE}}}
SESSION_ANSWERS = {200: {"description": "the session's info, or its image with image=true",
                         "content": {"application/json": {"schema": {"type": "object"}},
                                     "application/octet-stream": _FILE}}}


class ResultType(str, Enum):
    image = "image"
    json = "json"
    all = "all"
    dicom_seg = "dicom_seg"


def session_store(request: Request) -> SessionStore:
    """The application's store of uploaded images (``app.state.sessions``)."""
    return request.app.state.sessions


def _version() -> str:
    try:
        return importlib.metadata.version("medzoo")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _segmentation_models(state: ServerState) -> dict:
    return {n: m for n, m in sorted(state.models.items()) if m.task == "segmentation"}


def _description(m) -> str:
    card, d = m.card or {}, m.data
    about = card.get("summary") or card.get("description") or (
        f"{card.get('model', m.name)} trained on {(card.get('data') or {}).get('name', '?')}")
    use = f"; intended use: {card['intended_use']}" if card.get("intended_use") else ""
    return f"{about}; input channels: {', '.join(d['channel_names'])}{use}"


@router.get("/info/")
async def info(state: ServerState = Depends(server_state), store: SessionStore = Depends(session_store)):
    models = {name: {"type": "segmentation", "labels": label_ids(m), "dimension": int(m.data["spatial_dims"]),
                     "description": _description(m), "config": {}}
              for name, m in _segmentation_models(state).items()}
    labels: list = []
    for model in models.values():
        labels += [n for n in sorted(model["labels"], key=model["labels"].get) if n not in labels]
    return {"name": "medzoo", "description": "medzoo segmentation models (python -m zoo.serve)",
            "version": _version(), "labels": labels, "models": models, "trainers": {}, "strategies": {},
            "scoring": {}, "train_stats": {}, "datastore": _datastore_stats(store)}


# ------------------------------------------------------------------------------------------------ sessions

def _local_name(upload: UploadFile) -> UploadFile:
    """``upload`` named by the last part of its file name: the module's client sends its local path
    (``/tmp/.../tmpab12.nrrd``) as the file name, and only the suffix matters here (the server names its files)."""
    if upload.filename:
        upload.filename = upload.filename.replace("\\", "/").rsplit("/", 1)[-1]
    return upload


async def _store_upload(upload: UploadFile, state: ServerState, store: SessionStore, *, expiry: int = 0,
                        name: str | None = None, client_id: str | None = None) -> SessionInfo:
    """Save ``upload`` in a new entry of ``store``, read it once (a file that is not an image is refused here)."""
    _local_name(upload)
    sid, folder = store.reserve()
    try:
        with http_errors(state.timeout):
            path, suffix = await save_upload(upload, folder, "image", state.max_upload_mb)
            meta = await state.pool.run(describe_upload, path, suffix, f"upload {upload.filename!r}",
                                        state.max_upload_mb)
        return store.commit(sid, os.path.basename(path), suffix, meta, expiry=expiry, datastore_name=name,
                            client_id=client_id)
    except BaseException:
        store.discard(sid)
        raise


def _session(store: SessionStore, session_id: str, update_ts: bool = True) -> SessionInfo:
    info = store.get(session_id, update_ts=update_ts)
    if info is None:
        raise HTTPException(404, f"session {session_id!r} not found (unknown, deleted or expired: a session lasts "
                                 f"at most {store.max_expiry} s after its last use)")
    return info


@router.put("/session/")
async def create_session(files: list[UploadFile] = File(...), expiry: int = 0, uncompress: bool = False,
                         state: ServerState = Depends(server_state), store: SessionStore = Depends(session_store)):
    # uncompress: a .zip (a DICOM series, an .mhd with its .raw) is always read as an archive here
    if len(files) != 1:
        raise HTTPException(400, f"send one image file in 'files' (a DICOM series as one .zip); got {len(files)}")
    info = await _store_upload(files[0], state, store, expiry=expiry)
    return {"session_id": info.name, "session_info": info.to_json()}


@router.get("/session/{session_id}", responses=SESSION_ANSWERS)
async def get_session(session_id: str, update_ts: bool = False, image: bool = False,
                      store: SessionStore = Depends(session_store)):
    info = _session(store, session_id, update_ts)
    if image:
        return FileResponse(store.path(info), media_type="application/octet-stream", filename=info.image)
    return info.to_json()


@router.delete("/session/{session_id}")
async def remove_session(session_id: str, store: SessionStore = Depends(session_store)):
    info = _session(store, session_id, update_ts=False)
    store.discard(info.name)
    return info.to_json()


# ------------------------------------------------------------------------------------------------ inference

def _params(text: str) -> dict:
    try:
        p = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise HTTPException(400, f"params: not JSON ({e})") from None
    if not isinstance(p, dict):
        raise HTTPException(400, f"params: expected a JSON object, got {type(p).__name__}")
    return p


def _client_id(params: dict) -> str | None:
    """The ``client_id`` MONAI Label's client adds to every request's params (``None`` when absent)."""
    cid = params.get("client_id")
    return str(cid) if cid is not None else None


def multipart_form(parts: list[tuple[str, Optional[str], str, bytes]]) -> Response:
    """A ``multipart/form-data`` answer of ``parts`` ``(name, filename or None, content type, bytes)``: what
    MONAI Label sends for ``output=all`` (its client parses it with ``cgi.FieldStorage``)."""
    boundary = uuid.uuid4().hex
    body = bytearray()
    for name, filename, ctype, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: {ctype}\r\n\r\n").encode()
        body += data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return Response(bytes(body), media_type=f"multipart/form-data; boundary={boundary}")


@router.post("/infer/{model}", responses=INFER_ANSWERS)
async def infer(model: str, image: str = "", session_id: str = "", output: Optional[ResultType] = None,
                params: str = Form("{}"), file: Optional[UploadFile] = File(None),
                state: ServerState = Depends(server_state), store: SessionStore = Depends(session_store)):
    m = served_model(state, model, ("segmentation",))
    p = _params(params)
    folder = tempfile.mkdtemp(prefix="zoo-infer-")
    try:
        with http_errors(state.timeout):
            if session_id:
                entry = _session(store, session_id)
                source = (store.path(entry), entry.suffix, f"session {session_id}")
            elif file is not None:
                path, suffix = await save_upload(_local_name(file), folder, "upload", state.max_upload_mb)
                source = (path, suffix, f"upload {file.filename!r}")
            elif image:
                entry = store.find(image, _client_id(p))
                if entry is None:
                    raise HTTPException(404, f"image {image!r} not found: upload it first (PUT /datastore/ or "
                                             f"PUT /session/), or send it as 'file'")
                source = (store.path(entry), entry.suffix, f"image {image!r}")
            else:
                raise HTTPException(400, "send an image id ('image'), a 'session_id' or a 'file'")
            path, suffix, label = source
            result, res_params = await state.pool.run(segment_to_file, m, path, suffix, folder, p, label,
                                                      dicom_seg=output == ResultType.dicom_seg,
                                                      max_upload_mb=state.max_upload_mb)
        with open(result, "rb") as f:
            data = f.read()
    finally:
        if not state.keep:
            shutil.rmtree(folder, ignore_errors=True)
    name = os.path.basename(result)
    if output == ResultType.json:
        return JSONResponse(res_params)
    if output in (ResultType.image, ResultType.dicom_seg):
        media = "application/dicom" if output == ResultType.dicom_seg else "application/octet-stream"
        return Response(data, media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return multipart_form([("params", None, "application/json", json.dumps(res_params).encode()),
                           ("image", name, "application/octet-stream", data)])


# ------------------------------------------------------------------------------------------------ datastore

def _datastore_stats(store: SessionStore) -> dict:
    return {"total": len(store.datastore()), "completed": 0, "label_tags": {}}


@router.get("/datastore/")
async def datastore(output: str = Query("stats", pattern="^(stats|all|train)$"),
                    store: SessionStore = Depends(session_store)):
    if output == "stats":
        return _datastore_stats(store)
    if output == "train":
        return []  # image + label pairs: this server keeps no labels
    objects = {}
    for i in store.datastore():  # a name two clients use is listed once per client
        key = i.datastore_name if i.datastore_name not in objects else f"{i.datastore_name} ({i.client_id})"
        objects[key] = {"image": {"id": i.datastore_name, "ext": i.suffix,
                                  "info": {**i.meta, "ts": i.create_ts, "client_id": i.client_id}}, "labels": {}}
    return {"name": "medzoo uploads", "description": f"images uploaded for inference, kept at most "
                                                     f"{store.max_expiry} s after their last use", "objects": objects}


@router.put("/datastore/")
@router.put("/datastore/image")
async def add_image(image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...),
                    state: ServerState = Depends(server_state), store: SessionStore = Depends(session_store)):
    cid = _client_id(_params(params))
    name = image
    if name is None:  # MONAI Label's default id: the file's name without its suffix
        base = _local_name(file).filename or ""
        name = next((base[:-len(s)] for s in ACCEPTED_SUFFIXES if base.lower().endswith(s)), base)
    if not name or len(name) > 255 or not name.isprintable():
        raise HTTPException(400, "image: give a printable image id of 1..255 characters (query 'image')")
    info = await _store_upload(file, state, store, name=name, client_id=cid)
    return {"image": name, "session_id": info.name}


@router.put("/datastore/label")
async def save_label():
    raise HTTPException(400, NOT_SAVED)


# ------------------------------------------------------------------------------------------------ training

@router.get("/train/")
async def train_status(all: bool = False, check_if_running: bool = False):
    what = "are currently Running" if check_if_running else "Found"
    return JSONResponse({"detail": f"No Train Tasks {what} (this server serves trained models only; train with "
                                   f"python -m zoo.train)"}, status_code=404)


@router.post("/train/")
async def train_all():
    return {}  # one result per trainer, as MONAI Label answers; there are none


@router.post("/train/{model}")
async def train_model(model: str):
    raise HTTPException(404, f"no trainer {model!r}: this server serves trained models only (train with "
                             f"python -m zoo.train)")


@router.delete("/train/")
async def train_stop():
    return {}


# ------------------------------------------------------------------------------------------------ auth

@router.get("/auth/")
async def auth_enabled(request: Request):
    return {"enabled": request.app.state.token is not None, "client_id": None, "realm": None}


@router.post("/auth/token")
async def auth_token(request: Request, username: str = Form(...), password: str = Form(...),
                     grant_type: Optional[str] = Form(None)):
    token = request.app.state.token
    if token is None:
        return {"access_token": None, "token_type": None}  # MONAI Label's answer with authentication disabled
    if not check_credentials(request.app.state.credentials, username, password):
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    return {"access_token": token, "token_type": "bearer"}


@router.get("/auth/token/valid")
async def auth_token_valid(request: Request):
    # the guard let the request through: the token is valid (or none is configured)
    enabled = request.app.state.token is not None
    return {"username": "medzoo", "email": None, "name": "bearer token" if enabled else "anonymous",
            "roles": ["user"]}
