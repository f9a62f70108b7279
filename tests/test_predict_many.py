"""``python -m zoo.predict --input CASE [CASE ...] --output FOLDER``: several cases in one process, as nnU-Net predicts a
folder; each label map is the one a single-case run writes, and the next case compiles nothing."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from data_pipelines import phantoms
from zoo import predict
from zoo.compilation_cache import compile_counter
from zoo.prediction import output_name

MODEL = "unet-phantoms-brain2d"  # the shipped 2D phantom model (4 channels, 64² slices)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cases")
    paths = []
    for i in range(2):
        image = phantoms.make_phantom(phantoms.PhantomConfig(kind="brain", shape=(20, 18, 9 + i), seed=i), 0)["image"]
        path = folder / f"case{i}.nii.gz"
        nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([1.0, 1.2, 2.0, 1.0])), str(path))
        paths.append(path)
    return paths


def test_several_cases_in_one_process_equal_single_runs(cases, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    single = []
    for c in cases:
        path = tmp_path / f"single_{c.name}"
        assert predict.main(["--model", MODEL, "--input", str(c), "--output", str(path)]) == 0
        single.append(np.asarray(nib.load(str(path)).dataobj))
    with compile_counter() as counter:
        assert predict.main(["--model", MODEL, "--input", *map(str, cases), "--output", str(out), "--tta"]) == 0
    assert counter.compiled <= 1  # the mirrored program once, for both cases (the slices share one shape)
    written = sorted(p.name for p in out.iterdir())
    assert written == ["case0.nii.gz", "case1.nii.gz"]
    assert capsys.readouterr().out.count("wrote ") == 4
    assert predict.main(["--model", MODEL, "--input", *map(str, cases), "--output", str(out)]) == 0
    for c, want in zip(cases, single):
        got = nib.load(str(out / c.name))
        np.testing.assert_array_equal(np.asarray(got.dataobj), want)
        np.testing.assert_array_equal(got.affine, nib.load(str(c)).affine)


@pytest.mark.parametrize("extra,message", [
    (["--overlay", "o.png"], "--overlay takes one --input case; got 2"),
    (["--uncertainty", "u.nii.gz"], "--uncertainty takes one --input case; got 2"),
])
def test_extras_take_one_case(cases, tmp_path, capsys, extra, message):
    assert predict.main(["--model", MODEL, "--input", *map(str, cases), "--output", str(tmp_path), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}"


def test_bad_output_folder_and_clashing_names_fail_before_any_work(cases, tmp_path, capsys):
    args = ["--model", MODEL, "--input", *map(str, cases)]
    assert predict.main(args + ["--output", str(tmp_path / "labels.nii.gz")]) == 2
    assert "with 2 --input cases, --output is a folder that exists" in capsys.readouterr().err
    assert predict.main(args + [str(tmp_path / "nope"), "--output", str(tmp_path)]) == 2
    assert f"--input {tmp_path / 'nope'}: no such file or folder" in capsys.readouterr().err
    assert predict.main(["--model", MODEL, "--input", str(cases[0]), str(cases[0]), "--output", str(tmp_path)]) == 2
    assert "several cases would be written to" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_output_names(tmp_path):
    (tmp_path / "pat3").mkdir()
    (tmp_path / "scan.nii.gz").write_bytes(b"")
    (tmp_path / "IMD008.PNG").write_bytes(b"")
    assert output_name(str(tmp_path / "pat3") + "/") == "pat3.nii.gz"
    assert output_name(str(tmp_path / "scan.nii.gz")) == "scan.nii.gz"
    assert output_name(str(tmp_path / "IMD008.PNG")) == "IMD008.png"
