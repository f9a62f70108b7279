"""TFDS builder ``isic``: dermoscopy images + binary lesion masks (ISIC 2016-2018 and PH2 naming).

Pairs are found by ``data_pipelines.image_folders.find_image_mask_pairs``: ``ISIC_0000000.jpg`` +
``ISIC_0000000_segmentation.png`` (2017/2018; ``_Segmentation`` in 2016), PH2 folders
(``IMD002_Dermoscopic_Image/IMD002.bmp`` + ``IMD002_lesion/IMD002_lesion.bmp``) or flat copies
(``IMD008.png`` + ``IMD008_mask.png``). Masks must hold {0, 255} or {0, 1}; ``label`` is 0 skin,
1 lesion. ``diagnosis`` comes from a ``metadata.csv`` (``id``, ``diagnosis_code``) when present,
else -1. Configs ``256`` and ``512`` resize to squares (image bilinear, mask nearest); ``native``
keeps the size.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import geometry, image_folders
from data_pipelines.tfds_builders import _base

__all__ = ["Isic", "IsicConfig"]


@dataclasses.dataclass(eq=False)
class IsicConfig(tfds.core.BuilderConfig):
    """``size``: output side (square), ``None`` keeps the original size."""

    size: int | None = 256


class Isic(_base.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
    """Skin-lesion dermoscopy segmentation, read from ``manual_dir``."""

    name = "isic"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download the ISIC 2016/2017/2018 lesion segmentation training images and ground truth from
    https://challenge.isic-archive.com/data/ (or the PH2 database from
    https://www.fc.up.pt/addi/ph2%20database.html) and put the images and masks anywhere under
    `manual_dir` (sub-folders are fine). An optional `manual_dir/metadata.csv` with columns `id`,
    `diagnosis_code` adds the diagnosis. Licences: ISIC CC-BY-NC; PH2 research use, cite Mendonca et al. 2013.
    """
    BUILDER_CONFIGS = [IsicConfig(name="256", size=256, description="Resized to 256x256."),
                       IsicConfig(name="512", size=512, description="Resized to 512x512."),
                       IsicConfig(name="native", size=None, description="Original size.")]

    def _info(self):
        feats = {"image": _base.volume(2, np.uint8, last=3), "label": _base.volume(2, np.uint8),
                 "patient_id": tfds.features.Text(), "diagnosis": _base.scalar(np.int32),
                 "original_size": tfds.features.Tensor(shape=(2,), dtype=np.int32)}
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict(feats),
                                     homepage="https://challenge.isic-archive.com/")

    def _split_generators(self, dl_manager):
        c = self.builder_config
        if c.size is not None and int(c.size) < 8:
            raise ValueError(f"IsicConfig.size must be >= 8 or None, got {c.size}")
        manual = str(dl_manager.manual_dir)
        pairs = image_folders.find_image_mask_pairs(manual)
        meta = image_folders.read_metadata_csv(manual)
        return {"train": self._generate_examples(pairs, meta)}

    def _generate_examples(self, pairs, meta):
        size = self.builder_config.size
        for pid, ip, mp in pairs:
            img, lab = image_folders.read_pair(ip, mp)
            if img.shape[-1] == 1:
                img = np.repeat(img, 3, axis=-1)
            elif img.shape[-1] != 3:
                raise ValueError(f"{ip}: expected an RGB image, got {img.shape[-1]} channels")
            orig = img.shape[:2]
            if size is not None:
                img = geometry.resize(img, (size, size))
                lab = geometry.resize(lab, (size, size), is_label=True)
            code = meta.get(pid, {}).get("diagnosis_code", "")
            try:
                diagnosis = int(code) if code != "" else -1
            except ValueError as e:
                raise ValueError(f"metadata.csv: id {pid}: diagnosis_code {code!r} is not an integer") from e
            yield pid, {"image": np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8),
                        "label": lab.astype(np.uint8), "patient_id": pid, "diagnosis": diagnosis,
                        "original_size": np.asarray(orig, np.int32)}
