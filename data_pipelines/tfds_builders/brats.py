"""TFDS builder ``brats``: multi-modal brain MRI with glioma sub-region labels (BraTS 2015-2023 naming).

Labels are mapped to four classes (``data_pipelines.brats``): 0 background, 1 necrosis /
non-enhancing core (BraTS 1 and 3), 2 oedema, 3 enhancing (BraTS 4; 3 in the 2023 naming); the
``regions`` feature holds the BraTS evaluation regions whole tumour, tumour core, enhancing tumour.
Configs: ``3d`` (whole volumes), ``3d_2mm`` (downsampled by 2), ``2d`` (axial slices with tumour
plus some without), ``2d_128`` (those slices resized to 128x128). Custom ``BratsConfig`` objects
choose modalities, file patterns, label map and sizes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

import scoring
from data_pipelines import brats, geometry
from data_pipelines.cases import select_slices
from data_pipelines.tfds_builders import _base

__all__ = ["Brats", "BratsConfig"]


@dataclasses.dataclass(eq=False)
class BratsConfig(tfds.core.BuilderConfig):
    """``mode``: ``3d`` | ``2d``. ``downsample``: integer factor on every spatial axis (3d).
    ``image_size``: ``(h, w)`` for 2d slices (``None``: native). ``modalities``: ``None`` = every
    modality all cases have (canonical order FLAIR, T1, T1c, T2). ``patterns``: regex per
    modality/label/brainmask on file names. ``label_map``: raw -> 0..3."""

    mode: str = "3d"
    downsample: int = 1
    image_size: tuple | None = None
    modalities: tuple | None = None
    patterns: dict | None = None
    label_map: dict | None = None
    empty_slice_ratio: float = 0.25
    max_slices_per_case: int | None = None
    seed: int = 0


class Brats(_base.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
    """BraTS multi-modal MRI + glioma labels, read from ``manual_dir``."""

    name = "brats"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: 3d/2d configs, labels mapped to 0..3 plus WT/TC/ET regions."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Register at https://www.synapse.org (BraTS 2021) or https://www.med.upenn.edu/cbica/brats/ and
    download the training data. Put one folder per case under `manual_dir`, e.g.
    `manual_dir/BraTS2021_00000/BraTS2021_00000_{flair,t1,t1ce,t2,seg}.nii.gz`. BraTS 2023
    (`-t2f/-t1n/-t1c/-t2w/-seg`, use label_map=BRATS2023_LABEL_MAP), BraTS 2015 SMIR (`VSD.*` folders)
    and the DeepMedic copies (`Flair_subtrMeanDivStd.nii.gz`, `OTMultiClass.nii.gz`) are recognised.
    Licence: BraTS data is for research only; cite Menze et al., IEEE TMI 2015 and Bakas et al.
    """
    BUILDER_CONFIGS = [
        BratsConfig(name="3d", description="Whole volumes at native resolution.", mode="3d"),
        BratsConfig(name="3d_2mm", description="Whole volumes downsampled by 2 (2 mm for 1 mm data).",
                    mode="3d", downsample=2),
        BratsConfig(name="2d", description="Axial slices with tumour plus 25% others, native size.", mode="2d"),
        BratsConfig(name="2d_128", description="Axial slices resized to 128x128.", mode="2d",
                    image_size=(128, 128)),
    ]

    def _info(self):
        c = self.builder_config
        nd = 3 if c.mode == "3d" else 2
        feats = {
            "image": _base.volume(nd + 1, np.float32),
            "label": _base.volume(nd, np.uint8),
            "regions": _base.volume(nd + 1, np.uint8),
            "patient_id": tfds.features.Text(),
            "modalities": tfds.features.Text(),
            "slice_index": _base.scalar(np.int32),
            **_base.geometry_features(3),
        }
        return tfds.core.DatasetInfo(
            builder=self, description=__doc__, features=tfds.features.FeaturesDict(feats),
            homepage="https://www.med.upenn.edu/cbica/brats/",
            citation="Menze BH et al. The Multimodal Brain Tumor Image Segmentation Benchmark (BRATS). "
                     "IEEE TMI 34(10):1993-2024, 2015.")

    def _split_generators(self, dl_manager):
        c = self.builder_config
        if c.mode not in ("3d", "2d"):
            raise ValueError(f"BratsConfig.mode must be '3d' or '2d', got {c.mode!r}")
        if int(c.downsample) < 1:
            raise ValueError(f"BratsConfig.downsample must be >= 1, got {c.downsample}")
        cases = brats.find_brats_cases(str(dl_manager.manual_dir), c.patterns)
        mods = tuple(c.modalities or brats.available_modalities(cases))
        if not mods:
            raise ValueError(f"{dl_manager.manual_dir}: no modality is present in every case")
        return {"train": self._generate_examples(cases, mods)}

    def _generate_examples(self, cases, mods):
        c = self.builder_config
        for i, case in enumerate(cases):
            image, label, meta, _ = brats.read_brats_case(case, mods, c.label_map)
            common = {"patient_id": case.patient_id, "modalities": ",".join(mods)}
            if c.mode == "3d":
                if c.downsample > 1:
                    native = label.shape
                    shape = tuple(max(s // c.downsample, 1) for s in native)
                    image = geometry.resize(image, shape)
                    label = geometry.resize(label, shape, is_label=True)
                    meta = geometry.resized_meta(meta, native, shape)
                yield case.patient_id, {"image": image.astype(np.float32), "label": label.astype(np.uint8),
                                        "regions": scoring.brats_region_channels(label), "slice_index": -1,
                                        **_base.geometry_values(meta), **common}
                continue
            brain = image[..., 0] != image[..., 0].min()
            idx = select_slices(label, brain, c.empty_slice_ratio, [c.seed, i], 2, c.max_slices_per_case)
            for z in idx:
                img, lab = image[:, :, z], label[:, :, z]
                # The slice's own origin: the world position of voxel (0, 0, z).
                m = meta.replace(origin=tuple(float(v) for v in geometry.voxel_to_world([[0, 0, int(z)]], meta)[0]))
                if c.image_size is not None:
                    h, w = (int(s) for s in c.image_size)
                    m = geometry.resized_meta(m, img.shape[:2] + (1,), (h, w, 1))
                    img = geometry.resize(img, (h, w))
                    lab = geometry.resize(lab, (h, w), is_label=True)
                yield f"{case.patient_id}/{int(z):04d}", {
                    "image": img.astype(np.float32), "label": lab.astype(np.uint8),
                    "regions": scoring.brats_region_channels(lab), "slice_index": int(z),
                    **_base.geometry_values(m), **common}

