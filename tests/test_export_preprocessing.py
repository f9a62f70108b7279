"""``python -m zoo.export NAME --with-preprocessing``: the folder, run in a fresh process where only jax and numpy
(and the standard library) can be imported, gives the labels of ``zoo.prediction.predict_case`` (stated tolerance:
identical on at least 99.9 % of voxels; the probabilities within 1e-4) for

* a 3D U-Net patch-trained with a plan (crop to the body, z-score over it, 1 mm spacing) on a 40x36x28 NIfTI volume
  with a permuted, flipped, anisotropic (1.2 x 1.5 x 2.5 mm) affine: reorientation, crop and resampling both ways;
* a 2D U-Net trained without a plan (skin phantoms at 32x32), with a calibration temperature, on a 45x38 RGB
  picture: resize both ways, mirroring, the temperature inside the exported program.

Bad input (unknown model, a model whose preprocessing cannot be carried, a bad image) is one line, exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
import types

import nibabel as nib
import numpy as np
import pytest

from data_pipelines import geometry, phantoms, preprocessing, readers
from data_pipelines.planner import Plan
from zoo import export, export_runtime, export_writer
from zoo.calibration import save_calibration
from zoo.configs import apply_overrides, load_config
from zoo.prediction import intensity_scaling, predict_case, read_case
from zoo.pretrained import load_pretrained
from zoo.training import train_and_evaluate

AFFINE = np.array([[0.0, -1.5, 0.0, 30.0],   # array axis 1 runs to patient right, 1.5 mm
                   [1.2, 0.0, 0.0, -12.5],   # array axis 0 anterior, 1.2 mm
                   [0.0, 0.0, 2.5, 7.0],     # array axis 2 superior, 2.5 mm
                   [0.0, 0.0, 0.0, 1.0]])
TEMPERATURE = 1.7  # the picture model's calibration record
AGREEMENT = 0.999  # the stated tolerance: labels identical on at least 99.9 % of voxels

# The fresh process: an import hook refuses medzoo and every library the runtime must do without (whatever the
# venv's editable install puts on the path), except scipy where jax itself imports it (jaxlib's CPU LAPACK
# initialisation reads scipy's LAPACK: a dependency of jax, installed with it); then, per job, the written command
# line and the loader's probabilities.
FRESH = r"""
import importlib.abc, importlib.util, json, runpy, sys
REFUSED = ("zoo", "data_pipelines", "kernels", "scoring", "eval", "benchmarks", "scipy", "SimpleITK", "nibabel",
           "flax", "optax", "orbax", "ml_collections", "PIL", "sklearn")
FOR_JAX = {"scipy"}
through_jax = set()

def jax_is_importing():
    f = sys._getframe(2)
    while f is not None:
        if f.f_globals.get("__name__", "").split(".")[0] in ("jax", "jaxlib"):
            return True
        f = f.f_back
    return False

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in FOR_JAX and jax_is_importing():
            through_jax.add(top)
            return None
        if top in REFUSED:
            raise ModuleNotFoundError(f"No module named {name!r} (refused by the test)")
        return None

sys.meta_path.insert(0, Refuse())
for name in REFUSED:
    try:
        __import__(name)
    except ModuleNotFoundError:
        continue
    raise SystemExit(f"{name} is importable: the test proves nothing")
