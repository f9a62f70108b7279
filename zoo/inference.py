"""The one prediction path: a task's ``predict`` / ``predict_proba`` run over data in fixed-size batches.

Training-time validation, ``zoo.load_pretrained``'s ``Pretrained``, k-fold ensembles, ``eval.report`` /
``eval.analysis`` and the outcome model all predict through :class:`Predictor`: inputs are cut into
batches of ``batch_size`` (the last one padded by repeating its final case, so each program compiles
once), each batch goes through the jitted task function, and the padding is dropped again.

``inputs``: images ``[N, *S, C]``, or a dict of equal-length arrays (``image``, ``covariates``) for models
that take more than the image (the outcome model). Outputs are numpy arrays.
"""

from __future__ import annotations

import functools
from typing import Iterator, Mapping

import itertools

import jax
import jax.numpy as jnp
import numpy as np

from kernels.sliding_window import sliding_window_inference

__all__ = ["Predictor", "num_cases", "padded_batches", "flip_axes", "tempered"]


def num_cases(inputs) -> int:
    if isinstance(inputs, Mapping):
        lengths = {k: len(v) for k, v in inputs.items()}
        if not lengths or len(set(lengths.values())) != 1:
            raise ValueError(f"inputs: the fields must have one length, got {lengths}")
        return next(iter(lengths.values()))
    return len(inputs)


def _rows(inputs, start: int, stop: int, batch_size: int):
    def take(a):
        chunk = np.asarray(a[start:stop], np.float32)
        pad = batch_size - len(chunk)
        return np.concatenate([chunk, np.repeat(chunk[-1:], pad, axis=0)]) if pad else chunk

    if isinstance(inputs, Mapping):
        return {k: take(v) for k, v in inputs.items()}
    return take(inputs)


