"""BraTS in 3D: ``paper_unet_brats``'s U-Net, loss, optimiser and augmentation on 3D patches at the plan's spacing
(``--config=brats3d``; ``eval.studies.brats_recipe --recipes paper_unet_brats,brats3d`` compares the two).

Patch training (``data_pipelines.sources``): each case cropped to the brain (``data.crop=nonzero``), normalised
per channel over the brain (the plan's ``zscore_fg``, nnU-Net's MR scheme) at the plan's spacing (1 mm, the data's
own), random 64^3 patches with a third centred on tumour (nnU-Net's oversampling), batch 2. nnU-Net's plan for
these cases is a 128^3 patch; 64^3 is what a CPU budget of minutes per fold can afford (docs/brats.md). Prediction
(``zoo.prediction``) slides Gaussian-weighted 64^3 windows over the whole preprocessed volume.
"""

from __future__ import annotations

from zoo.configs import paper


def get_config():
    c = paper.get_config("unet_brats")
    c.data.spatial_dims = 3
    c.data.patch_size = (64, 64, 64)
    c.data.image_size = (64, 64, 64)  # unused by patch training of real cases (they keep the plan's grid)
    c.data.crop = "nonzero"
    c.data.modality = "MR"
    c.data.samples_per_epoch = 512
    c.data.oversample_foreground = 1 / 3
    c.data.val_samples = 4
    c.train.batch_size = 2
    c.train.steps = 1000  # a cap: eval.studies.brats_recipe trains by time (train.time_limit_s) within it
    return c
