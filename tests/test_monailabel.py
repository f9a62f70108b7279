"""The MONAI Label routes of ``zoo.serve`` (``zoo.app.routers.monailabel``) driven with the requests 3D Slicer's
MONAI Label module makes: the URLs, query parameters, multipart field names and headers of its client
(Project-MONAI/MONAILabel ``plugins/slicer/MONAILabel/MONAILabelLib/client.py``; the module sets
``result_extension=.nrrd`` and ``result_dtype=uint8``), with and without a token. The returned label map is read
with SimpleITK, as the module reads it: the upload's geometry, values in the model's label ids."""

from __future__ import annotations

import email
import email.policy
import io
import json
import mimetypes
import types
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
from fastapi.testclient import TestClient

from data_pipelines import readers
from zoo import app as zoo_app
from zoo import prediction
from zoo.app.services.credentials import read_credentials
from zoo.app.services.served import ServedModel
from zoo.app.services.sessions import SessionStore
from zoo.configs import apply_overrides, load_config
from zoo.serve import main as serve_main

TOKEN = "slicer-token-0042"
USERS = {"radiologist": "pass-word-1"}
CLIENT_ID = "user-xyz"  # what the module sends as client_id unless set


@pytest.fixture(scope="module")
def mono_model(tmp_path_factory):
    """A one-channel 2D U-Net trained for two steps: what a DICOM series (one channel) can be segmented with."""
    from zoo.training import train_and_evaluate

    cfg = apply_overrides(load_config("smoke"), {
        "data.channels": "1", "data.num_train": "4", "data.num_val": "2", "model.kwargs.features": "4",
        "model.kwargs.depth": "2", "train.batch_size": "2", "train.steps": "2", "train.warmup_steps": "0",
        "train.log_every": "1", "train.eval_every": "2", "train.checkpoint_every": "2"})
    workdir = str(tmp_path_factory.mktemp("mono") / "run")
    train_and_evaluate(cfg, workdir, progress=False)
    m = zoo_app.load_model(workdir)
    m.name = "unet-mono"
    return m


@pytest.fixture(scope="module")
def models(mono_model):
    """The served models: the one-channel U-Net and a model of another task (only its task is read)."""
    other = ServedModel(name="outcome-model", card={},
                        pre=types.SimpleNamespace(task="outcome", meta={"data": {"channel_names": ["CT"]}}))
    return {"unet-mono": mono_model, "outcome-model": other}


@pytest.fixture(scope="module")
def client(models):
    return TestClient(zoo_app.create_app(models, max_upload_mb=0.5, explain=False))


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    """A volume as Slicer saves one (NRRD), with spacing, origin and an oblique direction."""
    a = np.random.default_rng(0).normal(size=(6, 20, 24)).astype(np.float32)  # ITK order: z, y, x
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((0.7, 0.9, 2.5))
    img.SetOrigin((10.0, -5.0, 3.0))
    img.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    path = tmp_path_factory.mktemp("slicer") / "MRHead.nrrd"
    sitk.WriteImage(img, str(path))
    return path


# ------------------------------------------------------------------ the client's wire format (client.py)

BOUNDARY = "----------lImIt_of_THE_fIle_eW_$"  # MONAILabelUtils.encode_multipart_formdata's boundary


def encode_multipart_formdata(fields: dict, files: dict) -> tuple[str, bytes]:
    """``MONAILabelUtils.encode_multipart_formdata`` of client.py, line for line (Apache-2.0, MONAI Consortium)."""
    lines: list = []
    for key, value in fields.items():
        lines += ["--" + BOUNDARY, f'Content-Disposition: form-data; name="{key}"', "", value]
    for key, filename in files.items():
        lines += ["--" + BOUNDARY, f'Content-Disposition: form-data; name="{key}"; filename="{filename}"',
                  "Content-Type: %s" % (mimetypes.guess_type(str(filename))[0] or "application/octet-stream"), "",
                  open(filename, "rb").read()]
    lines += ["--" + BOUNDARY + "--", ""]
    body = bytearray()
    for line in lines:
        body.extend(line if isinstance(line, bytes) else line.encode("utf-8"))
        body.extend(b"\r\n")
    return f"multipart/form-data; boundary={BOUNDARY}", bytes(body)


def http_multipart(c: TestClient, method: str, selector: str, fields: dict, files: dict, headers=None):
    content_type, body = encode_multipart_formdata(fields, files)
    h = dict(headers or {}, **{"content-type": content_type, "content-length": str(len(body))})
    return c.request(method, selector, content=body, headers=h)


