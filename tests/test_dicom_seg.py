"""DICOM in, DICOM SEG out (``zoo.dicom``, ``python -m zoo.predict --output seg.dcm``).

A CT series is made from the real pyradiomics lung CT in ``../shared/data/lung_ct`` (``lung2``: 0.63 x 0.63 x 5 mm,
cropped to 40 x 40 x 12 voxels around the lesion, geometry kept): one CT Image Storage file per slice with fresh
UIDs, its own ImagePositionPatient, ImageOrientationPatient, pixel spacing and rescale (stored value - 1024 = HU),
under shuffled file names so nothing can lean on the file order. A tiny 3D one-channel model trained on lung phantoms
in this module predicts it through ``zoo.predict``; highdicom reads the SEG back.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from data_pipelines import readers  # noqa: E402
from zoo import cards, dicom, predict  # noqa: E402
from zoo.configs import apply_overrides, load_config  # noqa: E402
from zoo.pretrained import load_pretrained  # noqa: E402
from zoo.training import train_and_evaluate  # noqa: E402
from _dicom_series import write_series  # noqa: E402

CROP = (slice(336, 376), slice(305, 345), slice(6, 18))  # 40 x 40 x 12 voxels; the lesion is on slices 8-17


@pytest.fixture(scope="module")
def ct(shared_data, tmp_path_factory):
    """The cropped real CT: ``(series folder, slice paths, hu [X, Y, Z], lesion [X, Y, Z], meta)``."""
    image, meta = readers.read_image(str(shared_data / "lung_ct" / "lung2_image.nrrd"))
    lesion, _ = readers.read_label(str(shared_data / "lung_ct" / "lung2_label.nrrd"))
    start = np.array([s.start for s in CROP], np.float64)
    origin = tuple(float(v) for v in meta.affine()[:3] @ np.append(start, 1.0))
    meta = meta.replace(origin=origin)
    hu, lesion = image[CROP][..., 0].astype(np.int16), lesion[CROP].astype(np.int32)
    folder = tmp_path_factory.mktemp("ct") / "series"
    paths = write_series(str(folder), hu, meta)
    return folder, paths, hu, lesion, meta


@pytest.fixture(scope="module")
def lung_run(tmp_path_factory):
    """A 3D one-channel (CT) U-Net trained for a few steps on lung phantoms (classes background, nodule)."""
    wd = tmp_path_factory.mktemp("dicom") / "run"
    config = apply_overrides(load_config("smoke"), {
        "data.kind": "lung", "data.spatial_dims": "3", "data.image_size": "(16,16,16)", "data.num_train": "4",
        "data.num_val": "2", "model.kwargs.features": "4", "model.kwargs.depth": "2", "train.batch_size": "2",
        "train.steps": "2", "train.warmup_steps": "0", "train.log_every": "1", "train.eval_every": "2",
        "train.checkpoint_every": "2"})
    train_and_evaluate(config, str(wd), progress=False)
    return wd


def _card(class_names=("background", "nodule")) -> dict:
    return {"name": "unet-test", "model": "unet", "step": 7, "data": {"name": "lung_ct"},
            "class_codes": cards.class_codes(class_names)}


def _frame_positions(seg):
    """Per frame: ImagePositionPatient, the referenced source SOP instance and the segment number (per frame, or
    shared by all frames when the SEG has one segment)."""
    groups, shared = seg.PerFrameFunctionalGroupsSequence, seg.SharedFunctionalGroupsSequence[0]
    return ([tuple(float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient) for g in groups],
            [g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for g in groups],
            [int(g.get("SegmentIdentificationSequence", shared.get("SegmentIdentificationSequence"))[0]
                 .ReferencedSegmentNumber) for g in groups])


def test_write_seg_frames_sit_on_their_source_slices(ct, tmp_path):
    folder, paths, hu, lesion, meta = ct
    out = tmp_path / "lesion.dcm"
    assert dicom.write_seg(lesion, meta, str(folder), _card(), str(out)) == str(out)
    seg = hd.seg.segread(str(out))
    sources = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in paths}
    by_uid = {uid: pydicom.dcmread(p, stop_before_pixels=True) for uid, p in sources.items()}
    src0 = next(iter(by_uid.values()))
    assert seg.SegmentationType == "BINARY" and seg.number_of_segments == 1
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src0.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == src0.FrameOfReferenceUID and seg.StudyInstanceUID == src0.StudyInstanceUID
    orient = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    positions, refs, segments = _frame_positions(seg)
    lesion_slices = [k for k in range(lesion.shape[2]) if lesion[:, :, k].any()]
    assert 0 < len(positions) == len(lesion_slices) < lesion.shape[2]  # the empty slices are omitted
    for pos, uid in zip(positions, refs):
        src = by_uid[uid]
        np.testing.assert_allclose(pos, [float(v) for v in src.ImagePositionPatient], atol=1e-4)
        np.testing.assert_allclose([float(v) for v in orient], [float(v) for v in src.ImageOrientationPatient])
        k = paths.index(sources[uid])
        got = seg.get_pixels_by_source_instance([uid], combine_segments=True)[0]
        np.testing.assert_array_equal(got, lesion[:, :, k].T)
    assert set(segments) == {1}
    desc = seg.get_segment_description(1)
    assert desc.segment_label == "nodule" and desc.SegmentAlgorithmType == "AUTOMATIC"
    assert desc.segmented_property_type.value == "27925004"  # SNOMED-CT Nodule
    assert desc.segmented_property_category.meaning == "Morphologically Abnormal Structure"
    algo = desc.algorithm_identification[0]
    assert (algo.AlgorithmName, algo.AlgorithmVersion) == ("unet-test", "step 7")
    assert "unet-test" in algo.AlgorithmSource


def test_slightly_irregular_positions_keep_their_own_frame_positions(ct, tmp_path):
    """A slice 0.2 mm off its place (4 % of the 5 mm spacing, which the reader accepts) still maps to its slice,
    and its frame carries the slice's own position."""
    import shutil

    folder, paths, _, lesion, _ = ct
    jittered = tmp_path / "series"
    shutil.copytree(folder, jittered)
    moved = jittered / os.path.basename(paths[9])
    ds = pydicom.dcmread(str(moved))
    ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], float(ds.ImagePositionPatient[2]) + 0.2]
    ds.save_as(str(moved))
    _, read = readers.read_image(str(jittered))
    out = tmp_path / "seg.dcm"
    dicom.write_seg(lesion, read, str(jittered), _card(), str(out))
    seg = hd.seg.segread(str(out))
    positions, refs, _ = _frame_positions(seg)
    assert ds.SOPInstanceUID in refs
    np.testing.assert_allclose(positions[refs.index(ds.SOPInstanceUID)], [float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_array_equal(seg.get_pixels_by_source_instance([ds.SOPInstanceUID], combine_segments=True)[0],
                                  lesion[:, :, 9].T)


def test_one_segment_per_foreground_class_even_when_a_class_is_absent(ct, tmp_path):
    folder, paths, _, lesion, meta = ct
    labels = lesion.copy()
    labels[20:][lesion[20:] > 0] = 2  # the lesion's far half is another class; class 3 is predicted nowhere
    card = _card(("background", "enhancing tumour", "oedema", "necrosis"))
    out = tmp_path / "multi.dcm"
    dicom.write_seg(labels, meta, str(folder), card, str(out))
    seg = hd.seg.segread(str(out))
    assert seg.number_of_segments == 3
    assert [seg.get_segment_description(n).segmented_property_type.meaning for n in (1, 2, 3)] == [
        "Neoplasm", "Edema", "Necrosis"]
    index = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k for k, p in enumerate(paths)}
    frames = _seg_frames(seg)
    assert {s for _, s in frames} == {1, 2}  # no frame of the absent class
    assert set(frames) == {(uid, c) for uid, k in index.items() for c in (1, 2) if (labels[:, :, k] == c).any()}
    for (uid, c), frame in frames.items():
        np.testing.assert_array_equal(frame, (labels[:, :, index[uid]] == c).T.astype(np.uint8))


def test_predict_by_store_name_identifies_the_store_entry(lung_run, ct, tmp_path, monkeypatch):
    import zoo

    monkeypatch.setenv("ZOO_HOME", str(tmp_path / "home"))
    entry = zoo.save_pretrained(str(lung_run), "unet-lung-ct-test")
    out = tmp_path / "seg.dcm"
    assert predict.main(["--model", "unet-lung-ct-test", "--input", str(ct[0]), "--output", str(out)]) == 0
    algo = hd.seg.segread(str(out)).get_segment_description(1).algorithm_identification[0]
    assert algo.AlgorithmName == "unet-lung-ct-test" and algo.AlgorithmVersion == f"step {entry.card['step']}"
    assert algo.AlgorithmSource == "medzoo store entry unet-lung-ct-test"
    assert algo.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"


def _rotation(axis: int, degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    r = np.eye(3)
    a, b = [i for i in range(3) if i != axis]
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


@pytest.mark.parametrize("direction", [
    np.diag([1.0, 1.0, -1.0]) @ np.eye(3),                      # slices stacked toward the feet
    np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),  # sagittal
    _rotation(0, 20.0) @ _rotation(2, 35.0),                      # oblique
], ids=["feet_first", "sagittal", "oblique"])
def test_frames_follow_positions_whatever_the_orientation(ct, tmp_path, direction):
    """The series is written in another orientation and read back by ``data_pipelines.readers``, which orders
    the slices itself (along the normal of the rows and columns: the feet-first series comes back reversed); the
    label map in the reader's order gives frames on their source slices."""
    _, _, hu, lesion, meta = ct
    grid = meta.replace(direction=tuple(map(tuple, direction)))
    folder = tmp_path / "series"
    paths = write_series(str(folder), hu, grid, seed=3)
    image, read = readers.read_image(str(folder))
    np.testing.assert_allclose(read.direction_matrix[:, :2], direction[:, :2], atol=1e-5)
    np.testing.assert_allclose(np.abs(read.direction_matrix[:, 2]), np.abs(direction[:, 2]), atol=1e-5)
    to_read = np.linalg.inv(read.affine())
    read_k = [int(round((to_read @ grid.affine() @ [0.0, 0.0, k, 1.0])[2])) for k in range(hu.shape[2])]
    assert sorted(read_k) == list(range(hu.shape[2]))
    in_read_order = np.empty_like(lesion)
    for k, kr in enumerate(read_k):
        np.testing.assert_array_equal(image[:, :, kr, 0], hu[:, :, k])
        in_read_order[:, :, kr] = lesion[:, :, k]
    out = tmp_path / "seg.dcm"
    dicom.write_seg(in_read_order, read, str(folder), _card(), str(out))
    seg = hd.seg.segread(str(out))
    index = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k for k, p in enumerate(paths)}
    frames = _seg_frames(seg)
    assert {index[uid] for uid, _ in frames} == {k for k in range(lesion.shape[2]) if lesion[:, :, k].any()}
    for (uid, _), frame in frames.items():
        np.testing.assert_array_equal(frame, lesion[:, :, index[uid]].T)
    positions, refs, _ = _frame_positions(seg)
    for pos, uid in zip(positions, refs):
        want = grid.affine()[:3] @ [0.0, 0.0, index[uid], 1.0]
        np.testing.assert_allclose(pos, want, atol=1e-3)


