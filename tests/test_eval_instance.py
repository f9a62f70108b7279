"""Instance metrics: AP, per-instance Dice and FROC on hand-built cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from scoring import instance as im


def _square(shape, y, x, s):
    m = np.zeros(shape, bool)
    m[y:y + s, x:x + s] = True
    return m


def _target(*masks, shape=(32, 32)):
    inst = np.zeros(shape, np.int32)
    for i, m in enumerate(masks):
        inst[m] = i + 1
    return {"instances": inst, "label": (inst > 0).astype(np.int32)}


def _pred(masks, scores, classes=None):
    masks = np.stack(masks) if len(masks) else np.zeros((0, 32, 32), bool)
    return {"masks": masks, "scores": np.asarray(scores, np.float32),
            "classes": np.ones(len(scores), np.int32) if classes is None else np.asarray(classes)}


A, B = _square((32, 32), 2, 2, 8), _square((32, 32), 20, 20, 6)


def test_perfect_predictions_score_one():
    t = [_target(A, B), _target(A)]
    p = [_pred([A, B], [0.9, 0.8]), _pred([A], [0.7])]
    r = im.instance_metrics(p, t)
    assert r["mAP"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0)
    assert r["dice_per_instance"] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in r["froc"].values())


AP_CASES = [
    # (description, predictions for the single case with gt {A, B}, expected AP50)
    ("one of two found", [(A, 0.9)], 51 / 101),  # precision 1 at recall points 0..0.5
    # precision 0, then 1/2, 2/3: the monotone envelope is 2/3 at every recall point.
    ("false positive ranked first", [(_square((32, 32), 12, 12, 5), 0.95), (A, 0.9), (B, 0.8)], 2 / 3),
    ("duplicate is a false positive", [(A, 0.9), (A, 0.85), (B, 0.8)], (51 + 50 * 2 / 3) / 101),
    ("nothing predicted", [], 0.0),
]


@pytest.mark.parametrize("name,preds,expected", AP_CASES)
def test_ap50_table(name, preds, expected):
    t = [_target(A, B)]
    p = [_pred([m for m, _ in preds], [s for _, s in preds])]
    ap50 = im.average_precision(p, t, thresholds=(0.5,))["AP50"]
    assert ap50 == pytest.approx(expected, abs=1e-9), name


def test_ap_thresholds_and_partial_overlap():
    shifted = _square((32, 32), 3, 2, 8)  # IoU with A = 56 / 72 = 0.78
    r = im.average_precision([_pred([shifted], [0.9])], [_target(A)])
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(1.0)
    assert r["per_threshold"][0.8] == 0.0
    assert r["mAP"] == pytest.approx(6 / 10)  # thresholds 0.50..0.75 pass, 0.80..0.95 fail


def test_per_instance_dice_and_froc():
    half = _square((32, 32), 2, 2, 8) & (np.arange(32)[None, :] < 6)  # 8x4 of A's 8x8
    p = [_pred([half, _square((32, 32), 12, 12, 4)], [0.9, 0.95]), _pred([], [])]
    t = [_target(A, B), _target(B)]
    d = im.per_instance_dice(p, t)
    np.testing.assert_allclose(d["per_instance"], [2 * 32 / (32 + 64), 0.0, 0.0])
    f = im.froc(p, t)
    # Case 1: FP (0.95) then hit A (0.9); 2 scans → 0.5 FP/scan before the hit. 3 objects.
    assert f["sensitivity"][0.25] == 0.0
    assert f["sensitivity"][0.5] == pytest.approx(1 / 3)
    assert f["num_objects"] == 3


def test_empty_everything_and_bad_input():
    r = im.average_precision([_pred([], [])], [_target()])
    assert np.isnan(r["mAP"])
    with pytest.raises(ValueError, match="instances"):
        im.average_precision([_pred([], [])], [{"label": np.zeros((32, 32), np.int32)}])
    with pytest.raises(ValueError, match="masks"):
        im.average_precision([{"masks": np.zeros((1, 8, 8), bool), "scores": [1.0], "classes": [1]}], [_target(A)])
    with pytest.raises(ValueError, match="pair up"):
        im.froc([], [_target(A)])


def test_valid_mask_drops_padding_and_3d_works():
    p = _pred([A, B], [0.9, 0.8])
    p["valid"] = np.array([True, False])
    assert im.average_precision([p], [_target(A)], thresholds=(0.5,))["AP50"] == pytest.approx(1.0)
    vol = np.zeros((4, 8, 8), bool)
    vol[1:3, 2:5, 2:5] = True
    r = im.instance_metrics([{"masks": vol[None], "scores": [0.8], "classes": [1]}],
                            [{"instances": vol.astype(np.int32)}])
    assert r["mAP"] == pytest.approx(1.0) and r["cpm"] == pytest.approx(1.0)


# --- FROC: distinct thresholds (ties grouped), NaN without objects --------------------------------------------

def _tie_case(order):
    inst = np.zeros((16, 16), np.int32)
    inst[2:6, 2:6] = 1
    hit, miss = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    hit[2:6, 2:6] = True
    miss[10:14, 10:14] = True
    masks = [hit, miss] if order == "AB" else [miss, hit]
    return [{"masks": np.stack(masks), "scores": [0.9, 0.9], "classes": [1, 1]}], [{"instances": inst}]


@pytest.mark.parametrize("order", ["AB", "BA"])
def test_froc_tied_scores_do_not_depend_on_order(order):
    # One threshold (0.9) admits both detections together: 1 FP per scan and the object found.
    f = im.froc(*_tie_case(order))
    assert f["cpm"] == pytest.approx(4 / 7)
    assert [f["sensitivity"][r] for r in im.FROC_RATES] == [0, 0, 0, 1, 1, 1, 1]
    thresholds, fps, sens = f["curve"]
    np.testing.assert_array_equal(thresholds, [0.9])
    np.testing.assert_array_equal(fps, [1.0])
    np.testing.assert_array_equal(sens, [1.0])


def test_froc_duplicate_hits_are_not_false_positives_and_best_score_counts():
    # Two detections on A (0.3 and 0.8) and a false positive at 0.5: A counts from 0.8, FPs only the 0.5.
    fp = _square((32, 32), 12, 12, 4)
    f = im.froc([_pred([A, fp, A], [0.3, 0.5, 0.8])], [_target(A, B)])
    thresholds, fps, sens = f["curve"]
    np.testing.assert_allclose(thresholds, [0.8, 0.5], rtol=1e-6)  # float32 scores
    np.testing.assert_array_equal(fps, [0.0, 1.0])
    np.testing.assert_array_equal(sens, [0.5, 0.5])
    assert f["sensitivity"][0.125] == 0.5 and f["cpm"] == pytest.approx(0.5)


@pytest.mark.parametrize("preds", [[], [(A, 0.9)]])
def test_froc_without_objects_is_nan(preds):
    f = im.froc([_pred([m for m, _ in preds], [s for _, s in preds])], [_target()])
    assert np.isnan(f["cpm"]) and all(np.isnan(v) for v in f["sensitivity"].values())
    assert f["num_objects"] == 0
    assert np.isnan(im.froc([], [])["cpm"])


# --- COCO AP: pycocotools' COCOeval on the same masks ---------------------------------------------------------

def _pycocotools_ap(predictions, targets):
    """``{"mAP", "AP50", "AP75"}`` of COCOeval (segm, area all, maxDets 100) on 2D cases."""
    import contextlib
    import io

    mask_util = pytest.importorskip("pycocotools.mask")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(m):
        r = mask_util.encode(np.asfortranarray(m.astype(np.uint8)))
        r["counts"] = r["counts"].decode("ascii")
        return r

    images, anns, dets, cats = [], [], [], set()
    for i, (p, t) in enumerate(zip(predictions, targets), start=1):
        h, w = t["instances"].shape
        images.append({"id": i, "height": h, "width": w})
        masks, classes = im.gt_objects(t)
        for m, c in zip(masks, classes):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "segmentation": rle(m),
                         "area": float(m.sum()), "bbox": list(mask_util.toBbox(rle(m))), "iscrowd": 0})
            cats.add(int(c))
        for m, s, c in zip(p["masks"], p["scores"], p["classes"]):
            dets.append({"image_id": i, "category_id": int(c), "segmentation": rle(m), "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in sorted(cats)]}
        gt.createIndex()
        e = COCOeval(gt, gt.loadRes(dets), "segm")
        e.evaluate()
        e.accumulate()
    prec = e.eval["precision"][:, :, :, 0, -1]  # [T, R, K] at area "all", maxDets 100

    def mean(x):
        return float(np.mean(x[x > -1])) if (x > -1).any() else float("nan")

    return {"mAP": mean(prec), "AP50": mean(prec[0]), "AP75": mean(prec[5])}


def _random_cases(n_cases, dets_per_case, seed, n_classes=2, n_objects=5, shape=(24, 24)):
    """Cases of ``n_objects`` square objects (classes 1..n_classes) and detections: jittered copies of the
    objects (class right 80% of the time) mixed with random boxes, scores on a 0.1 grid (many ties)."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for _ in range(n_cases):
        inst, label = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
        for k in range(1, n_objects + 1):
            y, x = rng.integers(0, shape[0] - 6, 2)
            s = int(rng.integers(3, 7))
            inst[y:y + s, x:x + s] = k
            label[y:y + s, x:x + s] = 1 + k % n_classes
        objects, classes = im.gt_objects({"instances": inst, "label": label})
        masks, det_classes = [], []
        for _ in range(dets_per_case):
            if rng.uniform() < 0.5:
                g = int(rng.integers(len(objects)))
                m = np.roll(objects[g], tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
                c = int(classes[g]) if rng.uniform() < 0.8 else int(rng.integers(1, n_classes + 1))
            else:
                y, x = rng.integers(0, shape[0] - 6, 2)
                m = np.zeros(shape, bool)
                m[y:y + int(rng.integers(2, 8)), x:x + int(rng.integers(2, 8))] = True
                c = int(rng.integers(1, n_classes + 1))
            masks.append(m)
            det_classes.append(c)
        preds.append({"masks": np.stack(masks), "scores": np.round(rng.uniform(size=dets_per_case), 1),
                      "classes": np.asarray(det_classes)})
        targets.append({"instances": inst, "label": label})
    return preds, targets


def _coco_tie_case():
    inst = np.zeros((16, 16), np.int32)
    inst[2:6, 2:6] = 1
    inst[2:6, 6:10] = 2
    # D1 = GT1 ∪ GT2 has IoU 0.5 with both: pycocotools gives it to the last (GT2), so D2 = GT1 matches too.
    return [{"masks": np.stack([inst > 0, inst == 1]), "scores": [0.9, 0.8], "classes": [1, 1]}], \
        [{"instances": inst}]


COCO_CASES = {
    "equal_iou_tie": _coco_tie_case,
    "120_detections_one_image": lambda: _random_cases(1, 120, seed=0, n_classes=1, n_objects=20,
                                                          shape=(48, 48)),  # over maxDets=100
    "120_detections_three_images": lambda: _random_cases(3, 40, seed=1),
}


@pytest.mark.parametrize("name", sorted(COCO_CASES))
def test_average_precision_equals_pycocotools(name):
    preds, targets = COCO_CASES[name]()
    want = _pycocotools_ap(preds, targets)
    got = im.average_precision(preds, targets)
    for k in ("mAP", "AP50", "AP75"):
        assert got[k] == pytest.approx(want[k], abs=1e-12), (k, got[k], want[k])
    if name == "equal_iou_tie":
        assert got["AP50"] == pytest.approx(1.0)
    if name == "120_detections_one_image":  # the cap matters here: all 120 detections kept gives another AP
        assert im.average_precision(preds, targets, max_dets=120)["mAP"] != pytest.approx(want["mAP"], abs=1e-6)


def test_max_dets_caps_detections_per_case_and_class():
    # 3 false positives ranked above the hit: with max_dets=3 the hit is cut off (AP 0), with 4 it counts.
    fps = [_square((32, 32), 12 + i, 12, 4) for i in range(3)]
    p = [_pred(fps + [A], [0.9, 0.8, 0.7, 0.6])]
    assert im.average_precision(p, [_target(A)], thresholds=(0.5,), max_dets=3)["AP50"] == 0.0
    assert im.average_precision(p, [_target(A)], thresholds=(0.5,), max_dets=4)["AP50"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="max_dets"):
        im.average_precision(p, [_target(A)], max_dets=0)


def test_per_instance_dice_takes_the_highest_dice_not_the_largest_overlap():
    # big covers all of A (overlap 64, Dice 128/(64+256)=0.4); exact_half overlaps 32 (Dice 64/96=0.667).
    big = _square((32, 32), 0, 0, 16)
    half = _square((32, 32), 2, 2, 8) & (np.arange(32)[None, :] < 6)
    d = im.per_instance_dice([_pred([big, half], [0.9, 0.9])], [_target(A)])
    assert d["per_instance"] == [pytest.approx(2 * 32 / (32 + 64))]
