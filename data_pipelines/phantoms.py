"""Synthetic phantoms: the embedded default data set, so everything runs with no download.

Deterministic (seeded per sample), 2D slices or 3D volumes, shaped like the study's tasks:

* ``brain``: a head/brain ellipsoid with four MRI-like contrasts (FLAIR, T1, T1c, T2) and a
  glioma with BraTS-style sub-regions. Labels: 0 background, 1 necrosis / non-enhancing core,
  2 oedema, 3 enhancing tumour (BraTS label 4 mapped to 3). Channels are z-scored inside the
  brain, as the BraTS samples are.
* ``skin``: dermoscopy-like RGB, a pigmented lesion with an irregular border on textured skin
  with a dark vignette and hairs. Labels: 0 skin, 1 lesion.
* ``lung``: CT in Hounsfield units windowed to [0, 1] ([-1000, 400] HU): body, two lungs,
  vessels and 0-4 small solid nodules. Labels: 0 background, 1 nodule.

``difficulty``: ``"easy"`` (the original phantoms, byte for byte; a small U-Net reaches Dice ~0.999) or
``"realistic"`` (what makes real scans hard: lower lesion contrast, small lesions and so class imbalance,
partial-volume edges (the noiseless image is blurred, the labels stay sharp), a stronger bias field and more
noise). The realistic extras come from a second random stream, so the objects' shapes and positions are the
same at both levels, only smaller, fainter and noisier at ``"realistic"``.

Every sample also carries ``instances`` (one id per connected object, 0 = none) and a
``patient_id``. The intensities are designed so the classes are learnable but not trivial
(texture, bias field, noise and look-alike structures such as vessels).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from data_pipelines.cases import check_image_size
from data_pipelines.info import DatasetInfo
from kernels.intensity import zscore

__all__ = ["KINDS", "DIFFICULTIES", "NUM_CLASSES", "CHANNEL_NAMES", "CLASS_NAMES", "PhantomConfig", "make_phantom", "phantom_id",
           "PhantomSource", "load_phantoms"]

KINDS = ("brain", "skin", "lung")
DIFFICULTIES = ("easy", "realistic")
NUM_CLASSES = {"brain": 4, "skin": 2, "lung": 2}
CHANNEL_NAMES = {"brain": ("FLAIR", "T1", "T1c", "T2"), "skin": ("R", "G", "B"), "lung": ("CT",)}
CLASS_NAMES = {
    "brain": ("background", "necrosis", "oedema", "enhancing"),
    "skin": ("skin", "lesion"),
    "lung": ("background", "nodule"),
}

# Mean intensity per tissue for the brain contrasts (FLAIR, T1, T1c, T2).
_BRAIN_TISSUE = {
    "brain": (0.50, 0.60, 0.60, 0.40),
    "oedema": (1.00, 0.45, 0.55, 0.90),
    "enhancing": (0.85, 0.40, 1.15, 0.70),
    "necrosis": (0.70, 0.25, 0.20, 1.00),
    "skull": (0.15, 0.90, 0.80, 0.20),
}


def _grid(shape: Sequence[int]) -> np.ndarray:
    """Coordinates in [-1, 1], ``[D, *S]``."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=0)


