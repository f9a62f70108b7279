"""TFDS builder ``luna16``: lung CT with nodule masks, boxes and LUNA16 subset folds.

Input (``manual_dir``): the LUNA16 layout, ``subset0..9/<seriesuid>.mhd`` (+ ``.raw``) and
``annotations.csv`` (``seriesuid, coordX, coordY, coordZ, diameter_mm``: world mm centres, as ITK
reports them). Each nodule becomes a sphere of its diameter in ``label`` (0/1) and ``instances``
(1..N); ``boxes`` are ``[N, 6]`` half-open voxel boxes ``(i1, j1, k1, i2, j2, k2)`` (array axis
order, as ``kernels.boxes`` in 2D). Labelled CT volumes (``<id>_image.nrrd`` + ``<id>_label.nrrd``,
e.g. the pyradiomics lung samples) are accepted too; their label's connected components are the
nodules. ``image`` is HU windowed to [0, 1] over ``hu_window`` (default [-1000, 400], the lung
phantoms' window); ``hu_window=None`` keeps raw HU. Splits: one per LUNA16 subset present
(``subset0``...; the 10-fold cross-validation of the challenge), else ``train``.
Configs: ``3d`` (native), ``3d_2mm`` (2 mm isotropic), ``2d`` (axial slices with nodules + as many
without).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import ct, geometry
from data_pipelines.cases import select_slices
from data_pipelines.tfds_builders import _base
from kernels.intensity import ct_window, window_center_width

__all__ = ["Luna16", "Luna16Config", "boxes_from_instances"]


@dataclasses.dataclass(eq=False)
class Luna16Config(tfds.core.BuilderConfig):
    mode: str = "3d"
    spacing: tuple | None = None
    hu_window: tuple | None = (-1000.0, 400.0)
    empty_slice_ratio: float = 1.0
    seed: int = 0


def boxes_from_instances(instances: np.ndarray) -> np.ndarray:
    """``[N, 2*D]`` float32 half-open boxes of instance ids 1..N (empty ids give zero boxes)."""
    n = int(instances.max()) if instances.size else 0
    nd = instances.ndim
    out = np.zeros((n, 2 * nd), np.float32)
    for k in range(1, n + 1):
        idx = np.argwhere(instances == k)
        if len(idx):
            out[k - 1, :nd] = idx.min(0)
            out[k - 1, nd:] = idx.max(0) + 1
    return out


class Luna16(_base.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
    """LUNA16 lung nodule CT, read from ``manual_dir``."""

    name = "luna16"
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = """\
    Download LUNA16 from https://luna16.grand-challenge.org/Download/ (zenodo records 3723295 and
    4121926): unpack `subset0.zip` ... `subset9.zip` into `manual_dir/subset0/` ... and put
    `annotations.csv` in `manual_dir`. Licence: CC BY 4.0 (LIDC-IDRI); cite Setio et al., MedIA 2017.
    """
    BUILDER_CONFIGS = [Luna16Config(name="3d", description="Whole scans at native spacing."),
                       Luna16Config(name="3d_2mm", spacing=(2.0, 2.0, 2.0), description="Resampled to 2 mm."),
                       Luna16Config(name="2d", mode="2d", description="Axial slices (nodules + as many without).")]

    def _info(self):
        nd = 3 if self.builder_config.mode == "3d" else 2
        feats = {"image": _base.volume(nd + 1, np.float32), "label": _base.volume(nd, np.uint8),
                 "instances": _base.volume(nd, np.int32),
                 "boxes": tfds.features.Tensor(shape=(None, 2 * nd), dtype=np.float32),
                 "nodule_centers_mm": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                 "nodule_diameters_mm": tfds.features.Tensor(shape=(None,), dtype=np.float32),
                 "patient_id": tfds.features.Text(), "subset": _base.scalar(np.int32),
                 "slice_index": _base.scalar(np.int32), **_base.geometry_features(3)}
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict(feats),
                                     homepage="https://luna16.grand-challenge.org/")

    def _split_generators(self, dl_manager):
        c = self.builder_config
        if c.mode not in ("3d", "2d"):
            raise ValueError(f"Luna16Config.mode must be '3d' or '2d', got {c.mode!r}")
        cases = ct.find_ct_cases(str(dl_manager.manual_dir))
        subsets = sorted({cs["subset"] for cs in cases})
        if subsets == [-1]:
            return {"train": self._generate_examples(cases)}
        return {("train" if s < 0 else f"subset{s}"): self._generate_examples([cs for cs in cases if cs["subset"] == s])
                for s in subsets}

    def _generate_examples(self, cases):
        c = self.builder_config
        for i, case in enumerate(cases):
            hu, lab, inst, meta = ct.read_ct_case(case, c.spacing)
            img = ct_window(hu[..., None], *window_center_width(c.hu_window))[..., 0] if c.hu_window is not None \
                else hu.astype(np.float32)
            if case["nodules"] is not None:
                centers = np.asarray([n[0] for n in case["nodules"]], np.float32).reshape(-1, 3)
                diams = np.asarray([n[1] for n in case["nodules"]], np.float32).reshape(-1)
            else:  # labelled volume: centroid and equivalent-sphere diameter of each component
                centers, diams = _component_stats(inst, meta)
            common = {"patient_id": case["patient_id"], "subset": int(case["subset"]),
                      "nodule_centers_mm": centers, "nodule_diameters_mm": diams}
            if c.mode == "3d":
                yield case["patient_id"], {"image": img[..., None], "label": lab.astype(np.uint8),
                                           "instances": inst.astype(np.int32), "boxes": boxes_from_instances(inst),
                                           "slice_index": -1, **_base.geometry_values(meta), **common}
                continue
            idx = select_slices(lab, hu > -500, c.empty_slice_ratio, [c.seed, i], 2)
            for z in idx:
                ins = inst[:, :, z]
                m = meta.replace(origin=tuple(float(v) for v in geometry.voxel_to_world([[0, 0, int(z)]], meta)[0]))
                yield f"{case['patient_id']}/{int(z):04d}", {
                    "image": img[:, :, z, None], "label": lab[:, :, z].astype(np.uint8), "instances": ins,
                    "boxes": boxes_from_instances(ins)[np.unique(ins[ins > 0]) - 1] if ins.any() else
                    np.zeros((0, 4), np.float32),
                    "slice_index": int(z), **_base.geometry_values(m), **common}


def _component_stats(inst: np.ndarray, meta):
    n = int(inst.max())
    centers, diams = [], []
    vox = float(np.prod(meta.spacing))
    for k in range(1, n + 1):
        idx = np.argwhere(inst == k)
        if not len(idx):
            continue
        centers.append(geometry.voxel_to_world(idx.mean(0)[None], meta)[0])
        diams.append((6.0 * len(idx) * vox / np.pi) ** (1.0 / 3.0))
    return np.asarray(centers, np.float32).reshape(-1, 3), np.asarray(diams, np.float32)
