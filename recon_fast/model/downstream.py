"""Downstream ReCon models on the pretrained student (full gradient through the cross-attention).

* :class:`ReConClassifier` (official ``PointTransformer``): logits from
  concat[cls, img, text tokens, max over patch tokens] through a linear or 3-layer MLP head.
* :class:`ReConZeroShot` (``PointTransformerZeroShot``): a feature in the CLIP space,
  ratio * text_proj(text token) + img_proj(img token), to compare with class-name embeddings.
* :class:`ReConSVMFeatures` (``PointTransformerSVM``): concat[max of the 3 global tokens,
  max + mean of the patch tokens] for a linear SVM.

Construction follows the official models: PyTorch's default init for every layer, truncated
normal(0.02) for the query tokens and positions (cls_token stays zero except in the SVM model);
the trunk then normally comes from a pretraining checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recon_fast.errors import ConfigError

from recon_fast.model.backbone import ReConTransformer
from recon_fast.model.config import ReConConfig


def classification_head(config: ReConConfig) -> nn.Sequential:
    """Official ``cls_head_finetune``: linear, or Linear-BN-ReLU-Dropout x2 then Linear."""
    width = 4 * config.trans_dim  # concat[cls, img, text, max-pooled patches]
    if config.head_type == "linear":
        return nn.Sequential(nn.Linear(width, config.cls_dim))
    return nn.Sequential(
        nn.Linear(width, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(256, config.cls_dim))


class ReConClassifier(ReConTransformer):
    """Shape classifier (official ``PointTransformer``); ``config.head_type`` is the official
    ``type``: "full" (MLP head, everything trained), "mlp3" (MLP head), "linear" (linear head);
    for the latter two the official recipe trains only parameters whose name contains "cls"
    (see :meth:`freeze_as_official`)."""

    official_name = "PointTransformer"

    def __init__(self, config: ReConConfig):
        super().__init__(config, stop_grad=False)
        self.init_global_tokens(include_cls_token=False)
        self.cls_head_finetune = classification_head(config)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3) -> class logits (B, cls_dim)."""
        x = self.encode_points(points)  # (B, 3 + G, C)
        pooled = torch.cat([x[:, 0], x[:, 1], x[:, 2], x[:, 3:].max(dim=1).values], dim=-1)
        return self.cls_head_finetune(pooled)  # (B, cls_dim)

    def freeze_as_official(self) -> list[str]:
        """Apply the official finetuning rule: with head_type "linear" or "mlp3" only parameters
        whose name contains "cls" (the head, cls_token, cls_pos) train. Returns their names."""
        trainable = []
        for name, param in self.named_parameters():
            train = self.config.head_type == "full" or "cls" in name
            param.requires_grad_(train)
            if train:
                trainable.append(name)
        return trainable


class ReConZeroShot(ReConTransformer):
    """Zero-shot feature (official ``PointTransformerZeroShot``): ``config.zeroshot_type`` "text"
    -> text_proj(text token), "image" -> img_proj(img token), "full" -> ratio * text + image."""

    official_name = "PointTransformerZeroShot"

    def __init__(self, config: ReConConfig):
        super().__init__(config, stop_grad=False)
        self.init_global_tokens(include_cls_token=False)
        kind = config.zeroshot_type
        if kind in ("full", "text"):
            self.text_proj = nn.Linear(config.trans_dim, _feature_dim(config, "text_feature_dim"))
        if kind in ("full", "image"):
            self.img_proj = nn.Linear(config.trans_dim, _feature_dim(config, "img_feature_dim"))
        self.ratio = config.zeroshot_ratio

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3) -> (B, D) features in the teachers' space (not normalised)."""
        x = self.encode_points(points)  # (B, 3 + G, C)
        kind = self.config.zeroshot_type
        if kind == "text":
            return self.text_proj(x[:, 2])
        if kind == "image":
            return self.img_proj(x[:, 1])
        return self.ratio * self.text_proj(x[:, 2]) + self.img_proj(x[:, 1])


class ReConSVMFeatures(ReConTransformer):
    """Frozen-feature extractor for the linear-SVM protocol (official ``PointTransformerSVM``)."""

    official_name = "PointTransformerSVM"

    def __init__(self, config: ReConConfig):
        super().__init__(config, stop_grad=False)
        self.init_global_tokens(include_cls_token=True)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3) -> (B, 2C): concat[max of global tokens, max + mean of patch tokens]."""
        x = self.encode_points(points)  # (B, 3 + G, C)
        patches = x[:, 3:]
        return torch.cat([x[:, :3].max(dim=1).values,
                          patches.max(dim=1).values + patches.mean(dim=1)], dim=-1)


def _feature_dim(config: ReConConfig, field: str) -> int:
    value = getattr(config, field)
    if value is None:
        raise ConfigError(f"zeroshot_type={config.zeroshot_type!r} needs config.{field} "
                         "(the teacher feature width), got None")
    return value
