"""Evaluation: reports on ``scoring``'s metrics, error and subgroup analysis, and the studies.

Library modules: ``cases`` (a run's split, structures, inputs), ``streaming`` (per-case accumulation),
``bootstrap`` (the one bootstrap), ``checkpoints`` (evaluate a run's checkpoint through the store and the
prediction path), ``tables`` (the report's tables and files), ``error_analysis``, ``folders`` (label-map folders
against references), ``deltas`` (the one paired-delta table). Command lines, imported by nothing:
``python -m eval.report``, ``eval.analysis``, ``eval.evaluate``, ``eval.interpret``. ``eval.studies``: the
studies that train models (the paper table, ablations, the outcome report), which may drive the training core.
"""
