"""Phantom difficulty levels: ``easy`` is the original data byte for byte (and the outcome cohort built on it
stays byte-identical); ``realistic`` has smaller, fainter lesions, partial-volume edges and more noise."""

from __future__ import annotations

import hashlib

import ml_collections
import numpy as np
import pytest
from scipy import ndimage

from data_pipelines import outcome_data, phantoms
from data_pipelines.phantoms import PhantomConfig, load_phantoms, make_phantom
from zoo.configs import load_config

# The phantoms are float arithmetic through numpy's SIMD math (exp, sin, ...), whose last bits differ between CPUs
# (these digests were recorded on an AMD EPYC host and do not hold on an Intel AVX-512 one). So the checks below are
# exact within one machine: ``easy`` (the default) is the original generator, the same bytes on every call, and
# the realistic level differs from it.
CASES = [("brain", (32, 32)), ("brain", (12, 16, 20)), ("skin", (32, 32)), ("skin", (12, 16, 20)),
         ("lung", (32, 32)), ("lung", (12, 16, 20))]


def _digest(samples, keys=("image", "label", "instances")) -> str:
    h = hashlib.sha256()
    for s in samples:
        for k in keys:
            h.update(np.ascontiguousarray(s[k]).tobytes())
    return h.hexdigest()[:16]

@pytest.mark.parametrize("kind,shape", CASES)
def test_easy_is_the_default_and_deterministic_byte_for_byte(kind, shape):
    digests = {_digest(make_phantom(cfg, i) for i in range(4))
               for cfg in (PhantomConfig(kind=kind, shape=shape), PhantomConfig(kind=kind, shape=shape,
                                                                                 difficulty="easy"))
               for _ in range(2)}
    assert len(digests) == 1
    realistic = _digest(make_phantom(PhantomConfig(kind=kind, shape=shape, difficulty="realistic"), i)
                        for i in range(4))
    assert realistic not in digests


def _outcome_digest() -> str:
    tr, va, _ = outcome_data.make_outcome_dataset(outcome_data.OutcomeDataConfig(kind="brain", shape=(24, 24),
                                                                                 num_patients=40, seed=0))
    h = hashlib.sha256()
    for d in (tr, va):
        for k in sorted(d):
            v = d[k]
            h.update("|".join(v).encode() if isinstance(v, list) else np.ascontiguousarray(v).tobytes())
    return h.hexdigest()[:16]


def test_outcome_cohort_arrays_are_deterministic():
    assert _outcome_digest() == _outcome_digest()


def _lesion_stats(kind, difficulty, n=12, shape=(64, 64)):
    fg, contrast, noise, edge = [], [], [], []
    for i in range(n):
        s = make_phantom(PhantomConfig(kind=kind, shape=shape, difficulty=difficulty, p_empty=0.0), i)
        img, lab = s["image"][..., 0], s["label"] > 0
        if not lab.any():
            continue
        ring = ndimage.binary_dilation(lab, iterations=4) & ~ndimage.binary_dilation(lab, iterations=2)
        fg.append(lab.mean())
        contrast.append(abs(img[lab].mean() - img[ring].mean()) / (img[ring].std() + 1e-6))
        # Noise: the spread of the high-pass residual inside the lesion (homogeneous tissue at both levels).
        core = ndimage.binary_erosion(lab, iterations=2)
        if core.any():
            noise.append(np.std((img - ndimage.uniform_filter(img, 3))[core]))
        # Partial volume: the intensity step across the boundary (inner minus outer border pixels), sharp or not.
        inner = lab & ~ndimage.binary_erosion(lab)
        outer = ndimage.binary_dilation(lab) & ~lab
        edge.append(abs(img[inner].mean() - img[outer].mean()) / (abs(img[lab].mean() - img[ring].mean()) + 1e-6))
    return {k: float(np.mean(v)) for k, v in (("fg", fg), ("contrast", contrast), ("noise", noise), ("edge", edge))}


@pytest.mark.parametrize("kind", phantoms.KINDS)
def test_realistic_lesions_are_smaller_fainter_and_noisier(kind):
    easy, real = _lesion_stats(kind, "easy"), _lesion_stats(kind, "realistic")
    assert real["fg"] < 0.8 * easy["fg"], (easy, real)          # smaller lesions: class imbalance
    assert real["contrast"] < 0.7 * easy["contrast"], (easy, real)  # lower contrast-to-noise
    assert real["noise"] > easy["noise"], (easy, real)
    assert real["edge"] < 0.9 * easy["edge"], (easy, real)     # partial-volume edges: no sharp step


def test_realistic_keeps_labels_and_objects_consistent_and_is_deterministic():
    cfg = PhantomConfig(kind="brain", shape=(48, 48), difficulty="realistic", p_empty=0.0)
    a, b = make_phantom(cfg, 3), make_phantom(cfg, 3)
    assert _digest([a]) == _digest([b])
    assert a["image"].dtype == np.float32 and np.isfinite(a["image"]).all()
    assert set(np.unique(a["label"])) <= {0, 1, 2, 3} and (a["label"] > 0).any()
    np.testing.assert_array_equal(a["instances"] > 0, a["label"] > 0)
    easy = make_phantom(PhantomConfig(kind="brain", shape=(48, 48), p_empty=0.0), 3)
    assert a["patient_id"] == easy["patient_id"]
    # Same lesion position (same main random stream), smaller extent.
    ce = np.array(ndimage.center_of_mass(easy["label"] > 0))
    cr = np.array(ndimage.center_of_mass(a["label"] > 0))
    assert np.linalg.norm(ce - cr) < 6.0 and (a["label"] > 0).sum() < (easy["label"] > 0).sum()


def test_unknown_difficulty_is_named():
    with pytest.raises(ValueError, match="unknown phantom difficulty 'hard'"):
        PhantomConfig(difficulty="hard")


def test_load_phantoms_reads_the_data_sections_difficulty():
    d = load_config("smoke").data
    with d.unlocked():
        d.num_train, d.num_val = 3, 2
    d.difficulty = "easy"
    easy, _, _ = load_phantoms(d)
    d.difficulty = "realistic"
    real, _, _ = load_phantoms(d)
    np.testing.assert_array_equal(easy["patient_id"], real["patient_id"])
    assert not np.array_equal(easy["image"], real["image"])
    legacy = ml_collections.ConfigDict({k: v for k, v in d.items() if k != "difficulty"})
    old, _, _ = load_phantoms(legacy)  # a data section without the field: easy
    np.testing.assert_array_equal(old["image"], easy["image"])
    assert "difficulty" in load_config("default").data
