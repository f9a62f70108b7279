"""Model cards: what a model expects and what it was trained on (timm PretrainedCfg / MONAI bundle metadata).

Plain data: this module imports nothing of the project. Parameter and FLOP counts of a registered model come
from :func:`zoo.summary.complexity`, which sits above the registry. :func:`read_card` is the one reader of a
trained model's card (``card.json`` of a store entry or export; a card made from the run's metadata for a bare
work directory), used by the application (``zoo.app``), ``zoo.export`` and ``zoo.predict``.

Cards name their output classes with coded concepts (:func:`class_codes`): per foreground class a SNOMED-CT
segmented-property category and type (value, coding scheme, meaning), what a DICOM Segmentation
(:mod:`zoo.dicom`) writes into each segment. A card may state its own ``class_codes``; otherwise they are found
from the class names (:data:`CODED_CLASSES`), so every card :func:`read_card` returns carries them.

A store entry refit on every patient after cross-validation (``zoo.crossval``) says so (``training.refit: true``)
and carries the cross-validated metrics it came from (``metrics.cross_validation``); :func:`cross_validation_lines`
is how they read (``python -m zoo.store_cli show NAME``, the application's model page).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any

__all__ = ["ModelCard", "CARD_FILE", "read_card", "class_codes", "check_class_codes", "CODED_CLASSES",
           "cross_validation_lines"]

CARD_FILE = "card.json"

_SCT = "SCT"
_ABNORMAL = ("49755003", _SCT, "Morphologically Abnormal Structure")
_ANATOMY = ("91723000", _SCT, "Anatomical Structure")
_TISSUE = ("85756007", _SCT, "Tissue")
# (pattern on the lower-case class name, category, type); the first match wins, so the specific come first.
CODED_CLASSES: tuple[tuple[str, tuple[str, str, str], tuple[str, str, str]], ...] = (
    (r"necro", _ABNORMAL, ("6574001", _SCT, "Necrosis")),
    (r"o?edema", _ABNORMAL, ("79654002", _SCT, "Edema")),
    (r"nodule", _ABNORMAL, ("27925004", _SCT, "Nodule")),
    (r"cyst", _ABNORMAL, ("367643001", _SCT, "Cyst")),
    (r"tumou?r|lesion|neoplasm|enhancing|cancer|mass|metasta", _ABNORMAL, ("108369006", _SCT, "Neoplasm")),
    (r"lung", _ANATOMY, ("39607008", _SCT, "Lung")),
    (r"kidney|renal", _ANATOMY, ("64033007", _SCT, "Kidney")),
    (r"brain", _ANATOMY, ("12738006", _SCT, "Brain")),
    (r"liver|hepat", _ANATOMY, ("10200004", _SCT, "Liver")),
    (r"heart|cardiac", _ANATOMY, ("80891009", _SCT, "Heart")),
    (r"skin", _ANATOMY, ("39937001", _SCT, "Skin")),
    (r"cell|membrane", _TISSUE, ("4421005", _SCT, "Cell")),
    (r"", _TISSUE, _TISSUE),  # anything else: a generic tissue code
)


def _concept(code: tuple[str, str, str]) -> dict[str, str]:
    return {"value": code[0], "scheme": code[1], "meaning": code[2]}


def class_codes(class_names) -> list[dict[str, Any]]:
    """The coded concepts of the foreground classes ``class_names[1:]`` (class 0 is the background):
    ``[{"label": k, "name", "category": {"value", "scheme", "meaning"}, "type": {...}}, ...]`` from the first
    pattern of :data:`CODED_CLASSES` the lower-case name matches (tumour/lesion: SNOMED-CT Neoplasm, a
    morphologically abnormal structure; organs: their anatomical structure; unknown names: Tissue)."""
    out = []
    for k, name in enumerate(class_names):
        if k == 0:
            continue
        low = str(name).lower()
        _, category, kind = next(c for c in CODED_CLASSES if re.search(c[0], low))
        out.append({"label": k, "name": str(name), "category": _concept(category), "type": _concept(kind)})
    return out


def check_class_codes(codes, num_classes: int, where: str) -> list[dict[str, Any]]:
    """``codes`` (a card's ``class_codes``) checked: one entry per foreground label 1..``num_classes``-1, each
    with a ``name`` and ``category`` / ``type`` concepts of non-empty ``value``, ``scheme`` and ``meaning``;
    anything else raises ``ValueError`` naming ``where`` and the entry."""
    if not isinstance(codes, list):
        raise ValueError(f"{where}: class_codes must be a list of coded classes; got {type(codes).__name__}")
    labels = [c.get("label") if isinstance(c, dict) else None for c in codes]
    if sorted(x for x in labels if isinstance(x, int)) != list(range(1, num_classes)) or len(labels) != num_classes - 1:
        raise ValueError(f"{where}: class_codes must code the foreground labels 1..{num_classes - 1} once each; "
                         f"got labels {labels}")
    for c in codes:
        for field in ("category", "type"):
            concept = c.get(field)
            if not (isinstance(concept, dict) and all(isinstance(concept.get(f), str) and concept.get(f)
                                                      for f in ("value", "scheme", "meaning"))):
                raise ValueError(f"{where}: class_codes label {c['label']}: {field} needs a non-empty value, "
                                 f"scheme and meaning; got {concept!r}")
        if not (isinstance(c.get("name"), str) and c["name"]):
            raise ValueError(f"{where}: class_codes label {c['label']}: no name")
    return sorted(codes, key=lambda c: c["label"])


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """Input contract and provenance of a model.

    ``input_contract`` states layout, channels and intensity normalisation; ``spatial_dims`` the
    numbers of spatial dims the model accepts; ``classes`` names the output classes where they are
    fixed (class 0 the background), ``class_codes`` their coded concepts (default: :func:`class_codes` of
    ``classes``). ``params`` / ``flops`` / ``complexity_config`` stay empty unless a card states them
    (:func:`zoo.summary.complexity` computes them by name).
    """

    name: str
    summary: str = ""
    reference: str = ""
    input_contract: str = "x: [B, *S, C] float32, channels-last"
    spatial_dims: tuple[int, ...] = (2, 3)
    classes: tuple[str, ...] = ()
    licence: str = "Apache-2.0 (code)"
    params: dict[str, int] = dataclasses.field(default_factory=dict)
    flops: dict[str, float] = dataclasses.field(default_factory=dict)
    complexity_config: str = ""
    class_codes: tuple[dict, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["class_codes"] = list(self.class_codes) or class_codes(self.classes)
        return out


def read_card(path: str, pre) -> dict:
    """The card of the trained model in folder ``path`` (a resolved store entry, work directory or export):
    ``path/card.json``, else the one in its parent folder (a run trained inside a study's folder), else a card
    made from ``pre``'s metadata (``pre``: the loaded model, with ``meta``, ``task`` and ``step``).

    The card always holds ``class_codes`` (see the module docstring): its own, checked against its classes,
    or found from the class names of its data contract."""
    card = None
    for folder in (path, os.path.dirname(os.path.abspath(path))):
        card_path = os.path.join(folder, CARD_FILE)
        if os.path.isfile(card_path):
            with open(card_path, encoding="utf-8") as f:
                card = json.load(f)
            break
    if card is None:
        cfg = pre.meta.get("config", {})
        contract = pre.meta.get("data", {})
        card = {"model": cfg.get("model", {}).get("name", "?"), "task": pre.task,
                "data": {"name": cfg.get("data", {}).get("name", "?"),
                         **{k: contract[k] for k in ("num_classes", "class_names", "spatial_dims") if k in contract}},
                "source": os.path.abspath(path), "step": getattr(pre, "step", None),
                "note": "work directory (no store card)"}
        card_path = os.path.abspath(path)
    names = list((card.get("data") or {}).get("class_names") or ((pre.meta.get("data") or {}).get("class_names")
                                                                  if pre is not None else None) or [])
    if card.get("class_codes") is not None:
        card["class_codes"] = check_class_codes(card["class_codes"], len(names) or len(card["class_codes"]) + 1,
                                                card_path)
    else:
        card["class_codes"] = class_codes(names)
    return card


def cross_validation_lines(card: dict) -> list[str]:
    """How a card's refit and cross-validated metrics read: the training line (refit on which patients, steps,
    no selection), the splitter line, the mean ± std per metric, then one line per fold (its held-out patients,
    steps, metrics). ``[]`` for a card without ``metrics.cross_validation``."""
    cv = (card.get("metrics") or {}).get("cross_validation")
    if not isinstance(cv, dict):
        return []
    lines = []
    training = card.get("training")
    if isinstance(training, dict) and training.get("refit"):
        lines.append(f"refit on all {len(training.get('patients') or ())} training patients "
                     f"({training.get('cases', '?')} cases), {training.get('steps', '?')} steps "
                     f"(folds: {training.get('fold_steps', '?')}); {training.get('selection', '')}")
    run = cv.get("folds_run", cv.get("folds"))
    lines.append(f"cross-validated: {run} of {cv.get('folds')} {cv.get('level', 'patient')}-level folds "
                 f"({cv.get('splitter', '?')}, seed {cv.get('seed', '?')}); {cv.get('measured_on', '')}")
    mean, std = cv.get("mean") or {}, cv.get("std") or {}
    lines.append("mean ± std: " + ", ".join(f"{k} {_num(mean[k])} ± {_num(std.get(k))}" for k in mean)
                 if any(std.get(k) is not None for k in mean) else
                 "mean (one fold, no std): " + ", ".join(f"{k} {_num(mean[k])}" for k in mean))
    for f in cv.get("per_fold") or ():
        metrics = ", ".join(f"{k} {_num(v)}" for k, v in (f.get("metrics") or {}).items())
        lines.append(f"fold {f.get('fold')} (held out: {', '.join(map(str, f.get('val_patients') or ()))}; "
                     f"{f.get('steps')} steps): {metrics}")
    return lines


def _num(v) -> str:
    return f"{v:.3f}" if isinstance(v, (int, float)) else str(v)