def upload_image(c, path, image_id, headers=None, client_id=CLIENT_ID):
    """client.upload_image: PUT /datastore/?image=ID, fields params (with client_id), file ``file``."""
    return http_multipart(c, "PUT", f"/datastore/?image={image_id}",
                          {"params": json.dumps({"client_id": client_id})}, {"file": path}, headers)


def create_session(c, path, headers=None, query=""):
    """client.create_session: requests.put with files=[("files", (name, fh))] and data={"client_id": ...}."""
    with open(path, "rb") as fh:
        return c.put(f"/session/{query}", files=[("files", (path.name, fh))], data={"client_id": CLIENT_ID},
                     headers=headers or {})


def infer(c, model, image_id, params, file=None, session_id=None, headers=None, output=None):
    """client.infer (as MONAILabelLogic.infer calls it: result_extension .nrrd, result_dtype uint8 unless set)."""
    selector = f"/infer/{model}?image={image_id}"
    if session_id:
        selector += f"&session_id={session_id}"
    if output:
        selector += f"&output={output}"
    params = {"result_extension": ".nrrd", "result_dtype": "uint8", **params, "client_id": CLIENT_ID}
    files = {"file": file} if file and not session_id else {}
    return http_multipart(c, "POST", selector, {"params": json.dumps(params)}, files, headers)


