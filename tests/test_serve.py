"""zoo.serve: the JSON API through FastAPI's TestClient (each route, the error cases) and the page in a real
headless Chromium (Selenium + the distribution's chromium-driver)."""

from __future__ import annotations

import base64
import gzip
import io
import os
import shutil
import socket
import threading
import time

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from _serve_models import tiny_models
from zoo import serve, service

TOKEN = "s3cret-token-22"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = tiny_models(tmp_path_factory)
    out = {"unet-tiny": service.load_model(paths["seg"]), "outcome-tiny": service.load_model(paths["outcome"])}
    for name, m in out.items():
        m.name = name
    return out


@pytest.fixture(scope="module")
def client(models):
    return TestClient(serve.create_app(models, max_upload_mb=0.5))


AFFINE = np.diag([0.8, 0.5, 2.0, 1.0])


def _nifti(shape=(32, 32, 8), channels=4, seed=0) -> bytes:
    """A 4-channel volume (4D NIfTI: the last axis holds the modalities)."""
    img = np.random.default_rng(seed).normal(size=(*shape, channels)).astype(np.float32)
    return gzip.compress(nib.Nifti1Image(img if channels > 1 else img[..., 0], AFFINE).to_bytes())


def test_health_and_models(client):
    assert client.get("/api/health").json()["models"] == ["outcome-tiny", "unet-tiny"]
    listed = {m["name"]: m for m in client.get("/api/models").json()}
    assert listed["unet-tiny"]["task"] == "segmentation" and len(listed["unet-tiny"]["channel_names"]) == 4
    assert listed["outcome-tiny"]["ehr_form"] is True
    assert "/api/segment" in client.get("/openapi.json").json()["paths"]


