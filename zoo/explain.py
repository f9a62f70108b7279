"""The explainers: Grad-CAM for segmentation models, SHAP for the tabular/EHR part.

They live in ``zoo`` beside the models whose internals they read (DESIGN.md); the clinician application
(``zoo.app``), the outcome report and ``python -m eval.interpret`` (Grad-CAM overlays of a run's validation
cases) call them. The pictures are written atomically (``data_pipelines.atomic``).

**Seg-Grad-CAM** (Selvaraju et al. 2017; for segmentation Vinogradova et al. 2020): the score
is the sum of class ``c``'s logits over a region ``R`` (default: the voxels predicted as
``c``); with ``A`` the activations of a chosen layer ``[B, *S', C']``,
``w = mean_{S'} dScore/dA`` and ``CAM = ReLU(sum_c' w_c' A_c')``, resized (linear) to the input
grid and scaled to ``[0, 1]`` per case. The layer is found by its module path (``"enc2"``,
``"dec0/conv1"``) with ``flax.linen.intercept_methods``: its output gets a zero perturbation
whose gradient is ``dScore/dA``, so models need no changes.

**SHAP** for the covariates (age, sex, comorbidities…) of an outcome model: any
``f(X [N, F]) -> [N]`` is explained with the ``shap`` library against an independent masker
(permutation explainer by default, exact Shapley values on request); ``shap_importance_plot``
draws the mean |SHAP| bar chart.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.atomic import atomic_path

__all__ = ["layer_names", "gradcam", "gradcam_overlay", "shap_tabular", "shap_importance_plot"]


def _path(module) -> str:
    scope = getattr(module, "scope", None)
    return "/".join(scope.path) if scope is not None else ""


def layer_names(model, variables, images, inputs: dict | None = None) -> list[str]:
    """Module paths whose ``__call__`` returns one array, usable as Grad-CAM layers (``inputs``: further keyword
    inputs of ``model.apply``, as in :func:`gradcam`)."""
    import flax.linen as nn
    import jax

    names = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and hasattr(out, "shape") and _path(context.module):
            names.append(_path(context.module))
        return out

    def run(x, kw):
        with nn.intercept_methods(interceptor):
            return model.apply(variables, x, **kw, train=False)

    jax.eval_shape(run, images, dict(inputs or {}))
    return list(dict.fromkeys(names))


def _apply_with_layer(model, variables, images, layer: str, eps, inputs=None):
    import flax.linen as nn

    store = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and _path(context.module) == layer and "act" not in store:
            if not hasattr(out, "shape"):
                raise ValueError(f"layer {layer!r} returns {type(out).__name__}, not one array")
            store["act"] = out
            if eps is not None:
                out = out + eps.astype(out.dtype)
        return out

    with nn.intercept_methods(interceptor):
        logits = model.apply(variables, images, **(inputs or {}), train=False)
    return logits, store.get("act")


def gradcam(model, variables, images, *, layer: str, target_class: int, region=None, normalize: bool = True,
            inputs: dict | None = None):
    """Seg-Grad-CAM maps ``[B, *S]`` in ``[0, 1]`` for ``images [B, *S, C]`` (2D or 3D, channels last).

    A classifier's logits ``[B, K]`` (e.g. the outcome net's) are explained by plain Grad-CAM: the score is
    the sum of class ``c``'s logits over the batch (each case's map depends on its own logit only).

    Args:
      layer: module path of the layer whose activations explain the output (see :func:`layer_names`).
      target_class: class ``c`` whose logits form the score.
      region: ``[B, *S]`` mask of the voxels whose class-``c`` logits are summed; default the
        voxels predicted as ``c`` (the whole image where none is).
      normalize: divide each case's map by its maximum (maps that are all zero stay zero).
      inputs: further keyword inputs of ``model.apply`` held fixed (e.g. ``{"covariates": [B, F]}``).
    """
    import jax
    import jax.numpy as jnp

    images = jnp.asarray(images, jnp.float32)
    if images.ndim < 3:
        raise ValueError(f"images must be [B, *S, C], got shape {images.shape}")
    spatial = images.shape[1:-1]
    inputs = {k: jnp.asarray(v) for k, v in (inputs or {}).items()}
    shape_logits, act_shape = jax.eval_shape(
        lambda x, kw: _apply_with_layer(model, variables, x, layer, None, kw), images, inputs)
    if act_shape is None:
        known = layer_names(model, variables, images, inputs)
        raise ValueError(f"no layer {layer!r} in the model; known layers: {', '.join(known)}")
    k = shape_logits.shape[-1]
    if not 0 <= int(target_class) < k:
        raise ValueError(f"target_class must be in [0, {k - 1}], got {target_class}")
    if len(act_shape.shape) != images.ndim:
        raise ValueError(f"layer {layer!r} output {act_shape.shape} is not a feature map [B, *S', C']")
    dense = len(shape_logits.shape) == images.ndim  # per-voxel logits [B, *S, K]; else a classifier's [B, K]
    if not dense and len(shape_logits.shape) != 2:
        raise ValueError(f"logits must be [B, *S, K] or [B, K], got {shape_logits.shape}")
    if region is not None and not dense:
        raise ValueError("region applies to per-voxel logits; this model's logits are [B, K]")
    if region is not None:
        region = jnp.asarray(region)
        if region.shape != images.shape[:-1]:
            raise ValueError(f"region must be [B, *S] = {images.shape[:-1]}, got {region.shape}")
    c = int(target_class)

    def core(variables, images, region, inputs):
        if not dense:
            region = jnp.ones(images.shape[:1], jnp.float32)
        elif region is None:  # the voxels predicted as c; the whole image where there are none
            logits, _ = _apply_with_layer(model, variables, images, layer, None, inputs)
            region = jnp.argmax(logits, -1) == c
            has = jnp.any(region.reshape(region.shape[0], -1), axis=1)
            region = jnp.where(has.reshape((-1,) + (1,) * len(spatial)), region, True)
        region = region.astype(jnp.float32)

        def score(eps):
            logits, act = _apply_with_layer(model, variables, images, layer, eps, inputs)
            return jnp.sum(logits[..., c] * region), act

        grads, act = jax.grad(score, has_aux=True)(jnp.zeros(act_shape.shape, act_shape.dtype))
        axes = tuple(range(1, act.ndim - 1))
        weights = jnp.mean(grads.astype(jnp.float32), axis=axes, keepdims=True)
        cam = jax.nn.relu(jnp.sum(weights * act.astype(jnp.float32), axis=-1))
        if cam.shape[1:] != spatial:
            cam = jax.image.resize(cam, (cam.shape[0], *spatial), "linear")
        if normalize:
            peak = jnp.max(cam.reshape(cam.shape[0], -1), axis=1).reshape((-1,) + (1,) * len(spatial))
            cam = jnp.where(peak > 0, cam / jnp.where(peak > 0, peak, 1.0), 0.0)
        return cam

    cam = jax.jit(core)(variables, images, region, inputs)  # one compile instead of op-by-op dispatch
    return np.asarray(cam)


def gradcam_overlay(image, cam, path: str, *, title: str = "Grad-CAM", mask=None, channel: int = 0,
                    index: int | None = None) -> str:
    """Save image channel ``channel`` with the CAM as a heat map (and an optional mask contour) to ``path``;
    3D: the slice ``index`` of the first axis (default: where the CAM is largest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image = np.asarray(image)
    if not 0 <= int(channel) < image.shape[-1]:
        raise ValueError(f"channel must be in [0, {image.shape[-1] - 1}], got {channel}")
    img = image[..., int(channel)]
    cam = np.asarray(cam)
    if img.shape != cam.shape:
        raise ValueError(f"image {img.shape} and cam {cam.shape} must have the same spatial shape")
    if img.ndim == 3:  # 3D: the slice where the CAM is largest
        k = int(np.argmax(cam.reshape(cam.shape[0], -1).max(1))) if index is None else int(index)
        if not 0 <= k < img.shape[0]:
            raise ValueError(f"index must be in [0, {img.shape[0] - 1}], got {index}")
        img, cam = img[k], cam[k]
        mask = None if mask is None else np.asarray(mask)[k]
    fig, ax = plt.subplots(figsize=(3.5, 3.5))
    ax.imshow(img, cmap="gray")
    ax.imshow(cam, cmap="jet", alpha=0.4, vmin=0, vmax=1)
    if mask is not None and np.asarray(mask).any() and not np.asarray(mask).all():
        ax.contour(np.asarray(mask, float), levels=[0.5], colors="white", linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path


def shap_tabular(predict_fn, background, X, *, feature_names=None, algorithm: str = "permutation",
                 max_background: int = 100, max_evals: int | None = None, seed: int = 0):
    """SHAP values of ``predict_fn(X [N, F]) -> [N]`` for the rows of ``X`` (a ``shap.Explanation``).

    ``background`` ``[M, F]`` is the reference population (e.g. training covariates); values
    satisfy ``base_values + values.sum(-1) == predict_fn(X)``. ``algorithm``: ``permutation``
    (antithetic permutations; exact for additive models, additivity always holds) or
    ``exact`` (all coalitions; its numba kernels take ~15 s CPU to compile once per process).
    """
    if algorithm not in ("permutation", "exact"):
        raise ValueError(f"algorithm must be permutation or exact, got {algorithm!r}")
    import shap

    bg = np.asarray(background, np.float64)
    x = np.asarray(X, np.float64)
    if bg.ndim != 2 or x.ndim != 2 or bg.shape[1] != x.shape[1]:
        raise ValueError(f"background [M, F] and X [N, F] must share F; got {bg.shape} and {x.shape}")
    if not (np.isfinite(bg).all() and np.isfinite(x).all()):
        raise ValueError("background and X must be finite (impute missing covariates first)")
    if feature_names is not None and len(feature_names) != x.shape[1]:
        raise ValueError(f"feature_names has {len(feature_names)} names for {x.shape[1]} features")
    masker = shap.maskers.Independent(bg, max_samples=max_background)

    def f(z):
        out = np.asarray(predict_fn(np.asarray(z, np.float64)), np.float64)
        return out.reshape(len(z))

    explainer = shap.Explainer(f, masker, algorithm=algorithm, feature_names=feature_names, seed=seed)
    kwargs = {} if algorithm == "exact" else {"max_evals": max_evals or max(2 * x.shape[1] + 1, 500)}
    return explainer(x, silent=True, **kwargs)


def shap_importance_plot(explanation, path: str, *, title: str = "mean |SHAP|") -> str:
    """Bar chart of the mean absolute SHAP value per feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = np.abs(np.asarray(explanation.values)).mean(0)
    names = explanation.feature_names or [f"x{i}" for i in range(len(vals))]
    order = np.argsort(vals)
    fig, ax = plt.subplots(figsize=(4.5, 0.35 * len(vals) + 1.2))
    ax.barh([names[i] for i in order], vals[order])
    ax.set_xlabel("mean |SHAP value|")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return path
