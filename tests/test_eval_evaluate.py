"""eval.evaluate: folders of label maps scored like scoring's functions on the same arrays; clear errors."""

from __future__ import annotations

import csv
import json
import math

import nibabel as nib
import numpy as np
import pytest

import scoring as M
from data_pipelines import readers
from eval import evaluate, folders as ev

SPACING = (0.8, 1.25, 2.5)  # anisotropic, mm
METRICS = ("dice", "jaccard", "sensitivity", "hd95", "assd", "surface_dice")


def _write_nifti(path, label, spacing=SPACING, origin=(0.0, 0.0, 0.0)):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    nib.save(nib.Nifti1Image(label.astype(np.int16), affine), str(path))


def _cases():
    """``{case: (pred, ref)}``: blobs of labels 1 and 2; case c2 has no label 2 anywhere, c3 predicts no 1."""
    rng = np.random.default_rng(0)
    out = {}
    zz, yy, xx = np.meshgrid(np.arange(14), np.arange(12), np.arange(6), indexing="ij")
    for i, name in enumerate(["c1", "c2", "c3"]):
        ref = np.zeros((14, 12, 6), np.int32)
        ref[((zz - 6) ** 2 + (yy - 5) ** 2 + 4 * (xx - 3) ** 2) < 16] = 1
        if name != "c2":
            ref[2:5, 7:10, 1:4] = 2
        pred = ref.copy()
        pred[rng.uniform(size=ref.shape) < 0.08] = 0
        pred[np.roll(ref == 1, i + 1, axis=0) & (ref == 0)] = 1
        if name == "c3":
            pred[pred == 1] = 0
        out[name] = (pred, ref)
    return out


def _folders(tmp_path, cases=None, pred_suffix=".nii.gz"):
    cases = _cases() if cases is None else cases
    pred_dir, ref_dir = tmp_path / "pred", tmp_path / "ref"
    pred_dir.mkdir()
    ref_dir.mkdir()
    for name, (pred, ref) in cases.items():
        _write_nifti(ref_dir / f"{name}.nii.gz", ref)
        _write_nifti(pred_dir / f"{name}{pred_suffix}", pred)
    (ref_dir / "dataset.json").write_text("{}", encoding="utf-8")  # not an image: ignored
    return pred_dir, ref_dir, cases


def _close(a, b):
    if math.isnan(b):
        return math.isnan(a)
    return a == b if math.isinf(b) else a == pytest.approx(b, rel=1e-12, abs=1e-12)