def test_fractional_seg_round_trips_the_probabilities(ct, tmp_path):
    folder, _, _, lesion, meta = ct
    rng = np.random.default_rng(0)
    p1 = np.where(lesion > 0, rng.uniform(0.5, 1.0, lesion.shape), 0.0).astype(np.float32)
    proba = np.stack([1.0 - p1, p1], axis=-1)
    out = tmp_path / "proba.dcm"
    dicom.write_seg(lesion, meta, str(folder), _card(), str(out), fractional=proba)
    seg = hd.seg.segread(str(out))
    assert seg.SegmentationType == "FRACTIONAL" and seg.SegmentationFractionalType == "PROBABILITY"
    vol = seg.get_volume(combine_segments=False, rescale_fractional=True)
    positions, _, _ = _frame_positions(seg)
    assert len(positions) == len({k for k in range(lesion.shape[2]) if lesion[:, :, k].any()})
    want = {tuple(np.round(meta.affine()[:3] @ [0, 0, k, 1], 3)): p1[:, :, k].T for k in range(lesion.shape[2])}
    for f, pos in enumerate(positions):
        frame = seg.get_frame(f + 1) / float(seg.MaximumFractionalValue)
        np.testing.assert_allclose(frame, want[tuple(np.round(pos, 3))], atol=0.5 / 255 + 1e-6)
    assert vol is not None


