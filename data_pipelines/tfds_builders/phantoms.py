"""TFDS builder ``phantoms``: the synthetic default, with the same features as the real builders.

Images, label maps and instance maps from ``data_pipelines.phantoms``, spacing 1 mm, plus the
clinical table of ``ehr.clinical_record`` (age, sex, comorbidities, site, outcome) keyed by
``patient_id``. No download and no ``manual_dir`` needed. Configs ``<kind>_2d`` (64x64) and
``<kind>_3d`` (32^3) for kinds brain, skin, lung; splits ``train`` and ``val`` (disjoint patients).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import ehr, phantoms
from data_pipelines.tfds_builders import _base

__all__ = ["Phantoms", "PhantomsConfig"]


@dataclasses.dataclass(eq=False)
class PhantomsConfig(tfds.core.BuilderConfig):
    kind: str = "brain"
    shape: tuple = (64, 64)
    num_train: int = 64
    num_val: int = 16
    seed: int = 0


def _configs():
    out = []
    for kind in phantoms.KINDS:
        out.append(PhantomsConfig(name=f"{kind}_2d", kind=kind, shape=(64, 64),
                                  description=f"{kind} phantoms, 64x64 slices."))
        if kind != "skin":
            out.append(PhantomsConfig(name=f"{kind}_3d", kind=kind, shape=(32, 32, 32), num_train=32, num_val=8,
                                      description=f"{kind} phantoms, 32^3 volumes."))
    return out


class Phantoms(_base.ArrayRecordByDefault, tfds.core.GeneratorBasedBuilder):
    """Synthetic brain / skin / lung phantoms with clinical covariates."""

    name = "phantoms"
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "Clinical features from data_pipelines.ehr, the outcome cohort's EHR generator."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = "Nothing to download: the phantoms are generated (manual_dir is ignored)."
    BUILDER_CONFIGS = _configs()

    def _info(self):
        c = self.builder_config
        nd = len(c.shape)
        feats = {"image": _base.volume(nd + 1, np.float32), "label": _base.volume(nd, np.uint8),
                 "instances": _base.volume(nd, np.int32), "patient_id": tfds.features.Text(),
                 "spacing": tfds.features.Tensor(shape=(nd,), dtype=np.float32),
                 "age": _base.scalar(np.float32), "sex": tfds.features.Text(),
                 "comorbidities": tfds.features.Tensor(shape=(len(ehr.COMORBIDITIES),), dtype=np.int32),
                 "site": tfds.features.Text(), "outcome": _base.scalar(np.int32)}
        pc = phantoms.PhantomConfig(kind=c.kind, shape=tuple(c.shape), seed=c.seed)
        # Names travel with the prepared data (metadata.json), so a reader needs no builder class.
        names = tfds.core.MetadataDict(class_names=list(phantoms.CLASS_NAMES[c.kind]),
                                       channel_names=list(phantoms.CHANNEL_NAMES[c.kind][:pc.num_channels]))
        return tfds.core.DatasetInfo(builder=self, description=__doc__, features=tfds.features.FeaturesDict(feats),
                                     metadata=names)

    def _split_generators(self, dl_manager):
        c = self.builder_config
        pc = phantoms.PhantomConfig(kind=c.kind, shape=tuple(c.shape), seed=c.seed)
        if c.num_train < 1 or c.num_val < 1:
            raise ValueError(f"PhantomsConfig needs num_train, num_val >= 1; got {c.num_train}, {c.num_val}")
        return {"train": self._generate_examples(pc, 0, c.num_train),
                "val": self._generate_examples(pc, c.num_train, c.num_val)}

    def _generate_examples(self, pc, offset, n):
        for i in range(offset, offset + n):
            s = phantoms.make_phantom(pc, i)
            rec = ehr.clinical_record(pc, i, s["label"])
            yield s["patient_id"], {
                "image": s["image"], "label": s["label"].astype(np.uint8), "instances": s["instances"],
                "patient_id": s["patient_id"], "spacing": np.ones(len(pc.shape), np.float32),
                "age": np.float32(rec["age"]), "sex": rec["sex"],
                "comorbidities": np.asarray([rec[k] for k in ehr.COMORBIDITIES], np.int32),
                "site": rec["site"], "outcome": rec["outcome"]}
