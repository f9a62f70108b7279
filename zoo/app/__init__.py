"""The clinician application: one page and a JSON API over the model store (FastAPI's "bigger applications"
layout: routers -> services -> the library). ``python -m zoo.serve`` runs it.

* ``application.create_app``: the app (routers, guard, state);
* ``routers/``: ``page`` (``GET /``: ``static/index.html`` with ``static/app.js``), ``api`` (``/api/...``) and
  ``monailabel`` (the MONAI Label protocol 3D Slicer speaks: ``/info/``, ``/session/``, ``/datastore/``,
  ``/infer/``, ``/train/``, ``/auth/``);
* ``dependencies``: the server's state, the named model, the services' exceptions as HTTP answers;
* ``middleware``: the bearer token and the upload limit (pure ASGI);
* ``schemas``: the API's pydantic models; ``openapi``: the published document declaring every error answer;
* ``services/``: uploads, served models, model loading, segmentation, outcome, the PDF summary, the worker pool,
  and for the MONAI Label routes the sessions, the label-map answer and the credentials (plain functions the routes and the tests call), predicting through ``zoo.prediction`` and explaining through
  ``zoo.explain``.

Imported here: what callers of the application use (tests, benchmarks, ``zoo.serve``).
"""

from __future__ import annotations

from zoo.app.application import create_app
from zoo.app.services.loading import load_model, load_models
from zoo.app.services.outcome import CURVE_POINTS, outcome
from zoo.app.services.segmentation import segment
from zoo.app.services.served import ServedModel, phantom_sample

__all__ = ["create_app", "load_model", "load_models", "ServedModel", "phantom_sample", "segment", "outcome",
           "CURVE_POINTS"]
