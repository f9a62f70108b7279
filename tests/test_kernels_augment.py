"""Geometric kernels and the augmentation pipeline against scipy.ndimage references."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage as ndi

import jax
import jax.numpy as jnp

import kernels
from kernels import augment, geometry, spatial


def smooth_image(shape, channels=2):
    x = np.indices(shape).astype(np.float64)
    chans = []
    for c in range(channels):
        v = np.ones(shape)
        for a in range(len(shape)):
            v = v * np.cos((0.17 + 0.05 * a + 0.03 * c) * x[a] + 0.3 * c)
        chans.append(v)
    return np.stack(chans, -1).astype(np.float32)


def label_map(shape, seed=0):
    return np.random.default_rng(seed).choice(np.array([0, 2, 5], np.int32), size=shape)


def rotation_scale(shape, angle, scale, shift, shear=0.0):
    d = len(shape)
    r = np.eye(d)
    r[0, 0] = r[1, 1] = np.cos(angle)
    r[0, 1], r[1, 0] = -np.sin(angle), np.sin(angle)
    if d == 3:
        r = r @ np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)], [0, np.sin(0.4), np.cos(0.4)]])
    a = r @ np.diag(np.full(d, 1.0 / scale))
    a[0, -1] += shear
    c = (np.array(shape) - 1) / 2.0
    m = np.eye(d + 1)
    m[:d, :d] = a
    m[:d, d] = c - a @ c + np.asarray(shift)
    return m


def unambiguous(coords, shape, tol=1e-4):
    """Points whose coordinates are not within tol of a nearest-neighbour tie or of the domain edge
    (there float32 vs float64 rounding may legitimately pick the other side)."""
    ok = np.ones(coords.shape[1:], bool)
    for a, n in enumerate(shape):
        c = coords[a]
        tie = np.abs(c - (np.floor(c) + 0.5))
        edge = np.minimum(np.abs(c), np.abs(c - (n - 1)))
        ok &= ~((tie > 0) & (tie < tol)) & ~((edge > 0) & (edge < tol))
    return ok


AFFINE_CASES = [
    # shape, angle, scale, shift, shear
    ((19, 23), 0.3, 1.1, (0.37, -1.2), 0.0),
    ((19, 23), -0.7, 0.8, (2.0, 0.5), 0.2),
    ((19, 23), 0.0, 1.0, (0.5, -0.5), 0.0),  # exact half-voxel ties
    ((11, 9, 13), 0.25, 1.2, (0.3, 0.1, -0.6), 0.0),
    ((11, 9, 13), -0.4, 0.9, (1.0, 0.0, 0.5), 0.1),
]


@pytest.mark.parametrize("shape,angle,scale,shift,shear", AFFINE_CASES)
def test_affine_transform_matches_scipy(shape, angle, scale, shift, shear):
    img, lab = smooth_image(shape), label_map(shape)
    m = rotation_scale(shape, angle, scale, shift, shear)
    out_img, out_lab = kernels.affine_transform(jnp.asarray(img), m, jnp.asarray(lab))
    coords = np.einsum("ij,j...->i...", m[:-1, :-1], np.indices(shape).astype(np.float64))
    coords += m[:-1, -1].reshape((-1,) + (1,) * len(shape))
    ok = unambiguous(coords, shape)
    assert ok.mean() > 0.98
    for c in range(img.shape[-1]):
        ref = ndi.affine_transform(img[..., c].astype(np.float64), m, order=1, mode="constant", cval=0.0)
        np.testing.assert_allclose(np.asarray(out_img)[..., c][ok], ref[ok], atol=1e-4)
    ref_lab = ndi.affine_transform(lab, m, order=0, mode="constant", cval=0)
    np.testing.assert_array_equal(np.asarray(out_lab)[ok], ref_lab[ok])
    assert out_lab.dtype == jnp.int32 and set(np.unique(np.asarray(out_lab))) <= {0, 2, 5}


@pytest.mark.parametrize("shape,control", [((19, 23), "gaussian"), ((19, 23), "bspline"),
                                           ((11, 9, 13), "gaussian"), ((11, 9, 13), "bspline")])
def test_elastic_plus_affine_matches_map_coordinates_same_field(shape, control):
    img, lab = smooth_image(shape, 1), label_map(shape, 1)
    m = rotation_scale(shape, 0.2, 1.05, [0.3] * len(shape))
    key = jax.random.key(3)
    out_img, out_lab = jax.jit(lambda k, x, y: kernels.elastic_deform(
        k, x, y, alpha=6.0, sigma=2.5, control=control, matrix=m))(key, jnp.asarray(img), jnp.asarray(lab))
    disp = geometry.elastic_displacement(key, shape, alpha=6.0, sigma=2.5, control=control)
    assert float(jnp.max(jnp.abs(disp))) > 0.1  # the field actually moves voxels
    coords = np.asarray(geometry.affine_coordinates(m, shape) + disp).astype(np.float64)
    ref = ndi.map_coordinates(img[..., 0].astype(np.float64), coords, order=1, mode="constant", cval=0.0)
    np.testing.assert_allclose(np.asarray(out_img)[..., 0], ref, atol=1e-4)
    ref_lab = ndi.map_coordinates(lab, coords, order=0, mode="constant", cval=0)
    np.testing.assert_array_equal(np.asarray(out_lab), ref_lab)


@pytest.mark.parametrize("shape", [(30, 26), (14, 12, 16)])
def test_gaussian_control_equals_scipy_gaussian_filter(shape):
    noise = np.random.default_rng(0).uniform(-1, 1, (len(shape), *shape)).astype(np.float32)
    field = np.asarray(geometry.smooth_noise(noise, shape, 3.0, "gaussian"))
    for a in range(len(shape)):
        ref = ndi.gaussian_filter(noise[a].astype(np.float64), 3.0, mode="reflect", truncate=4.0)
        np.testing.assert_allclose(field[a], ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(30, 26), (14, 12, 16)])
def test_bspline_control_equals_scipy_cubic_spline(shape):
    sigma = 2.0
    nshape = geometry.noise_shape(shape, sigma, "bspline")
    noise = np.random.default_rng(1).uniform(-1, 1, nshape).astype(np.float32)
    field = np.asarray(geometry.smooth_noise(noise, shape, sigma, "bspline"))
    h = geometry.bspline_spacing(sigma)
    # Voxel x sits at control coordinate (x - start) / h; scipy order 3 without prefilter evaluates the
    # same cubic B-spline sum of the coefficients. Our basis carries one scale per axis.
    mats = geometry._smoothing_matrices(tuple(shape), sigma, "bspline", 4.0)[0]
    coords, scale = [], 1.0
    for n, m, mat in zip(shape, nshape[1:], mats):
        start = (n - 1) / 2.0 - (m - 1) / 2.0 * h
        coords.append((np.arange(n) - start) / h)
        scale *= float(mat.max() / geometry.bspline_matrix(n, h).max())
    grid = np.stack(np.meshgrid(*coords, indexing="ij"))
    for a in range(len(shape)):
        ref = ndi.map_coordinates(noise[a].astype(np.float64), grid, order=3, prefilter=False, mode="nearest")
        np.testing.assert_allclose(field[a], ref * scale, rtol=1e-4, atol=1e-5)
    # alpha keeps its meaning across control modes: same mean variance as the Gaussian mode.
    g = geometry._smoothing_matrices(tuple(shape), sigma, "gaussian", 4.0)[0]
    b = geometry._smoothing_matrices(tuple(shape), sigma, "bspline", 4.0)[0]
    for gm, bm in zip(g, b):
        np.testing.assert_allclose((gm.astype(np.float64) ** 2).sum(1).mean(), (bm.astype(np.float64) ** 2).sum(1).mean(),
                                   rtol=1e-4)


@pytest.mark.parametrize("shape", [(9, 7), (5, 6, 7)])
def test_identity_parameters_give_identity(shape):
    img, lab = smooth_image(shape), label_map(shape)
    d = len(shape)
    out, out_lab = kernels.affine_transform(jnp.asarray(img), np.eye(d + 1), jnp.asarray(lab))
    np.testing.assert_array_equal(np.asarray(out), img)
    np.testing.assert_array_equal(np.asarray(out_lab), lab)
    out, out_lab = kernels.elastic_deform(jax.random.key(0), jnp.asarray(img), jnp.asarray(lab), alpha=0.0, sigma=2.0)
    np.testing.assert_array_equal(np.asarray(out), img)
    np.testing.assert_array_equal(np.asarray(out_lab), lab)
    specs = [{}]
    if d == 2:  # the full spec compiles slowly; one dimensionality suffices for "p=0 is the identity"
        names = ("rotate", "scale", "flip", "elastic", "gamma", "noise")
        specs.append({n: dict(augment.DEFAULT_SEGMENTATION_SPEC[n], p=0.0) for n in names})
    for spec in specs:
        out, out_lab = jax.jit(kernels.make_pipeline(spec))(jax.random.key(1), jnp.asarray(img), jnp.asarray(lab))
        np.testing.assert_array_equal(np.asarray(out), img)
        np.testing.assert_array_equal(np.asarray(out_lab), lab)


@pytest.mark.parametrize("shape,axes", [((8, 7), (0,)), ((8, 7), (0, 1)), ((6, 5, 4), (0, 2)), ((6, 5, 4), (0, 1, 2))])
def test_flips_are_exact(shape, axes):
    img, lab = smooth_image(shape), label_map(shape)
    fn = jax.jit(kernels.make_pipeline({"flip": {"axes": axes, "p": 1.0}}))
    out, out_lab = fn(jax.random.key(0), jnp.asarray(img), jnp.asarray(lab))
    np.testing.assert_array_equal(np.asarray(out), np.flip(img, axes))
    np.testing.assert_array_equal(np.asarray(out_lab), np.flip(lab, axes))


@pytest.mark.parametrize("shape", [(16, 12), (8, 10, 6)])
def test_pipeline_deterministic_per_key_and_batched(shape):
    if len(shape) == 2:
        spec = kernels.augment.default_segmentation_spec()
        spec.update({"translate": {"max_voxels": 2, "p": 0.5}, "bias_field": {"strength": 0.3, "p": 0.5}})
    else:  # keep 3D compile time down: all geometric transforms and one intensity transform
        spec = {"rotate": {"max_angle": (10, 20, 5)}, "scale": {"range": (0.9, 1.1), "isotropic": False},
                "flip": {"axes": (0, 2)}, "translate": {"max_voxels": (1, 2, 1)}, "elastic": {"alpha": 5, "sigma": 2},
                "gamma": {"range": (0.8, 1.2)}}
    spec = {n: dict(q, p=1.0) for n, q in spec.items()}
    fn = kernels.make_pipeline(spec)
    img, lab = jnp.asarray(smooth_image(shape, 1)), jnp.asarray(label_map(shape))
    jfn = jax.jit(fn)
    a1, l1 = jfn(jax.random.key(7), img, lab)
    a2, l2 = jfn(jax.random.key(7), img, lab)
    b, lb = jfn(jax.random.key(8), img, lab)
    np.testing.assert_array_equal(np.asarray(a1), np.asarray(a2))
    np.testing.assert_array_equal(np.asarray(l1), np.asarray(l2))
    assert not np.allclose(np.asarray(a1), np.asarray(b))
    assert not np.array_equal(np.asarray(a1), np.asarray(img))
    assert set(np.unique(np.asarray(l1))) <= {0, 2, 5} and l1.dtype == jnp.int32
    assert a1.shape == img.shape and a1.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(a1)))
    if len(shape) == 3:
        return
    # The batch wrapper is the vmap of the per-sample function with split keys.
    spec = {n: spec[n] for n in ("rotate", "elastic", "noise")}
    jfn = jax.jit(kernels.make_pipeline(spec))
    images, labels = jnp.stack([img, img * 0.5]), jnp.stack([lab, lab])
    bi, bl = kernels.make_batch_pipeline(spec)(jax.random.key(9), images, labels)
    keys = jax.random.split(jax.random.key(9), 2)
    for i in range(2):
        ri, rl = jfn(keys[i], images[i], labels[i])
        np.testing.assert_allclose(np.asarray(bi[i]), np.asarray(ri), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(bl[i]), np.asarray(rl))
    # Without a label map the image is warped the same way (one compile of the small spec, not a batch one).
    ri0, none = jfn(keys[0], images[0])
    assert none is None
    np.testing.assert_allclose(np.asarray(ri0), np.asarray(bi[0]), atol=1e-5)


def test_random_elastic_keys():
    img = jnp.asarray(smooth_image((20, 18), 1))
    f = jax.jit(lambda k: kernels.elastic_deform(k, img, alpha=8.0, sigma=3.0)[0])
    np.testing.assert_array_equal(np.asarray(f(jax.random.key(0))), np.asarray(f(jax.random.key(0))))
    assert not np.allclose(np.asarray(f(jax.random.key(0))), np.asarray(f(jax.random.key(1))))


BAD_INPUTS = [
    (lambda: kernels.affine_transform(jnp.zeros((4, 4)), np.eye(3)), "image"),
    (lambda: kernels.affine_transform(jnp.zeros((1, 4, 4, 4, 1)), np.eye(4)), "image"),
    (lambda: kernels.affine_transform(jnp.zeros((4, 4, 1)), np.eye(4)), "matrix"),
    (lambda: kernels.affine_transform(jnp.zeros((4, 4, 1)), np.eye(3), jnp.zeros((4, 5), jnp.int32)), "label"),
    (lambda: kernels.elastic_deform(jax.random.key(0), jnp.zeros((4, 4, 1)), alpha=1.0, sigma=-1.0), "sigma"),
    (lambda: kernels.elastic_deform(jax.random.key(0), jnp.zeros((4, 4, 1)), alpha=-1.0, sigma=1.0), "alpha"),
    (lambda: kernels.elastic_deform(jax.random.key(0), jnp.zeros((4, 4, 1)), alpha=1.0, sigma=1.0, control="x"),
     "control"),
    (lambda: kernels.warp(jnp.zeros((4, 4, 1)), displacement=jnp.zeros((2, 4, 3))), "displacement"),
    (lambda: kernels.make_pipeline({"rotat": {"max_angle": 10}}), "rotate"),
    (lambda: kernels.make_pipeline({"rotate": {"max_angle": 10, "p": 1.5}}), "p"),
    (lambda: kernels.make_pipeline({"rotate": {"max_angle": 10, "foo": 1}}), "foo"),
    (lambda: kernels.make_pipeline({"scale": {"range": (1.2, 0.8)}}), "range"),
    (lambda: kernels.make_pipeline({"elastic": {"alpha": 10, "sigma": -2}}), "sigma"),
    (lambda: kernels.make_pipeline({"elastic": {"alpha": 10}}), "sigma"),
    (lambda: kernels.make_pipeline({"blur": {"sigma": (0.0, 1.0)}}), "sigma"),
    (lambda: kernels.make_pipeline(["flip"]), "spec"),
    (lambda: kernels.make_pipeline({"flip": {"axes": (2,)}})(jax.random.key(0), jnp.zeros((4, 4, 1))), "axes"),
    (lambda: kernels.make_pipeline({"flip": {}})(jax.random.key(0), jnp.zeros((4, 4, 1)),
                                                 jnp.zeros((4, 3), jnp.int32)), "label"),
]


@pytest.mark.parametrize("call,word", BAD_INPUTS)
def test_bad_input_raises_value_error_naming_argument(call, word):
    with pytest.raises(ValueError, match=word):
        call()


# ----------------------------------------------------------------------------- spatial

def test_crop_pad_resize_and_foreground():
    img = jnp.asarray(smooth_image((10, 7), 1))
    lab = np.zeros((10, 7), np.int32)
    lab[3:6, 2:4] = 1
    out, out_lab = kernels.center_crop_or_pad(img, (6, 9), jnp.asarray(lab))
    ref = np.pad(np.asarray(img), [(0, 0), (1, 1), (0, 0)])[2:8]
    np.testing.assert_array_equal(np.asarray(out), ref)
    np.testing.assert_array_equal(np.asarray(out_lab), np.pad(lab, [(0, 0), (1, 1)])[2:8])
    out, out_lab = jax.jit(lambda k: kernels.random_crop_or_pad(k, img, (4, 4), jnp.asarray(lab)))(jax.random.key(2))
    # The random crop is a window of the input: find it.
    full = np.asarray(img)[..., 0]
    hits = [(i, j) for i in range(7) for j in range(4)
            if np.array_equal(full[i:i + 4, j:j + 4], np.asarray(out)[..., 0])]
    assert hits and np.array_equal(lab[hits[0][0]:hits[0][0] + 4, hits[0][1]:hits[0][1] + 4], np.asarray(out_lab))
    lo, hi = jax.jit(lambda m: spatial.foreground_bbox(m, 1))(jnp.asarray(lab))
    np.testing.assert_array_equal(np.asarray(lo), [2, 1])
    np.testing.assert_array_equal(np.asarray(hi), [7, 5])
    lo, hi = spatial.foreground_bbox(np.zeros((4, 5)))
    np.testing.assert_array_equal(np.asarray(hi), [4, 5])
    ci, cl = kernels.crop_to_foreground(img, jnp.asarray(lab))
    assert ci.shape == (3, 2, 1) and bool(jnp.all(cl == 1))
    ri, rl = kernels.resize(img, (20, 14), jnp.asarray(lab))
    assert ri.shape == (20, 14, 1) and rl.shape == (20, 14) and int(rl.sum()) == 4 * int(lab.sum())
    with pytest.raises(ValueError, match="size"):
        kernels.resize(img, (20,))
    with pytest.raises(ValueError, match="mask"):
        kernels.crop_to_foreground(img, mask=np.zeros((3, 3)))


# ----------------------------------------------------------------------------- benchmark code path

def test_benchmark_quick_code_path(tmp_path):
    from benchmarks import augment as bench

    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--size2d", "16", "--batch2d", "2", "--size3d", "8", "--batch3d", "1",
                       "--repeats", "1", "--controls", "bspline", "--json", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    for case in ("2d", "3d"):
        r = result[case]
        assert r["jax_per_s"] > 0 and r["scipy_per_s"] > 0 and r["ratio_vs_scipy"] > 0
        assert r["warp_backend"] in ("native", "xla")
        if r["warp_backend"] == "native":  # the XLA form it replaced, measured in the same run
            assert r["jax_bspline_xla_per_s"] > 0 and r["native_speedup_bspline"] > 0


def test_train_step_overhead_code_path():
    """The --train_step path: the same U-Net step with and without augmentation inside the jit."""
    from benchmarks import elastic

    r = elastic.train_step_overhead(2, 16, 2, rounds=1, alpha=5.0, sigma=2.0,
                                  model_kwargs={"features": 2, "depth": 2, "norm": "none"})
    assert r["plain_steps_per_s"] > 0 and r["augmented_steps_per_s"] > 0
    assert r["overhead"] == r["plain_steps_per_s"] / r["augmented_steps_per_s"] - 1.0
    assert set(r["compile_s"]) == {"plain", "augmented"}