def parse_multipart(r) -> tuple[dict, dict]:
    """``(form, files)`` of a multipart answer, keyed as MONAILabelUtils.parse_multipart keys them (files by
    their file name)."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("multipart/form-data")
    msg = email.message_from_bytes(b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content,
                                   policy=email.policy.HTTP)
    form, files = {}, {}
    for part in msg.iter_parts():
        if part.get_filename():
            files[part.get_filename()] = part.get_payload(decode=True)
        else:
            form[part.get_param("name", header="content-disposition")] = part.get_payload(decode=True).decode()
    return form, files


def load_result(tmp_path, files: dict) -> sitk.Image:
    """MONAILabelUtils.save_result, then SimpleITK.ReadImage (MONAILabelWidget.updateSegmentationMask)."""
    assert len(files) == 1
    name, data = next(iter(files.items()))
    path = tmp_path / name
    path.write_bytes(data)
    return sitk.ReadImage(str(path))


def assert_same_geometry(result: sitk.Image, upload: sitk.Image):
    assert result.GetSize() == upload.GetSize()
    np.testing.assert_allclose(result.GetSpacing(), upload.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(result.GetOrigin(), upload.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(result.GetDirection(), upload.GetDirection(), atol=1e-6)


def expected_labels(m, path) -> np.ndarray:
    """The library's prediction of the file at ``path`` in ITK's array order (z, y, x)."""
    image, meta = readers.read_image(str(path))
    return prediction.predict_case(m.pre, image, meta).T


# ------------------------------------------------------------------ the tests

def test_info_lists_the_segmentation_models_with_their_label_ids(client, models):
    info = client.get("/info/").json()
    names = models["unet-mono"].data["class_names"]
    assert set(info["models"]) == {"unet-mono"}  # the outcome model is not a segmentation model
    seg = info["models"]["unet-mono"]
    assert seg["type"] == "segmentation" and seg["dimension"] == 2
    assert seg["labels"] == {n: i for i, n in enumerate(names) if i > 0}
    assert info["labels"] == list(names[1:]) and info["trainers"] == {} and info["strategies"] == {}
    assert seg["description"].endswith("input channels: " + models["unet-mono"].data["channel_names"][0])
    assert client.get("/auth/").json() == {"enabled": False, "client_id": None, "realm": None}
    # the module asks whether training runs: anything but 200 is "not running"
    assert client.get("/train/?check_if_running=true").status_code == 404
    assert "No Train Tasks" in client.get("/train/").json()["detail"]


def test_segment_a_slicer_volume_as_the_module_does(client, models, volume, tmp_path):
    # MONAILabelWidget.onClickSegmentation on a volume loaded in Slicer: upload it under its name, infer on it
    r = upload_image(client, volume, "MRHead")
    assert r.status_code == 200, r.text
    assert r.json()["image"] == "MRHead"
    # another user's volume of the same name (Slicer names volumes by their series) is theirs, not ours
    other = sitk.GetImageFromArray(np.ones((3, 16, 16), np.float32))
    sitk.WriteImage(other, str(tmp_path / "MRHead.nrrd"))
    assert upload_image(client, tmp_path / "MRHead.nrrd", "MRHead", client_id="user-abc").status_code == 200
    form, files = parse_multipart(infer(client, "unet-mono", "MRHead", {}))
    params = json.loads(form["params"])
    assert params["label_names"] == {n: i for i, n in enumerate(models["unet-mono"].data["class_names"]) if i}
    assert list(files)[0].endswith(".nrrd")
    result = load_result(tmp_path, files)
    upload = sitk.ReadImage(str(volume))
    assert_same_geometry(result, upload)
    assert result.GetPixelID() == sitk.sitkUInt8
    labels = sitk.GetArrayFromImage(result)
    assert set(np.unique(labels)) <= {0, *params["label_names"].values()}
    np.testing.assert_array_equal(labels, expected_labels(models["unet-mono"], volume))
    listed = client.get("/datastore/?output=all").json()["objects"]
    assert listed["MRHead"]["image"]["info"]["shape"] == [24, 20, 6] and listed["MRHead"]["labels"] == {}
    assert listed["MRHead (user-abc)"]["image"]["info"]["shape"] == [16, 16, 3]
    assert client.get("/datastore/").json()["total"] >= 2


def test_session_create_get_infer_delete(client, models, volume, tmp_path):
    r = create_session(client, volume)
    assert r.status_code == 200, r.text
    sid = r.json()["session_id"]
    assert r.json()["session_info"]["meta"]["channels"] == 1
    assert client.get(f"/session/{sid}").json()["name"] == sid
    assert client.get(f"/session/{sid}?image=true").content == volume.read_bytes()
    form, files = parse_multipart(infer(client, "unet-mono", "MRHead", {"result_extension": ".nii.gz",
                                                                        "result_dtype": "uint16"}, session_id=sid))
    result = load_result(tmp_path, files)
    assert list(files)[0].endswith(".nii.gz") and result.GetPixelID() == sitk.sitkUInt16
    assert_same_geometry(result, sitk.ReadImage(str(volume)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result), expected_labels(models["unet-mono"], volume))
    assert client.delete(f"/session/{sid}").status_code == 200
    assert client.get(f"/session/{sid}").status_code == 404
    gone = infer(client, "unet-mono", "MRHead", {}, session_id=sid)
    assert gone.status_code == 404 and "not found" in gone.json()["detail"]


@pytest.mark.parametrize("output, extension, dtype", [("json", ".nrrd", "uint8"), ("image", ".nii", "int16"),
                                                      ("all", ".mha", "int32")])
def test_infer_an_uploaded_file_in_each_output(client, models, volume, tmp_path, output, extension, dtype):
    r = infer(client, "unet-mono", "", {"result_extension": extension, "result_dtype": dtype}, file=volume,
              output=output)
    assert r.status_code == 200, r.text
    if output == "json":
        assert r.json()["result_extension"] == extension and r.json()["latencies"]["total"] > 0
        return
    if output == "image":
        name = r.headers["content-disposition"].split('filename="')[1].rstrip('"')
        files = {name: r.content}
    else:
        files = parse_multipart(r)[1]
    result = load_result(tmp_path, files)
    assert list(files)[0].endswith(extension)
    assert sitk.GetArrayFromImage(result).dtype == np.dtype(dtype)
    assert_same_geometry(result, sitk.ReadImage(str(volume)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(result), expected_labels(models["unet-mono"], volume))


def test_an_expired_session_is_gone(client, volume):
    r = create_session(client, volume, query="?expiry=5")
    sid = r.json()["session_id"]
    assert r.json()["session_info"]["expiry"] == 5
    store: SessionStore = client.app.state.sessions
    real = store.clock
    try:
        store.clock = lambda: real() + 60
        missing = client.get(f"/session/{sid}")
        assert missing.status_code == 404 and "expired" in missing.json()["detail"]
        assert infer(client, "unet-mono", "x", {}, session_id=sid).status_code == 404
    finally:
        store.clock = real
    assert not (store.root and any(p.name == sid for p in __import__("pathlib").Path(store.root).iterdir()))


def _write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


BAD = [  # (case, status, fragment of the one-line detail)
    ("unknown model", 404, "unknown model 'nope'"),
    ("outcome model", 400, "is a outcome model"),
    ("not an image", 400, "cannot be read"),
    ("text file", 415, "unsupported file type"),
    ("over the limit", 413, "larger than the limit"),
    ("params not JSON", 400, "params: not JSON"),
    ("png result", 400, "result_extension '.png'"),
    ("complex dtype", 400, "result_dtype 'complex64'"),
    ("no input", 400, "send an image id"),
    ("unknown image", 404, "image 'ghost' not found"),
    ("path as session", 404, "not found"),
    ("two channels", 400, "2 channel(s), but model 'unet-mono' takes 1"),
    ("dicom_seg of a volume file", 400, "output=dicom_seg needs a DICOM series"),
    ("two session files", 400, "send one image file"),
    ("label upload", 400, "keeps no labels"),
    ("train a model", 404, "no trainer"),
]


@pytest.mark.parametrize("case, status, fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_are_one_clear_4xx(client, volume, tmp_path, case, status, fragment):
    junk = _write(tmp_path, "scan.nii.gz", b"this is no image at all")
    if case == "unknown model":
        r = infer(client, "nope", "", {}, file=volume)
    elif case == "outcome model":
        r = infer(client, "outcome-model", "", {}, file=volume)
    elif case == "not an image":
        r = create_session(client, junk)
    elif case == "text file":
        r = infer(client, "unet-mono", "", {}, file=_write(tmp_path, "notes.txt", b"hello"))
    elif case == "over the limit":
        r = create_session(client, _write(tmp_path, "big.nrrd", b"\0" * 600_000))
    elif case == "params not JSON":
        r = http_multipart(client, "POST", "/infer/unet-mono?image=x", {"params": "{oops"}, {"file": volume})
    elif case == "png result":
        r = infer(client, "unet-mono", "", {"result_extension": ".png"}, file=volume)
    elif case == "complex dtype":
        r = infer(client, "unet-mono", "", {"result_dtype": "complex64"}, file=volume)
    elif case == "no input":
        r = infer(client, "unet-mono", "", {})
    elif case == "unknown image":
        r = infer(client, "unet-mono", "ghost", {})
    elif case == "path as session":
        r = infer(client, "unet-mono", "", {}, session_id="../../etc/passwd")
    elif case == "two channels":
        img = sitk.GetImageFromArray(np.zeros((4, 16, 16, 2), np.float32), isVector=True)
        sitk.WriteImage(img, str(tmp_path / "dual.nrrd"))
        r = infer(client, "unet-mono", "", {}, file=tmp_path / "dual.nrrd")
    elif case == "dicom_seg of a volume file":
        r = infer(client, "unet-mono", "", {}, file=volume, output="dicom_seg")
    elif case == "two session files":
        with open(volume, "rb") as a, open(volume, "rb") as b:
            r = client.put("/session/", files=[("files", ("a.nrrd", a)), ("files", ("b.nrrd", b))])
    elif case == "label upload":
        r = http_multipart(client, "PUT", "/datastore/label?image=MRHead", {"params": "{}"}, {"label": volume})
    else:
        r = client.post("/train/segmentation", json={})
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and fragment in detail, detail


def test_the_module_logs_in_when_a_token_is_set(models, volume, tmp_path):
    c = TestClient(zoo_app.create_app(models, token=TOKEN, credentials=USERS, explain=False))
    # MONAILabelClient.auth_enabled: GET /auth/ answers without the token
    assert c.get("/auth/").json()["enabled"] is True
    assert c.get("/info/").status_code == 401
    # MONAILabelClient.auth_token: a urlencoded form with username, password and grant_type
    form = {"username": "radiologist", "password": "wrong-password", "grant_type": "password"}
    headers = {"content-type": "application/x-www-form-urlencoded"}
    wrong = c.post("/auth/token", data=form, headers=headers)
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong username or password"
    assert c.post("/auth/token", data={**form, "username": "nobody"}).status_code == 401
    token = c.post("/auth/token", data={**form, "password": USERS["radiologist"]}, headers=headers).json()
    assert token == {"access_token": TOKEN, "token_type": "bearer"}
    auth = {"Authorization": f"{token['token_type']} {token['access_token']}"}  # MONAILabelClient.update_auth
    assert c.get("/auth/token/valid").status_code == 401
    assert c.get("/auth/token/valid", headers=auth).status_code == 200
    assert "unet-mono" in c.get("/info/", headers=auth).json()["models"]
    assert upload_image(c, volume, "MRHead").status_code == 401
    assert upload_image(c, volume, "MRHead", auth).status_code == 200
    form_, files = parse_multipart(infer(c, "unet-mono", "MRHead", {}, headers=auth))
    assert_same_geometry(load_result(tmp_path, files), sitk.ReadImage(str(volume)))
    sid = create_session(c, volume, headers=auth).json()["session_id"]
    assert c.get(f"/session/{sid}").status_code == 401 and c.get(f"/session/{sid}", headers=auth).status_code == 200


def test_without_a_token_the_login_answers_as_monai_label_does(client):
    r = client.post("/auth/token", data={"username": "a", "password": "b", "grant_type": "password"})
    assert r.json() == {"access_token": None, "token_type": None}


def test_credentials_need_a_token_and_a_well_formed_file(models, tmp_path, capsys):
    with pytest.raises(ValueError, match="need a token"):
        zoo_app.create_app(models, credentials=USERS)
    good = _write(tmp_path, "users.txt", b"# who may log in\nradiologist:pass-word-1\n\nsurgeon:with:colon-pw\n")
    assert read_credentials(str(good)) == {"radiologist": "pass-word-1", "surgeon": "with:colon-pw"}
    for text, fragment in [(b"radiologist\n", "line 1: expected username:password"),
                           (b"a:long-enough\na:long-enough-2\n", "line 2: user 'a' is listed twice"),
                           (b"a:short\n", "at least 8 characters"), (b"# nobody\n", "no username:password")]:
        with pytest.raises(ValueError, match=fragment):
            read_credentials(str(_write(tmp_path, "bad.txt", text)))
    assert serve_main(["--credentials-file", str(good)]) == 2
    assert "error: --credentials-file needs --token-file" in capsys.readouterr().err


def test_session_store_makes_its_ids_and_evicts_the_least_recently_used(tmp_path):
    now = [1000.0]
    store = SessionStore(str(tmp_path / "s"), max_expiry=100, max_entries=2, clock=lambda: now[0])
    ids = []
    for i in range(3):
        sid, folder = store.reserve()
        (tmp_path / "s" / sid / "image.nrrd").write_bytes(b"x")
        store.commit(sid, "image.nrrd", ".nrrd", {}, expiry=1000, datastore_name=f"vol{i}")
        ids.append(sid)
        now[0] += 1
    assert store.get(ids[0]) is None and store.get(ids[2]).expiry == 100  # capped at max_expiry
    assert store.find("vol1").name == ids[1] and store.find("vol0") is None
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(ids[1:])
    assert store.get("../s") is None and store.find("..") is None
    now[0] += 101
    assert store.get(ids[2]) is None and list((tmp_path / "s").iterdir()) == []
    store.close()
    assert not (tmp_path / "s").exists()


def test_a_dicom_series_comes_back_as_a_dicom_seg(client, mono_model, tmp_path):
    pydicom = pytest.importorskip("pydicom")
    from _dicom_series import write_series  # the DICOM SEG tests' CT series writer

    meta = readers.ImageMeta(spacing=(0.8, 0.8, 2.0), origin=(-12.0, -12.0, 40.0),
                             direction=((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)), path="", format="dicom")
    hu = np.random.default_rng(3).normal(0.0, 300.0, size=(32, 32, 5)).astype(np.float32)
    paths = write_series(str(tmp_path / "series"), hu, meta)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in paths:
            z.write(p, arcname=f"series/{p.rsplit('/', 1)[-1]}")
    zipped = _write(tmp_path, "CT.zip", buf.getvalue())
    r = infer(client, "unet-mono", "", {}, file=zipped, output="dicom_seg")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/dicom"
    seg = pydicom.dcmread(io.BytesIO(r.content))
    source = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    classes = mono_model.data["class_names"]
    assert [s.SegmentLabel for s in seg.SegmentSequence] == list(classes[1:])
    # the same upload as a label map: each segment's voxel count equals its class's
    _, files = parse_multipart(infer(client, "unet-mono", "", {"result_extension": ".nii.gz"}, file=zipped))
    labels = sitk.GetArrayFromImage(load_result(tmp_path, files))
    frames = seg.pixel_array.reshape(-1, *seg.pixel_array.shape[-2:])
    numbers = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
               for f in seg.PerFrameFunctionalGroupsSequence]
    for number in range(1, len(classes)):
        got = int(sum(frames[i].sum() for i, n in enumerate(numbers) if n == number))
        assert got == int((labels == number).sum()), classes[number]
