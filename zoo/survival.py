"""Moved to :mod:`zoo.outcome.survival` (issue 31). This alias goes once the application
(``zoo/app/services``) imports ``SurvivalModel`` from there; import from :mod:`zoo.outcome.survival`."""

from __future__ import annotations

from zoo.outcome.survival import (HEADS, SURVIVAL_FILE, SurvivalModel, breslow, discretise, fit_deep_survival,
                                  survival_config, time_bins)

__all__ = ["survival_config", "time_bins", "discretise", "breslow", "fit_deep_survival", "SurvivalModel",
           "HEADS", "SURVIVAL_FILE"]
