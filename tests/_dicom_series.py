"""A real-looking CT DICOM series written by the tests (one CT Image Storage file per slice, fresh UIDs, per-slice
ImagePositionPatient, ImageOrientationPatient, pixel spacing and rescale, shuffled file names): the DICOM SEG,
application and MONAI Label tests read it."""

from __future__ import annotations

import os
import random

import numpy as np
import pydicom

from data_pipelines import readers

__all__ = ["write_series"]


def ct_slice(pixels: np.ndarray, k: int, meta: readers.ImageMeta, uids: dict) -> "pydicom.Dataset":
    """One CT Image Storage dataset: ``pixels [X, Y]`` in HU at slice ``k`` of the grid ``meta`` (its direction's
    columns: along a row, down the columns, across the slices)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = CTImageStorage
    file_meta.MediaStorageSOPInstanceUID = generate_uid()
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids["study"], uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Lung^Two", "LUNG2", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261207", "120000", "1", ""
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, k + 1
    ds.Manufacturer = "pyradiomics sample (re-encoded by the test)"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientPosition, ds.PositionReferenceIndicator, ds.BodyPartExamined = "HFS", "", "CHEST"
    ds.KVP, ds.AcquisitionNumber = "", 1
    direction, spacing = meta.direction_matrix, meta.spacing
    ds.ImageOrientationPatient = [round(float(v), 6) for v in (*direction[:, 0], *direction[:, 1])]
    ds.ImagePositionPatient = [round(float(v), 4) for v in np.asarray(meta.origin) + direction[:, 2] * spacing[2] * k]
    ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # row spacing (along Y), column spacing (along X)
    ds.SliceThickness = float(spacing[2])
    ds.Rows, ds.Columns = pixels.shape[1], pixels.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.PixelData = np.ascontiguousarray((pixels.T + 1024).clip(0, 65535).astype(np.uint16)).tobytes()
    return ds


def write_series(folder, hu: np.ndarray, meta: readers.ImageMeta, seed: int = 0) -> list[str]:
    """``hu [X, Y, Z]`` as a CT series in ``folder`` (shuffled file names); the file paths in slice order."""
    from pydicom.uid import generate_uid

    os.makedirs(folder, exist_ok=True)
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid()}
    names = [f"IM{n:04d}.dcm" for n in range(hu.shape[2])]
    random.Random(seed).shuffle(names)
    paths = []
    for k in range(hu.shape[2]):
        path = os.path.join(folder, names[k])
        ct_slice(hu[:, :, k], k, meta, uids).save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
