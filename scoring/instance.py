"""Instance-level metrics: COCO-style AP, per-instance Dice, FROC (numpy; any spatial rank).

Inputs, per case:
  * prediction: ``{"masks": [D, *S] bool (or probabilities, thresholded at 0.5), "scores": [D],
    "classes": [D]}`` — extra keys are ignored; entries with ``valid == False`` are dropped when a
    ``"valid"`` key is present (padded detector outputs).
  * target: ``{"instances": [*S] int}`` (0 = none, one id per object) and optionally
    ``"label": [*S] int``; an object's class is the most frequent non-zero label inside it (1
    without labels). Objects are taken in increasing instance id.

Conventions (chosen and stated):
  * Overlap is **mask IoU** (so 2D and 3D work alike).
  * AP is pycocotools' ``COCOeval`` (``iouType="segm"``, area range ``all``, no crowd objects),
    step for step: per case and class, detections are sorted by score (stable: input order breaks
    ties) and only the first ``max_dets`` (100) are kept; each, in that order, takes the unmatched
    object of its class with the highest IoU >= the threshold, and of objects with *equal* IoU the
    **last** in instance-id order (pycocotools' loop keeps a later object whose IoU is not lower).
    Per class, the kept detections of all cases are sorted by score (stable, case order first),
    precision ``tp / (tp + fp + eps)`` is made monotone and read at 101 recall points; classes
    without objects are left out (NaN when no class has any). ``mAP`` averages thresholds
    0.50:0.05:0.95. (pycocotools' thresholds are ``np.linspace(0.5, 0.95, 10)``, the same floats
    except 0.8999999999999999 for 0.9; an IoU is a ratio of voxel counts, and none with a union
    below 10^14 voxels rounds between the two, so both match exactly the same pairs.)
  * Per-instance Dice: each ground-truth object against the predicted mask (any class, score >=
    ``score_threshold``) whose Dice with it is highest; an object no prediction overlaps counts 0.
  * FROC (LUNA16 style): a detection hits an object when its mask centroid (rounded to a voxel) lies
    inside it (LUNA16 asks for a candidate within the nodule's radius of its centre; on masks the
    centroid-in-object rule plays that role). An object counts as found at threshold ``τ`` when a
    detection hitting it scores >= ``τ``; a detection hitting no object is a false positive; a
    detection hitting an object is never a false positive (LUNA16 keeps the highest-scoring one and
    ignores the rest). The curve has one point per **distinct** score (tied detections enter
    together, as in the ``roc_curve`` LUNA16 builds on), so it does not depend on the input order.
    Sensitivity at ``r`` false positives per scan is the highest sensitivity of a curve point with at
    most ``r`` false positives per scan: an operating point some threshold achieves (LUNA16's script
    also interpolates linearly between points, which credits sensitivities no threshold gives; we
    do not). Rates 1/8, 1/4, 1/2, 1, 2, 4, 8 by default; ``cpm`` is their mean. With no object in any
    scan (or no scan) sensitivity is undefined: every rate and ``cpm`` are NaN, like AP without objects.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mask_iou", "gt_objects", "average_precision", "per_instance_dice", "froc", "instance_metrics",
           "FROC_RATES", "COCO_THRESHOLDS"]

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
COCO_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boolean masks ``[D, *S] x [G, *S] -> [D, G]`` (0 where both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    a = a.reshape(len(a), int(np.prod(a.shape[1:]))).astype(np.float64)
    b = b.reshape(len(b), int(np.prod(b.shape[1:]))).astype(np.float64)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def gt_objects(target: dict):
    """``(masks [G, *S] bool, classes [G] int)`` of one target dict."""
    if "instances" not in target:
        raise ValueError("target must have 'instances' [*S] int (0 = none)")
    inst = np.asarray(target["instances"])
    ids = np.unique(inst[inst > 0])
    masks = inst[None] == ids.reshape((-1,) + (1,) * inst.ndim)
    label = target.get("label")
    classes = np.ones(len(ids), np.int64)
    if label is not None:
        label = np.asarray(label)
        if label.shape != inst.shape:
            raise ValueError(f"target label {label.shape} must match instances {inst.shape}")
        for i, m in enumerate(masks):
            v = label[m]
            v = v[v > 0]
            if v.size:
                classes[i] = np.bincount(v).argmax()
    return masks, classes


def _pred(pred: dict, shape):
    for k in ("masks", "scores", "classes"):
        if k not in pred:
            raise ValueError(f"prediction must have {k!r}; got keys {sorted(pred)}")
    masks = np.asarray(pred["masks"])
    masks = masks >= 0.5 if masks.dtype != bool else masks
    scores = np.asarray(pred["scores"], np.float64).reshape(-1)
    classes = np.asarray(pred["classes"]).reshape(-1).astype(np.int64)
    if masks.shape[1:] != tuple(shape) or len(masks) != len(scores) or len(scores) != len(classes):
        raise ValueError(f"prediction masks {masks.shape} must be [D, *S] with S={tuple(shape)} and D = "
                         f"len(scores) = {len(scores)} = len(classes) = {len(classes)}")
    keep = np.asarray(pred["valid"], bool).reshape(-1) if "valid" in pred else np.ones(len(scores), bool)
    return masks[keep], scores[keep], classes[keep]


def _prepare(predictions, targets):
    if len(predictions) != len(targets):
        raise ValueError(f"predictions ({len(predictions)}) and targets ({len(targets)}) must pair up per case")
    cases = []
    for p, t in zip(predictions, targets):
        gm, gc = gt_objects(t)
        pm, ps, pc = _pred(p, np.asarray(t["instances"]).shape)
        cases.append((pm, ps, pc, gm, gc, mask_iou(pm, gm)))
    return cases


def _ap_101(tp: np.ndarray, scores: np.ndarray, num_gt: int) -> float:
    """pycocotools' ``accumulate`` for one class and threshold (``tp`` in case order, each case score-sorted)."""
    order = np.argsort(-scores, kind="mergesort")
    tp = tp[order]
    ctp = np.cumsum(tp).astype(np.float64)
    cfp = np.cumsum(~tp).astype(np.float64)
    recall = ctp / num_gt
    precision = ctp / (ctp + cfp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    idx = np.searchsorted(recall, np.linspace(0, 1, 101), side="left")
    q = np.zeros(len(idx))
    reached = idx < len(precision)  # recall points beyond the last detection's recall read precision 0
    q[reached] = precision[idx[reached]]
    return float(np.mean(q))


def _match_case(ps, iou_dg, threshold: float, max_dets: int):
    """``(tp [K] bool, scores [K])`` of one case and class: its first ``max_dets`` detections by score,
    each matched as in pycocotools' ``evaluateImg`` (``iou_dg``: ``[D, G]`` IoU with the class's objects)."""
    order = np.argsort(-ps, kind="mergesort")[:max_dets]
    thr = min(threshold, 1 - 1e-10)
    used = np.zeros(iou_dg.shape[1], bool)
    tp = np.zeros(len(order), bool)
    for n, j in enumerate(order):
        cand = np.where(used, -1.0, iou_dg[j])
        ok = np.flatnonzero(cand >= thr)
        if ok.size:
            best = cand[ok].max()
            k = int(ok[np.flatnonzero(cand[ok] == best)[-1]])  # the last object with the best IoU
            used[k] = tp[n] = True
    return tp, ps[order]


def _ap_from_cases(cases, threshold: float, max_dets: int = 100) -> float:
    classes = sorted(set(int(c) for case in cases for c in case[4]))
    aps = []
    for c in classes:
        tps, scs, num_gt = [], [], 0
        for pm, ps, pc, gm, gc, iou in cases:
            d = np.flatnonzero(pc == c)
            g = np.flatnonzero(gc == c)
            num_gt += len(g)
            tp, sc = _match_case(ps[d], iou[np.ix_(d, g)], threshold, max_dets)
            tps.append(tp)
            scs.append(sc)
        aps.append(_ap_101(np.concatenate(tps), np.concatenate(scs), num_gt))
    return float(np.mean(aps)) if aps else float("nan")


def average_precision(predictions, targets, thresholds=COCO_THRESHOLDS, max_dets: int = 100) -> dict:
    """COCO AP per IoU threshold → ``{"mAP", "AP50", "AP75", "per_threshold": {t: ap}}``.

    ``max_dets``: detections kept per case and class (pycocotools' ``maxDets[-1]``, 100).
    """
    if not isinstance(max_dets, (int, np.integer)) or max_dets < 1:
        raise ValueError(f"max_dets must be a positive int, got {max_dets!r}")
    cases = _prepare(predictions, targets)
    per = {float(t): _ap_from_cases(cases, float(t), int(max_dets)) for t in thresholds}
    return {"mAP": float(np.mean(list(per.values()))), "AP50": per.get(0.5, float("nan")),
            "AP75": per.get(0.75, float("nan")), "per_threshold": per}


def per_instance_dice(predictions, targets, score_threshold: float = 0.5) -> dict:
    """Dice of every ground-truth object with the prediction (score >= ``score_threshold``) of highest Dice with it.

    → ``{"mean", "per_instance"}``; an object without an overlapping prediction counts 0.
    """
    vals = []
    for pm, ps, _, gm, _, _ in _prepare(predictions, targets):
        pm = pm[ps >= score_threshold]
        n = int(np.prod(gm.shape[1:]))
        a = pm.reshape(len(pm), n).astype(np.float64)
        for g in gm.reshape(len(gm), n).astype(np.float64):
            if not len(a):
                vals.append(0.0)
                continue
            inter = a @ g
            vals.append(float(np.max(2 * inter / np.maximum(a.sum(1) + g.sum(), 1e-12))))
    return {"mean": float(np.mean(vals)) if vals else float("nan"), "per_instance": vals}


def _centroid_hit(mask: np.ndarray, gm: np.ndarray) -> int:
    """Index of the object whose mask holds ``mask``'s rounded centroid, or -1 (empty mask: -1)."""
    if not len(gm) or not mask.any():
        return -1
    centre = tuple(np.round(np.mean(np.nonzero(mask), axis=1)).astype(int))
    inside = np.flatnonzero(gm[(slice(None),) + centre])
    return int(inside[0]) if len(inside) else -1


def froc(predictions, targets, rates=FROC_RATES) -> dict:
    """Sensitivity at ``rates`` false positives per scan → ``{"sensitivity": {rate: s}, "cpm": mean, ...}``.

    Also ``"curve"``: ``(thresholds [T], fps_per_scan [T], sensitivity [T])``, one point per distinct
    score, highest first (see the module docstring).
    """
    cases = _prepare(predictions, targets)
    object_scores, fp_scores = [], []  # best hitting score per object (-inf: never hit); false positives
    for pm, ps, _, gm, _, _ in cases:
        best = np.full(len(gm), -np.inf)
        for j in range(len(pm)):
            g = _centroid_hit(pm[j], gm)
            if g < 0:
                fp_scores.append(ps[j])
            else:
                best[g] = max(best[g], ps[j])
        object_scores.append(best)
    object_scores = np.concatenate(object_scores) if object_scores else np.zeros(0)
    fp_scores = np.asarray(fp_scores, np.float64)
    total_gt, n_scans = len(object_scores), len(cases)
    nan = float("nan")
    if total_gt == 0 or n_scans == 0:
        return {"sensitivity": {float(r): nan for r in rates}, "cpm": nan, "num_scans": n_scans,
                "num_objects": total_gt, "curve": (np.zeros(0), np.zeros(0), np.zeros(0))}
    found = np.sort(object_scores[np.isfinite(object_scores)])
    fps_sorted = np.sort(fp_scores)
    thresholds = np.unique(np.concatenate([found, fps_sorted]))[::-1]
    # Counts of scores >= each threshold.
    sens = (len(found) - np.searchsorted(found, thresholds, side="left")) / total_gt
    fpr = (len(fps_sorted) - np.searchsorted(fps_sorted, thresholds, side="left")) / n_scans
    sens_at = {}
    for r in rates:
        ok = sens[fpr <= r]
        sens_at[float(r)] = float(ok.max()) if ok.size else 0.0
    return {"sensitivity": sens_at, "cpm": float(np.mean(list(sens_at.values()))), "num_scans": n_scans,
            "num_objects": total_gt, "curve": (thresholds, fpr, sens)}


def instance_metrics(predictions, targets, score_threshold: float = 0.5) -> dict:
    """All of the above in one dict: ``mAP``, ``AP50``, ``AP75``, ``dice_per_instance``, ``froc``, ``cpm``."""
    ap = average_precision(predictions, targets)
    fr = froc(predictions, targets)
    return {"mAP": ap["mAP"], "AP50": ap["AP50"], "AP75": ap["AP75"],
            "dice_per_instance": per_instance_dice(predictions, targets, score_threshold)["mean"],
            "froc": fr["sensitivity"], "cpm": fr["cpm"]}
