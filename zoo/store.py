"""The local model store: named, trained models with their cards, no hub.

Two places hold entries, searched in this order:

* ``$ZOO_HOME`` (default ``~/.cache/medzoo``): models a user saved with :func:`save_pretrained` — e.g. the
  study's recipes trained on real data, whose licences (non-commercial, share-alike) keep them out of the
  package;
* ``zoo/pretrained_models/`` inside the package: small models trained on the embedded phantoms only.

An entry is a folder ``<name>/`` holding ``card.json`` (what the model is, the data it was trained on and
that data's licence, its plan, its metrics with the split they came from; an entry refit on every patient after
cross-validation, ``zoo.crossval``, carries the folds' metrics) and ``checkpoints/<step>/`` (an Orbax step as the
training core writes it). ``python -m zoo.store_cli list | show NAME`` prints them. Names say data family and
architecture: ``unet-isic``, ``fcn-brats2d``, ``unet-phantoms-brain2d``.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import os
import re
import shutil
import tempfile

from zoo.cards import class_codes
from zoo.checkpoint import CheckpointIO, restore_meta
from data_pipelines.atomic import write_json

__all__ = ["StoreEntry", "store_home", "PACKAGE_STORE", "list_pretrained", "resolve", "entry_path",
           "save_pretrained"]

PACKAGE_STORE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained_models")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
# Files beside a run's checkpoints that an entry keeps (``zoo.outcome.survival.SURVIVAL_FILE``: the curves' baseline).
# what turns the network's output into the served answer: survival curves; the temperature and conformal record
# (zoo.calibration)
SIDECARS = ("survival.json", "calibration.json")


def store_home() -> str:
    """``$ZOO_HOME``, or ``~/.cache/medzoo``."""
    return os.path.abspath(os.path.expanduser(os.environ.get("ZOO_HOME", "") or "~/.cache/medzoo"))


@dataclasses.dataclass(frozen=True)
class StoreEntry:
    name: str
    path: str
    source: str  # "home" | "package"
    card: dict

    @property
    def summary(self) -> str:
        m = self.card.get("metrics", {})
        shown = ", ".join(f"{k} {v:.3f}" for k, v in m.items() if isinstance(v, (int, float)))
        return f"{self.name}: {self.card.get('model', '?')} on {self.card.get('data', {}).get('name', '?')}" + (
            f" ({shown}, {m.get('split', '')})" if shown else "")


def _entries(root: str, source: str) -> list[StoreEntry]:
    if not os.path.isdir(root):
        return []
    out = []
    for name in sorted(os.listdir(root)):
        card_path = os.path.join(root, name, "card.json")
        if not os.path.isfile(card_path):
            continue
        try:
            with open(card_path, encoding="utf-8") as f:
                card = json.load(f)
        except (OSError, ValueError) as e:
            print(f"warning: model store entry {card_path} cannot be read ({e}); skipped")
            continue
        out.append(StoreEntry(name=name, path=os.path.join(root, name), source=source, card=card))
    return out


def list_pretrained() -> list[StoreEntry]:
    """Every entry of ``$ZOO_HOME`` and of the package (a name in both: the user's entry wins)."""
    seen, out = set(), []
    for entry in _entries(store_home(), "home") + _entries(PACKAGE_STORE, "package"):
        if entry.name not in seen:
            seen.add(entry.name)
            out.append(entry)
    return out


def resolve(name_or_path: str) -> str:
    """A path to a work directory / checkpoint folder: ``name_or_path`` itself when it exists, else the store
    entry of that name. Unknown names raise ``ValueError`` listing the close matches."""
    if os.path.exists(name_or_path):
        return name_or_path
    if os.sep in str(name_or_path) or str(name_or_path).startswith("."):
        raise FileNotFoundError(f"no such checkpoint or work directory: {name_or_path}")
    entries = {e.name: e for e in list_pretrained()}
    if name_or_path in entries:
        return entries[name_or_path].path
    close = difflib.get_close_matches(str(name_or_path), list(entries), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown model {name_or_path!r}: not a path and not in the model store{hint} "
                     f"(store: {', '.join(sorted(entries)) or 'empty'}; $ZOO_HOME={store_home()})")


def entry_path(name: str, root: str | None = None, overwrite: bool = False) -> str:
    """The folder entry ``name`` takes in ``root`` (default :func:`store_home`); a bad name, or an existing entry
    unless ``overwrite``, raises ``ValueError`` (a caller checks before training what it will save)."""
    if not _NAME.match(str(name)):
        raise ValueError(f"store name {name!r}: use lower-case letters, digits, '.', '_' and '-' (e.g. 'unet-isic')")
    dest = os.path.join(os.path.abspath(root or store_home()), name)
    if os.path.exists(dest) and not overwrite:
        raise ValueError(f"model store entry {dest} exists; pass overwrite=True to replace it")
    return dest


def save_pretrained(workdir: str, name: str, *, step: int | None = None, card: dict | None = None,
                    root: str | None = None, overwrite: bool = False) -> StoreEntry:
    """Copy a run's best checkpoint (or ``step``, or its newest) with its card into the store as ``name``.

    ``card`` adds to what the run's metadata says (model, task, data contract, plan, validation metrics):
    e.g. ``{"data_licence": "CC BY-NC-SA 4.0", "intended_use": "..."}``; its ``metrics`` replace the run's (a refit
    states its cross-validated ones, ``zoo.crossval``). The copy is made in a temporary
    folder and renamed into place, so an entry is complete or absent.
    """
    root = os.path.abspath(root or store_home())
    dest = entry_path(name, root, overwrite)
    best = os.path.join(workdir, "best")
    ckdir = best if step is None and CheckpointIO.has_steps(best) else os.path.join(workdir, "checkpoints")
    step, meta = restore_meta(ckdir, step)
    evaluation = {}
    eval_path = os.path.join(workdir, "eval.json")
    if os.path.isfile(eval_path):
        with open(eval_path, encoding="utf-8") as f:
            evaluation = json.load(f)
    from zoo.tasks import get_task

    metric = get_task(meta.get("task", "segmentation")).best_metric
    value = CheckpointIO.best_of(best, metric)[1] if ckdir == best else evaluation.get(metric)
    info = dict(card or {})
    full = {"name": name, "model": meta["model"], "task": meta.get("task", "segmentation"), "data": meta["data"],
            "plan": (meta["data"].get("extra") or {}).get("plan"), "step": int(step),
            "metrics": {metric: value, "split": "validation split (patients unseen in training)"},
            "data_licence": info.pop("data_licence", "synthetic phantoms (Apache-2.0, generated by the code)"),
            "created": datetime.datetime.now().isoformat(timespec="seconds"), "source_workdir": os.path.abspath(workdir),
            **info}
    if full["task"] in ("segmentation", "instance") and "class_codes" not in full:  # what a DICOM SEG codes
        full["class_codes"] = class_codes(meta["data"].get("class_names", ()))
    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=root)
    try:
        shutil.copytree(os.path.join(ckdir, str(step)), os.path.join(tmp, "checkpoints", str(step)))
        write_json(os.path.join(tmp, "card.json"), full)
        for side in SIDECARS:  # what turns the network's output into the served answer
            if os.path.isfile(os.path.join(workdir, side)):
                shutil.copyfile(os.path.join(workdir, side), os.path.join(tmp, side))
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return StoreEntry(name=name, path=dest, source="home" if root == store_home() else "package", card=full)