reports = []
for job in json.loads(sys.argv[1]):
    runtime = job["folder"] + "/medzoo_runtime.py"
    sys.argv = [runtime, job["folder"], job["image"], "--out", job["labels"], *job["args"]]
    print(f"--- job {len(reports)}", file=sys.stderr, flush=True)
    try:
        runpy.run_path(runtime, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code
    if job.get("proba"):
        import numpy as np
        spec = importlib.util.spec_from_file_location("medzoo_runtime", runtime)
        rt = importlib.util.module_from_spec(spec); spec.loader.exec_module(rt)
        m = rt.load(job["folder"])
        np.save(job["proba"], m.predict_proba(np.load(job["image"]), job.get("spacing"), job.get("direction"),
                                              tta=job.get("tta", False)))
    reports.append(code)
loaded = sorted({k.split(".")[0] for k in sys.modules} & set(REFUSED) - through_jax)
print(json.dumps({"codes": reports, "refused_but_loaded": loaded}))
"""


def _fresh(tmp_path, jobs: list) -> tuple[dict, list]:
    """Run ``jobs`` (``folder``, ``image`` array, ``args``, optional ``proba``, ``spacing``, ``direction``,
    ``tta``) in one fresh process; returns its report and each job's stderr lines."""
    specs = []
    for i, job in enumerate(jobs):
        np.save(tmp_path / f"image{i}.npy", job["image"])
        specs.append({**job, "folder": str(job["folder"]), "image": str(tmp_path / f"image{i}.npy"),
                      "labels": str(tmp_path / f"labels{i}.npy"), "args": [str(a) for a in job["args"]]})
    res = subprocess.run([sys.executable, "-I", "-c", FRESH, json.dumps(specs)], capture_output=True, text=True,
                         cwd=str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    errs = res.stderr.split("--- job ")[1:]
    return json.loads(res.stdout.strip().splitlines()[-1]), [e.strip().splitlines()[1:] for e in errs]


def _train(wd, overrides: dict) -> str:
    config = apply_overrides(load_config("smoke"), {
        "model.kwargs.features": "4", "model.kwargs.depth": "2", "train.batch_size": "2", "train.steps": "3",
        "train.warmup_steps": "0", "train.log_every": "1", "train.eval_every": "3", "train.checkpoint_every": "3",
        **overrides})
    train_and_evaluate(config, str(wd), progress=False)
    return str(wd)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A 3D U-Net patch-trained with a plan (crop to the body) and its export with preprocessing."""
    root = tmp_path_factory.mktemp("planned")
    wd = _train(root / "run", {"data.spatial_dims": "3", "data.image_size": "(24,24,24)", "data.num_train": "4",
                               "data.num_val": "2", "data.patch_size": "(16,16,16)", "data.samples_per_epoch": "8",
                               "data.val_samples": "2", "data.crop": "nonzero"})
    assert export.main([wd, "--with-preprocessing", "--out", str(root / "export")]) == 0
    return wd, root / "export"


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """A 2D U-Net trained without a plan on 32x32 skin phantoms (RGB) and its export with preprocessing."""
    root = tmp_path_factory.mktemp("pictures")
    wd = _train(root / "run", {"data.kind": "skin", "data.image_size": "(32,32)", "data.num_train": "4",
                               "data.num_val": "2"})
    save_calibration(wd, TEMPERATURE)  # zoo.predict divides each window's logits by it; so must the export
    assert export.main(["--model", wd, "--with-preprocessing", "--out", str(root / "export")]) == 0
    return wd, root / "export"


def _agreement(got, want) -> float:
    assert got.shape == want.shape and got.dtype == np.int32
    return float(np.mean(got == want))


def test_planned_volume_equals_predict_case_in_a_process_without_medzoo(planned, tmp_path):
    wd, folder = planned
    spec = json.loads((folder / export_runtime.PREPROCESSING).read_text(encoding="utf-8"))
    assert spec["mode"] == "plan" and spec["plan"]["crop"] == "nonzero" and spec["network"]["window"] == [16, 16, 16]
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "medzoo_runtime.py", "model.stablehlo",
                                                        "preprocessing.json"]
    case = tmp_path / "case.nii.gz"
    pc = phantoms.PhantomConfig(kind="brain", shape=(26, 22, 12), seed=5)
    volume = phantoms.make_phantom(pc, 0)["image"].astype(np.float32)
    # a scan's constant border (each channel's minimum) around the head: what the plan's crop removes
    volume = np.concatenate([np.pad(volume[..., c:c + 1], [(4, 0), (1, 3), (2, 0), (0, 0)],
                                    constant_values=float(volume[..., c].min())) for c in range(volume.shape[-1])], -1)
    nib.save(nib.Nifti1Image(volume, AFFINE), str(case))
    pre = load_pretrained(wd)
    image, meta, _ = read_case(str(case), pre)
    assert not np.allclose(meta.spacing, spec["plan"]["spacing"])  # the plan resamples this volume
    want = predict_case(pre, image, meta)
    plan = Plan.from_dict(pre.meta["data"]["extra"]["plan"])
    x, ctx = preprocessing.preprocess_case(image, meta, plan)
    assert ctx["crop"] != [[0, n] for n in ctx["oriented_shape"]] and ctx["perm"] != [0, 1, 2]
    proba = preprocessing.restore_case(pre.predictor.sliding_window_proba(x[None], plan.patch_size)[0], ctx, order=1)
    direction = meta.direction_matrix
    report, _ = _fresh(tmp_path, [{"folder": folder, "image": image, "proba": str(tmp_path / "proba.npy"),
                                   "args": ["--spacing", *meta.spacing, "--direction", *direction.reshape(-1)],
                                   "spacing": list(meta.spacing), "direction": direction.tolist()}])
    assert report == {"codes": [0], "refused_but_loaded": []}
    assert _agreement(np.load(tmp_path / "labels0.npy"), want) >= AGREEMENT
    np.testing.assert_allclose(np.load(tmp_path / "proba.npy"), proba, atol=1e-4)


def test_picture_equals_predict_case_in_a_process_without_medzoo(pictures, tmp_path):
    wd, folder = pictures
    spec = json.loads((folder / export_runtime.PREPROCESSING).read_text(encoding="utf-8"))
    assert spec["mode"] == "resize" and spec["resize"]["image_size"] == [32, 32]
    assert spec["mirroring"]["axes"] == [[1], [2], [1, 2]] and spec["network"]["temperature"] == TEMPERATURE
    pre = load_pretrained(wd)
    image = phantoms.make_phantom(phantoms.PhantomConfig(kind="skin", shape=(45, 38), seed=9), 0)["image"]
    image = image.astype(np.float32)
    meta = readers.ImageMeta((1.0, 1.0), (0.0, 0.0), ((1.0, 0.0), (0.0, 1.0)), "", "picture")
    want = predict_case(pre, image, meta, tta=True, temperature=TEMPERATURE)
    small = geometry.resize(intensity_scaling(image, pre), (32, 32))
    proba = geometry.resize(pre.predictor.sliding_window_proba(small[None], (32, 32), tta=True,
                                                               temperature=TEMPERATURE)[0], (45, 38))
    rgba = np.concatenate([image, np.ones_like(image[..., :1])], axis=-1)  # as a PNG reader gives it
    report, _ = _fresh(tmp_path, [{"folder": folder, "image": image, "args": ["--tta"], "tta": True,
                                   "proba": str(tmp_path / "proba.npy")},
                                  {"folder": folder, "image": rgba, "args": ["--tta"]}])
    assert report == {"codes": [0, 0], "refused_but_loaded": []}
    assert _agreement(np.load(tmp_path / "labels0.npy"), want) >= AGREEMENT
    np.testing.assert_array_equal(np.load(tmp_path / "labels1.npy"), np.load(tmp_path / "labels0.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "proba.npy"), proba, atol=1e-4)


@pytest.mark.parametrize("argv, fragment", [
    (["unet-nowhere", "--with-preprocessing"], "unknown model 'unet-nowhere'"),
    (["--with-preprocessing"], "name the model once"),
])
def test_bad_export_requests_are_one_line(tmp_path, capsys, argv, fragment):
    assert export.main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1 and not (tmp_path / "x").exists()


def test_onnx_with_preprocessing_is_refused(planned, tmp_path, capsys):
    wd, _ = planned
    assert export.main([wd, "--with-preprocessing", "--format", "onnx", "--out", str(tmp_path / "x")]) == 2
    assert "does not combine with --format onnx" in capsys.readouterr().err


@pytest.mark.parametrize("change, fragment", [
    ({"task": "outcome"}, "is a 'outcome' model"),
    ({"plan": {"n4": True}}, "'n4': True"),
    ({"plan": {"denoise": "median"}}, "'denoise': 'median'"),
])
def test_models_that_cannot_carry_their_preprocessing_are_refused(planned, change, fragment):
    wd, _ = planned
    pre = load_pretrained(wd)
    meta = json.loads(json.dumps(pre.meta))
    if "plan" in change:
        meta["data"]["extra"]["plan"]["preprocessing"].update(change["plan"])
    fake = types.SimpleNamespace(task=change.get("task", pre.task), meta=meta, config=pre.config)
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")):
        export_writer.preprocessing_spec(fake, "m")


BAD_IMAGES = [  # image, command-line arguments, what the one error line says
    (np.zeros((20, 18, 12, 3), np.float32), ["--spacing", 1, 1, 1], "3 channel(s); the model takes 4"),
    (np.zeros((20, 18, 12, 4), np.float32), [], "give the image's spacing"),
    (np.zeros((20, 18, 12, 4), np.float32), ["--spacing", 1, 1], "spacing must be 3 positive numbers"),
    (np.zeros((20, 18, 4), np.float32), ["--spacing", 1, 1], "a 3D plan needs a volume"),
    (np.full((20, 18, 12, 4), np.nan, np.float32), ["--spacing", 1, 1, 1], "NaN or Inf"),
    (np.zeros((20, 18, 12, 4), np.float32), ["--spacing", 1, 1, 1, "--direction", 1, 0, 0, 1, 0, 0, 0, 0, 1],
     "oblique direction"),
]


def test_the_runtime_command_line_refuses_bad_images_in_one_line(planned, tmp_path):
    _, folder = planned
    report, errors = _fresh(tmp_path, [{"folder": folder, "image": im, "args": args} for im, args, _ in BAD_IMAGES])
    assert report["codes"] == [2] * len(BAD_IMAGES)
    for i, ((_, _, fragment), err) in enumerate(zip(BAD_IMAGES, errors)):
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], (i, err)
        assert not (tmp_path / f"labels{i}.npy").exists()


SWAP_FLIP = ((0.0, -1.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 0.0, 1.0))  # axis 0 anterior, axis 1 to the right
IDENTITY3 = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
PLAN_CASES = [  # (plan fields, image shape, spacing, direction, format)
    (dict(spatial_dims=3, spacing=(1.0, 1.0, 1.0), patch_size=(16, 16, 16), crop="nonzero", scheme="zscore_fg"),
     (17, 14, 9, 2), (1.2, 1.5, 2.5), SWAP_FLIP, "nifti"),
    (dict(spatial_dims=2, spacing=(3.0, 0.9, 0.8), patch_size=(16, 16), crop=None, scheme="ct", slice_axis=0),
     (7, 19, 15, 1), (3.0, 0.7, 0.75), IDENTITY3, "nifti"),
    (dict(spatial_dims=2, spacing=(1.1, 0.9, 2.0), patch_size=(16, 16), crop="nonzero", scheme="zscore", slice_axis=2),
     (15, 12, 6, 2), (0.8, 1.3, 2.0), SWAP_FLIP, "nifti"),
    (dict(spatial_dims=2, spacing=(0.8, 1.3), patch_size=(16, 16), crop=None, scheme="zscore"),
     (21, 11, 1), (1.0, 1.0), ((1.0, 0.0), (0.0, 1.0)), "nrrd"),
    (dict(spatial_dims=2, spacing=None, patch_size=(16, 16), crop="nonzero", scheme="rgb"),
     (23, 18, 3), (1.0, 1.0), ((1.0, 0.0), (0.0, 1.0)), "picture"),
]


@pytest.mark.parametrize("fields, shape, spacing, direction, fmt", PLAN_CASES)
def test_the_runtime_applies_and_undoes_a_plan_as_preprocessing_does(fields, shape, spacing, direction, fmt):
    """``plan_forward`` / ``plan_back`` against ``preprocess_case`` / ``restore_case`` (no model): orientation,
    slice axis, crop, each normalisation scheme, resampling both ways, pictures without spacing."""
    rng = np.random.default_rng(len(shape) + shape[0])
    fields = dict(fields)
    scheme = fields.pop("scheme")
    stats = {"zscore_fg": dict(mean=0.3, std=1.4), "zscore": dict(mean=0.3, std=1.4),
             "ct": dict(mean=40.0, std=120.0, lower=-200.0, upper=300.0), "rgb": dict(lower=0.0, upper=255.0)}[scheme]
    channels = tuple({"name": f"c{c}", "scheme": scheme, **stats} for c in range(shape[-1]))
    plan = Plan(batch_size=2, channels=channels, preprocessing={"crop": fields.pop("crop"), "n4": False,
                                                                "denoise": None}, **fields)
    image = (rng.normal(size=shape) * (150.0 if scheme == "ct" else 1.0)).astype(np.float32)
    if scheme == "rgb":
        image = rng.integers(0, 256, size=shape).astype(np.float32)
    image[:2] = image.reshape(-1, shape[-1]).min(axis=0)  # a constant border of each channel's minimum
    image[:, -3:] = image.reshape(-1, shape[-1]).min(axis=0)
    meta = readers.ImageMeta(spacing, (0.0,) * len(spacing), direction, "", fmt)
    want, ctx = preprocessing.preprocess_case(image, meta, plan)
    perm, flips = export_runtime.lps_axes(meta.direction_matrix) if len(spacing) == 3 else ([0, 1], [False, False])
    got, grid = export_runtime.plan_forward(image, spacing, perm, flips, export_writer.plan_record(plan))
    assert got.shape == want.shape and grid["crop"] == ctx["crop"] and grid["perm"] == ctx["perm"]
    assert grid["flips"] == ctx["flips"] and grid["slice_axis"] == ctx["slice_axis"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    proba = rng.dirichlet(np.ones(3), size=want.shape[:-1]).astype(np.float32)
    np.testing.assert_allclose(export_runtime.plan_back(proba, grid), preprocessing.restore_case(proba, ctx, order=1),
                               atol=1e-6)


def test_runtime_resampling_equals_simpleitk():
    """The runtime's resampler against the one training used (SimpleITK, ``preprocessing.restore_case`` /
    ``preprocess_label``'s grids), including the corner where ITK extrapolates a whole point by nearest neighbour."""
    rng = np.random.default_rng(0)
    for spacing_in, spacing_out, shape in [((1.2, 1.5, 2.5), (1.0, 1.0, 1.0), (13, 17, 9)),
                                           ((1.0, 1.0, 1.0), (1.2, 1.5, 2.5), (16, 16, 8)), ((0.7, 3.0), (1.1, 0.9), (20, 7))]:
        ctx = {"input_shape": list(shape), "perm": list(range(len(shape))), "flips": [False] * len(shape),
               "slice_axis": None, "oriented_shape": list(shape), "crop": [[0, n] for n in shape],
               "cropped_shape": list(shape), "spacing_in": list(spacing_in), "spacing_out": list(spacing_out)}
        out_shape = [max(int(round(n * a / b)), 1) for n, a, b in zip(shape, spacing_in, spacing_out)]
        x = rng.normal(size=(*out_shape, 3)).astype(np.float32)
        want = preprocessing.restore_case(x, {**ctx, "shape_out": out_shape}, order=1)
        got = export_runtime.resample_linear(x, spacing_out, spacing_in, shape)
        np.testing.assert_allclose(got, want, atol=1e-6)
