"""Zero-shot classification (runner_zeroshot): point feature vs summed CLIP prompt features."""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from recon_fast.data import fps_then_random
from recon_fast.data.loader import to_device


@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, class_embeddings: torch.Tensor,
                       batches: Iterable[dict], npoints: int, device: torch.device) -> float:
    """argmax of the cosine similarity between the model's point feature (ratio * text_proj +
    img_proj of the global tokens) and each class embedding (the sum of its 60 prompt features,
    not normalised before summing); no logit scale. Points go through FPS-then-random."""
    model.eval()
    classes = F.normalize(class_embeddings.to(device).float(), dim=-1)  # (C, D)
    correct = total = 0
    for batch in batches:
        batch = to_device(batch, device)
        feature = F.normalize(model(fps_then_random(batch["points"], npoints)).float(), dim=-1)
        pred = (feature @ classes.t()).argmax(-1)
        correct += int((pred == batch["label"]).sum())
        total += batch["label"].numel()
    return correct / max(total, 1)
