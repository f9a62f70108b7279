"""Hostile files: every parser fed with outside bytes, fuzzed from real seed files, plus one regression test per
bomb or escape.

The fuzz: small seed files of each format (NIfTI .nii/.nii.gz, NRRD raw and gzip, a detached .nhdr, MHD+RAW,
MHA, pydicom's CT_small.dcm, PNG/JPEG/TIFF, a zip of a DICOM series as the application reads it, a CSV and a
Parquet cohort, a KiTS-layout clinical.json) are mutated by hypothesis (bit flips, truncation, spliced bytes,
edits of header fields to extreme values, DICOM elements rewritten through pydicom), then read under a low
``max_bytes``. Each input must read, or raise ``UnreadableInput`` naming the file, within a few seconds; never
another exception. ``FUZZ_EXAMPLES`` sets the examples per reader (default 30; the long run's figures used
thousands) and ``-s`` prints how many inputs each reader met and how they ended.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import shutil
import struct
import time
import zipfile
import zlib

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_pipelines import read_image, read_label
from data_pipelines.errors import InputTooLarge, MissingInput, UnreadableInput
from zoo.app.services.uploads import TooLarge, read_reference, read_upload
from zoo.outcome.cohorts import read_cohort, read_table
from zoo.outcome.kits import read_kits_cohort

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "30"))
FUZZ_MAX_BYTES = 1 << 20  # every fuzzed read runs under 1 MiB: a header's claim past it is refused, not allocated
SECONDS_PER_INPUT = 5.0
EXTREMES = (0, 1, 2, 3, 7, 255, 256, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 10 ** 6, 10 ** 12,
            2 ** 63 - 1, -1, -(2 ** 31))
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),  # pydicom's notes on the damaged files it meets
              pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]  # then max_bytes refuses


# ------------------------------------------------------------------ seed files

def _volume(shape=(6, 5, 4), dtype=np.int16):
    return (np.arange(int(np.prod(shape))) % 50).astype(dtype).reshape(shape)


def _sitk_bytes(folder, name, compress=False, arr=None):
    path = os.path.join(folder, name)
    img = sitk.GetImageFromArray(np.transpose(_volume() if arr is None else arr, (2, 1, 0)))
    img.SetSpacing((0.7, 0.8, 2.5))
    sitk.WriteImage(img, path, compress)
    return path


def _read_all(folder):
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def _dicom_slices(folder, n=3, uid="1.2.826.0.1.3680043.2.1125.7", z0=0.0, shape=(6, 5)):
    """``n`` CT slices of one series, 2.5 mm apart, written by SimpleITK: ``{name: bytes}``."""
    os.makedirs(folder, exist_ok=True)
    w = sitk.ImageFileWriter()
    w.KeepOriginalImageUIDOn()
    for z in range(n):
        s = sitk.GetImageFromArray(_volume(shape + (1,))[..., 0].T.copy())
        s.SetSpacing((0.7, 0.8))
        tags = {"0008|0060": "CT", "0020|000e": uid + ".2", "0020|000d": uid + ".1", "0020|0037": "1\\0\\0\\0\\1\\0",
                "0020|0013": str(z + 1), "0020|0032": f"0\\0\\{z0 + 2.5 * z}", "0028|0030": "0.8\\0.7",
                "0008|0018": f"{uid}.3.{int(z0)}.{z}"}
        for k, v in tags.items():
            s.SetMetaData(k, v)
        w.SetFileName(os.path.join(folder, f"s{int(z0)}_{z}.dcm"))
        w.Execute(s)
    return {n: open(os.path.join(folder, n), "rb").read() for n in sorted(os.listdir(folder))}


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _picture(fmt):
    from PIL import Image

    buf = io.BytesIO()
    rgb = np.random.default_rng(0).integers(0, 255, size=(7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def _cohort_frame():
    import pandas as pd

    rng = np.random.default_rng(0)
    return pd.DataFrame({"time": rng.integers(1, 100, 12).astype(float), "event": rng.integers(0, 2, 12),
                         "age": rng.normal(60, 5, 12).round(1), "grade": rng.integers(1, 4, 12)})


def _kits_records():
    import json

    recs = [{"case_id": f"case_{i:05d}", "age_at_nephrectomy": 50 + i, "body_mass_index": 27.5,
             "gender": "male", "vital_status": "censored", "vital_days_after_surgery": 400 + i,
             "comorbidities": {"myocardial_infarction": False}, "pathologic_size": 3.2} for i in range(2)]
    return json.dumps(recs).encode()


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """``{target: {file name: bytes}}``: the real seed files each fuzz target starts from."""
    from pydicom.data import get_testdata_file

    root = str(tmp_path_factory.mktemp("seeds"))
    out = {}
    for target, names in {"nrrd_raw": ["x.nrrd"], "mhd": ["x.mhd"], "mha": ["x.mha"]}.items():
        d = os.path.join(root, target)
        os.makedirs(d)
        _sitk_bytes(d, names[0])
        out[target] = _read_all(d)
    d = os.path.join(root, "nrrd_gzip")
    os.makedirs(d)
    _sitk_bytes(d, "x.nrrd", compress=True)
    out["nrrd_gzip"] = _read_all(d)
    header = out["nrrd_raw"]["x.nrrd"].split(b"\n\n", 1)
    out["nhdr"] = {"x.nhdr": header[0] + b"\ndata file: x.raw\n", "x.raw": header[1]}
    nii = os.path.join(root, "x.nii")
    nib.save(nib.Nifti1Image(_volume(), np.diag([0.7, 0.8, 2.5, 1.0])), nii)
    out["nifti"] = {"x.nii": open(nii, "rb").read()}
    out["nifti_gz"] = {"x.nii.gz": out["nifti"]["x.nii"]}  # packed by gzip (mutated inside or outside)
    out["dicom"] = {"ct.dcm": open(get_testdata_file("CT_small.dcm"), "rb").read()}
    out["zip_series"] = _dicom_slices(os.path.join(root, "series"))  # packed by zip
    for fmt, name in (("PNG", "x.png"), ("JPEG", "x.jpg"), ("TIFF", "x.tif")):
        out[fmt.lower()] = {name: _picture(fmt)}
    frame = _cohort_frame()
    out["csv"] = {"c.csv": frame.to_csv(index=False).encode()}
    pq = os.path.join(root, "c.parquet")
    frame.to_parquet(pq)
    out["parquet"] = {"c.parquet": open(pq, "rb").read()}
    out["kits"] = {"clinical.json": _kits_records()}
    return out


# ------------------------------------------------------------------ targets: how each seed is packed and read

def _pack(target: str, files: dict) -> dict:
    if target == "nifti_gz":
        return {"x.nii.gz": gzip.compress(files["x.nii.gz"], compresslevel=1)}
    if target == "zip_series":
        return {"series.zip": _zip(files)}
    return files


def _kits_layout(folder):
    for i in range(2):
        os.makedirs(os.path.join(folder, f"case_{i:05d}"), exist_ok=True)
        open(os.path.join(folder, f"case_{i:05d}", "segmentation.nii.gz"), "wb").close()


READS = {
    "nifti": lambda d: read_image(os.path.join(d, "x.nii"), max_bytes=FUZZ_MAX_BYTES),
    "nifti_gz": lambda d: read_image(os.path.join(d, "x.nii.gz"), max_bytes=FUZZ_MAX_BYTES),
    "nrrd_raw": lambda d: read_image(os.path.join(d, "x.nrrd"), max_bytes=FUZZ_MAX_BYTES),
    "nrrd_gzip": lambda d: read_image(os.path.join(d, "x.nrrd"), max_bytes=FUZZ_MAX_BYTES),
    "nhdr": lambda d: read_image(os.path.join(d, "x.nhdr"), max_bytes=FUZZ_MAX_BYTES),
    "mhd": lambda d: read_image(os.path.join(d, "x.mhd"), max_bytes=FUZZ_MAX_BYTES),
    "mha": lambda d: read_label(os.path.join(d, "x.mha"), max_bytes=FUZZ_MAX_BYTES),
    "dicom": lambda d: read_image(os.path.join(d, "ct.dcm"), max_bytes=FUZZ_MAX_BYTES),
    "png": lambda d: read_image(os.path.join(d, "x.png"), max_bytes=FUZZ_MAX_BYTES),
    "jpeg": lambda d: read_image(os.path.join(d, "x.jpg"), max_bytes=FUZZ_MAX_BYTES),
    "tiff": lambda d: read_image(os.path.join(d, "x.tif"), max_bytes=FUZZ_MAX_BYTES),
    "zip_series": lambda d: read_upload(os.path.join(d, "series.zip"), ".zip", d, "upload 'series.zip'",
                                        max_upload_mb=1.0),
    "csv": lambda d: read_cohort(os.path.join(d, "c.csv"), time="time", event="event"),
    "parquet": lambda d: read_table(os.path.join(d, "c.parquet"), max_bytes=FUZZ_MAX_BYTES),
    "kits": lambda d: (_kits_layout(d), read_kits_cohort(d)),
}
TEXT_HEADERS = {"nrrd_raw", "nrrd_gzip", "nhdr", "mhd", "mha", "csv", "kits"}
HEADER_BYTES = {"nifti": 352, "nifti_gz": 352, "dicom": 1200, "png": 40, "jpeg": 200, "tiff": 200,
                "zip_series": 400, "parquet": 64}
DICOM_FIELDS = {"Rows": [0, 1, 0x7FFF, 0xFFFF], "Columns": [0, 1, 0x7FFF, 0xFFFF], "BitsAllocated": [0, 1, 7, 12, 64],
                "SamplesPerPixel": [0, 3, 0xFFFF], "NumberOfFrames": ["0", "-1", "100000", "999999999999"],
                "PixelRepresentation": [0, 1, 7], "BitsStored": [0, 33], "PhotometricInterpretation": ["PALETTE COLOR",
                                                                                                      "YBR_FULL"],
                "TransferSyntaxUID": ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50",
                                      "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "1.2.3.4"]}


def _with_transfer_syntax(data: bytes, uid: str) -> bytes:
    """``data`` (a DICOM file with a meta group length) claiming transfer syntax ``uid``, its data set untouched
    (pydicom will not write native pixel data under a compressed syntax: a hostile file does)."""
    import pydicom
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_file_meta_info

    meta = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).file_meta
    meta.TransferSyntaxUID = uid
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_file_meta_info(fp, meta, enforce_standard=True)
    return data[:132] + fp.getvalue() + data[144 + int.from_bytes(data[140:144], "little"):]


def _dicom_field(data: bytes, field: str, value) -> bytes:
    """``data`` (a DICOM file) with one element rewritten through pydicom (unchanged when pydicom cannot)."""
    import pydicom

    try:
        if field == "TransferSyntaxUID":
            return _with_transfer_syntax(data, value)
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        setattr(ds, field, value)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=False)
        return buf.getvalue()
    except Exception:  # a value pydicom will not encode: the mutation is a no-op
        return data


@st.composite
def _mutated(draw, target: str, files: dict) -> dict:
    """``files`` with one of them mutated 1-4 times (flip, truncate, splice, header-field edit)."""
    name = draw(st.sampled_from(sorted(files)))
    data = bytearray(files[name])
    head = len(data) if target in TEXT_HEADERS else HEADER_BYTES.get(target, 256)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "splice", "field"]))
        if not data:
            break
        near = min(len(data), head) if draw(st.booleans()) else len(data)
        if kind == "flip":
            pos = draw(st.integers(0, near - 1))
            data[pos] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            data = data[:draw(st.integers(0, len(data) - 1))]
        elif kind == "splice":
            pos = draw(st.integers(0, near))
            chunk = draw(st.binary(min_size=1, max_size=64))
            width = len(chunk) if draw(st.booleans()) else 0  # overwrite or insert
            data[pos:pos + width] = chunk
        elif target == "dicom":
            field = draw(st.sampled_from(sorted(DICOM_FIELDS)))
            data = bytearray(_dicom_field(bytes(data), field, draw(st.sampled_from(DICOM_FIELDS[field]))))
        elif target in TEXT_HEADERS:
            numbers = list(re.finditer(rb"-?\d+(\.\d+)?", bytes(data[:head])))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                data[m.start():m.end()] = str(draw(st.sampled_from(EXTREMES))).encode()
        else:
            width = draw(st.sampled_from([1, 2, 4, 8]))
            pos = draw(st.integers(0, max(near - width, 0)))
            value = draw(st.sampled_from(EXTREMES)) % (1 << (8 * width))
            data[pos:pos + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
    return {**files, name: bytes(data)}


def _fuzz_once(target: str, files: dict, folder: str) -> tuple[str, float]:
    """Write ``files`` into a fresh ``folder`` and read them as ``target``: ``(outcome, seconds)``, outcome "read"
    or "unreadable"; another exception, an error not naming the file or a read past the time bound fails."""
    os.makedirs(folder)
    try:
        for name, data in files.items():
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)
        names = [n for n in files] + ["series.zip", os.path.basename(folder)]
        start = time.perf_counter()
        try:
            READS[target](folder)
            outcome = "read"
        except UnreadableInput as e:
            assert any(n in str(e) for n in names), f"{target}: the error does not name the file: {e}"
            outcome = "unreadable"
        except TooLarge:  # the application's 413 for a zip inflating past the upload limit
            assert target == "zip_series"
            outcome = "unreadable"
        elapsed = time.perf_counter() - start
        assert elapsed < SECONDS_PER_INPUT, f"{target}: one input took {elapsed:.1f} s"
        return outcome, elapsed
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("target", sorted(READS))
def test_fuzzed_inputs_read_or_raise_unreadable_input(target, seeds, tmp_path_factory):
    base = str(tmp_path_factory.mktemp(f"fuzz_{target}"))
    seen = []

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=FUZZ_EXAMPLES <= 100,
              suppress_health_check=list(HealthCheck))
    @given(inside=st.booleans(), data=st.data())
    def fuzz(inside, data):
        files = seeds[target]
        if inside or _pack(target, files) is files:
            files = _pack(target, data.draw(_mutated(target, files)))
        else:
            files = data.draw(_mutated(target, _pack(target, files)))
        seen.append(_fuzz_once(target, files, os.path.join(base, str(len(seen)))))

    assert _fuzz_once(target, _pack(target, seeds[target]), os.path.join(base, "seed"))[0] == "read"
    fuzz()
    outcomes = [o for o, _ in seen]
    print(f"\n{target}: {len(seen)} inputs, {outcomes.count('read')} read, {outcomes.count('unreadable')} "
          f"unreadable, slowest {max(t for _, t in seen):.2f} s")
    assert len(seen) >= min(FUZZ_EXAMPLES, 10)


# ------------------------------------------------------------------ the error type

def test_errors_name_the_file_pickle_and_keep_the_old_types(tmp_path):
    with pytest.raises(MissingInput, match="nope.nii.gz: no such file") as e:
        read_image(tmp_path / "nope.nii.gz")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)
    for err in (UnreadableInput("a.nrrd", "bad"), MissingInput("b.nii", "gone"),
                InputTooLarge("c.dcm", "the header claims", 10 ** 12, 1 << 20), TooLarge(64, "inflated")):
        back = pickle.loads(pickle.dumps(err))  # a worker process raises them across a pipe
        assert type(back) is type(err) and str(back) == str(err)
    assert "931 GiB" in str(InputTooLarge("c.dcm", "the header claims", 10 ** 12, 1 << 20))
    for err in (e.value, InputTooLarge("c.dcm", "the header claims", 10 ** 12, 1 << 20)):  # context added by a caller
        again = type(err)(f"case 7: {err}")
        assert str(again) == f"case 7: {err}" and again.file == "case 7"
        assert str(pickle.loads(pickle.dumps(again))) == str(again)


# ------------------------------------------------------------------ claimed sizes: refused before allocating

def _nifti_claiming(path, dims, gz=False, payload=b""):
    hdr = nib.Nifti1Header()
    hdr.set_data_shape(dims)
    hdr.set_data_dtype(np.uint8)
    hdr["vox_offset"] = 352
    data = hdr.binaryblock + b"\x00" * 4 + payload
    with (gzip.open(path, "wb", compresslevel=1) if gz else open(path, "wb")) as f:
        f.write(data)


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_nifti_header_claiming_a_terabyte_is_refused_before_reading(tmp_path, name):
    path = str(tmp_path / name)
    _nifti_claiming(path, (10000, 10000, 10000), gz=name.endswith(".gz"))
    start = time.perf_counter()
    with pytest.raises(InputTooLarge, match=rf"{re.escape(name)}: the NIfTI header's dims 10000x10000x10000 "
                                            r"claims 931 GiB \(1000000000352 bytes\), over the limit"):
        read_image(path)
    assert time.perf_counter() - start < 1.0


def test_a_gzip_bomb_nifti_stops_at_the_limit(tmp_path):
    # 64 MiB of zeros in a ~64 KiB .nii.gz: the header's claim is over the caller's 8 MiB, nothing is inflated
    path = str(tmp_path / "bomb.nii.gz")
    with gzip.open(path, "wb", compresslevel=1) as f:
        hdr = nib.Nifti1Header()
        hdr.set_data_shape((512, 512, 256))
        hdr.set_data_dtype(np.uint8)
        hdr["vox_offset"] = 352
        f.write(hdr.binaryblock + b"\x00" * 4)
        for _ in range(64):
            f.write(bytes(1 << 20))
    assert os.path.getsize(path) < 1 << 20
    start = time.perf_counter()
    with pytest.raises(InputTooLarge, match="bomb.nii.gz: .*64 MiB .*over the limit of 8 MiB"):
        read_image(path, max_bytes=8 << 20)
    assert time.perf_counter() - start < 1.0
    assert read_image(path, max_bytes=128 << 20)[0].shape == (512, 512, 256, 1)  # under a larger limit it reads


def _nrrd(path, sizes="6 5 4", encoding="raw", extra="", payload=None):
    head = (f"NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\nsizes: {sizes}\n"
            f"space directions: (0.7,0,0) (0,0.8,0) (0,0,2.5)\nendian: little\nencoding: {encoding}\n{extra}")
    data = _volume().transpose(2, 1, 0).tobytes() if payload is None else payload
    with open(path, "wb") as f:
        f.write(head.encode() + (b"\n" + data if "data file" not in extra else b""))


def test_nrrd_claims_and_gzip_bombs_are_bounded(tmp_path):
    path = str(tmp_path / "claim.nrrd")
    _nrrd(path, sizes="100000 100000 100000")
    with pytest.raises(InputTooLarge, match=r"claim\.nrrd: the NRRD header's size 100000x100000x100000 claims"):
        read_image(path)
    # gzip encoding: the header claims 64 MiB (32 Mi shorts) of a ~64 KiB gzip stream
    bomb = str(tmp_path / "bomb.nrrd")
    _nrrd(bomb, sizes="512 512 128", encoding="gzip", payload=gzip.compress(bytes(64 << 20), compresslevel=1))
    with pytest.raises(InputTooLarge, match="bomb.nrrd: .*64 MiB"):
        read_image(bomb, max_bytes=8 << 20)
    # a gzip stream shorter than the header says: named, not read as garbage
    short = str(tmp_path / "short.nrrd")
    _nrrd(short, encoding="gzip", payload=gzip.compress(_volume().tobytes()[:100]))
    with pytest.raises(UnreadableInput, match=r"short\.nrrd: gzip data truncated: it inflates to 100 bytes, the "
                                              r"header needs 240"):
        read_image(short)
    _nrrd(short, encoding="gzip", payload=gzip.compress(_volume().transpose(2, 1, 0).tobytes()))
    np.testing.assert_array_equal(read_image(short)[0][..., 0], _volume())


def test_mhd_claims_and_lying_compressed_sizes_are_refused(tmp_path):
    _sitk_bytes(str(tmp_path), "v.mhd")
    header = (tmp_path / "v.mhd").read_text(encoding="utf-8")
    (tmp_path / "v.mhd").write_text(re.sub(r"DimSize = .*", "DimSize = 100000 100000 100000", header))
    with pytest.raises(InputTooLarge, match=r"v\.mhd: the MetaImage header's size 100000x100000x100000 claims"):
        read_image(tmp_path / "v.mhd")
    _sitk_bytes(str(tmp_path), "z.mhd", compress=True)
    header = (tmp_path / "z.mhd").read_text(encoding="utf-8")
    (tmp_path / "z.mhd").write_text(re.sub(r"CompressedDataSize = \d+", "CompressedDataSize = 1000000000000",
                                           header))
    with pytest.raises(UnreadableInput, match=r"z\.mhd: CompressedDataSize 1000000000000 but the data file holds"):
        read_image(tmp_path / "z.mhd")


def _png_claiming(path, width, height):
    png = bytearray(_picture("PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(png[24:29])
    png[16:29] = ihdr
    png[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    path.write_bytes(bytes(png))
    return path


@pytest.mark.parametrize("edit,needle", [  # the first found by the fuzz: ITK's MetaIO crashed (SIGSEGV) on it
    (("NDims = 3", "NDims = 32767"), "NDims must be a whole number 1..10, got '32767'"),
    (("NDims = 3", "NDims = 2"), "DimSize must hold 2 numbers (NDims = 2), got '6 5 4'"),
    (("DimSize = 6 5 4", "DimSize = 6 0 4"), "DimSize must be 3 whole numbers > 0"),
    (("ElementType = MET_SHORT", "ElementType = MET_QUATERNION"), "unknown ElementType"),
])
def test_metaimage_headers_that_crashed_itk_are_refused_first(tmp_path, edit, needle):
    _sitk_bytes(str(tmp_path), "x.mha")
    data = (tmp_path / "x.mha").read_bytes()
    (tmp_path / "x.mha").write_bytes(data.replace(edit[0].encode(), edit[1].encode(), 1))
    with pytest.raises(UnreadableInput, match=r"x\.mha: " + re.escape(needle)):
        read_image(tmp_path / "x.mha")


def test_a_picture_claiming_billions_of_pixels_is_refused(tmp_path):
    big = _png_claiming(tmp_path / "big.png", 9000, 9000)  # 81 Mpx RGB, 7 KiB on disk
    with pytest.raises(InputTooLarge, match=r"big\.png: the picture's size 9000x9000 claims 232 MiB"):
        read_image(big, max_bytes=64 << 20)
    huge = _png_claiming(tmp_path / "huge.png", 100000, 100000)  # past PIL's own bomb bound, met when opening
    with pytest.raises(UnreadableInput, match=r"huge\.png: too large: .*10000000000 pixels"):
        read_image(huge)


# ------------------------------------------------------------------ DICOM

def _ct_small(tmp_path, name="ct.dcm", transfer_syntax=None, **fields):
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for k, v in fields.items():
        setattr(ds, k, v)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue() if transfer_syntax is None else _with_transfer_syntax(buf.getvalue(), transfer_syntax)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_dicom_absurd_sizes_and_transfer_syntaxes(tmp_path):
    ok = _ct_small(tmp_path)
    assert read_image(ok)[0].shape == (128, 128, 1, 1)  # one slice of a volume
    huge = _ct_small(tmp_path, "huge.dcm", Rows=0xFFFF, Columns=0xFFFF, NumberOfFrames="100000")
    with pytest.raises(InputTooLarge, match=r"huge\.dcm: the DICOM header's size 65535x65535x100000 claims"):
        read_image(huge)
    mpeg = _ct_small(tmp_path, "mpeg.dcm", transfer_syntax="1.2.840.10008.1.2.4.100")
    with pytest.raises(UnreadableInput, match=r"mpeg\.dcm: unsupported transfer syntax 1\.2\.840\.10008\.1\.2\.4\.100 "
                                              r"\(MPEG2 Main Profile / Main Level\); readable: "):
        read_image(mpeg)
    # a wrong transfer syntax: big endian claimed for a little-endian data set is refused; a compressed syntax
    # claimed for native pixel data is read as what it is (GDCM sees the unencapsulated pixels)
    wrong = _ct_small(tmp_path, "wrong.dcm", transfer_syntax="1.2.840.10008.1.2.2")
    with pytest.raises(UnreadableInput, match=r"wrong\.dcm: truncated or corrupt: a DICOM element runs to byte"):
        read_image(wrong)
    for uid in ("1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50"):
        np.testing.assert_array_equal(read_image(_ct_small(tmp_path, "rle.dcm", transfer_syntax=uid))[0],
                                      read_image(ok)[0])


def test_a_deflated_dicom_bomb_is_inflated_only_up_to_the_limit(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.add_new(0x00091010, "OB", bytes(32 << 20))  # 32 MiB of zeros deflate to ~32 KiB
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = str(tmp_path / "deflated.dcm")
    ds.save_as(path, enforce_file_format=True)
    assert os.path.getsize(path) < 1 << 20
    start = time.perf_counter()
    with pytest.raises(InputTooLarge, match=r"deflated\.dcm: the deflated DICOM data set inflates to more than"):
        read_image(path, max_bytes=4 << 20)
    assert time.perf_counter() - start < 2.0


def test_dicom_series_errors_are_unreadable_input(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    two = tmp_path / "two"
    _dicom_slices(str(two), uid="1.2.826.0.1.3680043.2.1125.8")
    _dicom_slices(str(two), uid="1.2.826.0.1.3680043.2.1125.9", z0=100.0)
    with pytest.raises(UnreadableInput, match=r"two: 2 DICOM series in one directory"):
        read_image(two)
    gap = tmp_path / "gap"
    _dicom_slices(str(gap), n=5)
    os.remove(gap / "s0_2.dcm")
    with pytest.raises(UnreadableInput, match=r"gap: DICOM series has a gap: 1 slice\(s\) missing at 5 mm"):
        read_image(gap)
    report = Dataset()  # a Basic Text SR: a DICOM file, not an image
    report.file_meta = FileMetaDataset()
    report.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    report.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    report.SOPInstanceUID = generate_uid()
    report.Modality = "SR"
    report.save_as(str(tmp_path / "report.dcm"), enforce_file_format=True)
    with pytest.raises(UnreadableInput, match=r"report\.dcm: not an image: a DICOM Basic Text SR Storage object"):
        read_image(tmp_path / "report.dcm")


# ------------------------------------------------------------------ data files outside the header's folder

@pytest.fixture
def secret(tmp_path):
    """A file elsewhere on the machine that a hostile header would like to pull in (240 bytes: a 6x5x4 short
    volume's worth)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    path = elsewhere / "secret.raw"
    path.write_bytes(b"TOP SECRET " * 21 + b"!!!!!!!!!")
    return path


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_an_nrrd_data_file_outside_its_folder_is_refused(tmp_path, secret, how):
    upload = tmp_path / "upload"
    upload.mkdir()
    name = {"absolute": str(secret), "dotdot": "../elsewhere/secret.raw", "symlink": "link.raw"}[how]
    if how == "symlink":
        os.symlink(secret, upload / "link.raw")
    _nrrd(str(upload / "x.nhdr"), extra=f"data file: {name}\n")
    with pytest.raises(UnreadableInput, match=r"x\.nhdr: data file '.*' lies outside the header's folder"):
        read_image(upload / "x.nhdr")
    # the caller may allow it (a CLI user's own layout): then it reads
    assert read_image(upload / "x.nhdr", allow_external_data=True)[0].shape == (6, 5, 4, 1)


def test_an_mhd_data_file_outside_its_folder_is_refused(tmp_path, secret):
    upload = tmp_path / "upload"
    upload.mkdir()
    _sitk_bytes(str(upload), "x.mhd")
    header = (upload / "x.mhd").read_text(encoding="utf-8")
    for name in (str(secret), "../elsewhere/secret.raw"):
        (upload / "x.mhd").write_text(re.sub(r"ElementDataFile = .*", f"ElementDataFile = {name}", header))
        with pytest.raises(UnreadableInput, match=r"x\.mhd: ElementDataFile '.*' lies outside the header's folder"):
            read_image(upload / "x.mhd")
    (upload / "x.mhd").write_text(re.sub(r"ElementDataFile = .*", "ElementDataFile = ../elsewhere/%d.raw 1 2 1",
                                         header))
    with pytest.raises(UnreadableInput, match=r"x\.mhd: ElementDataFile '../elsewhere/1.raw' lies outside"):
        read_image(upload / "x.mhd")


# ------------------------------------------------------------------ the application's uploads

def _upload(tmp_path, name, data):
    folder = tmp_path / "request"
    folder.mkdir()
    path = folder / ("upload" + os.path.splitext(name)[1])
    path.write_bytes(data)
    return str(path), str(folder)


def test_an_uploaded_nrrd_cannot_pull_in_a_server_file(tmp_path, secret):
    hdr = io.BytesIO()
    hdr.write(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 6 5 4\nencoding: raw\nendian: little\n"
              + f"data file: {secret}\n".encode())
    path, folder = _upload(tmp_path, "scan.nrrd", hdr.getvalue())
    with pytest.raises(UnreadableInput, match=r"upload 'scan.nrrd': cannot be read as \.nrrd: .*data file .* lies "
                                              r"outside the header's folder") as e:
        read_upload(path, ".nrrd", folder, "upload 'scan.nrrd'")
    assert folder not in str(e.value)  # the server's folders are not told to the client
    with pytest.raises(UnreadableInput, match=r"reference mask: cannot be read as \.nrrd: .*outside") as e:
        read_reference(path, ".nrrd", folder, (6, 5, 4))
    assert folder not in str(e.value) and os.path.realpath(folder) not in str(e.value)


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_a_zipped_mhd_cannot_pull_in_a_server_file(tmp_path, secret, where):
    _sitk_bytes(str(tmp_path), "x.mhd")
    name = str(secret) if where == "absolute" else "../../elsewhere/secret.raw"  # from request/zip/ to elsewhere/
    header = re.sub(r"ElementDataFile = .*", f"ElementDataFile = {name}", (tmp_path / "x.mhd").read_text(encoding="utf-8"))
    path, folder = _zip_with(tmp_path, {"x.mhd": header.encode(), "x.raw": (tmp_path / "x.raw").read_bytes()})
    with pytest.raises(UnreadableInput, match=r"upload 'scan.zip': cannot be read as \.zip: zip/x\.mhd: "
                                              r"ElementDataFile '.*secret.raw' lies outside the header's folder"):
        read_upload(path, ".zip", folder, "upload 'scan.zip'")


def _zip_with(tmp_path, members, *, symlink=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink[0])
            info.external_attr = (0o120777 << 16)
            z.writestr(info, symlink[1])
    return _upload(tmp_path, "series.zip", buf.getvalue())


@pytest.mark.parametrize("case,needle", [
    ("symlink", r"member 'evil\.dcm' is a symbolic link"),
    ("dotdot", r"member '\.\./\.\./etc/x\.dcm' has an absolute or '\.\.' path"),
    ("absolute", r"member '/etc/x\.dcm' has an absolute or '\.\.' path"),
    ("two_series", r"2 DICOM series in one directory"),
])
def test_hostile_zips_are_refused_with_one_line(tmp_path, case, needle):
    slices = _dicom_slices(str(tmp_path / "s"), uid="1.2.826.0.1.3680043.2.1125.10")
    if case == "symlink":
        path, folder = _zip_with(tmp_path, slices, symlink=("evil.dcm", "/etc/passwd"))
    elif case in ("dotdot", "absolute"):
        name = "../../etc/x.dcm" if case == "dotdot" else "/etc/x.dcm"
        path, folder = _zip_with(tmp_path, {**slices, name: b"x"})
    else:
        more = _dicom_slices(str(tmp_path / "t"), uid="1.2.826.0.1.3680043.2.1125.11", z0=50.0)
        path, folder = _zip_with(tmp_path, {**slices, **{"b/" + k: v for k, v in more.items()}})
    with pytest.raises(UnreadableInput, match=r"upload 'series.zip'.*" + needle):
        read_upload(path, ".zip", folder, "upload 'series.zip'")
    assert not os.path.exists("/etc/x.dcm")


def test_a_zip_bomb_is_refused_by_its_declared_and_its_inflated_size(tmp_path):
    path, folder = _zip_with(tmp_path, {"a.dcm": bytes(16 << 20)})  # 16 MiB of zeros, a ~16 KiB zip
    assert os.path.getsize(path) < 1 << 20
    with pytest.raises(TooLarge, match=r"larger than the limit of 1 MiB: the zip's members declare 16 MiB"):
        read_upload(path, ".zip", folder, "upload 'series.zip'", max_upload_mb=1.0)
    # a zip whose headers understate the sizes: the inflated bytes are counted while streaming
    data = bytearray(open(path, "rb").read())
    for sig, at in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        data[i + at:i + at + 4] = struct.pack("<I", 1000)
    path2, folder2 = _upload(tmp_path / "b", "series.zip", bytes(data)) if (tmp_path / "b").mkdir() is None else None
    start = time.perf_counter()
    with pytest.raises((TooLarge, UnreadableInput)) as e:
        read_upload(path2, ".zip", folder2, "upload 'series.zip'", max_upload_mb=1.0)
    assert "series.zip" in str(e.value) or "limit" in str(e.value)
    assert time.perf_counter() - start < 2.0
    assert sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(folder2) for f in fs) < 2 << 20


