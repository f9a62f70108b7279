"""The outcome home: predicting a patient's outcome after surgery from images and covariates.

Vocabulary: the **outcome** is what is predicted, with two kinds of target, a **classification** (a binary or
K-class outcome such as a 30-day complication: task ``outcome``) and a **survival** time to event (time and
event, censored: task ``survival``); **covariates** are a patient's clinical (EHR) variables; a **cohort** is a
table of patients.

* :mod:`zoo.outcome.cohorts`: cohorts from CSV/Parquet files and the bundled Rotterdam / GBSG cohorts;
* :mod:`zoo.outcome.tasks`: the two training tasks (losses, predictions) on the outcome net;
* :mod:`zoo.outcome.survival`: the survival heads' models (train, Breslow baseline / interval edges, reload);
* :mod:`zoo.outcome.baselines`: the classical baselines (the one logistic regression; Cox, random survival
  forest, gradient-boosted Cox);
* :mod:`zoo.outcome.run`: the outcome net's comparison run on the phantom cohort; ``python -m zoo.outcome``
  (``__main__``) is its command line;
* the model, ``outcome_net`` / ``outcome_net_survival``, stays in the model registry (``zoo.models.outcome``);
  the report that fits and compares survival models is a study, ``python -m eval.studies.outcome_report``.

The one covariate encoder is :class:`data_pipelines.covariates.CovariateEncoder`, not a module here: the
phantom outcome data (``data_pipelines.outcome_data``, the ``outcome_phantoms`` data set the trainer loads)
encodes its covariates with it, and ``data_pipelines`` may not import ``zoo``; this home uses the same one.
This ``__init__`` imports nothing, so the training core can import :mod:`zoo.outcome.tasks` without pulling
in the modules that drive the training core.
"""
