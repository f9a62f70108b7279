"""The application's services: plain functions the routers call (and the tests), one module per job, over the
library (``zoo.prediction``, ``zoo.explain``, the store).

``uploads`` (accepted files, saving, reading), ``served`` (a served model, its description, phantom samples),
``loading`` (store entries, work directories, exports -> served models, warmed up), ``segmentation`` (one case:
labels, measurements, Grad-CAM, downloads), ``outcome`` (risk or survival curve, SHAP), ``pdf`` (the PDF
summary), ``pool`` (the bounded worker pool).
"""
