"""Compiled ops (jax/numpy/scipy only; imports nothing else of ours)."""

from kernels.conv import conv_nd, conv_transpose_nd
from kernels.nms import nms
from kernels.roi_align import roi_align
from kernels.augment import DEFAULT_SEGMENTATION_SPEC, make_batch_pipeline, make_pipeline
from kernels.geometry import affine_transform, elastic_deform, elastic_displacement, warp
from kernels.intensity import (add_gaussian_noise, adjust_brightness_contrast, adjust_gamma, apply_bias_field,
                               clip_percentiles, ct_window, gaussian_blur, zscore)
from kernels.sliding_window import sliding_window_inference
from kernels.spatial import (center_crop_or_pad, crop_to_foreground, foreground_bbox, pad_to, random_crop_or_pad,
                             resize)

__all__ = ["conv_nd", "conv_transpose_nd", "nms", "roi_align",
           "make_pipeline", "make_batch_pipeline", "DEFAULT_SEGMENTATION_SPEC", "affine_transform", "elastic_deform",
           "elastic_displacement", "warp", "zscore", "clip_percentiles", "ct_window", "adjust_gamma",
           "add_gaussian_noise", "gaussian_blur", "adjust_brightness_contrast", "apply_bias_field",
           "sliding_window_inference", "resize", "pad_to", "center_crop_or_pad", "random_crop_or_pad",
           "foreground_bbox", "crop_to_foreground"]

from kernels.pooling import max_pool_with_argmax, max_unpool  # noqa: E402

__all__ += ["max_pool_with_argmax", "max_unpool"]
from kernels import interop  # noqa: E402  (DLPack wrappers: kernels.interop.elastic_deform(...) on torch/numpy arrays)
__all__ += ["interop"]