def _smooth_field(rng: np.random.Generator, grid: np.ndarray, n_waves: int = 6, max_freq: float = 3.0):
    """Smooth random field in about [-1, 1]: a sum of random plane waves."""
    nd = grid.shape[0]
    out = np.zeros(grid.shape[1:], np.float32)
    for _ in range(n_waves):
        w = rng.normal(size=nd).astype(np.float32)
        w *= rng.uniform(0.5, max_freq) * np.pi / (np.linalg.norm(w) + 1e-6)
        out += np.sin(np.tensordot(w, grid, axes=1) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return out / np.sqrt(n_waves / 2.0)


def _blob(rng, grid, center, radius, irregularity=0.15, scale=None):
    """Boolean mask of an ellipsoid whose radius is modulated by a smooth random field."""
    nd = grid.shape[0]
    scale = np.ones(nd, np.float32) if scale is None else np.asarray(scale, np.float32)
    d = np.sqrt(sum(((grid[i] - center[i]) / scale[i]) ** 2 for i in range(nd)))
    wobble = 1.0 + irregularity * _smooth_field(rng, grid, n_waves=4, max_freq=2.5)
    return d < radius * wobble


def _partial_volume(img: np.ndarray, sigma: float) -> np.ndarray:
    """Blur ``img [*S, C]`` over the spatial axes (a voxel at an edge mixes both tissues)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(img, sigma=[sigma] * (img.ndim - 1) + [0.0], mode="nearest").astype(np.float32)


def _zscore_inside(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Z-scored by the statistics inside ``mask``; outside it one constant, the normalised zero (as in the BraTS
    samples): ``kernels.intensity.zscore`` of the image with zeros outside the mask."""
    return zscore(np.where(mask[..., None], img, np.float32(0.0)), mask, eps=1e-6)


def _brain(rng, shape, channels, p_empty, hard=None):
    g = _grid(shape)
    nd = len(shape)
    axes_scale = rng.uniform(0.75, 0.9, size=nd).astype(np.float32)
    head = _blob(rng, g, np.zeros(nd), 1.0, 0.03, axes_scale)
    brain = _blob(rng, g, np.zeros(nd), 0.88, 0.03, axes_scale)
    label = np.zeros(shape, np.int32)
    instances = np.zeros(shape, np.int32)
    if rng.uniform() >= p_empty:
        center = rng.uniform(-0.4, 0.4, size=nd) * axes_scale
        r_core = rng.uniform(0.15, 0.26)
        if hard is not None:  # small lesions (class imbalance), down to ~1/2 of the easy radius
            r_core *= hard.uniform(0.55, 1.0)
        oedema = _blob(rng, g, center, r_core * rng.uniform(1.5, 2.0), 0.2) & brain
        core = _blob(rng, g, center, r_core, 0.15) & brain
        necrosis = _blob(rng, g, center, r_core * rng.uniform(0.4, 0.6), 0.15) & core
        label[oedema] = 2
        label[core] = 3
        label[necrosis] = 1
        instances[oedema | core] = 1
    tissue = np.zeros(shape + (4,), np.float32)
    tissue[head & ~brain] = _BRAIN_TISSUE["skull"]
    tissue[brain] = _BRAIN_TISSUE["brain"]
    # Low contrast: each lesion tissue only part of the way from brain to its own intensity.
    contrast = 1.0 if hard is None else hard.uniform(0.45, 0.85)
    base = np.asarray(_BRAIN_TISSUE["brain"], np.float32)
    for lab, name in ((2, "oedema"), (3, "enhancing"), (1, "necrosis")):
        tissue[label == lab] = base + contrast * (np.asarray(_BRAIN_TISSUE[name], np.float32) - base) \
            if hard is not None else _BRAIN_TISSUE[name]
    # Grey/white-matter-like texture and a multiplicative bias field, then noise.
    texture = 0.08 * _smooth_field(rng, g, 8, 6.0)
    bias = 1.0 + (0.15 if hard is None else 0.25) * _smooth_field(rng, g, 3, 1.0)
    img = (tissue + texture[..., None] * brain[..., None]) * bias[..., None]
    if hard is not None:
        img = _partial_volume(img, hard.uniform(0.5, 1.0))
    img *= rng.uniform(0.8, 1.2, size=4).astype(np.float32)
    noise_sd = 0.06 if hard is None else 0.06 * hard.uniform(1.5, 2.5)
    img += rng.normal(0, noise_sd, size=img.shape).astype(np.float32) * head[..., None]
    img = _zscore_inside(img, brain)
    return img[..., :channels], label, instances


def _skin(rng, shape, channels, p_empty, hard=None):
    g = _grid(shape)
    nd = len(shape)
    skin_rgb = np.array([0.85, 0.65, 0.55], np.float32) * rng.uniform(0.85, 1.1)
    img = np.broadcast_to(skin_rgb, shape + (3,)).copy()
    img += 0.05 * _smooth_field(rng, g, 10, 12.0)[..., None]
    label = np.zeros(shape, np.int32)
    instances = np.zeros(shape, np.int32)
    if rng.uniform() >= p_empty:
        center = rng.uniform(-0.3, 0.3, size=nd)
        radius = rng.uniform(0.25, 0.55) * (1.0 if hard is None else hard.uniform(0.3, 1.0))
        lesion = _blob(rng, g, center, radius, 0.25, rng.uniform(0.7, 1.0, size=nd))
        lesion_rgb = np.array([0.45, 0.28, 0.2], np.float32) * rng.uniform(0.6, 1.2)
        if hard is not None:  # faint lesions: part of the way from skin to pigment
            lesion_rgb = skin_rgb + hard.uniform(0.3, 0.7) * (lesion_rgb - skin_rgb)
        shade = 1.0 + 0.2 * _smooth_field(rng, g, 6, 5.0)
        img[lesion] = (lesion_rgb * shade[lesion][:, None]).astype(np.float32)
        label[lesion] = 1
        instances[lesion] = 1
    # Hairs: thin dark curves that are not lesion.
    for _ in range(rng.integers(0, 4)):
        w = _smooth_field(rng, g, 2, 1.5)
        img[np.abs(w - rng.uniform(-0.5, 0.5)) < 0.02] *= 0.35
    # Dermoscope vignette.
    r = np.sqrt((g ** 2).sum(0))
    img *= np.clip(1.35 - 0.5 * r, 0.0, 1.0)[..., None]
    if hard is not None:
        img = _partial_volume(img, hard.uniform(0.7, 1.2))
        img *= (0.9 + 0.1 * _smooth_field(hard, g, 3, 1.0))[..., None]  # uneven illumination, not saturating
    img += rng.normal(0, 0.03 if hard is None else 0.08, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1)[..., :channels], label, instances


def _lung(rng, shape, channels, p_empty, hard=None):
    g = _grid(shape)
    nd = len(shape)
    hu = np.full(shape, -1000.0, np.float32)
    body = _blob(rng, g, np.zeros(nd), 0.92, 0.02, [0.9] + [1.0] * (nd - 1))
    hu[body] = -90.0
    hu[_blob(rng, g, np.zeros(nd), 0.85, 0.02, [0.9] + [1.0] * (nd - 1))] = 40.0
    lungs = np.zeros(shape, bool)
    for side in (-1, 1):
        c = np.zeros(nd)
        c[-1] = 0.38 * side
        lungs |= _blob(rng, g, c, 0.32, 0.08, [1.8] + [1.0] * (nd - 1)) if nd > 1 else False
    hu[lungs] = -860.0 + 30.0 * _smooth_field(rng, g, 6, 8.0)[lungs]
    # Vessels: thin elongated bright structures inside the lungs (nodule look-alikes).
    for _ in range(rng.integers(3, 7)):
        w = _smooth_field(rng, g, 2, 2.0)
        hu[(np.abs(w - rng.uniform(-0.5, 0.5)) < 0.025) & lungs] = -150.0
    label = np.zeros(shape, np.int32)
    instances = np.zeros(shape, np.int32)
    n_nod = 0 if rng.uniform() < p_empty else int(rng.integers(1, 5))
    inside = np.argwhere(lungs)
    for k in range(n_nod):
        if not len(inside):
            break
        idx = inside[rng.integers(len(inside))]
        center = np.array([g[d][tuple(idx)] for d in range(nd)])
        r_nod = rng.uniform(0.06, 0.12) * (1.0 if hard is None else hard.uniform(0.5, 1.0))
        nod = _blob(rng, g, center, r_nod, 0.1) & lungs
        hu[nod] = rng.uniform(0.0, 60.0) - (0.0 if hard is None else hard.uniform(0.0, 500.0))  # sub-solid
        label[nod] = 1
        instances[nod & (instances == 0)] = k + 1
    if hard is not None:
        hu = _partial_volume(hu[..., None], hard.uniform(0.7, 1.2))[..., 0]
    hu += rng.normal(0, 20.0 if hard is None else 80.0, size=shape).astype(np.float32)
    img = np.clip((hu + 1000.0) / 1400.0, 0.0, 1.0)[..., None]
    return img[..., :channels], label, instances


_MAKERS = {"brain": _brain, "skin": _skin, "lung": _lung}


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """Shape of a phantom data set.

    ``shape`` gives the spatial size (2 entries for slices, 3 for volumes).
    ``channels`` may be fewer than the kind provides (the first ones are kept).
    ``difficulty``: ``"easy"`` (default; the original phantoms) or ``"realistic"`` (see the module docstring).
    """

    kind: str = "brain"
    shape: tuple[int, ...] = (64, 64)
    channels: int | None = None
    p_empty: float = 0.1
    seed: int = 0
    difficulty: str = "easy"

    def __post_init__(self):
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown phantom difficulty {self.difficulty!r}; expected one of {DIFFICULTIES}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown phantom kind {self.kind!r}; expected one of {KINDS}")
        if len(self.shape) not in (2, 3) or any(int(s) < 8 for s in self.shape):
            raise ValueError(f"phantom shape must have 2 or 3 sizes >= 8, got {self.shape!r}")
        full = len(CHANNEL_NAMES[self.kind])
        if self.channels is not None and not 1 <= self.channels <= full:
            raise ValueError(f"{self.kind} phantoms have 1..{full} channels, got channels={self.channels}")

    @property
    def num_channels(self) -> int:
        return self.channels or len(CHANNEL_NAMES[self.kind])

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.kind]


