"""A model's calibration record: the softmax temperature fitted on validation cases (and, when fitted, a
conformal threshold), stored beside the model as ``calibration.json``.

The file lives in the model's folder: a model-store entry (``zoo.store``) or a run's work directory (a path
to its ``checkpoints/`` or ``best/`` folder means the run around it). Fields: ``temperature`` (> 0; prediction
divides each window's logits by it before the softmax, ``zoo.prediction.predict_case_proba``), ``method``, and
whatever the fitting step adds (the validation cases it used, NLL and ECE before/after, a ``conformal``
record ``{"alpha", "threshold", "n"}``). A model without the file is used as trained (temperature ``None``).
It is written atomically (``data_pipelines.atomic``); a damaged or out-of-range file is one ``ValueError``
naming it.
"""

from __future__ import annotations

import json
import math
import os

from data_pipelines.atomic import write_json
from zoo import store

__all__ = ["CALIBRATION_FILE", "model_folder", "save_calibration", "load_calibration", "model_temperature"]

CALIBRATION_FILE = "calibration.json"


def model_folder(name_or_path: str) -> str:
    """The folder of a model-store name or a run path (``…/checkpoints`` and ``…/best`` mean their run)."""
    path = os.path.abspath(store.resolve(name_or_path))
    if os.path.isfile(path):
        path = os.path.dirname(path)
    if os.path.basename(path) in ("checkpoints", "best"):
        path = os.path.dirname(path)
    return path


def _temperature(value, where: str) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"{where}: temperature must be a finite number > 0, got {value!r}")
    return t


def save_calibration(name_or_path: str, temperature: float, **fields) -> str:
    """Write ``calibration.json`` (``temperature`` + ``fields``) into the model's folder; returns its path."""
    path = os.path.join(model_folder(name_or_path), CALIBRATION_FILE)
    record = {"temperature": _temperature(temperature, path),
              "method": "temperature scaling: the scalar T minimising the validation NLL of softmax(logits / T)",
              **fields}
    write_json(path, record)
    return path


def load_calibration(name_or_path: str) -> dict | None:
    """The model's calibration record, or ``None`` when it has none."""
    path = os.path.join(model_folder(name_or_path), CALIBRATION_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot read the calibration record ({e})") from None
    if not isinstance(record, dict) or "temperature" not in record:
        raise ValueError(f"{path}: a calibration record is a JSON object with a 'temperature'")
    record["temperature"] = _temperature(record["temperature"], path)
    return record


def model_temperature(name_or_path: str) -> float | None:
    """The stored temperature of the model, ``None`` when it has no calibration record."""
    record = load_calibration(name_or_path)
    return None if record is None else record["temperature"]
