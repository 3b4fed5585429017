"""Embedded default dataset: procedural labelled shapes with text and renders, no download.

``prepare_embedded()`` generates (once, into a cache directory) point clouds, renders and a
category table in the ShapeNet-55 layout, read by the same ShapeNet55 loader; the same shapes are
also a classification set (``EmbeddedSet.classification_dataset``).
"""

from recon_fast.data.embedded.dataset import EmbeddedClassification
from recon_fast.data.embedded.generate import (EmbeddedConfig, EmbeddedSet, default_cache_dir,
                                               generate_embedded, prepare_embedded)
from recon_fast.data.embedded.shapes import CATALOGUE, CLASS_NAMES

__all__ = ["prepare_embedded", "generate_embedded", "EmbeddedSet", "EmbeddedConfig",
           "EmbeddedClassification", "default_cache_dir", "CATALOGUE", "CLASS_NAMES"]