def test_a_zip_whose_directory_points_before_its_start_is_unreadable(tmp_path):
    # found by the fuzz: the member's offset lands before the file's start and seek() raised OSError (EINVAL)
    slices = _dicom_slices(str(tmp_path / "s"), uid="1.2.826.0.1.3680043.2.1125.13")
    data = bytearray(_zip(slices))
    eocd = data.rfind(b"PK\x05\x06")
    start = struct.unpack("<I", data[eocd + 16:eocd + 20])[0]
    data[eocd + 16:eocd + 20] = struct.pack("<I", start + 1000)
    path, folder = _upload(tmp_path, "series.zip", bytes(data))
    with pytest.raises(UnreadableInput, match=r"upload 'series.zip'.*cannot be inflated \(OSError"):
        read_upload(path, ".zip", folder, "upload 'series.zip'")


def test_a_dicom_with_a_damaged_meta_group_is_refused_before_gdcm(tmp_path):
    # found by the fuzz: GDCM took 4-8 s to recover a slice whose first meta element's group was damaged
    data = bytearray(open(_ct_small(tmp_path), "rb").read())
    data[132:134] = b"\xcb\x00"
    (tmp_path / "meta.dcm").write_bytes(bytes(data))
    start = time.perf_counter()
    with pytest.raises(UnreadableInput, match=r"meta\.dcm: corrupt DICOM file meta: no Transfer Syntax UID"):
        read_image(tmp_path / "meta.dcm")
    assert time.perf_counter() - start < 1.0


