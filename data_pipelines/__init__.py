"""Data: readers for medical formats, TFDS builders, grain loading, splits, synthetic phantoms."""

from data_pipelines.phantoms import PhantomConfig, PhantomSource, make_phantom

__all__ = ["PhantomConfig", "PhantomSource", "make_phantom"]
