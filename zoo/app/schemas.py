"""The JSON API's request and response models (pydantic): what ``/docs`` shows and what the routes return."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, Field

__all__ = ["Error", "Health", "CardField", "ModelInfo", "Download", "Display", "SegmentResult", "OutcomeRequest",
           "Shap", "SurvivalCurve", "RiskInterval", "OutcomeResult"]


class Error(BaseModel):
    """Every error answer (4xx/5xx) the application gives: one line naming the problem."""

    detail: str

class Health(BaseModel):
    status: str
    models: list[str]
    pending: int

class CardField(BaseModel):
    label: str = Field(description="e.g. intended use, training data, licence, validated metrics, preprocessing")
    value: str

class ModelInfo(BaseModel):
    name: str
    task: str
    exported: bool
    card: dict
    card_fields: list[CardField] = Field([], description="the card as readable fields, in the page's order")
    default: bool = Field(False, description="the page starts on this model (per kind: the first real-data one)")
    real_data: bool = Field(False, description="trained on real data (the card's data set is no phantom)")
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
    entropy_u8: Optional[str] = Field(None, description="[D, H, W] uint8: the predictive entropy / log K, x 255 "
                                      "(the page's uncertainty overlay)")
    entropy_note: str = ""

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
    downloads: dict[str, Download] = Field(description="label_map, overlay_png, summary_json, summary_pdf, "
                                           "entropy_map (+ mutual_information_map with tta), seg_dcm (a DICOM SEG, "
                                           "for a DICOM series input), seg_probabilities_dcm (FRACTIONAL SEG, "
                                           "when asked)")

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
    ci_lower: Optional[list[float]] = Field(None, description="Cox models: pointwise lower bound of S(t) (Breslow "
                                            "baseline variance, level in the outcome's interval)")
    ci_upper: Optional[list[float]] = None
    horizon_ci: Optional[list[float]] = Field(None, description="[lower, upper] of S at the horizon")
    ci_note: str = Field("", description="how ci_lower/ci_upper were made, or why there are none")
    median_time: Optional[float] = Field(None, description="first time with S <= 0.5 (null: not reached)")
    time_unit: str
    head: str = Field(description="cox (Breslow baseline) or hazard (discrete-time logistic hazard)")

class RiskInterval(BaseModel):
    lower: float
    upper: float
    level: float = Field(description="nominal coverage, e.g. 0.95")
    method: str = Field(description="how the interval was made (bootstrap ensemble, Breslow variance...)")
    n_calibration: Optional[int] = Field(None, description="held-out patients the interval was calibrated on")

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
    interval: Optional[RiskInterval] = Field(None, description="the risk's interval (null: none; see interval_note)")
    interval_note: str = Field("", description="how the interval was made and what it leaves out, or why none")
