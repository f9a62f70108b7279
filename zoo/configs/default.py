"""Default recipe: a small 2D U-Net on the brain phantoms (the README's main job, < 5 min on 2 CPU cores).

The phantoms are at ``data.difficulty="realistic"`` (small, faint lesions, partial-volume edges, bias field,
noise), so the job ends at a validation Dice that says something: measured 2026-12-02, 500 steps, 2 shared
CPU cores: mean foreground Dice 0.880 (necrosis 0.914, oedema 0.861, enhancing 0.866) in 3 min 30 s wall
(``easy``, the former phantoms: ~0.999).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.workdir = ""  # empty: workdirs/<config>-<timestamp>

    c.data = ml_collections.ConfigDict()
    c.data.name = "phantoms"          # phantoms | brats | isic | luna16 | folder
    c.data.kind = "brain"             # phantom kind: brain | skin | lung
    c.data.data_dir = ""              # real data: folder with the cases
    c.data.cache_dir = ""             # real data: cache decoded cases here (.npz per case); "": no cache
    c.data.spatial_dims = 2
    c.data.image_size = (64, 64)      # spatial size fed to the model
    c.data.channels = 0               # 0: all the data set provides
    c.data.difficulty = "realistic"   # phantoms only: easy | realistic (noise, bias field, partial-volume edges,
                                      #   low-contrast and small lesions; data_pipelines.phantoms)
    c.data.num_train = 320            # phantoms only
    c.data.num_val = 48
    c.data.val_fraction = 0.2         # real data: patient-level split
    c.data.seed = 0
    # Options of single sources (the others ignore them); None: the source's own default.
    c.data.modalities = None          # brats: channels in this order, "FLAIR,T1c" or ("FLAIR", "T1c"); None: all
                                      #   that every case has (FLAIR, T1, T1c, T2 order)
    c.data.brats_regions = False      # brats: the arrays also carry regions [N, *S, 3] uint8 (WT, TC, ET)
    c.data.empty_slice_ratio = None   # brats/luna16 2D: slices without lesion per lesion slice (brats 0.25, luna16 0.5)
    c.data.max_slices_per_case = None  # brats 2D: at most this many slices per case; None: every selected slice
    c.data.hu_window = (-1000.0, 400.0)  # luna16: HU (lo, hi) mapped to [0, 1], e.g. -1000,400
    c.data.mask_foreground = "nonzero"  # folder: foreground mask pixels: nonzero | zero (EM membranes are 0)
    c.data.patient_column = "patientid"  # isic/folder: metadata.csv column with the patient id (the split's unit)
    c.data.allow_unpaired = False     # isic/folder: skip images without a mask (and masks without an image) with a
                                      #   warning naming each, instead of stopping with the list
    # Patch training from a plan (data_pipelines.planning / patches); phantoms, brats, isic, folder, luna16.
    c.data.patch_size = ()            # non-empty: train on random patches of this size (replaces the plan's)
    c.data.plan = ""                  # a plan JSON to apply (e.g. a run's plan); "": plan from the training cases
    c.data.modality = ""              # plan normalisation: MR | CT | RGB | other; "": the data set's (brats MR...)
    c.data.memory_budget = 0          # voxels of one batch for the planned patch/batch; 0: planning.DEFAULT_BUDGET
    c.data.samples_per_epoch = 512    # training patches per epoch (record i is a pure function of (seed, i))
    c.data.oversample_foreground = 1 / 3  # fraction of patches centred on a labelled voxel (nnU-Net's third)
    c.data.val_samples = 0            # fixed validation patches; 0: two per validation case
    c.data.pad_value = 0.0            # image value where a patch leaves a case smaller than the patch
    c.data.denoise = ""               # "" | median | curvature_flow (SimpleITK, before resampling)
    c.data.n4 = False                 # N4 bias-field correction (MR only)
    c.data.crop = ""                  # "" | nonzero (crop to the body/brain's bounding box)

    c.model = ml_collections.ConfigDict()
    c.model.name = "unet"
    c.model.kwargs = ml_collections.ConfigDict({"features": 16, "depth": 4, "norm": "instance"})

    c.augment = ml_collections.ConfigDict()
    c.augment.enabled = False
    c.augment.spec = ml_collections.ConfigDict()  # kernels.augment.make_pipeline(spec); empty: the default spec

    c.train = ml_collections.ConfigDict()
    c.train.steps = 500
    c.train.batch_size = 16
    c.train.optimizer = "adam"        # adam | adamw | sgd | rmsprop
    c.train.learning_rate = 3e-3
    c.train.weight_decay = 0.0
    c.train.schedule = "cosine"       # constant | cosine | poly | warmup_cosine
    c.train.warmup_steps = 20
    c.train.grad_clip = 1.0
    c.train.loss = "dice_ce"          # ce | dice | dice_ce | jaccard | focal | tversky
    c.train.log_every = 25
    c.train.eval_every = 250
    c.train.checkpoint_every = 250
    c.train.keep_checkpoints = 2      # latest N in <workdir>/checkpoints
    c.train.keep_best = 1             # best N by validation Dice in <workdir>/best
    c.train.grad_accum = 1            # micro-batches per step (must divide the per-device batch)
    c.train.tensorboard = False       # True: also write TensorBoard events (needs tensorboardX; never via torch)
    c.train.dtype = "float32"         # float32 | bfloat16 (compute; params stay float32)
    c.train.time_limit_s = 0.0        # > 0: also stop after this many seconds of training (compile excluded);
                                      #   that step is the last (evaluated, saved); the schedule still spans steps
    c.train.skip_nonfinite = False    # True: skip steps whose loss/gradients are NaN/Inf; False: stop (exit 3)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = (-1, 1)            # (data, model); -1: all remaining devices
    c.mesh.shard_min_size = 2 ** 14   # params smaller than this stay replicated on the model axis
    return c
