"""The ReCon model: pretraining (``ReCon``), downstream models and official-checkpoint I/O.

    from recon_fast.model import ReCon, ReConConfig
    model = ReCon(ReConConfig.base())
    loss, losses = model(points, img_feature, text_feature)   # losses: mdm, csc_img, csc_text
    model.eval(); patches = model.reconstruct(points)       # visible / masked / predicted patches

Parameter names match the official code, so official checkpoints load
(:func:`load_official_checkpoint`) and ours load in the official code.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch.nn as nn

from recon_fast.model.backbone import ReConTransformer
from recon_fast.model.checkpoint import (LoadReport, load_official_checkpoint, read_checkpoint,
                                         read_state_dict, save_atomic, save_checkpoint, unwrap)
from recon_fast.model.config import ReConConfig
from recon_fast.model.downstream import ReConClassifier, ReConSVMFeatures, ReConZeroShot
from recon_fast.model.recon import LOSS_KEYS, ReCon, Reconstruction

MODEL_CLASSES = {
    "ReCon": ReCon,
    "PointTransformer": ReConClassifier,
    "PointTransformerZeroShot": ReConZeroShot,
    "PointTransformerSVM": ReConSVMFeatures,
}


def build_model(config: ReConConfig | Mapping[str, Any], **overrides: Any) -> nn.Module:
    """The model an official ``model:`` section (or a ReConConfig) names via ``NAME``."""
    if not isinstance(config, ReConConfig):
        config = ReConConfig.from_official(config, **overrides)
    elif overrides:
        config = ReConConfig(**{**config.to_dict(), **overrides})
    return MODEL_CLASSES[config.name](config)


__all__ = [
    "ReConConfig", "ReCon", "Reconstruction", "ReConTransformer", "ReConClassifier", "ReConZeroShot",
    "ReConSVMFeatures", "build_model", "MODEL_CLASSES", "LOSS_KEYS", "load_official_checkpoint",
    "save_checkpoint", "read_state_dict", "read_checkpoint", "save_atomic", "unwrap", "LoadReport",
]