def test_good_folder_matches_scoring_on_the_same_arrays(tmp_path):
    pred_dir, ref_dir, cases = _folders(tmp_path, pred_suffix=".nii")  # formats may differ per folder
    out = tmp_path / "out"
    rc = evaluate.main([f"--pred={pred_dir}", f"--ref={ref_dir}", "--labels=1,2",
                        f"--metrics={','.join(METRICS)}", "--workers=1", "--n_boot=200", f"--out={out}"])
    assert rc == 0
    with open(out / "per_case.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["structure"]) for r in rows] == [(c, s) for c in ("c1", "c2", "c3") for s in ("1", "2")]
    # The spacing as the file stores it (NIfTI pixdim is float32: 0.800000011920929 for 0.8).
    spacing = readers.read_label(ref_dir / "c1.nii.gz")[1].spacing
    assert spacing == pytest.approx(SPACING)
    for r in rows:
        pred, ref = cases[r["case"]]
        p, t = pred == int(r["structure"]), ref == int(r["structure"])
        want = M.binary_metrics(p, t, METRICS, spacing=spacing)
        for m in METRICS:
            assert _close(float(r[m]), want[m]), (r["case"], r["structure"], m, r[m], want[m])
        assert int(r["n_ref"]) == t.sum() and int(r["n_pred"]) == p.sum()
    # c2 has no label 2 at all (NaN), c3 predicts no label 1 (Dice 0, HD95 inf); spacing changed the distances.
    by = {(r["case"], r["structure"]): r for r in rows}
    assert math.isnan(float(by["c2", "2"]["dice"])) and float(by["c3", "1"]["dice"]) == 0.0
    assert math.isinf(float(by["c3", "1"]["hd95"]))
    p, t = cases["c1"][0] == 1, cases["c1"][1] == 1
    assert float(by["c1", "1"]["hd95"]) != pytest.approx(M.hd95(p, t))

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["num_cases"] == 3 and summary["missing_predictions"] == []
    s = summary["summary"]["1"]["hd95"]
    finite = [float(by[c, "1"]["hd95"]) for c in ("c1", "c2")]
    assert s["mean"] == pytest.approx(np.mean(finite)) and s["n"] == 2 and s["n_inf"] == 1
    assert s["low"] <= s["mean"] <= s["high"]
    assert summary["summary"]["2"]["dice"]["n_nan"] == 1
    md = (out / "summary.md").read_text(encoding="utf-8")
    assert "| 1 | dice |" in md and "3 cases" in md
    assert (out / "boxplots.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_in_process_and_pool_agree_and_labels_default_to_all_found(tmp_path):
    pred_dir, ref_dir, _ = _folders(tmp_path)
    a = ev.evaluate_folder(str(pred_dir), str(ref_dir), metrics=("dice", "hd95"), workers=2)
    assert a["structures"] == ["1", "2"]
    b = ev.evaluate_folder(str(pred_dir), str(ref_dir), labels=[1, 2], metrics=("dice", "hd95"), workers=1)
    assert [(r["case"], r["structure"]) for r in a["rows"]] == [(r["case"], r["structure"]) for r in b["rows"]]
    for ra, rb in zip(a["rows"], b["rows"]):
        assert all(_close(ra[m], rb[m]) for m in ("dice", "hd95"))


def _run_error(argv, capsys):
    rc = evaluate.main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("what,expect", [
    ("spacing", ("spacing (", "1.25, 2.5) vs (", "1.25, 3.0)")),
    ("origin", ("origin (",)),
    ("shape", ("shape (14, 12, 6) vs (14, 12, 5)",)),
])
def test_geometry_mismatch_is_one_clear_error_naming_the_case(tmp_path, capsys, what, expect):
    pred_dir, ref_dir, cases = _folders(tmp_path)
    pred = cases["c2"][0]
    if what == "spacing":
        _write_nifti(pred_dir / "c2.nii.gz", pred, spacing=(0.8, 1.25, 3.0))
    elif what == "origin":
        _write_nifti(pred_dir / "c2.nii.gz", pred, origin=(0.0, 0.0, 5.0))
    else:
        _write_nifti(pred_dir / "c2.nii.gz", pred[..., :5])
    err = _run_error([f"--pred={pred_dir}", f"--ref={ref_dir}", "--workers=1", f"--out={tmp_path / 'o'}"],
                     capsys)
    assert "case 'c2'" in err and "never resampled" in err and all(e in err for e in expect), err


def test_missing_prediction_is_an_error_or_an_empty_prediction(tmp_path, capsys):
    pred_dir, ref_dir, cases = _folders(tmp_path)
    (pred_dir / "c3.nii.gz").unlink()
    err = _run_error([f"--pred={pred_dir}", f"--ref={ref_dir}", "--workers=1", f"--out={tmp_path / 'o'}"], capsys)
    assert "1 reference case(s) have no prediction: c3" in err and "--allow_missing" in err
    out = tmp_path / "o2"
    assert evaluate.main([f"--pred={pred_dir}", f"--ref={ref_dir}", "--labels=1", "--metrics=dice,hd95",
                          "--allow_missing", "--workers=1", "--n_boot=50", f"--out={out}"]) == 0
    with open(out / "per_case.csv", encoding="utf-8") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert float(rows["c3"]["dice"]) == 0.0 and math.isinf(float(rows["c3"]["hd95"]))
    assert int(rows["c3"]["n_pred"]) == 0 and int(rows["c3"]["n_ref"]) == (cases["c3"][1] == 1).sum()
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["missing_predictions"] == ["c3"]


def test_prediction_without_reference_and_bad_arguments(tmp_path, capsys):
    pred_dir, ref_dir, cases = _folders(tmp_path)
    _write_nifti(pred_dir / "extra.nii.gz", cases["c1"][0])
    err = _run_error([f"--pred={pred_dir}", f"--ref={ref_dir}", "--workers=1", f"--out={tmp_path / 'o'}"], capsys)
    assert "1 prediction(s) have no reference: extra" in err
    base = [f"--pred={pred_dir}", f"--ref={ref_dir}", f"--out={tmp_path / 'o'}", "--allow_missing", "--workers=1"]
    assert "--metrics" in _run_error(base + ["--metrics=dice,nope"], capsys)
    assert "--labels" in _run_error(base + ["--labels=1,x"], capsys)
    assert "no such directory" in _run_error([f"--pred={tmp_path / 'nope'}", f"--ref={ref_dir}",
                                              f"--out={tmp_path / 'o'}"], capsys)
    _write_nifti(pred_dir / "c1.nii", cases["c1"][0])
    assert "two files for case 'c1'" in _run_error(base, capsys)


@pytest.mark.parametrize("name,cid", [
    ("BraTS_001.nii.gz", "BraTS_001"), ("case.NII.GZ", "case"), ("a.b.nii", "a.b"), ("scan.nrrd", "scan"),
    ("scan.mhd", "scan"), ("scan.raw", None), ("mask.png", "mask"), (".hidden.nii.gz", None),
    ("dataset.json", None), (".nii.gz", None),
])
def test_case_id_rule(name, cid):
    assert ev.case_id(name) == cid


def test_png_folder_with_brats_regions(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for d in ("pred", "ref"):
        (tmp_path / d).mkdir()
    arrays = {}
    for name in ("p1", "p2"):
        ref = np.zeros((20, 20), np.uint8)
        ref[4:14, 4:14] = 2
        ref[6:12, 6:12] = 1
        ref[8:10, 8:10] = 3
        pred = np.where(rng.uniform(size=ref.shape) < 0.1, 0, ref).astype(np.uint8)
        Image.fromarray(ref).save(tmp_path / "ref" / f"{name}.png")
        Image.fromarray(pred).save(tmp_path / "pred" / f"{name}.png")
        arrays[name] = (pred, ref)
    r = ev.evaluate_folder(str(tmp_path / "pred"), str(tmp_path / "ref"), regions="brats",
                           metrics=("dice", "hd95"), workers=1)
    assert r["structures"] == ["WT", "TC", "ET"]
    for row in r["rows"]:
        pred, ref = arrays[row["case"]]
        p, t = M.brats_regions(pred)[row["structure"]], M.brats_regions(ref)[row["structure"]]
        want = M.binary_metrics(p, t, ("dice", "hd95"))
        assert _close(row["dice"], want["dice"]) and _close(row["hd95"], want["hd95"])
