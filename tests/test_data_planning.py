"""data_pipelines.fingerprint / planner / preprocessing (and the planning command): fingerprint -> plan rules, normalisation per modality, the geometry round trip of
preprocess_case / restore_case on a NIfTI-like case, the plan's JSON, and the real BraTS samples."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_pipelines import datasets, planner, planning, preprocessing, readers
from data_pipelines import fingerprint as fingerprints

# Array axes -> LPS world: axis 0 points anterior (-P), axis 1 left, axis 2 inferior: a permutation with flips.
DIRECTION = ((0.0, 1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, -1.0))


def _meta(spacing, direction=DIRECTION, fmt="nifti"):
    nd = len(spacing)
    if direction is None or len(direction) != nd:
        direction = tuple(tuple(float(i == j) for j in range(nd)) for i in range(nd))
    return readers.ImageMeta(tuple(float(s) for s in spacing), (12.5, -30.0, 7.0)[:nd], direction, "case.nii.gz", fmt)


def _case(shape=(18, 26, 10), channels=2, seed=0, background=0.0):
    """A head-like case: positive intensities inside a box, ``background`` outside, a 2-class lesion."""
    rng = np.random.default_rng(seed)
    img = np.full(tuple(shape) + (channels,), background, np.float32)
    body = tuple(slice(2, s - 3) for s in shape)
    img[body] = rng.uniform(1.0, 5.0, size=img[body].shape)
    lab = np.zeros(shape, np.int32)
    c = [s // 2 for s in shape]
    lab[c[0] - 3:c[0] + 3, c[1] - 4:c[1] + 4, c[2] - 2:c[2] + 2] = 1
    lab[c[0] - 1:c[0] + 1, c[1] - 1:c[1] + 2, c[2] - 1:c[2] + 1] = 2
    return img, lab


@pytest.mark.parametrize("spacings,dims,slice_axis", [
    ([(0.7, 0.7, 5.0), (0.8, 0.8, 5.0), (0.75, 0.75, 3.0)], 2, 2),  # thick axial slices -> 2D across them
    ([(4.0, 0.9, 0.9), (4.0, 1.0, 1.0), (6.0, 1.0, 1.0)], 2, 0),  # sagittal-like: coarse axis 0
    ([(1.0, 1.0, 1.2), (1.0, 1.0, 1.0), (0.9, 0.9, 1.0)], 3, None),  # near isotropic -> 3D
])
def test_anisotropy_decides_2d_and_the_coarse_axis_spacing(spacings, dims, slice_axis):
    cases = []
    for i, sp in enumerate(spacings):
        img, lab = _case(seed=i)
        cases.append((img, lab, _meta(sp, direction=None)))
    fp = fingerprints.fingerprint(cases)
    np.testing.assert_allclose(fp["median_spacing"], np.median(np.asarray(spacings), axis=0))
    plan = planner.make_plan(fp, modality="MR")
    assert plan.spatial_dims == dims and plan.slice_axis == slice_axis
    assert len(plan.patch_size) == dims and plan.batch_size >= 2
    sp = np.asarray(spacings)
    if dims == 2:  # nnU-Net: the coarse axis takes the 10th percentile of its spacings, the others the median
        assert plan.spacing[slice_axis] == pytest.approx(np.percentile(sp[:, slice_axis], 10))
    else:
        np.testing.assert_allclose(plan.spacing, np.median(sp, axis=0))
    # spatial_dims given: the rule is overridden
    assert planner.make_plan(fp, modality="MR", spatial_dims=3).spatial_dims == 3


def test_patch_fits_the_budget_in_multiples_of_the_divisor():
    img, lab = _case(shape=(70, 50, 40))
    fp = fingerprints.fingerprint([(img, lab, _meta((1.0, 1.0, 1.0), None))])
    assert fp["median_shape"] == [70.0, 50.0, 40.0]
    big = planner.make_plan(fp, modality="MR", memory_budget=10 ** 9)
    assert big.patch_size == (80, 64, 48)  # the median shape rounded up to multiples of 16
    small = planner.make_plan(fp, modality="MR", memory_budget=2 * 32 ** 3)
    assert all(p % 16 == 0 for p in small.patch_size)
    assert 2 * np.prod(small.patch_size) <= 2 * 32 ** 3 and small.batch_size >= 2
    cropped = planner.make_plan(fp, modality="MR", memory_budget=10 ** 9, crop="nonzero")
    assert cropped.patch_size == (80, 48, 48)  # body box 65 x 45 x 35


def test_ct_clips_at_the_foreground_percentiles_then_zscores():
    rng = np.random.default_rng(1)
    img = rng.uniform(-1000, -900, size=(20, 20, 8, 1)).astype(np.float32)
    lab = np.zeros((20, 20, 8), np.int32)
    lab[5:15, 5:15, 2:6] = 1  # 400 labelled voxels (all sampled): HU 0..3999 plus two outliers
    hu = np.arange(400, dtype=np.float32)
    hu[0], hu[1] = -3000, 9000
    img[lab == 1, 0] = hu
    meta = _meta((0.7, 0.7, 2.5))
    fp = fingerprints.fingerprint([(img, lab, meta)])
    plan = planner.make_plan(fp, modality="CT", spatial_dims=3)
    ch = plan.channels[0]
    assert ch["scheme"] == "ct"
    assert ch["lower"] == pytest.approx(np.percentile(hu, 0.5)) and ch["upper"] == pytest.approx(np.percentile(hu, 99.5))
    assert ch["mean"] == pytest.approx(hu.mean()) and ch["std"] == pytest.approx(hu.std(), rel=1e-6)
    x, ctx = preprocessing.preprocess_case(img, meta, plan)
    assert x.max() == pytest.approx((ch["upper"] - ch["mean"]) / ch["std"], rel=1e-5)
    assert x.min() == pytest.approx((ch["lower"] - ch["mean"]) / ch["std"], rel=1e-5)


def test_mr_zscores_each_case_over_its_foreground_and_rgb_scales_to_unit():
    img, lab = _case(background=0.0)
    img[..., 1] *= 40.0
    meta = _meta((1.0, 1.0, 1.0))
    plan = planner.make_plan(fingerprints.fingerprint([(img, lab, meta)]), modality="MR", spatial_dims=3)
    assert [c["scheme"] for c in plan.channels] == ["zscore_fg", "zscore_fg"]
    x, ctx = preprocessing.preprocess_case(img, meta, plan)
    body = fingerprints.body_mask(img)
    back = preprocessing.restore_case(x, ctx, order=1)  # the same grid (spacing kept, no crop): values unchanged
    for c in range(2):
        v = back[..., c][body]
        assert abs(v.mean()) < 1e-4 and v.std() == pytest.approx(1.0, rel=1e-4)
        assert np.all(back[..., c][~body] == 0)
    rgb = np.random.default_rng(2).integers(0, 256, size=(12, 10, 3)).astype(np.float32)
    pic = readers.ImageMeta((1.0, 1.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)), "a.png", "picture")
    plan = planner.make_plan(fingerprints.fingerprint([(rgb, None, pic)]), modality="RGB")
    assert plan.spacing is None and plan.spatial_dims == 2 and plan.channels[0]["upper"] == 255.0
    y, ctx = preprocessing.preprocess_case(rgb, pic, plan)
    np.testing.assert_allclose(y, rgb / 255.0, rtol=1e-6)


def _plan_at(spacing, spatial_dims=3, crop=None, slice_axis=None, channels=2):
    return planner.Plan(spatial_dims=spatial_dims, spacing=spacing, patch_size=(16,) * spatial_dims, batch_size=2,
                         channels=tuple({"name": f"c{i}", "scheme": "zscore_fg", "mean": 0.0, "std": 1.0}
                                        for i in range(channels)),
                         preprocessing={"denoise": None, "n4": False, "crop": crop}, slice_axis=slice_axis)


# Input spacing (0.8, 1.2, 4.0) in array order; DIRECTION maps array axes (0, 1, 2) to LPS axes (1, 0, 2), so
# in LPS order (the plan's) the spacing is (1.2, 0.8, 4.0).
@pytest.mark.parametrize("spacing,crop,dims,slice_axis,exact", [
    ((1.2, 0.8, 4.0), None, 3, None, True),  # the plan keeps the resolution
    ((1.2, 0.8, 4.0), "nonzero", 3, None, True),  # ... and crops to the body
    ((0.6, 0.4, 2.0), "nonzero", 3, None, True),  # twice as fine on every axis: nearest there and back is exact
    ((1.2, 0.8, 4.0), "nonzero", 2, 2, True),  # 2D plan: slices across LPS axis 2, moved last
    ((0.6, 0.4, 4.0), None, 2, 0, True),  # 2D across LPS axis 0 (never resampled), in-plane twice as fine
    ((2.0, 1.5, 5.0), "nonzero", 3, None, False),  # coarser: only the shape comes back exactly
])
def test_preprocess_restore_round_trips_the_input_grid(spacing, crop, dims, slice_axis, exact):
    img, lab = _case(shape=(18, 26, 10))
    meta = _meta((0.8, 1.2, 4.0))
    plan = _plan_at(spacing, dims, crop, slice_axis)
    x, ctx = preprocessing.preprocess_case(img, meta, plan)
    y = preprocessing.preprocess_label(lab, meta, plan, ctx)
    assert y.shape == x.shape[:-1] and y.dtype == np.int32
    json.dumps(ctx)  # ctx is plain JSON
    if crop:
        assert np.prod(ctx["cropped_shape"]) < np.prod(ctx["oriented_shape"])
    if slice_axis is not None:  # the slice axis is last and keeps its spacing and size
        assert x.shape[2] == ctx["cropped_shape"][-1] and ctx["spacing_out"][-1] == ctx["spacing_in"][-1]
    back = preprocessing.restore_case(y, ctx)
    assert back.shape == lab.shape and back.dtype == np.int32
    proba = np.stack([y == k for k in range(3)], axis=-1).astype(np.float32)
    back_p = preprocessing.restore_case(proba, ctx, order=1)
    assert back_p.shape == lab.shape + (3,)
    if exact:
        np.testing.assert_array_equal(back, lab)
        np.testing.assert_array_equal(back_p.argmax(-1), lab)
    else:
        assert np.mean(back == lab) > 0.9
    # LPS: the first preprocessed axis is the input's axis 1 (world L), flipped back exactly
    if dims == 3 and spacing[0] == 1.2 and crop is None:
        np.testing.assert_array_equal(y, np.flip(np.transpose(lab, (1, 0, 2)), axis=(1, 2)))


def test_plan_json_round_trips_and_applies_identically(tmp_path):
    img, lab = _case()
    meta = _meta((0.8, 1.2, 4.0))
    fp = fingerprints.fingerprint([(img, lab, meta)])
    plan = planner.make_plan(fp, modality="MR", spatial_dims=3, denoise="curvature_flow", n4=True,
                              crop="nonzero", channel_names=("FLAIR", "T1c"))
    path = tmp_path / "plan.json"
    plan.save(path)
    again = planner.Plan.load(path)
    assert again == plan and planner.Plan.from_dict(plan.to_dict()) == plan
    assert json.loads(path.read_text(encoding="utf-8"))["preprocessing"] == {"denoise": "curvature_flow", "n4": True, "crop": "nonzero"}
    a, ctx_a = preprocessing.preprocess_case(img, meta, plan)
    b, ctx_b = preprocessing.preprocess_case(img, meta, again)
    np.testing.assert_array_equal(a, b)
    assert ctx_a == ctx_b and np.all(np.isfinite(a))
    median = preprocessing.preprocess_case(img, meta, planner.make_plan(fp, modality="MR", spatial_dims=3,
                                                                    denoise="median"))[0]
    assert not np.array_equal(median, preprocessing.preprocess_case(img, meta, planner.make_plan(
        fp, modality="MR", spatial_dims=3))[0])


@pytest.mark.parametrize("change,match", [
    ({"spatial_dims": 4}, "spatial_dims"),
    ({"patch_size": [16, 16]}, "patch_size"),
    ({"channels": [{"name": "x", "scheme": "minmax"}]}, "scheme"),
    ({"channels": [{"name": "x", "scheme": "ct", "mean": 0.0, "std": 1.0}]}, "lower"),
    ({"preprocessing": {"denoise": "gaussian"}}, "denoise"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_plans_name_the_field(tmp_path, change, match):
    d = _plan_at((1.0, 1.0, 1.0), channels=1).to_dict()
    d.update(change)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match):
        planner.Plan.load(path)


def test_bad_inputs_raise():
    img, lab = _case(channels=2)
    meta = _meta((1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="channels"):
        preprocessing.preprocess_case(img[..., :1], meta, _plan_at((1.0, 1.0, 1.0)))
    with pytest.raises(ValueError, match="n4"):
        planner.make_plan(fingerprints.fingerprint([(img, lab, meta)]), modality="CT", n4=True)
    with pytest.raises(ValueError, match="modality"):
        planner.make_plan(fingerprints.fingerprint([(img, lab, meta)]), modality="PET")
    with pytest.raises(FileNotFoundError):
        planner.Plan.load("/nonexistent/plan.json")
    assert planning.main(["--data_dir", "/nonexistent", "--dataset", "brats"]) == 2


def test_brats_samples_plan(shared_data, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert planning.main(["--data_dir", str(shared_data / "brats"), "--dataset", "brats", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    fp, plan = printed["fingerprint"], planner.Plan.load(out)
    assert printed["plan"] == plan.to_dict() and fp["num_cases"] == 4
    assert fp["median_shape"] == [240.0, 240.0, 155.0]
    # 1 mm isotropic (BraTS is resampled by the organisers) -> 3D at 1 mm, nnU-Net's 128^3 patch at batch 2
    assert plan.spatial_dims == 3 and plan.spacing == (1.0, 1.0, 1.0)
    assert plan.patch_size == (128, 128, 128) and plan.batch_size == 2
    assert [c["name"] for c in plan.channels] == ["FLAIR", "T1c"]
    assert all(c["scheme"] == "zscore_fg" for c in plan.channels)
    assert 0.95 < fp["class_frequencies"][0] < 1.0 and len(fp["class_frequencies"]) == 4


def test_isic_samples_plan_applies_to_the_pixels_as_read(shared_data):
    cases, names, _ = datasets.read_cases("isic", str(shared_data / "isic_like"))
    fp = fingerprints.fingerprint((c["image"], c["label"], c["meta"]) for c in cases)
    plan = planner.make_plan(fp, modality="RGB", channel_names=names)
    assert plan.spatial_dims == 2 and plan.spacing is None and plan.patch_size == (192, 256)
    assert all(c["scheme"] == "rgb" and c["upper"] == 255.0 for c in plan.channels)
    image, meta = readers.read_image(cases[0]["meta"].path)  # what zoo.predict reads
    x, ctx = preprocessing.preprocess_case(image, meta, plan)
    assert x.shape == image.shape and 0.0 <= x.min() and x.max() <= 1.0 and x.max() > 0.5
    assert preprocessing.restore_case(np.zeros(x.shape[:-1], np.int32), ctx).shape == image.shape[:-1]
