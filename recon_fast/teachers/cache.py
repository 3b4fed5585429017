"""Exact teacher-feature caches, so pretraining looks features up instead of running teachers.

Text: every prompt a pretraining sample can draw is one of ``num_classes x 20 prefixes x
3 suffixes``, so the text teacher's output is a fixed table ``[num_classes, 20, 3, D]``, computed
once in float32. ``table.lookup(label, prefix_id, suffix_id)`` returns the float32 teacher output
for those prompts (up to last-bit differences from how prompts are batched), with no per-step
teacher cost and no bf16 rounding.

Images: one feature per rendered view, from the deterministic "center" view (resize 256, centre
crop 224, ImageNet normalisation, BGR as read). The official pipeline instead augments each image
randomly at every step (flip, random resized crop, RandAugment, cutout), so this cache is an
approximation of that target; keep the online image teacher for the official behaviour.

Cache files live in ``<cache_dir>/teacher_features/`` and are named by a SHA-256 of their key:
the teacher identity (model, weights file hash or random seed, library version, options), the
preprocessing and the inputs (prompt texts, or image file names/sizes/mtimes). A changed teacher
or dataset therefore never reads a stale file; the stored key is compared on load as well.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Optional, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from recon_fast.data.image import IMAGENET_MEAN, IMAGENET_STD, CROP, RESIZE, ImageTransform
from recon_fast.data.io import read_bgr_image
from recon_fast.data.prompts import NUM_PREFIXES, NUM_SUFFIXES, PROMPT_PREFIXES, PROMPT_SUFFIXES
from recon_fast.data.prompts import all_prompts

CACHE_FORMAT = 1
IMAGE_PREPROCESS = {"view": "center", "resize": RESIZE, "crop": CROP, "channel_order": "BGR",
                    "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def default_feature_dir(cache_dir: Optional[str] = None) -> str:
    from recon_fast.data.embedded.generate import default_cache_dir

    return os.path.join(cache_dir or default_cache_dir(), "teacher_features")


def _key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _load_if_valid(path: str, key: dict) -> Optional[torch.Tensor]:
    if not os.path.isfile(path):
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable cache is recomputed, never trusted
        return None
    if not isinstance(stored, dict) or stored.get("key_json") != json.dumps(key, sort_keys=True):
        return None
    features = stored.get("features")
    return features if isinstance(features, torch.Tensor) else None


def _save(path: str, key: dict, features: torch.Tensor) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save({"key_json": json.dumps(key, sort_keys=True), "features": features}, tmp)
    os.replace(tmp, path)  # readers never see a half-written file


class TextFeatureTable:
    """Text-teacher features of every (class, prefix, suffix) prompt: ``features[C, 20, 3, D]``."""

    def __init__(self, features: torch.Tensor, class_texts: Sequence[str], path: Optional[str]):
        self.features = features
        self.class_texts = list(class_texts)
        self.path = path

    def to(self, device) -> "TextFeatureTable":
        return TextFeatureTable(self.features.to(device), self.class_texts, self.path)

    def lookup(self, label: torch.Tensor, prefix_id: torch.Tensor,
               suffix_id: torch.Tensor) -> torch.Tensor:
        """(B,) labels and prompt ids -> (B, D) features (moved to the table's device)."""
        device = self.features.device
        return self.features[label.to(device), prefix_id.to(device), suffix_id.to(device)]

    def class_embeddings(self) -> torch.Tensor:
        """(C, D) sum of each class's 60 prompt features (the zero-shot class embedding)."""
        return self.features.sum(dim=(1, 2))


def text_table_key(identity: dict, class_texts: Sequence[str], context_length: int) -> dict:
    return {"kind": "text", "format": CACHE_FORMAT, "teacher": identity,
            "prefixes": list(PROMPT_PREFIXES), "suffixes": list(PROMPT_SUFFIXES),
            "classes": list(class_texts), "context_length": context_length, "dtype": "float32"}


def build_text_feature_table(teacher, class_texts: Sequence[str], cache_dir: Optional[str] = None,
                             *, batch_size: int = 256, progress: bool = True,
                             use_cache: bool = True) -> TextFeatureTable:
    """Load or compute the exact text-feature table of `class_texts` (index = label).

    The teacher runs in float32 (autocast off) so the table is the exact float32 teacher output.
    """
    if not class_texts:
        raise ValueError("class_texts is empty")
    key = text_table_key(teacher.identity.as_dict(), class_texts, teacher.context_length)
    path = os.path.join(default_feature_dir(cache_dir), f"text-{_key_digest(key)[:20]}.pt")
    cached = _load_if_valid(path, key) if use_cache else None
    if cached is not None:
        return TextFeatureTable(cached, class_texts, path)
    prompts = all_prompts(class_texts)
    chunks = []
    saved_autocast, teacher.autocast = teacher.autocast, False
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="text teacher features",
                          disable=not progress):
            chunks.append(teacher(prompts[start:start + batch_size]).cpu())
    finally:
        teacher.autocast = saved_autocast
    features = torch.cat(chunks).reshape(len(class_texts), NUM_PREFIXES, NUM_SUFFIXES, -1)
    if use_cache:
        _save(path, key, features)
    return TextFeatureTable(features, class_texts, path if use_cache else None)


