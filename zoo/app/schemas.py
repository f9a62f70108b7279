"""The JSON API's request and response models (pydantic): what ``/docs`` shows and what the routes return."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

__all__ = ["Health", "ModelInfo", "Download", "Display", "SegmentResult", "OutcomeRequest", "Shap", "SurvivalCurve",
           "OutcomeResult"]


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
