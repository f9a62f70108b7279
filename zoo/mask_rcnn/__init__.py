"""Mask R-CNN in JAX: ResNet-FPN backbone, RPN, RoIAlign, NMS, box/class/mask heads, static shapes.

Importing :mod:`zoo.mask_rcnn.model` registers ``mask_rcnn`` (task ``instance``).
"""

from zoo.mask_rcnn.model import MaskRCNN, mask_rcnn
from zoo.mask_rcnn.targets import gt_from_instances

__all__ = ["MaskRCNN", "mask_rcnn", "gt_from_instances"]
