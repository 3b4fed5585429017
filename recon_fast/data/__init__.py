"""Datasets in their published formats, the embedded default set, augmentations and loaders.

Datasets (items are dicts, batched by the default collate):

* :class:`ShapeNet55` - pretraining: index, taxonomy_id, model_id, points (npoints, 3),
  image (3, 224, 224), label, prefix_id, suffix_id, text.
* :class:`ScanObjectNN`, :class:`ModelNet`, :class:`ModelNetFewShot`,
  :class:`EmbeddedClassification` - classification: index, points (N, 3), label.
* :func:`prepare_embedded` - procedural shapes in the ShapeNet-55 layout, no download needed.

Batch-side helpers (on the device): :func:`rotate_y`, :func:`scale_and_translate`, :func:`scale`,
:func:`train_augmentation`, :func:`vote_augmentation`, :func:`fps_then_random`,
:func:`fps_sample`, :func:`fps_indices`, :func:`random_subset`; :func:`build_loader` (the one
DataLoader builder, resumable mid-epoch) and :func:`to_device`.
"""

from recon_fast.data.config import dataset_from_config
from recon_fast.data.embedded import (CLASS_NAMES as EMBEDDED_CLASS_NAMES, EmbeddedClassification,
                                      EmbeddedConfig, EmbeddedSet, default_cache_dir,
                                      prepare_embedded)
from recon_fast.data.image import IMAGENET_MEAN, IMAGENET_STD, ImageTransform, RandAugmentMC
from recon_fast.data.io import DatasetFileError, read_bgr_image, read_category_table
from recon_fast.data.loader import EpochSampler, build_loader, seed_worker, to_device
from recon_fast.data.modelnet import (ModelNet, ModelNetFewShot, build_modelnet_cache,
                                      modelnet_class_names)
from recon_fast.data.pointcloud import (PointcloudRotate, PointcloudScale,
                                        PointcloudScaleAndTranslate, pc_norm, rotate_y, scale,
                                        scale_and_translate, train_augmentation,
                                        vote_augmentation)
from recon_fast.data.prompts import (NUM_PREFIXES, NUM_PROMPTS, NUM_SUFFIXES, PROMPT_PREFIXES,
                                     PROMPT_SUFFIXES, all_prompts, build_prompt, prompt_ids)
from recon_fast.data.sampling import (POINT_ALL, check_point_all, fps_indices, fps_sample,
                                      fps_then_random, point_all_for, random_subset)
from recon_fast.data.scanobjectnn import SCANOBJECTNN_CLASSES, ScanObjectNN
from recon_fast.data.shapenet import ShapeNet55, ShapeNetPaths

__all__ = [
    "ShapeNet55", "ShapeNetPaths", "ScanObjectNN", "SCANOBJECTNN_CLASSES", "ModelNet",
    "ModelNetFewShot", "build_modelnet_cache", "modelnet_class_names", "EmbeddedClassification",
    "EmbeddedConfig", "EmbeddedSet", "prepare_embedded", "default_cache_dir",
    "EMBEDDED_CLASS_NAMES", "dataset_from_config", "ImageTransform", "RandAugmentMC",
    "IMAGENET_MEAN", "IMAGENET_STD", "DatasetFileError", "read_bgr_image", "read_category_table",
    "build_loader", "EpochSampler", "seed_worker", "to_device", "pc_norm", "rotate_y", "scale", "scale_and_translate",
    "PointcloudRotate", "PointcloudScale", "PointcloudScaleAndTranslate", "train_augmentation",
    "vote_augmentation", "PROMPT_PREFIXES", "PROMPT_SUFFIXES", "NUM_PREFIXES", "NUM_SUFFIXES",
    "NUM_PROMPTS", "build_prompt", "all_prompts", "prompt_ids", "POINT_ALL", "point_all_for",
    "check_point_all",
    "fps_indices", "fps_sample", "fps_then_random", "random_subset",
]
