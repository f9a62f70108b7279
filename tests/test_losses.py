"""Segmentation losses against numpy references, their limits and their parsing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zoo import losses

rng = np.random.default_rng(0)
LOGITS = rng.normal(size=(2, 6, 5, 3)).astype(np.float32)
LABELS = rng.integers(0, 3, size=(2, 6, 5)).astype(np.int32)


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _counts(logits, labels):
    p = _softmax(logits.astype(np.float64)).reshape(-1, logits.shape[-1])
    t = np.eye(logits.shape[-1])[labels.reshape(-1)]
    return (p * t).sum(0), (p * (1 - t)).sum(0), ((1 - p) * t).sum(0)


def ref_ce(logits, labels, w=None):
    logp = np.log(_softmax(logits.astype(np.float64)))
    ce = -np.take_along_axis(logp, labels[..., None], -1)[..., 0]
    if w is None:
        return ce.mean()
    ww = np.asarray(w)[labels]
    return (ce * ww).sum() / ww.sum()


def ref_dice(logits, labels, s=1e-5):
    tp, fp, fn = _counts(logits, labels)
    return 1 - ((2 * tp + s) / (2 * tp + fp + fn + s))[1:].mean()


def ref_jaccard(logits, labels, s=1e-5):
    tp, fp, fn = _counts(logits, labels)
    return 1 - ((tp + s) / (tp + fp + fn + s))[1:].mean()


def ref_tversky(logits, labels, a=0.3, b=0.7, s=1e-5):
    tp, fp, fn = _counts(logits, labels)
    return 1 - ((tp + s) / (tp + a * fp + b * fn + s))[1:].mean()


def ref_focal(logits, labels, g=2.0):
    pt = np.take_along_axis(_softmax(logits.astype(np.float64)), labels[..., None], -1)[..., 0]
    return (-(1 - pt) ** g * np.log(pt)).mean()


def ref_inverse_freq_ce(logits, labels):
    counts = np.bincount(labels.ravel(), minlength=logits.shape[-1]).astype(np.float64)
    inv = np.where(counts > 0, 1 / np.maximum(counts, 1), 0)
    return ref_ce(logits, labels, inv * (counts > 0).sum() / inv.sum())


REF_CASES = [  # (loss spec, numpy reference)
    ("ce", ref_ce),
    ("dice", ref_dice),
    ("jaccard", ref_jaccard),
    ("tversky", ref_tversky),
    ("tversky(alpha=0.5, beta=0.5)", lambda x, y: ref_dice(x, y)),  # Tversky(½, ½) is Dice
    ("focal", ref_focal),
    ("focal(gamma=0)", ref_ce),                                      # focal with γ=0 is CE
    ("dice_ce", lambda x, y: ref_dice(x, y) + ref_ce(x, y)),
    ("dice_ce(dice_weight=0.5, ce_weight=2)", lambda x, y: 0.5 * ref_dice(x, y) + 2 * ref_ce(x, y)),
    ("weighted_ce", ref_inverse_freq_ce),
    ("weighted_ce(class_weights=(0.2, 1, 3))", lambda x, y: ref_ce(x, y, (0.2, 1, 3))),
    ("weighted_ce(class_weights=(1, 1, 1))", ref_ce),
]


@pytest.mark.parametrize("spec,ref", REF_CASES)
def test_loss_matches_numpy_reference(spec, ref):
    got = float(losses.get_loss(spec)(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
    np.testing.assert_allclose(got, ref(LOGITS, LABELS), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(losses.LOSSES))
def test_perfect_prediction_has_near_zero_loss_and_finite_grads(name):
    fn = losses.get_loss(name)
    perfect = jnp.asarray(np.eye(3, dtype=np.float32)[LABELS] * 30.0)
    assert float(fn(perfect, jnp.asarray(LABELS))) < 1e-3
    worse = float(fn(jnp.asarray(LOGITS), jnp.asarray(LABELS)))
    assert worse > 1e-2
    g = jax.grad(lambda x: fn(x, jnp.asarray(LABELS)))(jnp.asarray(LOGITS))
    assert g.shape == LOGITS.shape and bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0


BAD_SPECS = [  # (spec, error fragment)
    ("dicee", "unknown loss 'dicee'"),
    ("focal(gamma=2", "expected NAME(key=value"),
    ("focal(2)", "NAME(key=literal"),
    ("focal(alpha=1)", "unknown parameter(s) ['alpha']"),
    ("weighted_ce(class_weights=(1, 2))", "class_weights has 2 entries for 3 classes"),
    (3, "loss must be a string"),
]


@pytest.mark.parametrize("spec,fragment", BAD_SPECS)
def test_bad_loss_specs_raise(spec, fragment):
    with pytest.raises(ValueError, match=__import__("re").escape(fragment)):
        losses.get_loss(spec)(jnp.asarray(LOGITS), jnp.asarray(LABELS))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="must be labels"):
        losses.dice_loss(jnp.asarray(LOGITS), jnp.asarray(LABELS[:, :5]))


def test_parse_loss():
    assert losses.parse_loss("tversky(alpha=0.5, beta=0.7)") == ("tversky", {"alpha": 0.5, "beta": 0.7})
    assert losses.parse_loss("dice") == ("dice", {})