class _CenterViews(Dataset):
    def __init__(self, image_paths: Sequence[str]):
        self.image_paths = list(image_paths)
        self.transform = ImageTransform("center")

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(read_bgr_image(self.image_paths[index]))


def image_files_digest(image_paths: Sequence[str]) -> str:
    """Digest of (name, size, mtime) of every image: cheap, and changes when a file changes."""
    digest = hashlib.sha256()
    for path in image_paths:
        stat = os.stat(path) if os.path.isfile(path) else None
        digest.update(f"{os.path.basename(path)}|{stat.st_size if stat else -1}|"
                      f"{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()


class ImageFeatureCache:
    """Image-teacher features of each dataset item's centre view: ``features[len(dataset), D]``."""

    def __init__(self, features: torch.Tensor, path: Optional[str]):
        self.features = features
        self.path = path

    def to(self, device) -> "ImageFeatureCache":
        return ImageFeatureCache(self.features.to(device), self.path)

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """(B,) dataset indices (the items' "index") -> (B, D)."""
        return self.features[index.to(self.features.device)]


def build_image_feature_cache(teacher, dataset, cache_dir: Optional[str] = None, *,
                              batch_size: int = 64, workers: int = 0, progress: bool = True,
                              use_cache: bool = True, device=None) -> ImageFeatureCache:
    """Load or compute centre-view image features for every item of a ShapeNet55-style dataset.

    `dataset` must offer ``len()`` and ``image_path(i)``; rows follow the dataset's indices.
    `device` defaults to the teacher's; the teacher runs in float32 here.
    """
    image_paths = [dataset.image_path(i) for i in range(len(dataset))]
    key = {"kind": "image", "format": CACHE_FORMAT, "teacher": teacher.identity.as_dict(),
           "preprocess": IMAGE_PREPROCESS, "count": len(image_paths),
           "files": image_files_digest(image_paths), "dtype": "float32"}
    path = os.path.join(default_feature_dir(cache_dir), f"image-{_key_digest(key)[:20]}.pt")
    cached = _load_if_valid(path, key) if use_cache else None
    if cached is not None:
        return ImageFeatureCache(cached, path)
    device = device or next(teacher.parameters()).device
    loader = DataLoader(_CenterViews(image_paths), batch_size=batch_size, num_workers=workers,
                        shuffle=False)
    chunks = []
    saved_autocast, teacher.autocast = teacher.autocast, False
    try:
        for images in tqdm(loader, desc="image teacher features", disable=not progress):
            chunks.append(teacher(images.to(device)).cpu())
    finally:
        teacher.autocast = saved_autocast
    features = torch.cat(chunks) if chunks else torch.empty(0, teacher.output_dim)
    if use_cache:
        _save(path, key, features)
    return ImageFeatureCache(features, path if use_cache else None)
