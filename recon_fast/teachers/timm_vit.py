"""Frozen timm ViT image teacher (the official config's ``vit_base_patch16_224_in21k``).

The official code (timm 0.4.5) takes ``pre_logits(norm(x)[:, 0])``: the final-norm class token
through the in21k checkpoint's representation layer (Linear 768->768 + tanh). Current timm drops
that layer when it loads in21k weights, so this teacher rebuilds it from the checkpoint when the
file has ``pre_logits.fc.*`` (the original ``jx_vit_base_patch16_224_in21k-e5005f0a.pth``) and
otherwise returns the final-norm class token. The classifier head is never used.

Weights: a file path; "pretrained" (default) looks for the original in21k file in the torch hub
checkpoint folder (where timm 0.4.5 saved it) and timm's ``orig_in21k`` weights in the Hugging
Face cache; "random" gives a seeded random init with a RandomTeacherWarning.
"""

from __future__ import annotations

import os
from typing import Optional, Union

import torch
from torch import nn

from recon_fast.errors import TeacherWeightsNotFoundError

from recon_fast.teachers.clip import TeacherIdentity, _FrozenTeacher
from recon_fast.teachers.weights import (RANDOM, WeightsSource, file_source, first_existing,
                                         hf_cached_file, load_into, load_state_dict_file,
                                         random_source)

DEFAULT_VIT_MODEL = "vit_base_patch16_224"
OFFICIAL_IN21K_FILE = "jx_vit_base_patch16_224_in21k-e5005f0a.pth"
HF_IN21K_REPO = "timm/vit_base_patch16_224.orig_in21k"


def _timm():
    try:
        import timm
    except ImportError as e:
        raise ImportError("the ViT image teacher needs timm (pip install timm)") from e
    return timm


def resolve_vit_weights(weights: Union[str, os.PathLike], seed: int = 0) -> WeightsSource:
    weights = os.fspath(weights)
    if weights == RANDOM:
        return random_source(seed, "ViT image teacher")
    if weights != "pretrained":
        return file_source(weights)
    hub_dir = os.path.join(torch.hub.get_dir(), "checkpoints")
    hf_file = hf_cached_file(HF_IN21K_REPO, ["model.safetensors", "pytorch_model.bin"])
    found = first_existing([os.path.join(hub_dir, OFFICIAL_IN21K_FILE), hf_file])
    if found is None:
        raise TeacherWeightsNotFoundError(
            f"No local weights for the ViT-B/16 in21k image teacher; nothing is downloaded. "
            f"Looked for {os.path.join(hub_dir, OFFICIAL_IN21K_FILE)} and the Hugging Face hub "
            f"cache of {HF_IN21K_REPO}. Provide them with image_teacher_weights=/path/to/"
            f"{OFFICIAL_IN21K_FILE} (the file timm 0.4.5 downloads for "
            f"vit_base_patch16_224_in21k), "
            f"or pass 'random' for a smoke run (features are then meaningless).")
    return file_source(found)


class ViTImageTeacher(_FrozenTeacher):
    """Frozen timm ViT: (B, 3, 224, 224) normalised images -> (B, D) float32 class-token feature.

    Args:
        model_name: a timm ViT with a class token (default ``vit_base_patch16_224``, 768-d).
        weights: file path, "pretrained" (local lookup, see module doc) or "random".
        seed: seed of the random initialisation when ``weights="random"``.
        autocast: bf16 autocast on CUDA.
        model_kwargs: extra ``timm.create_model`` arguments (part of the identity).
    """

    def __init__(self, model_name: str = DEFAULT_VIT_MODEL,
                 weights: Union[str, os.PathLike] = "pretrained", *, seed: int = 0,
                 autocast: bool = True, model_kwargs: Optional[dict] = None):
        super().__init__()
        timm = _timm()
        source = resolve_vit_weights(weights, seed)
        model_kwargs = dict(model_kwargs or {})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(source.seed if source.is_random else 0)
            self.vit = timm.create_model(model_name, pretrained=False, num_classes=0,
                                         **model_kwargs)
        self.pre_logits: Optional[nn.Module] = None
        if not source.is_random:
            self._load(source.path)
        self.output_dim = int(self.vit.num_features)
        options = (("pre_logits", self.pre_logits is not None),) + tuple(
            (f"kwarg:{k}", repr(v)) for k, v in sorted(model_kwargs.items()))
        self.identity = TeacherIdentity("timm", model_name, "image", source.tag, timm.__version__,
                                        options)
        self.float()
        self._freeze(autocast)

    def _load(self, path: str) -> None:
        state = load_state_dict_file(path)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        if "pre_logits.fc.weight" in state:
            weight, bias = state.pop("pre_logits.fc.weight"), state.pop("pre_logits.fc.bias")
            self.pre_logits = nn.Sequential(nn.Linear(weight.shape[1], weight.shape[0]), nn.Tanh())
            self.pre_logits[0].load_state_dict({"weight": weight, "bias": bias})
        load_into(self.vit, state, path)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        device = self.vit.cls_token.device
        with self._autocast(device):
            tokens = self.vit.forward_features(images.to(device))   # (B, 1 + P, D), final norm
            features = tokens[:, 0]
            if self.pre_logits is not None:
                features = self.pre_logits(features)
        return features.float()
