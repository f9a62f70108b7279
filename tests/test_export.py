"""zoo.export: the StableHLO export equals the jitted model, reloads in a fresh process without the model code,
and is served by zoo.serve; ONNX where jax2onnx is installed and converts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from _serve_models import tiny_models
from zoo import export, exported, service
from zoo.pretrained import load_pretrained

FRESH = r"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("load_exported", sys.argv[1] + "/load_exported.py")
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
m = mod.ExportedModel.load(sys.argv[1])
x = np.load(sys.argv[2])
np.save(sys.argv[3], m.predict_proba(x))
print(json.dumps(sorted(k for k in sys.modules if k.split(".")[0] in ("zoo", "flax", "kernels", "data_pipelines"))))
"""


@pytest.fixture(scope="module")
def exported_dir(tmp_path_factory):
    seg = tiny_models(tmp_path_factory)["seg"]
    out = tmp_path_factory.mktemp("export") / "unet"
    assert export.main(["--model", seg, "--out", str(out)]) == 0
    return seg, out


@pytest.mark.parametrize("batch", [1, 3])
def test_stablehlo_equals_the_jitted_model(exported_dir, batch):
    seg, out = exported_dir
    pre = load_pretrained(seg)
    x = np.random.default_rng(batch).normal(size=(batch, 32, 32, 4)).astype(np.float32)
    got = exported.ExportedModel.load(str(out)).predict_proba(x)  # one export, any batch (symbolic N)
    want = pre.predict_proba(x, batch_size=batch)
    assert got.shape == want.shape == (batch, 32, 32, 4)
    np.testing.assert_allclose(got, want, atol=1e-5)
    manifest = json.loads((out / exported.MANIFEST).read_text())
    assert manifest["inputs"]["image"] == [None, 32, 32, 4] and (out / "card.json").exists()


def test_loads_in_a_fresh_process_without_the_model_code(exported_dir, tmp_path):
    seg, out = exported_dir
    x = np.random.default_rng(7).normal(size=(2, 32, 32, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", FRESH, str(out), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
                         capture_output=True, text=True, cwd=str(tmp_path), env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    imported = json.loads(res.stdout.strip().splitlines()[-1])
    assert "zoo.models" not in imported and imported == [], imported
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), load_pretrained(seg).predict_proba(x), atol=1e-5)


def test_serve_serves_an_exported_model(exported_dir):
    _, out = exported_dir
    m = service.load_model(str(out))
    assert m.exported and m.task == "segmentation"
    image, meta, _ = service.phantom_sample(m, 0)
    res = service.segment(m, image, meta, "phantom.nrrd", str(out.parent))
    assert res["shape"] == [32, 32] and "exported" in res["display"]["gradcam_note"]


def test_onnx_agrees_where_jax2onnx_converts(exported_dir, tmp_path):
    pytest.importorskip("jax2onnx", reason="jax2onnx (optional extra 'onnx') is not installed")
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    seg, _ = exported_dir
    try:
        path = export.export_onnx(seg, str(tmp_path / "onnx"))
    except ValueError as e:
        pytest.skip(f"jax2onnx cannot convert the U-Net: {e}")
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 4)).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, load_pretrained(seg).predict_proba(x), atol=1e-4)


def test_bad_model_is_one_line(tmp_path, capsys):
    assert export.main(["--model", "unet-nowhere", "--out", str(tmp_path / "x")]) == 2
    assert "unknown model 'unet-nowhere'" in capsys.readouterr().err
