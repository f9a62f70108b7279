"""The outcome home's data families, registered with :mod:`data_pipelines.families` on import: the bundled tabular
cohorts ``rotterdam`` and ``gbsg`` (:mod:`zoo.outcome.cohorts`) and the KiTS layout ``kits``
(:mod:`zoo.outcome.kits`). ``data_pipelines`` may not import ``zoo``, so the ``zoo`` package imports this module:
wherever medzoo's models are used, every family is known by its name (``--dataset gbsg`` gets the tabular
family's own message, not "unknown dataset")."""

from __future__ import annotations

from zoo.outcome import cohorts, kits

__all__ = ["cohorts", "kits"]
