"""Mask R-CNN (He et al. 2017) in Flax linen with static shapes under ``jit``; registered as ``mask_rcnn``.

Pipeline: encoder (strides 2..32) → FPN P2..P5 → RPN over one anchor size per level × aspect
ratios → top-k + NMS proposals (fixed count, validity mask) → multi-level RoIAlign → box/class
head and mask head (``2 * mask_pool`` square masks, one per class).

Methods (``model.apply(variables, ..., method=...)``):
  * ``__call__(x, train=False)`` → dict of detections: ``boxes [B, D, 4]`` (y1, x1, y2, x2 pixels),
    ``scores [B, D]``, ``classes [B, D]`` (1..K-1), ``valid [B, D]``, ``masks [B, D, H, W]``
    (probabilities pasted to image size), ``semantic [B, H, W]`` int32 (union per class).
  * ``losses(x, instances, labels, key, train=True)`` → dict of scalar losses (``loss`` = their sum);
    ground truth is derived from ``instances [B, H, W]`` with at most ``max_instances`` objects.
  * ``semantic_labels(x)`` → ``[B, H, W]`` int32.

2D only: RoIAlign, anchors and mask pasting are written for 2D boxes; ``spatial_dims=3`` raises.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kernels.boxes import clip_boxes, decode_boxes, encode_boxes, make_anchors
from kernels.nms import nms
from kernels.roi_align import roi_align
from zoo.cards import ModelCard
from zoo.layers import check_common, check_input
from zoo.mask_rcnn import losses as L
from zoo.mask_rcnn.backbone import FPN, make_encoder
from zoo.mask_rcnn.heads import BoxHead, MaskHead, RPNHead, multilevel_roi_align
from zoo.mask_rcnn.postprocess import BOX_WEIGHTS, paste_masks, select_detections, semantic_map
from zoo.mask_rcnn.targets import gt_from_instances, roi_targets, rpn_targets
from zoo.registry import register

__all__ = ["MaskRCNN", "mask_rcnn", "STRIDES"]

STRIDES = (4, 8, 16, 32)  # P2..P5


class MaskRCNN(nn.Module):
    """Mask R-CNN with a ResNet-FPN backbone; see the module docstring for the methods."""

    spatial_dims: int = 2
    in_channels: int = 1
    num_classes: int = 2
    dtype: Any = None
    encoder: str = "tiny"
    encoder_width: int = 16
    encoder_kwargs: Any = None
    norm: str = "group"
    fpn_channels: int = 64
    anchor_sizes: Sequence[float] = (8.0, 16.0, 32.0, 64.0)
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)
    rpn_pre_nms_topk: int = 256
    rpn_post_nms_topk_train: int = 64
    rpn_post_nms_topk_test: int = 32
    rpn_nms_threshold: float = 0.7
    rpn_batch_per_image: int = 128
    rpn_positive_fraction: float = 0.5
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    roi_batch_per_image: int = 64
    roi_positive_fraction: float = 0.25
    roi_fg_iou: float = 0.5
    box_head_dim: int = 256
    box_pool: int = 7
    mask_pool: int = 14
    mask_head_dim: int = 64
    mask_head_convs: int = 4
    sampling_ratio: int = 2
    canonical_box_size: float = 224.0
    canonical_level: int = 4
    roi_levels: int = 4
    max_instances: int = 8
    detections_per_image: int = 16
    score_threshold: float = 0.05
    box_nms_threshold: float = 0.5
    mask_threshold: float = 0.5
    semantic_score_threshold: float = 0.5

    def __post_init__(self):
        check_common("mask_rcnn", self.spatial_dims, self.in_channels, self.num_classes, self.norm)
        if self.spatial_dims != 2:
            raise ValueError(f"mask_rcnn: only spatial_dims=2 is implemented (2D RoIAlign/anchors), "
                             f"got spatial_dims={self.spatial_dims}")
        if self.num_classes < 2:
            raise ValueError(f"mask_rcnn: num_classes counts background and must be >= 2, got {self.num_classes}")
        if len(self.anchor_sizes) != len(STRIDES) or min(self.anchor_sizes) <= 0:
            raise ValueError(f"mask_rcnn: anchor_sizes needs {len(STRIDES)} positive sizes (P2..P5), "
                             f"got {tuple(self.anchor_sizes)}")
        if not self.aspect_ratios or min(self.aspect_ratios) <= 0:
            raise ValueError(f"mask_rcnn: aspect_ratios must be positive, got {tuple(self.aspect_ratios)}")
        for name in ("rpn_pre_nms_topk", "rpn_post_nms_topk_train", "rpn_post_nms_topk_test", "rpn_batch_per_image",
                     "roi_batch_per_image", "max_instances", "detections_per_image", "sampling_ratio",
                     "box_pool", "mask_pool", "fpn_channels", "encoder_width", "roi_levels"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"mask_rcnn: {name} must be a positive int, got {v!r}")
        if self.roi_levels > len(STRIDES):
            raise ValueError(f"mask_rcnn: roi_levels must be 1..{len(STRIDES)} (P2..P5), got {self.roi_levels}")
        if self.roi_batch_per_image > self.rpn_post_nms_topk_train + self.max_instances:
            raise ValueError(f"mask_rcnn: roi_batch_per_image={self.roi_batch_per_image} exceeds the candidates "
                             f"(rpn_post_nms_topk_train + max_instances = "
                             f"{self.rpn_post_nms_topk_train + self.max_instances})")
        for name in ("rpn_positive_fraction", "roi_positive_fraction", "rpn_fg_iou", "roi_fg_iou"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"mask_rcnn: {name} must be in (0, 1], got {getattr(self, name)!r}")
        super().__post_init__()

    def setup(self):
        kwargs = dict(self.encoder_kwargs) if self.encoder_kwargs else None
        self.backbone = make_encoder(self.encoder, self.encoder_width, self.norm, self.dtype, kwargs)
        self.fpn = FPN(self.fpn_channels, dtype=self.dtype)
        self.rpn = RPNHead(len(self.aspect_ratios), dtype=self.dtype)
        self.box_head = BoxHead(self.num_classes, self.box_head_dim, dtype=self.dtype)
        self.mask_head = MaskHead(self.num_classes, self.mask_head_dim, self.mask_head_convs, dtype=self.dtype)

    # ----------------------------------------------------------------- shared stages
    def _anchors(self, image_shape):
        h, w = image_shape
        return jnp.asarray(np.concatenate([
            make_anchors((h // s, w // s), s, (float(size),), tuple(float(r) for r in self.aspect_ratios))
            for s, size in zip(STRIDES, self.anchor_sizes)]))

    def _pyramid(self, x, train):
        check_input("mask_rcnn", x, 2, self.in_channels, divisor=STRIDES[-1])
        feats = self.backbone(x, train)
        if len(feats) != 5:
            raise ValueError(f"mask_rcnn: encoder {self.encoder!r} must return 5 feature maps (strides 2..32), "
                             f"got {len(feats)}")
        return self.fpn(list(feats[1:]))

    def _proposals(self, anchors, logits, deltas, image_shape, post_topk: int):
        """Top-k by objectness → decode → clip → NMS → ``post_topk`` boxes + validity, per image."""
        k = min(self.rpn_pre_nms_topk, anchors.shape[0])
        logits, deltas = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas)

        def one(lg, dl):
            s, idx = jax.lax.top_k(lg, k)
            boxes = clip_boxes(decode_boxes(anchors[idx], dl[idx]), *image_shape)
            ok = ((boxes[:, 2] - boxes[:, 0]) > 1e-3) & ((boxes[:, 3] - boxes[:, 1]) > 1e-3)
            keep, valid = nms(boxes, s, self.rpn_nms_threshold, post_topk, valid=ok)
            return boxes[keep], valid

        return jax.vmap(one)(logits, deltas)

    def _pool(self, feats, boxes, size):
        n = self.roi_levels
        return multilevel_roi_align(feats[:n], STRIDES[:n], boxes, size, self.sampling_ratio,
                                    self.canonical_box_size, self.canonical_level)

    def _box_head(self, feats, rois):
        b, r = rois.shape[:2]
        logits, deltas = self.box_head(self._pool(feats, rois, self.box_pool).reshape(b * r, -1))
        return logits.reshape(b, r, -1), deltas.reshape(b, r, self.num_classes, 4)

    def _mask_head(self, feats, rois):
        b, r = rois.shape[:2]
        pooled = self._pool(feats, rois, self.mask_pool)
        out = self.mask_head(pooled.reshape((b * r,) + pooled.shape[2:]))
        return out.reshape((b, r) + out.shape[1:])  # [B, R, m, m, K]

    # ----------------------------------------------------------------- inference
    def __call__(self, x, train: bool = False):
        image_shape = x.shape[1:3]
        feats = self._pyramid(x, train)
        logits, deltas = self.rpn(feats)
        props, props_valid = self._proposals(self._anchors(image_shape), logits, deltas, image_shape,
                                             self.rpn_post_nms_topk_test)
        cls_logits, box_deltas = self._box_head(feats, props)
        boxes, scores, classes, valid = jax.vmap(
            lambda p, v, lg, d: select_detections(p, v, lg, d, image_shape, self.score_threshold,
                                                  self.box_nms_threshold, self.detections_per_image))(
            props, props_valid, cls_logits, box_deltas)
        mask_logits = self._mask_head(feats, boxes)
        m = jnp.take_along_axis(mask_logits, classes[:, :, None, None, None], axis=-1)[..., 0]
        pasted = jax.vmap(lambda mk, bx: paste_masks(jax.nn.sigmoid(mk), bx, image_shape))(m, boxes)
        pasted = pasted * valid[:, :, None, None].astype(pasted.dtype)
        semantic = jax.vmap(lambda p, s, c, v: semantic_map(p, s, c, v, self.semantic_score_threshold,
                                                            self.mask_threshold))(pasted, scores, classes, valid)
        return {"boxes": boxes, "scores": scores, "classes": classes, "valid": valid, "masks": pasted,
                "semantic": semantic}

    def semantic_labels(self, x):
        return self(x, train=False)["semantic"]

    # ----------------------------------------------------------------- training
    def losses(self, x, instances, labels, key, train: bool = True):
        image_shape = x.shape[1:3]
        if instances.shape != x.shape[:3]:
            raise ValueError(f"mask_rcnn: instances must be [B, H, W] = {tuple(x.shape[:3])}; "
                             f"got {tuple(instances.shape)}")
        gt_boxes, gt_classes, gt_masks, gt_valid = gt_from_instances(
            instances.astype(jnp.int32), labels.astype(jnp.int32), self.max_instances, self.num_classes)
        feats = self._pyramid(x, train)
        logits, deltas = self.rpn(feats)
        anchors = self._anchors(image_shape)
        if self.rpn_batch_per_image > anchors.shape[0]:
            raise ValueError(f"mask_rcnn: rpn_batch_per_image={self.rpn_batch_per_image} exceeds the "
                             f"{anchors.shape[0]} anchors of a {tuple(image_shape)} image")
        b = x.shape[0]
        k_rpn, k_roi = jax.random.split(key)

        def rpn_one(k, gb, gv):
            pos, neg, idx = rpn_targets(k, anchors, gb, gv, self.rpn_batch_per_image, self.rpn_positive_fraction,
                                        self.rpn_fg_iou, self.rpn_bg_iou)
            return pos, neg, encode_boxes(anchors, gb[idx])

        pos, neg, rpn_deltas_t = jax.vmap(rpn_one)(jax.random.split(k_rpn, b), gt_boxes, gt_valid)
        rpn_cls, rpn_box = L.rpn_losses(logits, deltas, pos, neg, rpn_deltas_t)

        props, props_valid = self._proposals(anchors, logits, deltas, image_shape, self.rpn_post_nms_topk_train)

        # roi_targets puts the (at most num_fg) foreground RoIs first: the mask head only sees those.
        num_fg = max(1, int(self.roi_batch_per_image * self.roi_positive_fraction))

        def roi_one(k, p, pv, gb, gc, gv, gm):
            rois, valid, fg, cls, matched = roi_targets(k, p, pv, gb, gc, gv, self.roi_batch_per_image,
                                                        self.roi_positive_fraction, self.roi_fg_iou)
            box_t = encode_boxes(rois, gb[matched], BOX_WEIGHTS)
            m = 2 * self.mask_pool
            crops = roi_align(jnp.moveaxis(gm, 0, -1).astype(jnp.float32), rois[:num_fg], m, 2)  # [F, m, m, M]
            mask_t = jnp.take_along_axis(crops, matched[:num_fg, None, None, None], axis=-1)[..., 0] >= 0.5
            return rois, valid, fg, cls, box_t, mask_t

        rois, valid, fg, cls, box_t, mask_t = jax.vmap(roi_one)(
            jax.random.split(k_roi, b), props, props_valid, gt_boxes, gt_classes, gt_valid, gt_masks)
        rois = jax.lax.stop_gradient(rois)
        cls_logits, box_deltas = self._box_head(feats, rois)
        n = b * self.roi_batch_per_image
        box_cls, box_reg = L.box_losses(cls_logits.reshape(n, -1), box_deltas.reshape(n, self.num_classes, 4),
                                        cls.reshape(n), valid.reshape(n), fg.reshape(n), box_t.reshape(n, 4))
        mask_logits = self._mask_head(feats, rois[:, :num_fg])
        nf = b * num_fg
        mask = L.mask_loss(mask_logits.reshape((nf,) + mask_logits.shape[2:]), cls[:, :num_fg].reshape(nf),
                           fg[:, :num_fg].reshape(nf), mask_t.reshape((nf,) + mask_t.shape[2:]))
        terms = {"rpn_cls": rpn_cls, "rpn_box": rpn_box, "box_cls": box_cls, "box_reg": box_reg, "mask": mask}
        terms["loss"] = sum(terms.values())
        terms["num_gt"] = gt_valid.sum().astype(jnp.float32) / b
        terms["num_fg_rois"] = fg.sum().astype(jnp.float32) / b
        return terms


CARD = ModelCard(
    name="mask_rcnn",
    summary="Mask R-CNN: ResNet-FPN, RPN, RoIAlign, box/class and 28x28 mask heads; static shapes under jit",
    reference="He et al., Mask R-CNN, ICCV 2017; Lin et al., Feature Pyramid Networks, CVPR 2017",
    spatial_dims=(2,),
    input_contract="x: [B, H, W, C] float32, channels-last, H and W divisible by 32; training batches also "
                   "carry instances [B, H, W] int32 (0 = none, 1..max_instances object ids)",
)


@register("mask_rcnn", card=CARD, task="instance", summary=CARD.summary)
def mask_rcnn(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype=None, **cfg) -> MaskRCNN:
    """Build a :class:`MaskRCNN`; ``cfg`` sets any of its fields (lists become tuples)."""
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}
    return MaskRCNN(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, dtype=dtype, **cfg)
