"""Data: readers for medical formats, TFDS builders, grain loading, splits, synthetic phantoms."""

from data_pipelines.phantoms import PhantomConfig, PhantomSource, make_phantom

__all__ = ["PhantomConfig", "PhantomSource", "make_phantom"]

# Readers, geometry and patient-level splits (light imports). One module per data family (phantoms,
# outcome_data, brats, image_folders, ct, tfds_records), each registered once in data_pipelines.families;
# TFDS builders: data_pipelines.tfds_builders; grain loaders: data_pipelines.loader; the one covariate encoder:
# data_pipelines.covariates; synthetic EHR: data_pipelines.ehr.
from data_pipelines.ehr import clinical_record, clinical_table  # noqa: E402
from data_pipelines.readers import ImageMeta, read_image, read_label  # noqa: E402
from data_pipelines.splits import patient_kfold, patient_split, site_split, train_val_test_split  # noqa: E402

__all__ += ["clinical_record", "clinical_table", "ImageMeta", "read_image", "read_label", "patient_kfold",
            "patient_split", "site_split", "train_val_test_split"]