def test_segment_upload_measures_in_the_input_geometry_with_dice(client, models):
    ref = np.zeros((32, 32, 8), np.int32)
    ref[8:16, 8:16, 2:5] = 1
    files = {"file": ("scan.nii.gz", _nifti(), "application/gzip"),
             "reference": ("ref.nii.gz", gzip.compress(nib.Nifti1Image(ref, AFFINE).to_bytes()))}
    r = client.post("/api/segment", data={"model": "unet-tiny"}, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unit"] == "mL" and body["spacing_mm"] == pytest.approx([0.8, 0.5, 2.0])
    shown = np.frombuffer(base64.b64decode(body["display"]["labels_u8"]), np.uint8).reshape(8, 32, 32)
    labels = np.moveaxis(shown, 0, 2)  # the page's slices are along the last axis
    for c, name in enumerate(body["class_names"][1:], start=1):
        assert body["sizes"][name] == pytest.approx((labels == c).sum() * 0.8 / 1000.0)
        want = 2 * ((labels == c) & (ref == c)).sum() / max((labels == c).sum() + (ref == c).sum(), 1)
        got = body["dice"][name]
        assert (got is None and (labels == c).sum() + (ref == c).sum() == 0) or got == pytest.approx(want)
    written = base64.b64decode(body["downloads"]["label_map"]["base64"])
    back = nib.Nifti1Image.from_bytes(gzip.decompress(written))
    np.testing.assert_allclose(back.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels)
    assert base64.b64decode(body["downloads"]["overlay_png"]["base64"])[:4] == b"\x89PNG"


def test_segment_sample_with_gradcam(client):
    r = client.post("/api/segment", data={"model": "unet-tiny", "sample": "2"})
    assert r.status_code == 200, r.text
    cam = r.json()["display"]["gradcam_u8"]
    assert cam is not None and len(base64.b64decode(cam)) == 32 * 32
    assert r.json()["dice"] is not None  # the phantom's own label is the reference


def test_outcome_risk_and_shap(client):
    r = client.post("/api/outcome", json={"model": "outcome-tiny", "sample": 1,
                                          "fields": {"age": 71, "sex": "F", "diabetes": 1, "smoker": 0}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert 0.0 <= body["risk"] <= 1.0 and body["risk_range"][0] <= body["risk"] <= body["risk_range"][1]
    shap = body["shap"]
    assert set(shap["values"]) == set(body["covariates"])
    assert shap["base_value"] + sum(shap["values"].values()) == pytest.approx(body["risk"], abs=1e-4)


@pytest.mark.parametrize("case,status,fragment", [
    ("unknown_model", 404, "unknown model 'unet-nowhere'"),
    ("wrong_task", 400, "outcome model"),
    ("wrong_extension", 415, "unsupported file type"),
    ("corrupt", 400, "cannot be read"),
    ("traversal", 400, "may not contain folders"),
    ("oversize", 413, "larger than the limit"),
    ("channels", 400, "channel(s)"),
    ("bad_zip", 400, "zip"),
    ("no_input", 400, "either a file or a sample"),
    ("outcome_fields", 400, "EHR fields missing"),
])
def test_bad_requests_are_4xx_with_a_clear_message(client, case, status, fragment, tmp_path):
    data, files = {"model": "unet-tiny"}, None
    if case == "unknown_model":
        data["model"], data["sample"] = "unet-nowhere", "0"
    elif case == "wrong_task":
        data["model"], data["sample"] = "outcome-tiny", "0"
    elif case == "wrong_extension":
        files = {"file": ("scan.exe", b"MZ\x90\x00" * 100)}
    elif case == "corrupt":
        files = {"file": ("scan.nii.gz", _nifti()[:300])}
    elif case == "traversal":
        files = {"file": ("../../../../etc/passwd.nii.gz", _nifti())}
    elif case == "oversize":
        files = {"file": ("big.nii", os.urandom(600 * 1024))}
    elif case == "channels":
        files = {"file": ("one.nii.gz", _nifti(channels=1))}
    elif case == "bad_zip":
        files = {"file": ("series.zip", b"PK\x03\x04 not really a zip")}
    if case == "outcome_fields":
        r = client.post("/api/outcome", json={"model": "outcome-tiny", "fields": {"age": 50}})
    else:
        r = client.post("/api/segment", data=data, files=files)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert not os.path.exists("/etc/passwd.nii.gz")


def test_uploads_are_removed_after_the_response(client, monkeypatch, tmp_path):
    import tempfile

    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(real(dir=str(tmp_path), **kw)) or made[-1])
    r = client.post("/api/segment", data={"model": "unet-tiny"}, files={"file": ("a.nii.gz", _nifti(seed=3))})
    assert r.status_code == 200 and made and not os.path.exists(made[0])


def test_token_guards_every_route(models):
    c = TestClient(serve.create_app(models, token=TOKEN, explain=False))
    for method, path in (("get", "/"), ("get", "/api/models"), ("get", "/api/health"), ("get", "/docs"),
                         ("post", "/api/segment")):
        assert getattr(c, method)(path).status_code == 401, path
    ok = c.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert c.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get(f"/?token={TOKEN}").status_code == 200


def test_full_queue_is_503(models):
    app = serve.create_app(models, workers=1, queue=0, explain=False)
    gate = threading.Event()
    app.state.pool.executor.submit(gate.wait)  # occupy the only worker outside the counter
    app.state.pool._pending = 1
    try:
        r = TestClient(app).post("/api/segment", data={"model": "unet-tiny", "sample": "0"})
        assert r.status_code == 503 and "busy" in r.json()["detail"]
    finally:
        gate.set()


# ------------------------------------------------------------------------------------------------ browser

def _chromium():
    for b in ("chromium", "chromium-browser"):
        if shutil.which(b):
            return shutil.which(b), shutil.which("chromedriver")
    return None, None


def test_page_in_headless_chromium(models, tmp_path):
    browser, driver_path = _chromium()
    if not browser or not driver_path:
        pytest.skip("chromium / chromium-driver are not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    import uvicorn
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = uvicorn.Server(uvicorn.Config(serve.create_app(models), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    scan = tmp_path / "phantom.nii.gz"
    from data_pipelines import phantoms

    vol = phantoms.make_phantom(phantoms.PhantomConfig(kind="brain", shape=(32, 32, 8), seed=9), 0)["image"]
    nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])), str(scan))
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        opts.add_argument(a)
    from selenium.webdriver.chrome.service import Service

    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        wait = WebDriverWait(drv, 30)
        drv.get(f"http://127.0.0.1:{port}/")
        wait.until(lambda d: d.find_element(By.ID, "seg-model").find_elements(By.TAG_NAME, "option"))
        assert "unet" in drv.find_element(By.ID, "card").text
        # a 3D phantom scan (the 2D model segments it slice by slice)
        drv.find_element(By.ID, "file").send_keys(str(scan))
        drv.find_element(By.ID, "seg-run").click()
        wait.until(lambda d: d.find_element(By.ID, "view").get_attribute("data-drawn") is not None
                   or d.find_element(By.ID, "seg-error").text)
        assert not drv.find_element(By.ID, "seg-error").text
        assert "mL" in drv.find_element(By.ID, "results").text
        shot = tmp_path / "overlay.png"
        drv.find_element(By.ID, "view").screenshot(str(shot))
        pixels = np.asarray(Image.open(shot).convert("RGB"), np.float32)
        assert pixels.std() > 5.0  # not blank
        slider = drv.find_element(By.ID, "slice")
        assert slider.get_attribute("max") == "7"
        drv.execute_script("arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'));", slider)
        assert drv.find_element(By.ID, "slice-label").text == "1/8"
        assert drv.find_element(By.ID, "view").get_attribute("data-drawn") == "0"
        assert drv.find_element(By.ID, "dl-label_map").get_attribute("download") == "prediction.nii.gz"
        # the EHR form
        drv.find_element(By.ID, "f-age").clear()
        drv.find_element(By.ID, "f-age").send_keys("75")
        Select(drv.find_element(By.ID, "f-sex")).select_by_visible_text("M")
        drv.find_element(By.ID, "f-diabetes").click()
        drv.find_element(By.ID, "ehr-run").click()
        wait.until(lambda d: d.find_element(By.ID, "risk").text or d.find_element(By.ID, "ehr-error").text)
        assert drv.find_element(By.ID, "risk-value").text.startswith("risk ")
        assert "age_z" in drv.find_element(By.ID, "shap").text
        drv.save_screenshot(str(tmp_path / "page.png"))
    finally:
        drv.quit()
        server.should_exit = True
        thread.join(timeout=10)
