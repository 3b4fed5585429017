"""Teacher targets for pretraining: the exact text-feature table and image features (cached
centre views, or the online teacher on augmented renders as the official code does)."""

from __future__ import annotations

from typing import Optional

import torch

from recon_fast.errors import ConfigError

from recon_fast.train.config import Config
from recon_fast.train.runtime import Logger, RunOptions

CLIP_NAMES = {"ViT-B/32": "ViT-B-32", "ViT-B/16": "ViT-B-16", "ViT-L/14": "ViT-L-14"}


def _clip_name(official: str) -> str:
    if official not in CLIP_NAMES:
        raise ConfigError(f"text/image teacher {official!r} is not supported; use one of "
                         f"{sorted(CLIP_NAMES)} or the timm ViT 'vit_base_patch16_224_in21k'")
    return CLIP_NAMES[official]


class TeacherTargets:
    """Produces the (img_feature, text_feature) of a batch, on the training device."""

    def __init__(self, text_table=None, image_cache=None, image_teacher=None):
        self.text_table = text_table
        self.image_cache = image_cache
        self.image_teacher = image_teacher

    def __call__(self, batch: dict) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        text = None
        if self.text_table is not None:
            text = self.text_table.lookup(batch["label"], batch["prefix_id"], batch["suffix_id"])
        image = None
        if self.image_cache is not None:
            image = self.image_cache.lookup(batch["index"])
        elif self.image_teacher is not None:
            image = self.image_teacher(batch["image"])
        return image, text


def build_teacher_targets(model_cfg: Config, opts: RunOptions, dataset, device: torch.device,
                          logger: Logger) -> TeacherTargets:
    """Text table always (it is exact); image features by `opts.image_teacher`."""
    from recon_fast import teachers

    weights = opts.teacher_weights or "openai"
    text_name = model_cfg.get("text_encoder")
    image_name = model_cfg.get("img_encoder")
    text_table = image_cache = image_teacher = None
    same_clip = bool(text_name) and image_name == text_name  # the zero-shot setting
    clip_text = clip_image = None
    if text_name:
        if same_clip:
            clip_text, clip_image = teachers.build_clip_teachers(_clip_name(text_name), weights,
                                                                 seed=opts.seed, cache_dir=opts.cache_dir)
        else:
            clip_text = teachers.build_text_teacher(_clip_name(text_name), weights, seed=opts.seed,
                                                    cache_dir=opts.cache_dir)
        logger.info(f"text teacher: CLIP {text_name} ({clip_text.identity.as_dict()})")
        text_table = teachers.build_text_feature_table(
            clip_text.to(device), dataset.class_texts, opts.cache_dir,
            progress=logger.progress).to(device)
    if image_name and opts.image_teacher != "off":
        if clip_image is None:
            if image_name in CLIP_NAMES:
                _, clip_image = teachers.build_clip_teachers(_clip_name(image_name), weights,
                                                             seed=opts.seed, cache_dir=opts.cache_dir)
            else:
                vit_weights = opts.image_teacher_weights or (
                    "random" if opts.teacher_weights == "random" else "pretrained")
                clip_image = teachers.ViTImageTeacher(image_name.replace("_in21k", ""),
                                                      weights=vit_weights, seed=opts.seed)
        clip_image = clip_image.to(device)
        logger.info(f"image teacher: {image_name} ({opts.image_teacher})")
        if opts.image_teacher == "cache":
            image_cache = teachers.build_image_feature_cache(
                clip_image, dataset, opts.cache_dir, progress=logger.progress, device=device).to(device)
        else:
            image_teacher = clip_image
    return TeacherTargets(text_table, image_cache, image_teacher)
