"""Data families: each kind of data set is one :class:`DataFamily` object, registered once by its name.

A family says everything the rest of the project needs to know about its data, so nothing else dispatches on
a data set's name (``data.name`` in a run config):

* how to load the train/val arrays for training (``load(cfg) -> (train, val, DatasetInfo)``, the in-memory
  loaders) or the train/val record sources (``open_sources(cfg) -> (train, val, DatasetInfo)``: TFDS
  array_record data read from disk);
* how to read its cases at full resolution with their geometry (``read_cases(cfg) -> (cases, channel_names,
  class_names)``, ``cases`` a list of ``{"patient_id", "image" [*S, C] float32, "label" [*S] int32, "meta"
  (readers.ImageMeta)}``: the intensities as ``readers.read_image`` gives them, so a plan made from them
  applies unchanged to a file read at prediction), which patch training and planning use; a family whose
  cases come with their own train/val split gives ``split_cases(cfg) -> (train_cases, val_cases, info)``
  instead (the phantoms: validation follows training's indices);
* how to find its cases' original files (``find_cases(cfg) -> [CaseFiles]``: the input a prediction reads and
  the reference label file, per patient);
* its default intensity scaling for runs trained without a plan (``scaling(cfg) -> record``, see
  :func:`data_pipelines.preprocessing.scale_intensity`; default ``{"kind": "none"}``), its default
  normalisation for planning (``modality``: ``MR``, ``CT``, ``RGB`` or ``other``, or ``modality(cfg)``) and its
  default modality file-name patterns for case folders (``patterns``, ``{channel: regex}``);
* the sub-regions its studies score beside the foreground (``region_dice(pred, truth, truth_path) -> {region:
  Dice}``, on a predicted label map and the reference as read from its file: BraTS's tumour core and enhancing
  tumour).

Only ``name`` and one of ``load`` / ``open_sources`` / ``cohort`` are required: a tabular cohort (covariates and
outcomes, no images) gives ``cohort(data_dir) -> Cohort`` (its table, read from ``data_dir`` or bundled with a
package when the family needs none; the outcome home, ``zoo.outcome.cohorts``, registers the bundled ones). :func:`register_family` adds a family (a duplicate name raises),
:func:`get_family` finds one (an unknown name raises ``ValueError`` with the close matches),
:func:`list_families` lists them; the built-in families (phantoms, outcome_phantoms, brats, isic, folder,
luna16, tfds) are registered at the end of this module.

Every run records the preprocessing it trained with: the plan (``DatasetInfo.extra["plan"]``) or, without a
plan, the loader's intensity scaling (``DatasetInfo.extra["intensity_scaling"]``, added by
:func:`record_preprocessing` when training starts), and prediction reads that record, never the family.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from typing import Any, Callable

import numpy as np

from data_pipelines import brats, ct, image_folders, outcome_data, phantoms, tfds_records
from data_pipelines.cases import check_channels, split_cases
from data_pipelines.info import DatasetInfo
from data_pipelines.planner import MODALITIES
from data_pipelines.preprocessing import SCALING_KINDS
from data_pipelines.readers import ImageMeta
from scoring.regions import brats_region_metrics

__all__ = ["DataFamily", "CaseFiles", "register_family", "unregister_family", "get_family", "list_families",
           "record_preprocessing", "NO_SCALING"]

NO_SCALING = {"kind": "none"}


@dataclasses.dataclass(frozen=True)
class CaseFiles:
    """The original files of one case: ``input`` (a file or a case folder, what ``zoo.prediction.read_case``
    reads) and ``truth`` (its reference label file; ``None`` when the family has none on disk)."""

    patient_id: str
    case_id: str
    input: str
    truth: str | None = None


@dataclasses.dataclass(frozen=True)
class DataFamily:
    """One kind of data set (module docstring): ``name`` plus the functions it supports (``None``: not)."""

    name: str
    load: Callable | None = None
    open_sources: Callable | None = None
    read_cases: Callable | None = None
    split_cases: Callable | None = None
    find_cases: Callable | None = None
    scaling: Callable | dict | None = None
    modality: Callable | str | None = None
    patterns: dict | None = None
    needs_data_dir: bool = True
    region_dice: Callable | None = None
    cohort: Callable | None = None
    summary: str = ""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a data family needs a non-empty name, got {self.name!r}")
        if self.load is None and self.open_sources is None and self.cohort is None:
            raise ValueError(f"data family {self.name!r} needs load(cfg), open_sources(cfg) or cohort(data_dir)")
        if isinstance(self.modality, str) and self.modality not in MODALITIES:
            raise ValueError(f"data family {self.name!r}: modality must be one of {sorted(MODALITIES)}, "
                             f"got {self.modality!r}")
        if isinstance(self.scaling, dict):
            check_scaling(self.scaling, self.name)

    @property
    def has_cases(self) -> bool:
        """Whether the family reads full-resolution cases (patch training, planning)."""
        return self.read_cases is not None or self.split_cases is not None

    def check_data_dir(self, cfg) -> None:
        """``ValueError`` when the family reads ``data.data_dir`` and it is unset or not a folder."""
        if not self.needs_data_dir:
            return
        data_dir = cfg.get("data_dir", "") or ""
        if not data_dir:
            raise ValueError(f"dataset {self.name!r} needs --data_dir")
        if not os.path.isdir(data_dir):
            raise ValueError(f"data_dir {data_dir!r} does not exist or is not a directory")

    def intensity_scaling(self, cfg) -> dict:
        """The intensity-scaling record of this family's loader for the ``data`` section ``cfg``."""
        record = self.scaling(cfg) if callable(self.scaling) else (self.scaling or NO_SCALING)
        return check_scaling(dict(record), self.name)

    def default_modality(self, cfg) -> str:
        """Planning's normalisation for ``cfg`` (``data.modality`` overrides it)."""
        modality = self.modality(cfg) if callable(self.modality) else self.modality
        if modality is None:
            raise ValueError(f"data family {self.name!r} has no default modality: set data.modality to one of "
                             f"{sorted(MODALITIES)}")
        return modality

    def full_cases(self, cfg) -> tuple[list[dict], list[dict], DatasetInfo]:
        """``(train_cases, val_cases, info)`` at full resolution, split by patient (``data.val_fraction``,
        ``data.seed``) unless the family splits its cases itself; ``data.channels`` keeps the first channels."""
        if self.split_cases is not None:
            return self.split_cases(cfg)
        cases, channel_names, class_names = self.all_cases(cfg)
        n = check_channels(cfg, channel_names)
        for c in cases:
            c["image"] = np.ascontiguousarray(c["image"][..., :n], dtype=np.float32)
        train_ids, val_ids = split_cases([c["patient_id"] for c in cases], cfg)
        by_id = {c["patient_id"]: c for c in cases}
        info = DatasetInfo(cfg.name, len(class_names), tuple(channel_names[:n]), tuple(class_names),
                           int(cfg.spatial_dims))
        return [by_id[p] for p in train_ids], [by_id[p] for p in val_ids], info

    def all_cases(self, cfg) -> tuple[list[dict], tuple[str, ...], tuple[str, ...]]:
        """``read_cases(cfg)`` after the ``data_dir`` check: every case at full resolution (planning)."""
        if self.read_cases is None:
            raise ValueError(f"data family {self.name!r} has no full-resolution cases (patch training and "
                             f"planning need read_cases)")
        self.check_data_dir(cfg)
        return self.read_cases(cfg)

    def case_files(self, cfg) -> list[CaseFiles]:
        """The original files of every case (``find_cases``)."""
        if self.find_cases is None:
            raise ValueError(f"data family {self.name!r} does not list its cases' files")
        return list(self.find_cases(cfg))


