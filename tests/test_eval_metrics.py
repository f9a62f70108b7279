"""Parity of scoring with independent references (scikit-learn, brute-force distances, hand cases)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import cdist
from sklearn import metrics as skm

import scoring as M
from scoring import surface

NAN = float("nan")


def _close(a, b, tol=1e-6):
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= tol


def _random_pair(shape, seed, p_pred=0.4, p_target=0.4):
    rng = np.random.default_rng(seed)
    from scipy import ndimage

    # Smooth random blobs so surfaces are non-trivial.
    a = ndimage.gaussian_filter(rng.normal(size=shape), 1.0)
    b = ndimage.gaussian_filter(rng.normal(size=shape), 1.0) + 0.5 * a
    return a > np.quantile(a, 1 - p_pred), b > np.quantile(b, 1 - p_target)


PAIRS = {
    "2d": _random_pair((17, 23), 0),
    "3d": _random_pair((9, 11, 13), 1),
    "2d_small_pred": _random_pair((16, 16), 2, p_pred=0.05),
    "3d_sparse": _random_pair((8, 10, 6), 3, p_pred=0.02, p_target=0.1),
    "empty_pred": (np.zeros((8, 8), bool), _random_pair((8, 8), 4)[1]),
    "empty_target": (_random_pair((6, 7, 5), 5)[0], np.zeros((6, 7, 5), bool)),
    "both_empty": (np.zeros((5, 6), bool), np.zeros((5, 6), bool)),
    "all_foreground": (np.ones((4, 5), bool), np.ones((4, 5), bool)),
}


def _sk(name, p, t):
    y, yh = t.reshape(-1), p.reshape(-1)
    nan = np.nan
    if name == "accuracy":
        return skm.accuracy_score(y, yh)
    if name == "sensitivity":
        return skm.recall_score(y, yh, zero_division=nan) if y.any() else nan
    if name == "specificity":
        return skm.recall_score(~y, ~yh, zero_division=nan) if (~y).any() else nan
    if name == "precision":
        return skm.precision_score(y, yh, zero_division=nan) if yh.any() else nan
    if name in ("dice", "f1"):
        return nan if not (y.any() or yh.any()) else skm.f1_score(y, yh, zero_division=nan)
    if name == "jaccard":
        return nan if not (y.any() or yh.any()) else skm.jaccard_score(y, yh, zero_division=0)
    if name == "volume_similarity":  # 1 - |P - T| / (P + T), by hand
        s = int(p.sum()) + int(t.sum())
        return nan if s == 0 else 1 - abs(int(p.sum()) - int(t.sum())) / s
    raise KeyError(name)


@pytest.mark.parametrize("case", sorted(PAIRS))
@pytest.mark.parametrize("name", sorted(M.CONFUSION_METRICS))
def test_confusion_metrics_match_sklearn_and_jax_twin(case, name):
    p, t = PAIRS[case]
    want = _sk(name, p, t)
    got = M.CONFUSION_METRICS[name](p, t)
    assert _close(got, want), (got, want)
    # numpy and jax inputs give the same number.
    assert _close(M.CONFUSION_METRICS[name](jnp.asarray(p), jnp.asarray(t)), want)


@pytest.mark.parametrize("name", sorted(M.CONFUSION_METRICS))
def test_jax_twins_match_numpy(name):
    twin = getattr(M, f"{name}_jax")
    cases = sorted(PAIRS)
    # One jit per metric over every case (one compile, many shapes as separate inputs).
    got = jax.jit(lambda pairs: [twin(p, t) for p, t in pairs])([tuple(map(jnp.asarray, PAIRS[c])) for c in cases])
    for c, g in zip(cases, got):
        assert _close(float(g), M.CONFUSION_METRICS[name](*PAIRS[c]), 1e-6), (c, float(g))


def test_probabilities_are_thresholded_and_empty_value_applies():
    p, t = PAIRS["2d"]
    prob = np.where(p, 0.8, 0.2).astype(np.float32)
    assert M.dice(prob, t) == M.dice(p, t)
    assert M.dice(np.zeros((3, 3)), np.zeros((3, 3)), empty_value=1.0) == 1.0
    assert M.dice(np.zeros((3, 3)), np.zeros((3, 3)), 1.0) == 1.0  # the original positional signature
    assert math.isnan(M.dice(np.zeros((3, 3)), np.zeros((3, 3))))
    assert float(M.dice_jax(jnp.zeros((3, 3)), jnp.zeros((3, 3)), empty_value=1.0)) == 1.0
    assert M.sensitivity(np.ones((3, 3)), np.zeros((3, 3)), empty_value=0.0) == 0.0


def _brute_surface(mask):
    """Independent surface: foreground with a face neighbour outside the mask or the image."""
    padded = np.pad(mask, 1, constant_values=False)
    inner = np.ones_like(mask)
    for ax in range(mask.ndim):
        for shift in (-1, 1):
            inner &= np.roll(padded, shift, axis=ax)[tuple(slice(1, -1) for _ in range(mask.ndim))]
    return mask & ~inner


def _brute_distances(p, t, spacing):
    sp = np.asarray(spacing, float)
    a = np.argwhere(_brute_surface(p)) * sp
    b = np.argwhere(_brute_surface(t)) * sp
    d = cdist(a, b)
    return d.min(1), d.min(0)


SURFACE_CASES = [("2d", (1.0, 1.0)), ("2d", (0.5, 2.0)), ("3d", (1.0, 1.0, 1.0)), ("3d", (2.5, 0.7, 1.3)),
                 ("2d_small_pred", (1.2, 0.9)), ("3d_sparse", (3.0, 1.0, 1.0))]


@pytest.mark.parametrize("case,spacing", SURFACE_CASES)
def test_surface_metrics_match_brute_force(case, spacing):
    p, t = PAIRS[case]
    assert np.array_equal(surface.surface_mask(p), _brute_surface(p))
    d_pt, d_tp = _brute_distances(p, t, spacing)
    pooled = np.concatenate([d_pt, d_tp])
    assert _close(M.hausdorff(p, t, spacing=spacing), pooled.max())
    assert _close(M.hd95(p, t, spacing=spacing), np.percentile(pooled, 95))
    assert _close(M.assd(p, t, spacing=spacing), pooled.mean())
    assert _close(M.hd95(p, t, spacing=spacing, directed=True), np.percentile(d_pt, 95))
    assert _close(M.assd(p, t, spacing=spacing, directed=True), d_pt.mean())
    for tol in (0.0, 1.0, 2.5):
        want = (np.sum(d_pt <= tol) + np.sum(d_tp <= tol)) / pooled.size
        assert _close(M.surface_dice(p, t, spacing=spacing, tolerance=tol), want)


def test_surface_metrics_hand_computed():
    p = np.zeros((5, 5), bool)
    p[1:3, 1:3] = True
    t = np.zeros((5, 5), bool)
    t[1:4, 1:4] = True
    # pred->target: [0, 0, 0, 1]; target->pred: [0, 0, 0, 1, 1, 1, 1, sqrt2] (worked by hand).
    assert _close(M.assd(p, t), (5 + math.sqrt(2)) / 12)
    assert _close(M.hausdorff(p, t), math.sqrt(2))
    assert _close(M.hd95(p, t), 1 + 0.45 * (math.sqrt(2) - 1))
    assert _close(M.surface_dice(p, t, tolerance=1.0), 11 / 12)
    # Two single voxels three columns apart with column spacing 2: every distance is 6.
    a = np.zeros((3, 4), bool)
    a[0, 0] = True
    b = np.zeros((3, 4), bool)
    b[0, 3] = True
    for f in (M.hausdorff, M.hd95, M.assd):
        assert _close(f(a, b, spacing=(1.0, 2.0)), 6.0)
    # 3D: identical masks have distance 0 and surface Dice 1.
    c = PAIRS["3d"][0]
    assert M.hd95(c, c, spacing=(2, 1, 1)) == 0.0 and M.surface_dice(c, c, tolerance=0.0) == 1.0


def test_surface_metric_empty_cases():
    p, t = PAIRS["empty_pred"]
    assert M.hd95(p, t) == math.inf and M.assd(t, p) == math.inf and M.hausdorff(p, t) == math.inf
    assert M.hd95(p, t, one_empty_value=99.0) == 99.0
    assert M.surface_dice(p, t) == 0.0
    e = np.zeros((4, 4), bool)
    assert math.isnan(M.hd95(e, e)) and math.isnan(M.assd(e, e)) and math.isnan(M.surface_dice(e, e))


@pytest.mark.parametrize("seed,n,levels", [(0, 50, None), (1, 200, 7), (2, 31, 3), (3, 500, None)])
def test_auc_and_auprc_match_sklearn(seed, n, levels):
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=n) < 0.3
    s = np.clip(0.5 * y + rng.uniform(size=n) * 0.8, 0, 1)
    if levels:  # ties
        s = np.round(s * levels) / levels
    assert _close(M.auc_roc(s, y), skm.roc_auc_score(y, s))
    assert _close(M.auprc(s, y), skm.average_precision_score(y, s))
    # Any shape: a 2D probability map against its mask.
    assert _close(M.auc_roc(s.reshape(-1, 1), y.reshape(-1, 1).astype(int)), skm.roc_auc_score(y, s))


def test_auc_single_class_is_nan():
    assert math.isnan(M.auc_roc([0.1, 0.9], [1, 1]))
    assert math.isnan(M.auprc([0.1, 0.9], [0, 0]))


@pytest.mark.parametrize("shape,k", [((7, 9), 3), ((4, 5, 6), 4), ((10, 10), 2)])
def test_confusion_matrix_matches_sklearn(shape, k):
    rng = np.random.default_rng(k)
    p = rng.integers(0, k, size=shape)
    t = rng.integers(0, k, size=shape)
    want = skm.confusion_matrix(t.reshape(-1), p.reshape(-1), labels=list(range(k)))
    assert np.array_equal(M.confusion_matrix(p, t, k), want)
    assert np.array_equal(np.asarray(jax.jit(M.confusion_matrix_jax, static_argnums=2)(p, t, k)), want)
    per = M.per_class_metrics(want)
    for c in range(k):
        for name in ("dice", "jaccard", "sensitivity", "specificity", "precision", "accuracy"):
            assert _close(per[name][c], M.CONFUSION_METRICS[name](p == c, t == c))
    assert np.allclose(per["dice"], M.dice_per_class_np(p, t, k), equal_nan=True)


def test_brats_regions_hand_case():
    t = np.array([[0, 1, 2, 3], [0, 2, 2, 0]])
    p = np.array([[0, 1, 2, 2], [0, 2, 0, 3]])
    regions = M.brats_regions(t)
    assert regions["WT"].sum() == 5 and regions["TC"].sum() == 2 and regions["ET"].sum() == 1
    res = M.brats_region_metrics(p, t, metrics=("dice", "sensitivity"))
    assert _close(res["WT"]["dice"], 2 * 4 / (5 + 5))
    assert _close(res["TC"]["dice"], 2 * 1 / (2 + 2))
    assert _close(res["ET"]["dice"], 0.0) and _close(res["ET"]["sensitivity"], 0.0)
    got = np.asarray(jax.jit(M.brats_region_dice_jax)(jnp.asarray(p), jnp.asarray(t)))
    assert np.allclose(got, [0.8, 0.5, 0.0], atol=1e-6)


BAD = [
    (lambda: M.dice(np.zeros((3, 3)), np.zeros((3, 4))), "shape"),
    (lambda: M.hd95(np.zeros((3, 3)), np.zeros((4, 3))), "shape"),
    (lambda: M.jaccard(np.full((2, 2), 1.5), np.zeros((2, 2))), "outside"),
    (lambda: M.dice(np.full((2, 2), -0.1), np.zeros((2, 2))), "outside"),
    (lambda: M.accuracy(np.array([[np.nan, 0.0]]), np.zeros((1, 2))), "NaN"),
    (lambda: M.dice(np.zeros((2, 2)), np.array([[0, 2], [0, 0]])), "binary"),
    (lambda: M.hd95(np.ones((2, 2)), np.ones((2, 2)), spacing=(1.0,)), "spacing"),
    (lambda: M.assd(np.ones((2, 2)), np.ones((2, 2)), spacing=(1.0, -1.0)), "spacing"),
    (lambda: M.surface_dice(np.ones((2, 2)), np.ones((2, 2)), tolerance=-1), "tolerance"),
    (lambda: M.auc_roc([0.2, 1.2], [0, 1]), "outside|\\[0, 1\\]"),
    (lambda: M.auc_roc([0.2, np.nan], [0, 1]), "NaN"),
    (lambda: M.auc_roc([0.2, 0.3], [0, 1, 1]), "shape"),
    (lambda: M.auprc([0.2, 0.3], [0, 2]), "binary"),
    (lambda: M.confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3), "labels"),
    (lambda: M.dice_jax(jnp.zeros((2, 2)), jnp.zeros((2, 3))), "shape"),
    (lambda: M.dice_per_class_np(np.zeros((2, 2), int), np.zeros((3, 2), int), 2), "shape"),
    # Labels >= K (or negative, or not integers) counted as no class: issue #24.
    (lambda: M.dice_per_class_np(np.array([0, 1, 3, 7]), np.array([0, 1, 1, 0]), 2),
     r"pred has label values \[3, 7\] outside \[0, 1\]"),
    (lambda: M.dice_per_class_np(np.array([0, 1]), np.array([-1, 2]), 3), r"target has label values \[-1\]"),
    (lambda: M.dice_per_class_np(np.array([0.0, 0.5]), np.array([0, 1]), 2), r"label values \[0\.5\]"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_input_raises(i):
    fn, match = BAD[i]
    with pytest.raises(ValueError, match=match):
        fn()


# --- Bounding boxes and cropped surface distances (the only whole-image work is finding the box) ------------

def _argwhere_box(mask):
    idx = np.argwhere(mask)
    return tuple((int(idx[:, a].min()), int(idx[:, a].max()) + 1) for a in range(mask.ndim)) if len(idx) else None


def _box_cases():
    rng = np.random.default_rng(0)
    one = np.zeros((7, 9, 5), bool)
    one[6, 0, 2] = True
    cube = np.zeros((6, 6, 6), bool)
    cube[1:4, 2:5, 0:6] = True
    return {"empty_2d": np.zeros((4, 5), bool), "1d": np.array([0, 0, 1, 0, 1, 0], bool),
            "single_voxel_corner": one, "cube_touching": cube, "full": np.ones((3, 4), bool),
            "random_2d": rng.uniform(size=(9, 13)) < 0.05, "random_3d": rng.uniform(size=(8, 6, 10)) < 0.01,
            "transposed_view": (rng.uniform(size=(5, 7, 9)) < 0.03).transpose(2, 0, 1)}


@pytest.mark.parametrize("name", sorted(_box_cases()))
def test_bounding_box_equals_argwhere(name):
    m = _box_cases()[name]
    assert surface.bounding_box(m) == _argwhere_box(m)


@pytest.mark.parametrize("seed", range(6))
def test_cropped_distances_equal_whole_image_on_random_pairs(seed):
    # Sparse voxels anywhere (borders, corners), 1D to 3D, random anisotropic spacing: bit-identical distances.
    rng = np.random.default_rng(seed)
    for _ in range(15):
        shape = tuple(int(s) for s in rng.integers(1, 10, rng.integers(1, 4)))
        p = rng.uniform(size=shape) < rng.uniform(0.02, 0.5)
        t = rng.uniform(size=shape) < rng.uniform(0.02, 0.5)
        if not p.any() or not t.any():
            continue
        sp = tuple(rng.uniform(0.3, 3.0, len(shape)))
        for a, b in zip(surface.surface_distances(p, t, sp), surface.surface_distances(p, t, sp, crop=False)):
            assert np.array_equal(a, b)


def test_surface_metrics_values_unchanged_on_a_ct_sized_volume_with_a_small_structure():
    # The benchmark's pair, scaled down: the cropped result equals the whole-image computation.
    from benchmarks.metrics import make_pair

    p, t = make_pair((64, 60, 24), 5.0, (0.7, 0.7, 2.5))
    full = surface.reduce_surface_distances(*surface.surface_distances(p, t, (0.7, 0.7, 2.5), crop=False))
    assert M.surface_metrics(p, t, spacing=(0.7, 0.7, 2.5)) == full
    assert 0 < full["hd95"] < 10 and 0 < full["surface_dice"] < 1


def test_metrics_benchmark_runs_and_skips_missing_peers(tmp_path, monkeypatch, capsys):
    from benchmarks import metrics as bench

    def unavailable(*a, **k):
        raise ImportError("No module named 'monai'")

    monkeypatch.setitem(bench._BUILDERS, "monai", unavailable)
    rc = bench.main(["--shape=24,20,8", "--radius=3", "--spacing=1,1,2", "--repeats=1", "--peers=monai",
                     f"--out={tmp_path}"])
    assert rc == 0
    res = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    ours, monai = res["results"]
    p, t = bench.make_pair((24, 20, 8), 3.0, (1.0, 1.0, 2.0))
    assert ours["status"] == "ok" and ours["hd95_value"] == [M.hd95(p, t, spacing=(1.0, 1.0, 2.0))]
    assert ours["both_value"] == [ours["hd95_value"][0], ours["surface_dice_value"][0]]
    assert all(ours[f"{c}_s"] > 0 for c in bench.COLUMNS)
    assert monai["status"].startswith("skipped: not importable")
    assert "monai: skipped" in capsys.readouterr().err
    assert "| monai | skipped" in (tmp_path / "results.md").read_text(encoding="utf-8")
    assert bench.main(["--peers=nope", f"--out={tmp_path}"]) == 2


@pytest.mark.parametrize("fn", ["hd95", "hausdorff", "assd", "surface_dice"])
def test_surface_metrics_on_scalars_are_one_clear_error(fn):
    with pytest.raises(ValueError, match="at least one spatial axis"):
        getattr(M, fn)(np.array(1), np.array(1))
