"""Multimodal surgical-outcome model: preoperative image + covariates (EHR) → outcome logits.

``OutcomeNet(x: [B, *S, C], covariates: [B, F], train) -> logits [B, K]`` (``K = num_classes``;
``K = 1`` is a single binary logit, ``K >= 2`` are softmax classes). ``S`` has 2 or 3 entries.

Structure (the reference study: "predict surgical outcomes from preoperative images combined
with EHR data (age, sex, comorbidities), using transfer learning"):

* image branch: an encoder returning feature maps at increasing strides, global pooling of the
  deepest ``pool_levels`` maps (average, or average + max), concatenated. ``encoder="unet"`` is
  :class:`zoo.models.unet.UNetEncoder`, the U-Net's own contracting path
  (``enc0`` … ``enc{depth-1}``), so a U-Net trained for segmentation transfers into it with
  :func:`transfer_unet_encoder`; any other name goes to ``zoo.encoders.get_encoder`` (ResNet/VGG
  backbones with features at strides 2..32). ``freeze_encoder`` stops gradients into it
  (linear probing / feature extraction).
* covariates branch: an MLP on the covariates (``data_pipelines.covariates.CovariateEncoder`` encodes them;
  its layers keep their ``ehr*`` names so saved checkpoints load).
* fusion: ``concat`` (late fusion), ``gated`` (a learned sigmoid gate weighs the two
  embeddings per feature), or ``film`` (the covariates scale and shift the image embedding,
  FiLM, Perez et al. 2018).
* head: MLP → ``num_classes`` logits, float32.

``modalities`` = ``"image"`` or ``"ehr"`` (covariates only) builds the single-modality ablations of the same
net (the unused input may then be ``None``). The outcome home (:mod:`zoo.outcome`) trains it: classification
(``outcome_net``, task ``outcome``) and survival (``outcome_net_survival``, task ``survival``) targets.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from zoo import layers
from zoo.cards import ModelCard
from zoo.encoders import get_encoder
from zoo.models.unet import UNetEncoder
from zoo.registry import register

__all__ = ["OutcomeNet", "transfer_unet_encoder", "FUSIONS", "MODALITIES"]

FUSIONS = ("concat", "gated", "film")
MODALITIES = ("both", "image", "ehr")
POOLS = ("avg", "avgmax")


def _external_encoder(name: str, cfg: dict, dtype):
    cfg = dict(cfg)
    if dtype is not None:
        cfg.setdefault("dtype", dtype)
    cfg.setdefault("name", "encoder")  # same param path as the built-in encoder
    return get_encoder(name, **cfg)


class OutcomeNet(nn.Module):
    """Image + covariates fusion classifier.

    Attributes:
      spatial_dims / in_channels: image contract ``[B, *S, C]``.
      num_classes: ``K`` logits (1: one binary logit; 2+: softmax classes).
      num_covariates: ``F`` covariate features per patient.
      encoder: ``"unet"`` (built in) or a ``zoo.encoders`` name (``resnet18`` …).
      encoder_kwargs: extra arguments of the encoder (built-in: ``features``, ``depth``,
        ``norm``, ``max_features``; external: whatever ``get_encoder`` accepts).
      pool: ``avg`` (global average) or ``avgmax`` (average and max, concatenated).
      pool_levels: how many of the deepest feature maps are pooled and concatenated.
      freeze_encoder: no gradient into the encoder (transfer learning by feature extraction).
      ehr_hidden: widths of the covariate MLP.
      fusion: ``concat`` | ``gated`` | ``film``.
      embed_dim: width of each modality's embedding before fusion.
      head_hidden: width of the hidden layer of the head (0: linear head).
      dropout: dropout before the head.
      modalities: ``both`` | ``image`` | ``ehr`` (single-modality ablations).
      dtype: compute dtype (params stay float32; logits are float32).
    """

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    num_covariates: int = 7
    encoder: str = "unet"
    encoder_kwargs: Any = None
    pool: str = "avg"
    pool_levels: int = 1
    freeze_encoder: bool = False
    ehr_hidden: Sequence[int] = (32, 32)
    fusion: str = "concat"
    embed_dim: int = 32
    head_hidden: int = 32
    dropout: float = 0.1
    modalities: str = "both"
    dtype: Any = None

    def __post_init__(self):
        layers.check_common("outcome_net", self.spatial_dims, self.in_channels, self.num_classes)
        if not isinstance(self.num_covariates, int) or self.num_covariates < 0:
            raise ValueError(f"outcome_net: num_covariates must be an int >= 0, got {self.num_covariates!r}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"outcome_net: fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.modalities not in MODALITIES:
            raise ValueError(f"outcome_net: modalities must be one of {MODALITIES}, got {self.modalities!r}")
        if self.pool not in POOLS:
            raise ValueError(f"outcome_net: pool must be one of {POOLS}, got {self.pool!r}")
        if not isinstance(self.pool_levels, int) or self.pool_levels < 1:
            raise ValueError(f"outcome_net: pool_levels must be a positive int, got {self.pool_levels!r}")
        if self.modalities != "image" and self.num_covariates < 1:
            raise ValueError(f"outcome_net: modalities={self.modalities!r} needs num_covariates >= 1, "
                             f"got {self.num_covariates}")
        if any(not isinstance(h, int) or h < 1 for h in self.ehr_hidden):
            raise ValueError(f"outcome_net: ehr_hidden must be positive ints, got {self.ehr_hidden!r}")
        if not isinstance(self.embed_dim, int) or self.embed_dim < 1:
            raise ValueError(f"outcome_net: embed_dim must be a positive int, got {self.embed_dim!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"outcome_net: dropout must be in [0, 1), got {self.dropout!r}")
        if self.encoder == "unet":
            kw = dict(self.encoder_kwargs or {})
            bad = sorted(set(kw) - {"features", "depth", "norm", "max_features"})
            if bad:
                raise ValueError(f"outcome_net: unknown encoder_kwargs {bad} for encoder 'unet' "
                                 f"(accepts features, depth, norm, max_features)")
            if kw.get("norm", "instance") not in layers.NORMS:
                raise ValueError(f"outcome_net: encoder norm must be one of {layers.NORMS}, got {kw['norm']!r}")
            if int(kw.get("depth", 4)) < self.pool_levels:
                raise ValueError(f"outcome_net: pool_levels={self.pool_levels} exceeds encoder depth "
                                 f"{kw.get('depth', 4)}")
        super().__post_init__()

    @property
    def uses_image(self) -> bool:
        return self.modalities in ("both", "image")

    @property
    def uses_covariates(self) -> bool:
        return self.modalities in ("both", "ehr")

    def _check(self, x, covariates):
        if self.uses_image:
            if x is None:
                raise ValueError("outcome_net: x (the image) is required unless modalities='ehr'")
            layers.check_input("outcome_net", x, self.spatial_dims, self.in_channels)
        if self.uses_covariates:
            if covariates is None:
                raise ValueError("outcome_net: covariates [B, F] are required unless modalities='image'")
            if covariates.ndim != 2 or covariates.shape[-1] != self.num_covariates:
                raise ValueError(f"outcome_net: expected covariates [B, {self.num_covariates}]; "
                                 f"got shape {tuple(covariates.shape)}")
            if x is not None and self.uses_image and covariates.shape[0] != x.shape[0]:
                raise ValueError(f"outcome_net: batch sizes differ: image {x.shape[0]}, covariates "
                                 f"{covariates.shape[0]}")
            # Values can be checked only outside jit; the task checks batches on the host as well.
            if not isinstance(covariates, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(covariates))):
                raise ValueError("outcome_net: covariates contain NaN or Inf; impute them first")

    def _image_embedding(self, x, train):
        x = x.astype(self.dtype or jnp.float32)
        if self.encoder == "unet":
            enc = UNetEncoder(**dict(self.encoder_kwargs or {}), dtype=self.dtype, name="encoder")
        else:
            enc = _external_encoder(self.encoder, dict(self.encoder_kwargs or {}), self.dtype)
        feats = enc(x, train)
        if len(feats) < self.pool_levels:
            raise ValueError(f"outcome_net: encoder {self.encoder!r} gives {len(feats)} feature maps, "
                             f"pool_levels={self.pool_levels}")
        pooled = []
        for f in feats[-self.pool_levels:]:
            axes = tuple(range(1, f.ndim - 1))
            f = f.astype(jnp.float32)
            pooled.append(f.mean(axis=axes))
            if self.pool == "avgmax":
                pooled.append(f.max(axis=axes))
        h = jnp.concatenate(pooled, axis=-1)
        if self.freeze_encoder:
            h = jax.lax.stop_gradient(h)
        return nn.relu(nn.Dense(self.embed_dim, name="image_proj")(h))

    def _ehr_embedding(self, covariates):
        h = covariates.astype(jnp.float32)
        for i, w in enumerate(self.ehr_hidden):
            h = nn.relu(nn.Dense(w, name=f"ehr{i}")(h))
        return nn.relu(nn.Dense(self.embed_dim, name="ehr_proj")(h))

    @nn.compact
    def __call__(self, x, covariates=None, train: bool = False):
        """``x: [B, *S, C]``, ``covariates: [B, F]`` → logits ``[B, num_classes]`` float32."""
        self._check(x, covariates)
        img = self._image_embedding(x, train) if self.uses_image else None
        ehr = self._ehr_embedding(covariates) if self.uses_covariates else None
        if img is None or ehr is None:
            h = img if ehr is None else ehr
        elif self.fusion == "concat":
            h = jnp.concatenate([img, ehr], axis=-1)
        elif self.fusion == "gated":
            gate = nn.sigmoid(nn.Dense(self.embed_dim, name="gate")(jnp.concatenate([img, ehr], axis=-1)))
            h = jnp.concatenate([gate * img + (1.0 - gate) * ehr, ehr], axis=-1)
        else:  # film: covariates modulate the image embedding, identity at initialisation
            gb = nn.Dense(2 * self.embed_dim, kernel_init=nn.initializers.zeros, name="film")(ehr)
            gamma, beta = jnp.split(gb, 2, axis=-1)
            h = jnp.concatenate([img * (1.0 + gamma) + beta, ehr], axis=-1)
        if self.dropout > 0:
            h = nn.Dropout(self.dropout, deterministic=not train)(h)
        if self.head_hidden:
            h = nn.relu(nn.Dense(self.head_hidden, name="head_hidden")(h))
        return nn.Dense(self.num_classes, name="head")(h).astype(jnp.float32)


def transfer_unet_encoder(params: dict, unet_params: dict) -> dict:
    """Copy a U-Net's contracting path (``enc0`` …) into ``params['encoder']`` of an OutcomeNet.

    Transfer learning from a segmentation model (e.g. ``zoo.train`` on the same image kind).
    Shapes must match (same ``features``/``depth``/``norm``/``in_channels``); raises
    ``ValueError`` naming the first mismatch. Returns new params; the inputs are not modified.
    """
    if "encoder" not in params:
        raise ValueError("params: no 'encoder' subtree (is this an OutcomeNet with encoder='unet'?)")
    enc = dict(params["encoder"])
    for name, sub in enc.items():
        if name not in unet_params:
            raise ValueError(f"unet_params: missing {name!r} (has {sorted(unet_params)})")
        for (pa, a), (pb, b) in zip(jax.tree_util.tree_leaves_with_path(sub),
                                    jax.tree_util.tree_leaves_with_path(unet_params[name])):
            if pa != pb or a.shape != b.shape:
                raise ValueError(f"unet_params[{name!r}]: {jax.tree_util.keystr(pb)} {tuple(b.shape)} does not "
                                 f"match encoder {jax.tree_util.keystr(pa)} {tuple(a.shape)}")
        enc[name] = jax.tree.map(jnp.asarray, unet_params[name])
    return {**params, "encoder": enc}


CARD = ModelCard(
    name="outcome_net",
    summary="Surgical-outcome classifier: image encoder + covariates MLP, concat/gated/FiLM fusion, 2D/3D",
    reference="Multimodal fusion of preoperative imaging and EHR covariates; FiLM: Perez et al., AAAI 2018, "
              "arXiv:1709.07871",
    input_contract="x: [B, *S, C] float32 channels-last (intensities normalised per channel); "
                   "covariates: [B, F] float32, finite (data_pipelines.covariates.CovariateEncoder; the phantom "
                   "cohort's: age standardised, sex one-hot, comorbidities 0/1, data_pipelines.ehr.COVARIATE_NAMES); "
                   "output: logits [B, K]",
    classes=("good", "adverse"),
)


@register("outcome_net", card=CARD, task="outcome", summary=CARD.summary)
def outcome_net(**cfg) -> OutcomeNet:
    return OutcomeNet(**cfg)


SURVIVAL_CARD = ModelCard(
    name="outcome_net_survival",
    summary="Time-to-event outcome net: covariates MLP (+ image encoder, fused), Cox (K=1) or logistic-hazard (K bins) "
            "head",
    reference="Cox partial likelihood with Efron ties (Efron, JASA 1977); discrete-time logistic hazard "
              "(Gensheimer & Narasimhan, PeerJ 2019); DeepSurv (Katzman et al., BMC Med Res Methodol 2018)",
    input_contract="covariates: [B, F] float32, finite (standardised); x: [B, *S, C] float32 unless "
                   "modalities='ehr'; output: log relative hazard [B, 1] or hazard logits [B, K]",
)


@register("outcome_net_survival", card=SURVIVAL_CARD, task="survival", summary=SURVIVAL_CARD.summary)
def outcome_net_survival(**cfg) -> OutcomeNet:
    """The outcome net with a survival head (``zoo.outcome.tasks``); cohorts have no image channels, so
    a covariates-only net built for them gets a nominal ``in_channels=1`` (the image branch does not exist)."""
    if cfg.get("modalities") == "ehr" and int(cfg.get("in_channels", 1)) < 1:
        cfg = {**cfg, "in_channels": 1}
    return OutcomeNet(**cfg)