def _seg_frames(seg) -> dict:
    """``{(source SOP instance UID, segment number): frame [rows, columns]}`` of a SEG read by highdicom."""
    positions, refs, segments = _frame_positions(seg)
    return {(uid, s): seg.get_frame(f + 1) for f, (uid, s) in enumerate(zip(refs, segments))}


def test_predict_writes_a_seg_that_matches_its_nifti_output(lung_run, ct, tmp_path, capsys):
    folder, paths, _, _, meta = ct
    out, nifti = tmp_path / "seg.dcm", tmp_path / "labels.nii.gz"
    assert predict.main(["--model", str(lung_run), "--input", str(folder), "--output", str(out)]) == 0
    assert predict.main(["--model", str(lung_run), "--input", str(folder), "--output", str(nifti)]) == 0
    assert "wrote" in capsys.readouterr().out
    labels, lmeta = readers.read_label(str(nifti))
    np.testing.assert_allclose(lmeta.origin, meta.origin, atol=1e-4)
    seg = hd.seg.segread(str(out))
    card = cards.read_card(str(lung_run), load_pretrained(str(lung_run)))
    assert [c["name"] for c in card["class_codes"]] == ["nodule"]
    assert seg.number_of_segments == len(card["class_codes"])
    assert [seg.get_segment_description(c["label"]).segment_label for c in card["class_codes"]] == ["nodule"]
    algo = seg.get_segment_description(1).algorithm_identification[0]
    assert algo.AlgorithmName == "unet" and algo.AlgorithmVersion == f"step {card['step']}"
    frames = _seg_frames(seg)
    headers = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: (k, pydicom.dcmread(p, stop_before_pixels=True))
               for k, p in enumerate(paths)}
    positions, refs, _ = _frame_positions(seg)
    orient = [float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient]
    for pos, uid in zip(positions, refs):
        np.testing.assert_allclose(pos, [float(v) for v in headers[uid][1].ImagePositionPatient], atol=1e-4)
        np.testing.assert_allclose(orient, [float(v) for v in headers[uid][1].ImageOrientationPatient])
    want = {(uid, s): (labels[:, :, k] == s).T.astype(np.uint8) for uid, (k, _) in headers.items()
            for s in range(1, len(card["class_codes"]) + 1)}
    nonempty = {key for key, frame in want.items() if frame.any()}
    if nonempty:  # empty frames are omitted; a prediction with no foreground keeps every frame (all zero)
        assert set(frames) == nonempty
    else:
        assert set(frames) == set(want) and not any(f.any() for f in frames.values())
    for key, frame in frames.items():
        np.testing.assert_array_equal(frame, want[key])


