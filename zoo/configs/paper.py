"""The reference study's comparison on the real samples: one recipe per architecture x data family.

``--config=paper_<arch>_<family>`` (``zoo.configs.load_config`` hands ``"<arch>_<family>"`` to
:func:`get_config`), e.g. ``python -m zoo.train --config=paper_unet_isic``. ``eval.studies.paper_table`` trains them
with patient-level k-fold CV and scores the held-out patients through ``zoo.prediction`` at native resolution.

* archs: ``cnn``, ``fcn``, ``unet``, ``segnet``, ``mask_rcnn`` (only where the family has instances: isic, lung),
  ``attention_unet``, ``deeplabv3plus``;
* families (``data_dir`` defaults to ``../shared/data/<folder>``, i.e. run from the repository root; override
  with ``--config.data.data_dir``):

  - ``brats``: 2D axial slices of FLAIR + T1c (``data.name=brats``), labels 0 / necrosis / oedema / enhancing
    (the table scores the whole tumour, labels > 0);
  - ``isic``: PH2 dermoscopy (``isic_like/``, ``data.name=isic``), lesion vs skin;
  - ``lung``: the LUNA16-style CT loader on ``lung_ct/`` (2 patients: 2 folds at most), lesion vs background;
  - ``cxr``: chest X-ray lung fields (``cxr/``, ``data.name=folder``, split by ``patientid``).

The study's training: augmentation (rotation, flip, scale, translation, elastic), Dice + CE, Adam. Sizes are CPU
sized (128^2 inputs, 16 base features): ``eval.studies.paper_table`` trains each fold by time
(``train.time_limit_s``) for its share of the budget, ``train.steps`` is only the cap.
"""

from __future__ import annotations

import ml_collections

from zoo.configs import default

ARCHS = ("cnn", "fcn", "unet", "segnet", "mask_rcnn", "attention_unet", "deeplabv3plus")
FAMILIES = ("brats", "isic", "lung", "cxr")
INSTANCE_FAMILIES = ("isic", "lung")  # one object class, connected lesions: Mask R-CNN's instances
FOLDERS = {"brats": "brats", "isic": "isic_like", "lung": "lung_ct", "cxr": "cxr"}

# The study's augmentation: rotation, flipping, scaling, translation, elastic deformation.
STUDY_AUGMENT = {
    "rotate": {"max_angle": 15.0, "p": 0.3},
    "flip": {"axes": (0, 1), "p": 0.5},
    "scale": {"range": (0.85, 1.2), "p": 0.3},
    "translate": {"max_voxels": 8.0, "p": 0.3},
    "elastic": {"alpha": 20.0, "sigma": 4.0, "p": 0.2},
}

MODEL_KWARGS = {
    "cnn": {"features": 16, "depth": 3, "norm": "batch"},
    "fcn": {"backbone": "vgg11", "features": 16, "variant": "8s", "norm": "batch"},
    "unet": {"features": 16, "depth": 4, "norm": "instance"},
    "attention_unet": {"features": 16, "depth": 4, "norm": "instance"},
    "segnet": {"features": 16, "depth": 4, "norm": "batch"},
    "deeplabv3plus": {"backbone": "resnet18", "features": 16, "output_stride": 16, "norm": "batch"},
    "mask_rcnn": {"encoder": "tiny", "encoder_width": 16, "fpn_channels": 64, "anchor_sizes": (16.0, 32.0, 64.0, 128.0),
                  "rpn_fg_iou": 0.5, "max_instances": 8, "detections_per_image": 16, "roi_levels": 1,
                  "roi_batch_per_image": 32, "box_head_dim": 128, "mask_head_convs": 2},
}


def names() -> list[str]:
    """Every ``<arch>_<family>`` this module builds."""
    return [f"{a}_{f}" for a in ARCHS for f in FAMILIES if a != "mask_rcnn" or f in INSTANCE_FAMILIES]


def parse(arg: str) -> tuple[str, str]:
    for a in ARCHS:
        if arg.startswith(a + "_") and arg[len(a) + 1:] in FAMILIES:
            arch, family = a, arg[len(a) + 1:]
            if arch == "mask_rcnn" and family not in INSTANCE_FAMILIES:
                raise ValueError(f"paper_{arg}: Mask R-CNN recipes exist only for {INSTANCE_FAMILIES} "
                                 f"(families with instances)")
            return arch, family
    raise ValueError(f"unknown paper recipe {arg!r}; expected <arch>_<family> with arch in {ARCHS} and family in "
                     f"{FAMILIES}")


def get_config(arg: str = "unet_isic") -> ml_collections.ConfigDict:
    arch, family = parse(arg)
    c = default.get_config()
    d = c.data
    d.data_dir = f"../shared/data/{FOLDERS[family]}"
    d.image_size = (128, 128)
    d.val_fraction = 0.25
    if family == "brats":
        d.name = "brats"
        d.modalities = "FLAIR,T1c"
        d.empty_slice_ratio = 0.25
        # Each channel z-scored over the brain, 0 outside (data_pipelines.brats.intensity_record); the files as
        # shipped ("none": a case-specific negative background) left U-Net at whole-tumour Dice 0.09 on pat0006,
        # this 0.78 (same 220 steps and training patients; docs/brats.md).
        d.brats_intensity = "zscore_fg"
    elif family == "isic":
        d.name = "isic"
        d.patient_column = "id"
    elif family == "lung":
        d.name = "luna16"
        d.hu_window = (-1000.0, 400.0)
        d.empty_slice_ratio = 0.5
    else:
        d.name = "folder"
        d.patient_column = "patientid"
    c.model.name = arch
    c.model.kwargs = ml_collections.ConfigDict(dict(MODEL_KWARGS[arch]))
    c.augment.enabled = True
    c.augment.spec = ml_collections.ConfigDict(STUDY_AUGMENT)
    c.train.steps = 1000  # a cap: eval.studies.paper_table trains by time (train.time_limit_s) within it
    c.train.batch_size = 8
    c.train.optimizer = "adam"
    c.train.learning_rate = 1e-3 if arch == "mask_rcnn" else 3e-3
    c.train.loss = "mask_rcnn" if arch == "mask_rcnn" else "dice_ce"
    c.train.warmup_steps = 20
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.train.tensorboard = False
    return c