def check_scaling(record: Any, family: str = "") -> dict:
    """``record`` if it is a valid intensity-scaling record, else ``ValueError``."""
    where = f"data family {family!r}: " if family else ""
    if not isinstance(record, dict) or record.get("kind") not in SCALING_KINDS:
        raise ValueError(f"{where}intensity scaling must be a dict with kind in {SCALING_KINDS}, got {record!r}")
    if record["kind"] == "hu_window":
        window = record.get("window")
        if window is None or len(window) != 2 or not float(window[1]) > float(window[0]):
            raise ValueError(f"{where}an hu_window scaling needs window [lo, hi] with hi > lo, got {record!r}")
    return record


_REGISTRY: dict[str, DataFamily] = {}


def register_family(family: DataFamily, *, replace: bool = False) -> DataFamily:
    """Add ``family`` under its name; a name already taken raises ``ValueError`` unless ``replace``."""
    if not isinstance(family, DataFamily):
        raise ValueError(f"register_family takes a DataFamily, got {type(family).__name__}")
    if family.name in _REGISTRY and not replace:
        raise ValueError(f"data family {family.name!r} is already registered")
    _REGISTRY[family.name] = family
    return family


def unregister_family(name: str) -> None:
    """Remove the family ``name`` (tests that register their own)."""
    _REGISTRY.pop(name, None)


