"""Evaluation: metrics, reports, ablations, error and subgroup analysis, interpretability."""
