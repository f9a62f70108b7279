"""Metric arithmetic of medzoo: a leaf package (numpy, scipy, jax, scikit-learn; nothing of this project).

Both ``zoo`` (training-time Dice) and ``eval`` (reports, analyses) import it, so it must never import
either. One concept per module:

  * :mod:`scoring.overlap`: confusion counts, Dice/Jaccard/…, confusion matrices, jittable twins.
  * :mod:`scoring.surface`: surface distances (computed once per pair) and HD / HD95 / ASSD / surface Dice.
  * :mod:`scoring.ranking`: AUC-ROC and AUPRC of probabilities.
  * :mod:`scoring.binary`: metric-name tables and ``binary_metrics`` (many metrics of one pair).
  * :mod:`scoring.regions`: BraTS regions (WT/TC/ET) as masks or channels, and their metrics.
  * :mod:`scoring.instance`: instance-level metrics (COCO AP, per-instance Dice, FROC).
  * :mod:`scoring.outcome`: patient-level outcome metrics of class probabilities.
  * :mod:`scoring.survival`: time-to-event metrics (Harrell/Uno C, time-dependent AUC, IPCW Brier/IBS, KM).
  * :mod:`scoring.calibration`: binary calibration (Brier, ECE, curve), DeLong's test, net benefit; voxels'
    top-label reliability (histogram ECE) and temperature scaling.
  * :mod:`scoring.conformal`: conformal risk control of the missed-lesion fraction (a threshold with a guarantee).

Conventions of each family are in its module's docstring.
"""

from __future__ import annotations

from scoring.binary import CONFUSION_METRICS, METRICS, SURFACE_METRICS, binary_metrics
from scoring.instance import (COCO_THRESHOLDS, FROC_RATES, average_precision, froc, gt_objects,
                              instance_metrics, mask_iou, per_instance_dice)
from scoring.outcome import outcome_metrics
from scoring.overlap import (accuracy, accuracy_jax, confusion_counts, confusion_counts_jax, confusion_matrix,
                             confusion_matrix_jax, dice, dice_jax, dice_per_class, dice_per_class_np, f1, f1_jax,
                             jaccard, jaccard_jax, per_class_metrics, precision, precision_jax, sensitivity,
                             sensitivity_jax, specificity, specificity_jax, volume_similarity,
                             volume_similarity_jax)
from scoring.ranking import auc_roc, auprc
from scoring.regions import (BRATS_REGIONS, brats_region_channels, brats_region_dice_jax, brats_region_metrics,
                             brats_regions)
from scoring.calibration import (ReliabilityHistogram, brier_binary, calibration_binary, calibration_curve,
                                 delong_test, expected_calibration_error, fit_temperature, net_benefit)
from scoring.conformal import conformal_threshold, empirical_risk, miss_fraction
from scoring.survival import (brier_score, calibration_at_horizon, concordance_index_censored,
                              concordance_index_ipcw, cox_calibration_slope, cumulative_dynamic_auc,
                              integrated_brier_score, kaplan_meier, kaplan_meier_at, surv_array)
from scoring.surface import (DISTANCE_METRIC_NAMES, SURFACE_METRIC_NAMES, assd, bounding_box, check_spacing,
                             distance_to_surface, hausdorff, hd95, reduce_surface_distances, surface_dice,
                             surface_distances, surface_mask, surface_metrics)

__all__ = [
    # overlap
    "dice", "dice_per_class", "dice_per_class_np",
    "jaccard", "accuracy", "sensitivity", "specificity", "precision", "f1", "volume_similarity",
    "confusion_counts", "confusion_counts_jax", "confusion_matrix", "confusion_matrix_jax",
    "dice_jax", "jaccard_jax", "accuracy_jax", "sensitivity_jax", "specificity_jax", "precision_jax",
    "f1_jax", "volume_similarity_jax", "per_class_metrics",
    # surface
    "hausdorff", "hd95", "assd", "surface_dice", "check_spacing", "bounding_box", "surface_mask",
    "distance_to_surface",
    "surface_distances", "reduce_surface_distances", "surface_metrics", "SURFACE_METRIC_NAMES",
    "DISTANCE_METRIC_NAMES",
    # ranking
    "auc_roc", "auprc",
    # tables
    "CONFUSION_METRICS", "SURFACE_METRICS", "METRICS", "binary_metrics",
    # regions
    "BRATS_REGIONS", "brats_regions", "brats_region_channels", "brats_region_metrics", "brats_region_dice_jax",
    # instance
    "mask_iou", "gt_objects", "average_precision", "per_instance_dice", "froc", "instance_metrics",
    "FROC_RATES", "COCO_THRESHOLDS",
    # outcome
    "outcome_metrics",
    # survival
    "surv_array", "kaplan_meier", "concordance_index_censored", "concordance_index_ipcw", "cumulative_dynamic_auc",
    "brier_score", "integrated_brier_score", "calibration_at_horizon", "cox_calibration_slope", "kaplan_meier_at",
    # binary calibration and comparison
    "brier_binary", "calibration_binary", "calibration_curve", "expected_calibration_error", "delong_test",
    "net_benefit",
]
