"""Instance-level metrics: COCO-style AP, per-instance Dice, FROC (numpy; any spatial rank).

Inputs, per case:
  * prediction: ``{"masks": [D, *S] bool (or probabilities, thresholded at 0.5), "scores": [D],
    "classes": [D]}`` — extra keys are ignored; entries with ``valid == False`` are dropped when a
    ``"valid"`` key is present (padded detector outputs).
  * target: ``{"instances": [*S] int}`` (0 = none, one id per object) and optionally
    ``"label": [*S] int``; an object's class is the most frequent non-zero label inside it (1
    without labels).

Conventions (chosen and stated):
  * Overlap is **mask IoU** (so 2D and 3D work alike).
  * AP follows COCO: per class and IoU threshold, detections sorted by score greedily match the
    unmatched ground truth with the highest IoU ≥ threshold; precision is made monotone and read at
    101 recall points; classes without ground truth are left out (NaN when no class has any).
    ``mAP`` averages thresholds 0.50:0.05:0.95.
  * Per-instance Dice: each ground-truth object against the predicted mask overlapping it most
    (any class, score ≥ ``score_threshold``); a missed object counts 0.
  * FROC (LUNA16 style): a detection hits an object when its mask centroid lies inside it; later
    detections on an already-hit object are ignored (neither hit nor false positive); sensitivity
    is read at 1/8, 1/4, 1/2, 1, 2, 4, 8 false positives per scan; ``cpm`` is their mean.
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
    order = np.argsort(-scores, kind="stable")
    tp = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / num_gt
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    out = 0.0
    for r in np.linspace(0, 1, 101):
        i = np.searchsorted(recall, r, side="left")
        out += precision[i] if i < len(precision) else 0.0
    return out / 101


def _ap_from_cases(cases, threshold: float) -> float:
    classes = sorted(set(int(c) for case in cases for c in case[4]))
    aps = []
    for c in classes:
        tps, scs, num_gt = [], [], 0
        for pm, ps, pc, gm, gc, iou in cases:
            d = np.flatnonzero(pc == c)
            g = np.flatnonzero(gc == c)
            num_gt += len(g)
            d = d[np.argsort(-ps[d], kind="stable")]
            used = np.zeros(len(g), bool)
            for j in d:
                tp = False
                if len(g):
                    cand = np.where(used, -1.0, iou[j, g])
                    k = int(np.argmax(cand))
                    if cand[k] >= threshold:
                        used[k] = tp = True
                tps.append(tp)
                scs.append(ps[j])
        aps.append(_ap_101(np.asarray(tps, bool), np.asarray(scs, np.float64), num_gt))
    return float(np.mean(aps)) if aps else float("nan")


def average_precision(predictions, targets, thresholds=COCO_THRESHOLDS) -> dict:
    """COCO-style AP per IoU threshold → ``{"mAP", "AP50", "AP75", "per_threshold": {t: ap}}``."""
    cases = _prepare(predictions, targets)
    per = {float(t): _ap_from_cases(cases, float(t)) for t in thresholds}
    return {"mAP": float(np.mean(list(per.values()))), "AP50": per.get(0.5, float("nan")),
            "AP75": per.get(0.75, float("nan")), "per_threshold": per}


def per_instance_dice(predictions, targets, score_threshold: float = 0.5) -> dict:
    """Dice of every ground-truth object with its best-overlapping prediction → mean and list."""
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


def froc(predictions, targets, rates=FROC_RATES) -> dict:
    """Sensitivity at ``rates`` false positives per scan → ``{"sensitivity": {rate: s}, "cpm": mean}``."""
    cases = _prepare(predictions, targets)
    events = []  # (score, case, gt index or -1)
    total_gt = 0
    for ci, (pm, ps, _, gm, _, _) in enumerate(cases):
        total_gt += len(gm)
        for j in range(len(pm)):
            hit = -1
            if pm[j].any() and len(gm):
                centre = tuple(np.round(np.mean(np.nonzero(pm[j]), axis=1)).astype(int))
                inside = np.flatnonzero(gm[(slice(None),) + centre])
                hit = int(inside[0]) if len(inside) else -1
            events.append((ps[j], ci, hit))
    events.sort(key=lambda e: -e[0])
    hit_set, fp, curve = set(), 0, [(0.0, 0.0)]
    for _, ci, g in events:
        if g < 0:
            fp += 1
        elif (ci, g) not in hit_set:
            hit_set.add((ci, g))
        curve.append((fp / len(cases), len(hit_set) / total_gt if total_gt else float("nan")))
    sens = {}
    for r in rates:
        ok = [s for f, s in curve if f <= r]
        sens[float(r)] = float(max(ok)) if ok else 0.0
    return {"sensitivity": sens, "cpm": float(np.mean(list(sens.values()))), "num_scans": len(cases),
            "num_objects": total_gt}


def instance_metrics(predictions, targets, score_threshold: float = 0.5) -> dict:
    """All of the above in one dict: ``mAP``, ``AP50``, ``AP75``, ``dice_per_instance``, ``froc``, ``cpm``."""
    ap = average_precision(predictions, targets)
    fr = froc(predictions, targets)
    return {"mAP": ap["mAP"], "AP50": ap["AP50"], "AP75": ap["AP75"],
            "dice_per_instance": per_instance_dice(predictions, targets, score_threshold)["mean"],
            "froc": fr["sensitivity"], "cpm": fr["cpm"]}
