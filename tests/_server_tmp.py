"""What the server's fault and fuzz tests share: the ``scratch`` fixture (the temporary folder every request's
files go to: request folders, spooled bodies, the session store, so a test can see what a request left behind)
and a scan the tiny segmentation model takes."""

from __future__ import annotations

import gzip
import tempfile

import nibabel as nib
import numpy as np
import pytest


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """``tmp_path/tmp`` as Python's temporary folder for the test."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def four_channel_nifti(shape=(32, 32, 8), seed: int = 0) -> bytes:
    """A gzipped 4-channel NIfTI volume (the last axis holds the modalities), what ``unet-tiny`` takes."""
    img = np.random.default_rng(seed).normal(size=(*shape, 4)).astype(np.float32)
    return gzip.compress(nib.Nifti1Image(img, np.eye(4)).to_bytes())