def padded_batches(inputs, batch_size: int) -> Iterator[tuple[int, int, object]]:
    """Yield ``(start, n, batch)``: ``batch`` holds ``batch_size`` cases, the first ``n`` of them real."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = num_cases(inputs)
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        yield start, stop - start, _rows(inputs, start, stop, batch_size)


@functools.lru_cache(maxsize=None)
def _jitted(fn):
    # The model is a static argument: Flax modules are hashable dataclasses, so every Predictor of an equal
    # model (each validation of a run, each fold of zoo.cv) reuses one compiled program per input shape.
    return jax.jit(fn, static_argnums=0)


def flip_axes(spatial_dims: int) -> tuple[tuple[int, ...], ...]:
    """Every non-empty set of spatial axes (of ``[B, *S, C]``) to mirror for test-time augmentation (nnU-Net)."""
    axes = range(1, spatial_dims + 1)
    return tuple(c for r in range(1, spatial_dims + 1) for c in itertools.combinations(axes, r))


def tempered(proba, temperature):
    """``softmax(logits / temperature)`` from ``proba = softmax(logits)`` (``[..., K]``): the logits are the
    log-probabilities up to a per-voxel constant, which the softmax cancels."""
    logp = jnp.log(jnp.maximum(proba, jnp.finfo(jnp.float32).tiny))
    return jax.nn.softmax(logp / jnp.asarray(temperature, jnp.float32), axis=-1)


def _windowed(task_proba, model, variables, images, temperature, roi, overlap, batch_size, flips, members):
    def fn(w):
        p = task_proba(model, variables, w)
        return p if temperature is None else tempered(p, temperature)  # on each window's logits

    # The mirrored copies join the batch, so their windows share forward passes (one sliding window, not 1 + F
    # with a part-empty last batch each); each copy is mirrored back, then they are averaged.
    b = images.shape[0]
    stacked = jnp.concatenate([images] + [jnp.flip(images, axes) for axes in flips])
    out = sliding_window_inference(fn, stacked, roi, overlap, "gaussian", batch_size)
    copies = [out[:b]] + [jnp.flip(out[(i + 1) * b:(i + 2) * b], axes) for i, axes in enumerate(flips)]
    return jnp.stack(copies) if members else sum(copies[1:], copies[0]) / (1 + len(flips))


_WINDOWED = jax.jit(_windowed, static_argnums=(0, 1, 5, 6, 7, 8, 9))


def _hashable(model) -> bool:
    """Whether ``model`` can be a static jit argument (a module with dict-valued fields cannot)."""
    try:
        hash(model)
    except TypeError:
        return False
    return True


def _bind(fn, model):
    if not _hashable(model):  # one program per Predictor
        return jax.jit(functools.partial(fn, model))
    return functools.partial(_jitted(fn), model)


class Predictor:
    """``model`` + ``variables`` + ``task``: labels and probabilities for any number of cases.

    ``predict`` gives label maps ``[N, *S]`` (segmentation, instance) or classes ``[N]`` (outcome);
    ``predict_proba`` the class probabilities (``[N, *S, K]`` or ``[N, K]``); ``iter_proba`` streams
    ``(start, proba)`` per batch so a whole split's probabilities never need to be held at once.
    """

    def __init__(self, model, variables, task, batch_size: int = 8):
        self.model, self.variables, self.task = model, variables, task
        self.batch_size = int(batch_size)
        self._labels = _bind(task.predict, model)
        if getattr(task, "proba_from_labels", False):
            # Hard outputs (Mask R-CNN's thresholded detections): one-hot of the labels program on the host,
            # so the detector compiles once for both.
            k = int(model.num_classes)
            self._proba = lambda v, b: np.eye(k, dtype=np.float32)[np.asarray(self._labels(v, b))]
        else:
            self._proba = _bind(task.predict_proba, model)

    def compile(self, example_batch, proba: bool = False) -> None:
        """Compile ahead of time for batches shaped like ``example_batch`` (multi-process runs compile first,
        then meet, so no process waits at a collective for another's compiler)."""
        compiled = jax.jit(functools.partial(self.task.predict_proba if proba else self.task.predict, self.model)) \
            .lower(self.variables, example_batch).compile()
        if proba:
            self._proba = compiled
        else:
            self._labels = compiled

    def sliding_window_proba(self, images, roi_size, *, overlap: float = 0.5, batch_size: int = 4,
                             tta: bool = False, temperature: float | None = None,
                             members: bool = False) -> np.ndarray:
        """Probabilities ``[B, *S, K]`` of images ``[B, *S, C]`` of any size: Gaussian-weighted windows of
        ``roi_size`` (the training patch), optionally averaged over every mirroring of the spatial axes.

        ``temperature``: each window's logits divided by it before the softmax (:func:`tempered`; ``None``: the
        model's own softmax). ``members``: the ensemble's members instead of their mean, ``[M, B, *S, K]`` (the
        unmirrored prediction first, then one per mirroring; ``M = 1`` without ``tta``)."""
        self._check(images)
        images = jnp.asarray(images, jnp.float32)
        roi = tuple(int(r) for r in roi_size)
        flips = flip_axes(images.ndim - 2) if tta else ()
        if temperature is not None and not float(temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        temp = None if temperature is None else jnp.float32(temperature)
        if _hashable(self.model):
            out = _WINDOWED(self.task.predict_proba, self.model, self.variables, images, temp, roi, float(overlap),
                            int(batch_size), flips, bool(members))
        else:  # a module with unhashable fields: this call's own program
            out = jax.jit(functools.partial(_windowed, self.task.predict_proba, self.model),
                          static_argnums=(3, 4, 5, 6, 7))(self.variables, images, temp, roi, float(overlap),
                                                          int(batch_size), flips, bool(members))
        return np.asarray(out, np.float32)

    def _check(self, inputs):
        if isinstance(inputs, Mapping):
            bad = [k for k, v in inputs.items() if not np.all(np.isfinite(np.asarray(v, np.float32)))]
        else:
            bad = [] if np.all(np.isfinite(np.asarray(inputs, np.float32))) else ["image"]
        if bad:
            raise ValueError(f"inputs contain NaN or Inf ({', '.join(bad)}); clean or impute them first")

    def _run(self, fn, inputs, batch_size):
        self._check(inputs)
        for start, n, batch in padded_batches(inputs, batch_size or self.batch_size):
            yield start, np.asarray(fn(self.variables, batch))[:n]

    def iter_predict(self, inputs, batch_size: int | None = None):
        """``(start, labels)`` per batch."""
        return self._run(self._labels, inputs, batch_size)

    def iter_proba(self, inputs, batch_size: int | None = None):
        """``(start, probabilities)`` per batch."""
        return self._run(self._proba, inputs, batch_size)

    def _collect(self, fn, inputs, batch_size):
        parts = [out for _, out in self._run(fn, inputs, batch_size)]
        if not parts:  # no cases: the program's output for one padded batch of zeros, with no rows kept
            size = int(batch_size or self.batch_size)

            def zeros(a):
                return np.zeros((size, *np.shape(a)[1:]), np.float32)

            batch = {k: zeros(v) for k, v in inputs.items()} if isinstance(inputs, Mapping) else zeros(inputs)
            parts = [np.asarray(fn(self.variables, batch))[:0]]
        return np.concatenate(parts)

    def predict(self, inputs, batch_size: int | None = None) -> np.ndarray:
        """Labels of every case (an empty batch gives an empty array of the labels' shape and dtype)."""
        return self._collect(self._labels, inputs, batch_size)

    def predict_proba(self, inputs, batch_size: int | None = None) -> np.ndarray:
        """Probabilities of every case (an empty batch: ``[0, ..., K]``)."""
        return self._collect(self._proba, inputs, batch_size).astype(np.float32)