def make_phantom(config: PhantomConfig, index: int) -> dict:
    """One sample: ``image [*S, C] float32``, ``label [*S] int32``, ``instances [*S] int32``, ``patient_id``."""
    rng = np.random.default_rng([config.seed, KINDS.index(config.kind), int(index)])
    shape = tuple(int(s) for s in config.shape)
    hard = None if config.difficulty == "easy" else np.random.default_rng(
        [config.seed, KINDS.index(config.kind), int(index), 1 + DIFFICULTIES.index(config.difficulty)])
    img, label, inst = _MAKERS[config.kind](rng, shape, config.num_channels, config.p_empty, hard)
    return {
        "image": np.ascontiguousarray(img, dtype=np.float32),
        "label": label,
        "instances": inst,
        "patient_id": phantom_id(config, index),
    }


def phantom_id(config: PhantomConfig, index: int) -> str:
    """The ``patient_id`` of phantom ``index``."""
    return f"phantom-{config.kind}-{config.seed}-{int(index):05d}"


class PhantomSource:
    """Random-access source of phantoms (``len`` and ``[i]``; usable as a grain data source)."""

    def __init__(self, config: PhantomConfig, num_samples: int, offset: int = 0):
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.config = config
        self.num_samples = int(num_samples)
        self.offset = int(offset)

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> dict:
        if not 0 <= int(i) < self.num_samples:
            raise IndexError(i)
        return make_phantom(self.config, self.offset + int(i))

    def arrays(self) -> dict:
        """All samples stacked: ``image [N, *S, C]``, ``label [N, *S]``, ``instances``, ``patient_id``."""
        items = [self[i] for i in range(len(self))]
        return {k: (np.stack([it[k] for it in items]) if k != "patient_id" else [it[k] for it in items])
                for k in items[0]}


def load_phantoms(cfg):
    """``(train, val, DatasetInfo)`` from a config's ``data`` section (``kind``, ``spatial_dims``,
    ``image_size``, ``channels``, ``num_train``, ``num_val``, ``seed``, ``difficulty`` (absent: easy));
    val follows train's indices."""
    size = check_image_size(cfg)
    difficulty = cfg.get("difficulty", None) or "easy"
    pc = PhantomConfig(kind=cfg.kind, shape=size, channels=cfg.channels or None, seed=cfg.seed,
                       difficulty=str(difficulty))
    train = PhantomSource(pc, cfg.num_train, offset=0).arrays()
    val = PhantomSource(pc, cfg.num_val, offset=cfg.num_train).arrays()
    info = DatasetInfo(f"phantoms/{cfg.kind}", pc.num_classes, CHANNEL_NAMES[cfg.kind][:pc.num_channels],
                       CLASS_NAMES[cfg.kind], cfg.spatial_dims)
    return train, val, info
