"""zoo.outcome.nephrometry: image-derived predictors and the automatic R.E.N.A.L. score on hand-made volumes with
known answers (an ellipsoid kidney with a medial notch for the hilum, spherical tumours at known poles and depths,
anisotropic KiTS-like spacing and axis order), and on the real KiTS23 masks when present."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zoo.outcome.nephrometry import (FEATURE_NAMES, canonical_labels, crops_for_cohort, features_for_cohort,
                                     image_features, kidney_crop, max_diameter, read_mask, renal_score, surface_area)

SPACING = (2.5, 0.8, 0.8)  # array axis 0 is the slice axis, as in the KiTS files
# Columns: the LPS direction of each array axis, as KiTS reads: axis 0 inferior, axis 1 posterior, axis 2 left.
KITS_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
SAL_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # superior, anterior, left
SMALL = dict(centre=(70.0, 40.0, 40.0), axes=(50.0, 25.0, 25.0), notch=(10.0, 15.0, 8.0), extent=(150.0, 80.0, 80.0))
LARGE = dict(centre=(100.0, 60.0, 60.0), axes=(90.0, 50.0, 50.0), notch=(30.0, 20.0, 12.0),
             extent=(200.0, 120.0, 120.0))


def _grid(extent, spacing=SPACING):
    """Voxel-centre coordinates (mm) along (superior, anterior, left) of a canonical grid covering ``extent``."""
    n = [int(math.ceil(e / s)) for e, s in zip(extent, spacing)]
    return np.meshgrid(*[np.arange(k) * s for k, s in zip(n, spacing)], indexing="ij")


def phantom(kidney=SMALL, tumours=(), cysts=(), spacing=SPACING, extra_kidney=None, kits_layout=True):
    """A label map: an ellipsoid kidney (``axes`` semi-axes in mm) with a box notch on its medial (-left) side,
    ``notch = (depth from the centre, half height S/I, half width A/P)``, spheres ``(s, a, l, r)`` of tumour and
    cyst painted over it. Built in (superior, anterior, left) mm; ``kits_layout`` flips axes 0 and 1 so the array
    reads like a KiTS file (axis 0 inferior, axis 1 posterior): the features must not care."""
    s, a, l = _grid(kidney["extent"], spacing)
    lab = np.zeros(s.shape, np.int32)
    for k in [kidney] + ([extra_kidney] if extra_kidney else []):
        (cs, ca, cl), (rs, ra, rl) = k["centre"], k["axes"]
        lab[((s - cs) / rs) ** 2 + ((a - ca) / ra) ** 2 + ((l - cl) / rl) ** 2 <= 1.0] = 1
        if "notch" in k:
            depth, half_s, half_a = k["notch"]
            lab[(l < cl - depth) & (np.abs(s - cs) < half_s) & (np.abs(a - ca) < half_a)] = 0
    for value, spheres in ((2, tumours), (3, cysts)):
        for ts, ta, tl, r in spheres:
            lab[(s - ts) ** 2 + (a - ta) ** 2 + (l - tl) ** 2 <= r * r] = value
    return np.ascontiguousarray(lab[::-1, ::-1]) if kits_layout else lab


def features(lab, spacing=SPACING, direction=KITS_DIRECTION):
    return image_features(lab, spacing, direction)


def test_upper_pole_small_exophytic_tumour_scores_low():
    cs, ca, cl = SMALL["centre"]
    lab = phantom(tumours=[(cs + 55.0, ca, cl, 12.0)])
    f = features(lab)
    assert f["max_diameter_mm"] == pytest.approx(24.0, abs=2.5)
    assert f["exophytic_fraction"] > 0.5
    assert f["polar_from_hilum"] == 1.0 and f["sinus_found"] == 1.0
    # The sinus stand-in is the notch: its volume is the notch's, within the working grid's resampling.
    notch_ml = np.count_nonzero(phantom(dict(SMALL, notch=(1e9, 0.0, 0.0))) != phantom()) * 2.5 * 0.8 * 0.8 / 1000.0
    assert f["sinus_volume_ml"] == pytest.approx(notch_ml, rel=0.25)
    assert f["sinus_distance_mm"] > 20.0  # tumour bottom at cs + 43, notch top at cs + 15
    assert f["fraction_above_upper"] == 1.0 and f["fraction_between"] == 0.0
    assert f["renal_a"] == "x"
    assert (f["renal_r"], f["renal_e"], f["renal_n"], f["renal_l"]) == (1, 1, 1, 1)
    assert f["renal_score"] == 4 and f["renal_band"] == "low"


def test_large_deep_tumour_touching_the_hilum_scores_high():
    cs, ca, cl = LARGE["centre"]
    f = features(phantom(LARGE, tumours=[(cs, ca, cl, 37.0)]))
    assert f["max_diameter_mm"] >= 70.0
    assert f["exophytic_fraction"] < 0.01
    assert f["sinus_distance_mm"] == 0.0
    assert f["crosses_midline"] == 1.0 and f["polar_from_hilum"] == 1.0
    assert f["sphericity"] == pytest.approx(1.0, abs=0.05)
    assert (f["renal_r"], f["renal_e"], f["renal_n"], f["renal_l"]) == (3, 3, 3, 3)
    assert f["renal_score"] == 12 and f["renal_band"] == "high"


def test_lateral_tumour_in_between_scores_moderate():
    cs, ca, cl = LARGE["centre"]
    deep_hilum = dict(LARGE, notch=(-5.0, 20.0, 12.0))  # the notch reaches 5 mm lateral of the centre
    # Its medial edge (cl + 10.5 mm) lies 5.5 mm lateral of the notch (cl + 5 mm), at the notch's level; its lateral
    # edge bulges about 6 mm out of the kidney.
    f = features(phantom(deep_hilum, tumours=[(cs + 10.0, ca + 10.0, cl + 32.5, 22.0)]))
    assert 40.0 < f["max_diameter_mm"] < 70.0
    assert 0.01 < f["exophytic_fraction"] < 0.5
    assert 4.0 < f["sinus_distance_mm"] < 7.0
    assert f["renal_a"] == "a"  # anterior of the kidney's centre
    assert (f["renal_r"], f["renal_e"], f["renal_n"], f["renal_l"]) == (2, 2, 2, 3)
    assert f["renal_score"] == 9 and f["renal_band"] == "moderate"


def test_tumour_crossing_one_polar_line_is_l2_and_posterior():
    cs, ca, cl = SMALL["centre"]
    f = features(phantom(tumours=[(cs + 22.0, ca - 12.0, cl + 10.0, 12.0)]))
    assert 0.0 < f["fraction_between"] <= 0.5 and f["fraction_below_lower"] == 0.0
    assert f["renal_l"] == 2 and f["renal_a"] == "p"


def test_kidney_without_hilum_falls_back_to_thirds_and_core():
    cs, ca, cl = SMALL["centre"]
    convex = {k: v for k, v in SMALL.items() if k != "notch"}
    # The kidney spans cs - 50 .. cs + 50: thirds at cs - 16.7 and cs + 16.7; the tumour sits at cs + 32 .. cs + 48.
    f = features(phantom(convex, tumours=[(cs + 40.0, ca, cl + 10.0, 8.0)]))
    assert f["polar_from_hilum"] == 0.0 and f["sinus_found"] == 0.0
    assert f["fraction_above_upper"] == 1.0 and f["renal_l"] == 1
    assert f["sinus_distance_mm"] > 7.0 and f["renal_n"] == 1  # the central core is far from the pole
    g = features(phantom(convex, tumours=[(cs, ca, cl, 8.0)]))  # at the core
    assert g["sinus_distance_mm"] == 0.0 and g["renal_n"] == 3 and g["renal_l"] == 3


def test_geometry_not_axis_order_decides():
    cs, ca, cl = SMALL["centre"]
    tumours = [(cs + 22.0, ca - 12.0, cl + 10.0, 12.0)]
    kits = features(phantom(tumours=tumours))
    canonical = features(phantom(tumours=tumours, kits_layout=False), direction=SAL_DIRECTION)
    assert kits == canonical
    # The same array read with the identity direction puts S/I along axis 2: other polar lines, another answer.
    assert features(phantom(tumours=tumours), direction=None)["fraction_between"] != kits["fraction_between"]


def test_volumes_are_voxel_counts_times_voxel_volume():
    cs, ca, cl = SMALL["centre"]
    lab = phantom(tumours=[(cs + 55.0, ca, cl, 12.0), (cs - 30.0, ca, cl + 15.0, 5.0)],
                  cysts=[(cs - 10.0, ca - 15.0, cl + 5.0, 6.0)])
    f = features(lab)
    voxel_ml = 2.5 * 0.8 * 0.8 / 1000.0
    assert f["tumour_volume_ml"] == pytest.approx(np.count_nonzero(lab == 2) * voxel_ml, rel=1e-12)
    assert f["cyst_volume_ml"] == pytest.approx(np.count_nonzero(lab == 3) * voxel_ml, rel=1e-12)
    assert f["kidney_volume_ml"] == pytest.approx(np.count_nonzero(lab > 0) * voxel_ml, rel=1e-12)
    assert f["parenchyma_volume_ml"] == pytest.approx(np.count_nonzero(lab == 1) * voxel_ml, rel=1e-12)
    assert f["n_tumours"] == 2.0
    assert f["largest_tumour_volume_ml"] == pytest.approx(4 / 3 * math.pi * 12.0 ** 3 / 1000.0, rel=0.05)
    assert set(f) == set(FEATURE_NAMES)


def test_two_kidneys_the_tumour_bearing_one_is_measured():
    cs, ca, cl = SMALL["centre"]
    other = dict(centre=(cs, ca, cl + 70.0), axes=(55.0, 28.0, 28.0))  # bigger, no tumour
    kidney = dict(SMALL, extent=(150.0, 80.0, 170.0))
    lab = phantom(kidney, tumours=[(cs + 55.0, ca, cl, 12.0)], extra_kidney=other)
    alone = phantom(kidney, tumours=[(cs + 55.0, ca, cl, 12.0)])
    f, g = features(lab), features(alone)
    assert f["kidney_volume_ml"] == g["kidney_volume_ml"]
    assert f["kidney_volume_ml"] < np.count_nonzero(lab > 0) * 2.5 * 0.8 * 0.8 / 1000.0 / 1.5
    assert f["renal_score"] == g["renal_score"] == 4


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), SPACING])
def test_sphere_diameter_and_sphericity_box_less_round(spacing):
    s, a, l = _grid((60.0, 60.0, 60.0), spacing)
    for r in (8.0, 16.0):
        ball = (s - 30) ** 2 + (a - 30) ** 2 + (l - 30) ** 2 <= r * r
        assert max_diameter(ball, spacing) == pytest.approx(2 * r, abs=max(spacing))
        area = surface_area(ball, spacing)
        assert area == pytest.approx(4 * math.pi * r * r, rel=0.05)
        volume = np.count_nonzero(ball) * np.prod(spacing)
        assert math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area == pytest.approx(1.0, abs=0.05)
    box = (np.abs(s - 30) <= 5) & (np.abs(a - 30) <= 5) & (np.abs(l - 30) <= 25)
    volume = np.count_nonzero(box) * np.prod(spacing)
    assert math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / surface_area(box, spacing) < 0.85


@pytest.mark.parametrize("args,want", [
    ((40.0, 0.5, 7.0, 0.0, 1.0, 0.0, False), (1, 1, 1, 1, 4, "low")),
    ((40.1, 0.49, 6.9, 0.3, 0.7, 0.0, False), (2, 2, 2, 2, 8, "moderate")),
    ((70.0, 0.0, 4.0, 0.3, 0.7, 0.0, True), (3, 3, 3, 3, 12, "high")),
    ((69.9, 0.2, 4.1, 0.6, 0.4, 0.0, False), (2, 2, 2, 3, 9, "moderate")),
    ((30.0, 0.8, 10.0, 0.0, 0.0, 1.0, False), (1, 1, 1, 1, 4, "low")),
])
def test_renal_score_thresholds(args, want):
    got = renal_score(*args)
    assert (got["renal_r"], got["renal_e"], got["renal_n"], got["renal_l"], got["renal_score"],
            got["renal_band"]) == want


def test_kidney_crop_shape_channels_and_orientation():
    cs, ca, cl = SMALL["centre"]
    kidney = dict(SMALL, extent=(150.0, 80.0, 170.0))
    other = dict(centre=(cs, ca, cl + 70.0), axes=(55.0, 28.0, 28.0))
    lab = phantom(kidney, tumours=[(cs + 45.0, ca, cl, 12.0)], cysts=[(cs - 20.0, ca, cl + 15.0, 6.0)],
                  extra_kidney=other)
    crop = kidney_crop(lab, SPACING, direction=KITS_DIRECTION)
    assert crop.shape == (48, 48, 48, 3) and crop.dtype == np.float32
    assert set(np.unique(crop)) <= {0.0, 1.0} and crop.sum(axis=-1).max() == 1.0
    assert all(crop[..., c].any() for c in range(3))
    big = kidney_crop(lab, SPACING, size=(80, 64, 64), mm=1.5, direction=KITS_DIRECTION)
    f = features(lab)
    assert big.sum() * 1.5 ** 3 / 1000.0 == pytest.approx(f["kidney_volume_ml"], rel=0.05)  # the other kidney is out
    tumour_rows = np.nonzero(big[..., 1].any(axis=(1, 2)))[0]
    assert tumour_rows.min() > 40  # the upper-pole tumour sits in the superior half (axis 0 points superior)
    short = kidney_crop(lab, SPACING, size=(24, 64, 64), mm=1.5, direction=KITS_DIRECTION)  # 36 mm of a 100 mm kidney
    assert short[..., 1].sum() == big[..., 1].sum()  # the window slid to keep the tumour whole
    with pytest.raises(ValueError, match="size"):
        kidney_crop(lab, SPACING, size=(48, 48))


def test_bad_input_raises_one_clear_error():
    lab = phantom()
    with pytest.raises(ValueError, match="no tumour"):
        features(lab)
    with pytest.raises(ValueError, match="spacing"):
        image_features(lab, (1.0, 1.0), KITS_DIRECTION)
    bad = lab.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(ValueError, match="labels must be 0-3"):
        features(bad)
    with pytest.raises(ValueError, match="3D"):
        canonical_labels(lab[0], SPACING[1:])


def _write_case(folder, name, lab):
    nib = pytest.importorskip("nibabel")
    # The KiTS affine: RAS columns of (inferior, posterior, left) array axes = (S -> -z, P -> -y, L -> -x in RAS).
    affine = np.array([[0.0, 0.0, -0.8, 0.0], [0.0, -0.8, 0.0, 0.0], [-2.5, 0.0, 0.0, 0.0], [0, 0, 0, 1.0]])
    path = folder / name / "segmentation.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), str(path))
    return path


def test_read_mask_and_cohort_functions(tmp_path):
    cs, ca, cl = SMALL["centre"]
    lab = phantom(tumours=[(cs + 55.0, ca, cl, 12.0)])
    paths = {"case_00000": _write_case(tmp_path, "case_00000", lab),
             "case_00001": _write_case(tmp_path, "case_00001", phantom(tumours=[(cs, ca, cl + 17.5, 10.0)]))}
    got, spacing, meta = read_mask(paths["case_00000"])
    assert np.array_equal(got, lab) and spacing == pytest.approx(SPACING)
    assert np.allclose(meta.direction_matrix, KITS_DIRECTION)
    frame = features_for_cohort(paths, progress=False)
    assert list(frame.index) == ["case_00000", "case_00001"] and list(frame.columns) == list(FEATURE_NAMES)
    assert frame.loc["case_00000"].to_dict() == features(lab, spacing, meta.direction_matrix)  # float32 header
    ids, crops = crops_for_cohort(paths, size=(16, 16, 16), mm=4.0, progress=False)
    assert ids == ["case_00000", "case_00001"] and crops.shape == (2, 16, 16, 16, 3)
    with pytest.raises(FileNotFoundError, match="case_00002"):
        features_for_cohort({**paths, "case_00002": tmp_path / "case_00002" / "segmentation.nii.gz"}, progress=False)
    no_tumour = _write_case(tmp_path, "case_00003", phantom())
    with pytest.raises(ValueError, match="case_00003.*no tumour"):
        features_for_cohort({"case_00003": no_tumour}, progress=False)


@pytest.mark.slow
def test_real_kits_masks(shared_data):
    import json

    folder = shared_data / "kits23" / "development"
    if not folder.is_dir():
        pytest.skip(f"KiTS23 development masks not found at {folder}")
    records = {r["case_id"]: r for r in json.loads((folder / "clinical.json").read_text(encoding="utf-8"))}
    ids = sorted(records)[:3]
    frame = features_for_cohort({c: folder / c / "segmentation.nii.gz" for c in ids}, progress=False)
    for c in ids:
        row = frame.loc[c]
        assert 4 <= row["renal_score"] <= 12
        # The recorded radiographic size (cm) and the mask's maximal diameter (mm) agree within a factor of 2.
        assert 0.5 < row["max_diameter_mm"] / (10.0 * records[c]["radiographic_size"]) < 2.0