@pytest.mark.parametrize("damage,needle", [
    (lambda d: d[:24847] + b"\x9f\xc5\xd8i`\x05" + d[24847:], "truncated or corrupt"),  # six bytes in the pixels
    (lambda d: d[:6274] + b"\xcaj" + d[6274:], "truncated or corrupt"),  # a header element shifted by two bytes
    (lambda d: d + bytes(6), "6 stray bytes after the DICOM data set's last element"),
])
def test_a_misaligned_dicom_is_refused_before_gdcm(tmp_path, damage, needle):
    # found by the fuzz: GDCM took 2-13 s to give up on these (bytes spliced into the pixel data or the header)
    data = open(_ct_small(tmp_path), "rb").read()
    (tmp_path / "odd.dcm").write_bytes(damage(data))
    start = time.perf_counter()
    with pytest.raises(UnreadableInput, match=r"odd\.dcm: .*" + re.escape(needle)):
        read_image(tmp_path / "odd.dcm")
    assert time.perf_counter() - start < 1.0


def test_a_zipped_series_reads_through_the_upload_path(tmp_path):
    slices = _dicom_slices(str(tmp_path / "s"), uid="1.2.826.0.1.3680043.2.1125.12")
    path, folder = _zip_with(tmp_path, {"dir/" + k: v for k, v in slices.items()})
    image, meta, _ = read_upload(path, ".zip", folder, "upload 'series.zip'")
    assert image.shape == (6, 5, 3, 1) and meta.format == "dicom"
    np.testing.assert_allclose(meta.spacing, (0.7, 0.8, 2.5), atol=1e-4)


