"""Outcome smoke recipe: image + EHR fusion on 2D brain phantoms, with ablations and a logistic baseline.

``python -m zoo.outcome --config=outcome_smoke`` trains in about a minute on 2 CPU cores. Bigger
runs: ``--config.data.num_patients=600 --config.train.steps=600``; 3D:
``--config.data.spatial_dims=3 --config.data.image_size=16,16,16``.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = ""  # empty: workdirs/outcome_smoke-<timestamp>

    c.data = ml_collections.ConfigDict()
    c.data.name = "outcome_phantoms"
    c.data.kind = "brain"             # brain | skin | lung
    c.data.spatial_dims = 2
    c.data.image_size = (32, 32)
    c.data.channels = 0               # 0: all the kind provides
    c.data.num_patients = 400
    c.data.val_fraction = 0.25
    c.data.noise_sd = 0.5
    c.data.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.name = "outcome_net"
    c.model.kwargs = ml_collections.ConfigDict({
        "encoder": "unet",
        "encoder_kwargs": {"features": 8, "depth": 3, "norm": "none"},  # per-sample norms would erase area
        "fusion": "concat",           # concat | gated | film
        "pool": "avg",
        "pool_levels": 3,             # pool every level: the stride-1 level sees tumour area directly
        "embed_dim": 32,
        "head_hidden": 32,
        "dropout": 0.1,
        "freeze_encoder": False,
    })

    c.outcome = ml_collections.ConfigDict()
    c.outcome.variants = ("both", "image", "ehr")  # the fused net first, then its single-modality ablations
    c.outcome.baseline = True         # scikit-learn logistic regression on covariates + tumour volume
    # Transfer learning: pretrain a U-Net with the same encoder layout on the training images'
    # tumour segmentation for this many steps, then copy its encoder into the outcome net (0: off).
    c.outcome.pretrain_unet_steps = 100

    c.train = ml_collections.ConfigDict()
    c.train.steps = 200
    c.train.batch_size = 16
    c.train.optimizer = "adam"
    c.train.learning_rate = 3e-3
    c.train.weight_decay = 0.0
    c.train.schedule = "cosine"
    c.train.warmup_steps = 10
    c.train.grad_clip = 1.0
    c.train.loss = "ce"               # ce | focal
    c.train.log_every = 25
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
    c.train.keep_checkpoints = 2
    c.train.dtype = "float32"
    return c
