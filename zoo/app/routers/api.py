"""The JSON API (OpenAPI at ``/docs``): ``GET /api/health``, ``GET /api/models``, ``POST /api/segment``
(multipart), ``POST /api/outcome`` (JSON). Each route checks what it was sent, then runs a service in the worker
pool (``zoo.app.dependencies.http_errors`` turns the services' exceptions into 4xx/5xx answers)."""

from __future__ import annotations

import shutil
import tempfile
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile

from zoo.app.dependencies import ServerState, http_errors, served_model, server_state
from zoo.app.schemas import Health, ModelInfo, OutcomeRequest, OutcomeResult, SegmentResult
from zoo.app.services import outcome as outcome_service
from zoo.app.services import segmentation
from zoo.app.services.served import default_models, model_info
from zoo.app.services.uploads import save_upload

__all__ = ["router"]

router = APIRouter(prefix="/api")


@router.get("/health", response_model=Health)
async def health(state: ServerState = Depends(server_state)):
    return Health(status="ok", models=sorted(state.models), pending=state.pool.pending)


@router.get("/models", response_model=list[ModelInfo])
async def list_models(state: ServerState = Depends(server_state)):
    defaults = default_models(state.models)
    return [ModelInfo(**model_info(m, m.name in defaults)) for m in state.models.values()]


@router.post("/segment", response_model=SegmentResult)
async def segment(model: str = Form(..., min_length=1), file: Optional[UploadFile] = File(None),
                  sample: Optional[int] = Form(None), reference: Optional[UploadFile] = File(None),
                  tta: bool = Form(False), gradcam: bool = Form(True), pdf: bool = Form(True),
                  seg: Optional[bool] = Form(None, description="the DICOM SEG download: default when the input is "
                                             "a DICOM series; true: required (else 400); false: none"),
                  seg_probabilities: bool = Form(False, description="also the class probabilities as a FRACTIONAL "
                                                 "DICOM SEG (a DICOM series input, else 400)"),
                  state: ServerState = Depends(server_state)):
    m = served_model(state, model, ("segmentation", "instance"))
    if (file is None) == (sample is None):
        raise HTTPException(400, "send either a file or a sample number")
    folder = tempfile.mkdtemp(prefix="zoo-serve-")
    try:
        with http_errors(state.timeout):
            upload = ref = None
            if file is not None:
                upload = (*await save_upload(file, folder, "upload", state.max_upload_mb),
                          f"upload {file.filename!r}")
            if reference is not None:
                ref = await save_upload(reference, folder, "reference", state.max_upload_mb)
            return await state.pool.run(segmentation.segment_case, m, folder, upload=upload, sample=sample,
                                        reference=ref, tta=tta, gradcam=gradcam and state.explain, pdf=pdf,
                                        seg=seg, seg_probabilities=seg_probabilities,
                                        max_upload_mb=state.max_upload_mb)
    finally:
        if not state.keep:
            shutil.rmtree(folder, ignore_errors=True)


@router.post("/outcome", response_model=OutcomeResult)
async def outcome(req: OutcomeRequest, state: ServerState = Depends(server_state)):
    m = served_model(state, req.model, ("outcome", "survival"))
    with http_errors(state.timeout):
        return await state.pool.run(outcome_service.outcome, m, dict(req.fields), req.sample,
                                    shap=req.shap and state.explain, horizon=req.horizon)