# ------------------------------------------------------------------ cohort tables and the KiTS layout

def test_cohort_tables_bounded_and_unreadable_input(tmp_path):
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as f:
        f.write(b"time,event,age\n")
        for _ in range(32):
            f.write(b"1,0,50\n" * (1 << 17))  # 28 MiB of rows
    with pytest.raises(InputTooLarge, match=r"bomb\.csv\.gz: the table's size .* over the limit of 4 MiB"):
        read_table(bomb, max_bytes=4 << 20)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1" + os.urandom(100) + b"PAR1")
    with pytest.raises(UnreadableInput, match=r"bad\.parquet: cannot read table"):
        read_table(bad)
    neg = tmp_path / "neg.csv"
    neg.write_text("time,event,age\n-1,0,50\n2,1,60\n")
    with pytest.raises(UnreadableInput, match=r"neg\.csv: .*negative"):
        read_cohort(str(neg), time="time", event="event")
    with pytest.raises(MissingInput):
        read_table(tmp_path / "none.csv")


@pytest.mark.parametrize("text,needle", [
    ("[" * 100000 + "]" * 100000, "not valid JSON"),
    ('[{"case_id": "case_00000", "age_at_nephrectomy": ' + "9" * 5000 + "}]", "not valid JSON"),
    ('{"case_id": 1}', "expected a list of patient records"),
    ('[{"case_id": "case_00000", "age_at_nephrectomy": "old"}]', "field 'age_at_nephrectomy'"),
])
def test_kits_clinical_records_hostile_json(tmp_path, text, needle):
    _kits_layout(str(tmp_path))
    (tmp_path / "clinical.json").write_text(text)
    with pytest.raises(UnreadableInput, match=r"clinical\.json.*" + re.escape(needle)):
        read_kits_cohort(str(tmp_path))