def get_family(name: str) -> DataFamily:
    """The family registered as ``name``; an unknown name raises ``ValueError`` naming the close matches."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint}; expected one of {sorted(_REGISTRY)}")


def list_families() -> list[DataFamily]:
    """Every registered family, by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def record_preprocessing(info: DatasetInfo, cfg) -> DatasetInfo:
    """``info`` with the run's preprocessing recorded: unchanged when it holds a plan or a scaling record
    already (a loader that knows better, e.g. TFDS records of 8-bit images), else with
    ``extra["intensity_scaling"]`` = the family's scaling for ``cfg`` (unregistered names: unchanged)."""
    if not isinstance(info, DatasetInfo):
        return info
    extra = dict(info.extra or {})
    if extra.get("plan") or extra.get("intensity_scaling") or cfg.name not in _REGISTRY:
        return info
    extra["intensity_scaling"] = get_family(cfg.name).intensity_scaling(cfg)
    return dataclasses.replace(info, extra=extra)


# ------------------------------------------------------------------------------------------ built-in families

def _phantom_cases(cfg):
    train, val, info = phantoms.load_phantoms(cfg)
    nd = int(cfg.spatial_dims)
    meta = ImageMeta((1.0,) * nd, (0.0,) * nd, tuple(tuple(float(i == j) for j in range(nd)) for i in range(nd)),
                     "", "phantom")

    def cases(arrays):
        return [{"patient_id": arrays["patient_id"][i], "image": arrays["image"][i], "label": arrays["label"][i],
                 "meta": meta} for i in range(len(arrays["image"]))]

    return cases(train), cases(val), info


_PHANTOM_MODALITY = {"brain": "MR", "lung": "CT", "skin": "RGB"}


def _folder_cases(cfg) -> list[CaseFiles]:
    meta = image_folders.read_metadata_csv(cfg.data_dir)
    col = cfg.get("patient_column", "patientid")
    return [CaseFiles(str(meta.get(i, {}).get(col) or i), i, ip, mp)
            for i, ip, mp in image_folders.find_image_mask_pairs(cfg.data_dir,
                                                                 allow_unpaired=bool(cfg.get("allow_unpaired", False)))]


def _brats_files(cfg) -> list[CaseFiles]:
    return [CaseFiles(c.patient_id, c.patient_id, os.path.dirname(c.files["label"]), c.files["label"])
            for c in brats.find_brats_cases(cfg.data_dir)]


def _brats_region_dice(pred: np.ndarray, truth: np.ndarray, truth_path: str) -> dict:
    """Dice of BraTS's tumour core and enhancing tumour (the whole tumour is the foreground itself)."""
    regions = brats_region_metrics(pred, brats.map_brats_labels(truth, path=truth_path), metrics=("dice",))
    return {name: float(regions[name]["dice"]) for name in ("TC", "ET")}


def _ct_files(cfg) -> list[CaseFiles]:
    return [CaseFiles(c["patient_id"], c["patient_id"], c["image"], c["label"]) for c in ct.find_ct_cases(cfg.data_dir)]


for _family in (
        DataFamily("phantoms", load=phantoms.load_phantoms, split_cases=_phantom_cases, needs_data_dir=False,
                   modality=lambda cfg: _PHANTOM_MODALITY[cfg.kind], patterns=dict(brats.BRATS_PATTERNS),
                   summary="generated brain/skin/lung phantoms (data.kind)"),
        DataFamily("outcome_phantoms", load=outcome_data.load_outcome_phantoms, needs_data_dir=False,
                   summary="phantom images with covariates and a surgical outcome"),
        DataFamily("brats", load=brats.load_brats, read_cases=brats.read_cases, find_cases=_brats_files,
                   scaling=brats.intensity_record, modality="MR", patterns=dict(brats.BRATS_PATTERNS),
                   region_dice=_brats_region_dice,
                   summary="BraTS 2013-2023 case folders"),
        DataFamily("isic", load=image_folders.load_isic, read_cases=image_folders.read_isic_cases,
                   find_cases=_folder_cases, scaling={"kind": "unit_range"}, modality="RGB",
                   summary="ISIC / PH2 dermoscopy image/mask pairs"),
        DataFamily("folder", load=image_folders.load_folder, read_cases=image_folders.read_folder_cases,
                   find_cases=_folder_cases, scaling={"kind": "unit_range"}, modality="other",
                   summary="generic 2D image/mask folders (CXR, EM)"),
        DataFamily("luna16", load=ct.load_luna16, read_cases=ct.read_cases, find_cases=_ct_files,
                   scaling=lambda cfg: {"kind": "hu_window", "window": list(ct.loader_hu_window(cfg))},
                   modality="CT", summary="LUNA16 / labelled CT volumes"),
        DataFamily("tfds", open_sources=tfds_records.open_tfds, patterns=dict(brats.BRATS_PATTERNS),
                   summary="prepared TFDS array_record data sets"),
):
    register_family(_family)
del _family
