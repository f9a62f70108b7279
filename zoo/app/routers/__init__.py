"""The application's routers: ``page`` (the clinician page, ``GET /``) and ``api`` (the JSON API under ``/api``).
Routes only parse and validate, then call ``zoo.app.services``."""
