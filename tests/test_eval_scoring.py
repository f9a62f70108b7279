"""The scoring leaf package: one surface computation per pair (crop = whole image, exactly), BraTS region
channels, outcome metrics, and that scoring imports nothing of this project."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

import scoring as M
from scoring import surface


def _blobs(shape, seed, q=0.6):
    rng = np.random.default_rng(seed)
    a = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    b = ndimage.gaussian_filter(rng.normal(size=shape), 1.0) + 0.5 * a
    return a > np.quantile(a, q), b > np.quantile(b, q)


def _embedded(big, offset, small_pair):
    """A small pair placed at ``offset`` inside a larger empty volume."""
    out = []
    for m in small_pair:
        v = np.zeros(big, bool)
        v[tuple(slice(o, o + s) for o, s in zip(offset, m.shape))] = m
        out.append(v)
    return tuple(out)


def _corner_touching():
    p, t = np.zeros((12, 14, 10), bool), np.zeros((12, 14, 10), bool)
    p[0:3, 10:14, 4:7] = True  # touches the x=0 and y=max borders: border voxels are surface voxels
    t[1:4, 9:13, 5:8] = True
    return p, t


CROP_CASES = {
    "2d": (_blobs((17, 23), 0), (1.0, 1.0)),
    "2d_aniso": (_blobs((17, 23), 0), (0.5, 2.0)),
    "3d": (_blobs((9, 11, 13), 1), (2.5, 0.7, 1.3)),
    "3d_sparse": (_blobs((8, 10, 6), 3, q=0.95), (3.0, 1.0, 1.0)),
    "all_foreground": ((np.ones((4, 5), bool), np.ones((4, 5), bool)), None),
    "off_centre_3d": (_embedded((40, 36, 30), (27, 3, 19), _blobs((7, 6, 8), 7)), (1.5, 1.0, 0.8)),
    "off_centre_2d": (_embedded((64, 48), (5, 38), _blobs((9, 7), 8)), None),
    "border_3d": (_corner_touching(), (1.0, 2.0, 1.0)),
}


@pytest.mark.parametrize("case", sorted(CROP_CASES))
def test_cropped_surface_distances_equal_whole_image(case):
    (p, t), spacing = CROP_CASES[case]
    full = surface.surface_distances(p, t, spacing, crop=False)
    crop = surface.surface_distances(p, t, spacing, crop=True)
    for a, b in zip(full, crop):  # same voxels in the same (C) order, bit-identical distances
        assert a.shape == b.shape and np.array_equal(a, b)
    red_full = surface.reduce_surface_distances(*full, tolerance=1.5)
    assert red_full == surface.reduce_surface_distances(*crop, tolerance=1.5)
    assert red_full == M.surface_metrics(p, t, spacing=spacing, tolerance=1.5)


@pytest.mark.parametrize("case", sorted(CROP_CASES))
def test_binary_metrics_computes_distances_once_and_equals_single_metrics(case, monkeypatch):
    (p, t), spacing = CROP_CASES[case]
    names = ("dice", "hausdorff", "hd95", "assd", "surface_dice", "jaccard")
    single = {m: M.METRICS[m](p, t, spacing=spacing) for m in names}
    calls = []
    real = surface.surface_distances
    monkeypatch.setattr(surface, "surface_distances", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = M.binary_metrics(p, t, names, spacing=spacing)
    assert len(calls) == 1
    assert got == single


def test_binary_metrics_empty_rules():
    e, f = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    f[2:4, 2:4] = True
    one = M.binary_metrics(e, f, ("hd95", "surface_dice", "dice"), one_empty_distance=7.0)
    assert one == {"hd95": 7.0, "surface_dice": 0.0, "dice": 0.0}
    both = M.binary_metrics(e, e, ("hausdorff", "assd", "surface_dice"))
    assert all(np.isnan(v) for v in both.values())


def test_reduce_rejects_bad_arguments():
    d = np.array([0.0, 1.0])
    with pytest.raises(ValueError, match="percentile"):
        surface.reduce_surface_distances(d, d, percentile=101)
    with pytest.raises(ValueError, match="tolerance"):
        surface.reduce_surface_distances(d, d, tolerance=-1)
    with pytest.raises(ValueError, match="unknown surface metrics"):
        surface.reduce_surface_distances(d, d, ("dice",))


def _data_pipelines_formula(label):  # data_pipelines/real.py's brats_regions, which this replaces
    return np.stack([label > 0, (label == 1) | (label == 3), label == 3], -1).astype(np.uint8)


@pytest.mark.parametrize("shape,dtype", [((13, 11), np.int32), ((5, 7, 6), np.int64), ((4, 4), np.uint8),
                                         ((0, 3), np.int32)])
def test_brats_region_channels_equal_the_data_pipeline_formula(shape, dtype):
    label = np.random.default_rng(0).integers(0, 4, size=shape).astype(dtype)
    got = M.brats_region_channels(label)
    want = _data_pipelines_formula(label)
    assert got.dtype == np.uint8 and got.shape == shape + (3,)
    assert np.array_equal(got, want)
    regions = M.brats_regions(label)
    for i, name in enumerate(M.BRATS_REGIONS):
        assert np.array_equal(got[..., i].astype(bool), regions[name])


def test_brats_region_channels_reject_unknown_labels():
    with pytest.raises(ValueError, match="label_map"):
        M.brats_region_channels(np.array([[0, 4]]))


def test_outcome_metrics_hand_counts_and_multiclass():
    y = np.array([1, 1, 0, 0, 1, 0])
    p1 = np.array([0.9, 0.4, 0.2, 0.7, 0.8, 0.1])
    m = M.outcome_metrics(y, np.stack([1 - p1, p1], 1))
    assert m["confusion"] == {"tp": 2, "fp": 1, "fn": 1, "tn": 2}
    assert m["accuracy"] == pytest.approx(4 / 6) and m["specificity"] == pytest.approx(2 / 3)
    assert m["auc_roc"] == pytest.approx(8 / 9) and m["prevalence"] == pytest.approx(0.5)
    three = M.outcome_metrics(np.array([0, 1, 2, 2]), np.eye(3)[[0, 1, 2, 1]])
    assert three["accuracy"] == pytest.approx(0.75) and "specificity" not in three
    single = M.outcome_metrics(np.zeros(3, int), np.tile([0.8, 0.2], (3, 1)))
    assert np.isnan(single["auc_roc"])
    with pytest.raises(ValueError, match="proba"):
        M.outcome_metrics(y, p1)


def test_scoring_is_a_leaf():
    code = ("import sys, scoring; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('zoo', 'eval', 'kernels', 'data_pipelines', 'benchmarks')); print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