def test_predict_fractional_seg_thresholds_to_the_label_map(lung_run, ct, tmp_path):
    folder, paths, _, _, _ = ct
    out, nifti = tmp_path / "proba.dcm", tmp_path / "labels.nii.gz"
    assert predict.main(["--model", str(lung_run), "--input", str(folder), "--output", str(out), "--fractional"]) == 0
    assert predict.main(["--model", str(lung_run), "--input", str(folder), "--output", str(nifti)]) == 0
    labels, _ = readers.read_label(str(nifti))
    seg = hd.seg.segread(str(out))
    assert seg.SegmentationType == "FRACTIONAL" and int(seg.MaximumFractionalValue) == 255
    index = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: k for k, p in enumerate(paths)}
    frames = _seg_frames(seg)
    assert frames
    for (uid, s), frame in frames.items():
        want = (labels[:, :, index[uid]] == s).T
        clear = np.abs(frame.astype(np.float64) - 127.5) > 1.0  # away from p = 0.5 (8-bit rounding)
        np.testing.assert_array_equal((frame > 127.5)[clear], want[clear])
    for uid, k in index.items():  # a slice without a frame has no probability above 0.5/255, so no label
        if (uid, 1) not in frames:
            assert not labels[:, :, k].any()


def _sr(path) -> None:
    """A Basic Text SR: a DICOM object with no pixel data."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import BasicTextSRStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = BasicTextSRStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = BasicTextSRStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.Modality = generate_uid(), generate_uid(), "SR"
    ds.save_as(str(path), enforce_file_format=True)


@pytest.mark.parametrize("case,fragment", [
    ("report", "not an image slice (Basic Text SR Storage"),
    ("no_pixels", "not an image slice"),
    ("two_series", "2 DICOM series"),
    ("missing_slice", "missing"),
    ("picture", "a DICOM SEG needs a DICOM series input; got"),
    ("fractional_nifti", "--fractional writes a FRACTIONAL DICOM SEG"),
])
def test_bad_input_is_one_line_and_writes_nothing(lung_run, ct, tmp_path, capsys, case, fragment):
    import shutil

    folder, paths, hu, _, meta = ct
    bad = tmp_path / "in"
    out = tmp_path / "seg.dcm"
    extra = []
    if case == "report":
        bad.mkdir()
        _sr(bad / "report.dcm")
    elif case == "no_pixels":
        shutil.copytree(folder, bad)
        ds = pydicom.dcmread(str(bad / os.path.basename(paths[5])))
        del ds.PixelData
        ds.save_as(str(bad / os.path.basename(paths[5])))
    elif case == "two_series":
        shutil.copytree(folder, bad)
        write_series(str(bad / "other"), hu[:, :, :3], meta, seed=1)
        for name in os.listdir(bad / "other"):
            shutil.move(str(bad / "other" / name), str(bad / f"other-{name}"))
        (bad / "other").rmdir()
    elif case == "missing_slice":
        shutil.copytree(folder, bad)
        os.remove(bad / os.path.basename(paths[6]))
    elif case == "picture":
        from PIL import Image

        bad = tmp_path / "picture.png"
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(bad)
    else:
        bad, out, extra = folder, tmp_path / "labels.nii.gz", ["--fractional"]
    assert predict.main(["--model", str(lung_run), "--input", str(bad), "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_write_seg_refuses_what_does_not_fit_the_grid(ct, tmp_path):
    folder, paths, _, lesion, meta = ct
    out = tmp_path / "seg.dcm"
    with pytest.raises(ValueError, match=r"slice\(s\) \[4\] missing"):
        dicom.write_seg(lesion, meta, paths[:4] + paths[5:], _card(), str(out))
    with pytest.raises(ValueError, match="a DICOM SEG needs a DICOM series input; got a 2D label map"):
        dicom.write_seg(lesion[:, :, 0], meta, paths, _card(), str(out))
    with pytest.raises(ValueError, match="is not a slice of the label map's grid"):
        shifted = meta.replace(origin=(meta.origin[0], meta.origin[1], meta.origin[2] + 2.5))
        dicom.write_seg(lesion, shifted, paths, _card(), str(out))
    with pytest.raises(ValueError, match="the card codes labels 1..1"):
        dicom.write_seg(lesion * 2, meta, paths, _card(), str(out))
    with pytest.raises(ValueError, match="fractional: expected probabilities"):
        dicom.write_seg(lesion, meta, paths, _card(), str(out), fractional=np.zeros(lesion.shape + (3,), np.float32))
    from data_pipelines.errors import UnreadableInput

    _sr(tmp_path / "report.dcm")
    (tmp_path / "broken.dcm").write_bytes(b"not DICOM at all")
    for source, problem in (([str(tmp_path / "report.dcm"), *paths], "report.dcm: not an image slice"),
                            ([*paths, str(tmp_path / "broken.dcm")], "broken.dcm: not a readable DICOM file")):
        with pytest.raises(UnreadableInput, match=problem):  # bad outside bytes: the readers' one error type
            dicom.write_seg(lesion, meta, source, _card(), str(out))
    assert not out.exists() and not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


@pytest.mark.parametrize("name,category,kind", [
    ("tumour", "49755003", "108369006"), ("lesion", "49755003", "108369006"), ("enhancing", "49755003", "108369006"),
    ("necrosis/non-enhancing", "49755003", "6574001"), ("oedema", "49755003", "79654002"),
    ("nodule", "49755003", "27925004"), ("cyst", "49755003", "367643001"), ("lung", "91723000", "39607008"),
    ("kidney", "91723000", "64033007"), ("brain", "91723000", "12738006"), ("membrane", "85756007", "4421005"),
    ("something else", "85756007", "85756007"),
])
def test_class_codes_from_class_names(name, category, kind):
    (code,) = cards.class_codes(["background", name])
    assert code["label"] == 1 and code["name"] == name
    assert (code["category"]["value"], code["type"]["value"]) == (category, kind)
    assert code["category"]["scheme"] == code["type"]["scheme"] == "SCT"


def test_cards_carry_and_check_their_class_codes(tmp_path):
    from data_pipelines.atomic import write_json

    assert [c["type"]["meaning"] for c in cards.ModelCard("m", classes=("bg", "tumour", "kidney")).to_dict()[
        "class_codes"]] == ["Neoplasm", "Kidney"]
    entry = tmp_path / "entry"
    entry.mkdir()
    own = cards.class_codes(["background", "lesion"])
    own[0]["type"] = {"value": "95324001", "scheme": "SCT", "meaning": "Skin lesion"}
    write_json(str(entry / "card.json"), {"name": "e", "data": {"class_names": ["skin", "lesion"]}, "class_codes": own})
    assert cards.read_card(str(entry), None)["class_codes"][0]["type"]["meaning"] == "Skin lesion"
    write_json(str(entry / "card.json"), {"name": "e", "data": {"class_names": ["skin", "lesion"]}})
    assert cards.read_card(str(entry), None)["class_codes"][0]["type"]["meaning"] == "Neoplasm"
    own[0]["category"] = {"value": "49755003"}
    write_json(str(entry / "card.json"), {"name": "e", "data": {"class_names": ["skin", "lesion"]}, "class_codes": own})
    with pytest.raises(ValueError, match="card.json: class_codes label 1: category needs"):
        cards.read_card(str(entry), None)


@pytest.mark.parametrize("fractional", [False, True], ids=["binary", "fractional"])
def test_seg_passes_the_dicom3tools_validator(ct, tmp_path, fractional):
    """``dciodvfy`` (David Clunie's dicom3tools, ``apt-get install dicom3tools``) checks the SEG against the
    standard's IOD and module definitions: no error, no warning."""
    import shutil
    import subprocess

    if not shutil.which("dciodvfy"):
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    folder, _, _, lesion, meta = ct
    proba = np.stack([1.0 - lesion, lesion], axis=-1).astype(np.float32) if fractional else None
    out = tmp_path / "seg.dcm"
    dicom.write_seg(lesion, meta, str(folder), _card(), str(out), fractional=proba)
    report = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True, timeout=60)
    lines = (report.stdout + report.stderr).strip().splitlines()
    assert lines[0] == "Segmentation" and not [x for x in lines if x.startswith(("Error", "Warning"))], lines
