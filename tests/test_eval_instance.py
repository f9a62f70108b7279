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
