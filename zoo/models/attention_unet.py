"""Attention U-Net (Oktay et al. 2018): the zoo's U-Net with additive attention gates on every skip.

``x: [B, *S, C] -> logits [B, *S, K]``; same contract as ``unet`` (each spatial size divisible by
``2 ** (depth - 1)``). Defaults are smaller than ``unet``'s so the smoke recipe stays CPU-friendly;
scale up with ``features`` / ``depth``.
"""

from __future__ import annotations

from typing import Any

from zoo.cards import ModelCard
from zoo.models.unet import UNet
from zoo.registry import register

CARD = ModelCard(
    name="attention_unet",
    summary="Attention U-Net: U-Net whose skips pass through additive attention gates (Oktay 2018), 2D/3D",
    reference="Oktay et al. Attention U-Net: Learning Where to Look for the Pancreas. MIDL 2018. arXiv:1804.03999",
    input_contract="x: [B, *S, C] float32, channels-last; each spatial size divisible by 2**(depth-1); "
                   "intensities normalised per channel (z-score inside the foreground for MRI, HU window for CT)",
)


@register("attention_unet", card=CARD, summary=CARD.summary)
def attention_unet(spatial_dims: int = 2, in_channels: int = 1, num_classes: int = 2, dtype: Any = None,
                   features: int = 16, depth: int = 4, **cfg) -> UNet:
    cfg.setdefault("attention", True)
    return UNet(spatial_dims=spatial_dims, in_channels=in_channels, num_classes=num_classes, dtype=dtype,
                features=features, depth=depth, name_="attention_unet", **cfg)
