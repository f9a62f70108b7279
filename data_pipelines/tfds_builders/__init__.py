"""TFDS builders (array_record, no TensorFlow needed): ``brats``, ``isic``, ``luna16``, ``phantoms``.

Importing this package registers them with TFDS. Build with
``data_pipelines.tfds_builders.prepare(name, data_dir, manual_dir=..., config=...)`` (atomic: nothing
is left behind on error) and read back with ``tfds.data_source(f"{name}/{config}", data_dir=...)``
or ``data_pipelines.tfds_builders.load(builder_or_folder, split)``.
"""

from data_pipelines.tfds_builders._base import load, prepare
from data_pipelines.tfds_builders.brats import Brats, BratsConfig
from data_pipelines.tfds_builders.isic import Isic, IsicConfig
from data_pipelines.tfds_builders.luna16 import Luna16, Luna16Config, boxes_from_instances
from data_pipelines.tfds_builders.phantoms import Phantoms, PhantomsConfig

__all__ = ["prepare", "load", "Brats", "BratsConfig", "Isic", "IsicConfig", "Luna16", "Luna16Config",
           "boxes_from_instances", "Phantoms", "PhantomsConfig"]
