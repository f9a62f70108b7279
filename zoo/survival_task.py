"""Moved to :mod:`zoo.outcome.tasks` (issue 31). This alias goes once ``zoo/training/setup.py`` imports
``SURVIVAL_LOSSES`` from there; import from :mod:`zoo.outcome.tasks`."""

from __future__ import annotations

from zoo.outcome.tasks import SURVIVAL_LOSSES, SurvivalTask, cox_efron_loss, logistic_hazard_loss

__all__ = ["SurvivalTask", "SURVIVAL_LOSSES", "cox_efron_loss", "logistic_hazard_loss"]
