"""Moved to :mod:`zoo.outcome.tasks` (issue 31). This alias goes once ``zoo/training/setup.py`` imports
``OUTCOME_LOSSES`` from there; import from :mod:`zoo.outcome.tasks`."""

from __future__ import annotations

from zoo.outcome.tasks import OUTCOME_LOSSES, OutcomeTask, outcome_loss

__all__ = ["OutcomeTask", "OUTCOME_LOSSES", "outcome_loss"]
