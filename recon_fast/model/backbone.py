"""The ReCon student: patch tokens + 3 global queries through the ReCon blocks.

``ReConTransformer`` is the official ``MaskTransformer`` (the pretraining model's
``MAE_encoder``) and the shared trunk of the downstream models (``PointTransformer`` and its
zero-shot / SVM variants), with the same parameter names: ``encoder.*``, ``cls_token``,
``cls_pos``, ``img_token``, ``text_token``, ``img_pos``, ``text_pos``, ``pos_embed.*``,
``blocks.blocks.<i>.*``, ``norm.*``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from recon_fast import attention, ops
from recon_fast.errors import ConfigError, InputError
from recon_fast.model.config import ReConConfig
from recon_fast.model.layers import PatchEncoder, ReConEncoder, position_mlp
from recon_fast.ops.validate import data_checks_enabled


def check_points(points, config: ReConConfig) -> None:
    """InputError unless `points` is a float (B, N, 3) tensor with enough finite points."""
    if not isinstance(points, torch.Tensor):
        raise InputError(f"points must be a torch.Tensor of shape (B, N, 3), got "
                         f"{type(points).__name__}")
    seen = f"shape {tuple(points.shape)}, dtype {points.dtype}"
    if points.dim() != 3 or points.shape[2] != 3:
        raise InputError(f"points must have shape (B, N, 3), got {seen}")
    if not points.dtype.is_floating_point:
        raise InputError(f"points must be a floating point tensor, got {seen}")
    B, N = points.shape[0], points.shape[1]
    if B < 1:
        raise InputError(f"points must hold at least one cloud, got {seen}")
    need = max(config.num_group, config.group_size)
    if N < need:
        raise InputError(
            f"points has N = {N} points per cloud, fewer than the model needs: it takes "
            f"num_group={config.num_group} patch centres and group_size={config.group_size} "
            f"points per patch, so N >= {need}")
    if data_checks_enabled() and not bool(torch.isfinite(points).all()):
        raise InputError(f"points contains NaN or infinite values ({seen})")


def gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, G, ...) and idx (B, M) -> x[b, idx[b]] of shape (B, M, ...)."""
    trailing = x.shape[2:]
    index = idx.reshape(*idx.shape, *([1] * len(trailing))).expand(*idx.shape, *trailing)
    return torch.gather(x, 1, index)


def check_attention_backend(backend: str) -> None:
    """ConfigError for a backend recon_fast.attention does not offer."""
    known = getattr(attention, "BACKENDS", None)
    if known is not None and backend not in known:
        raise ConfigError(f"attention_backend must be one of {tuple(known)}, got {backend!r}")


class ReConTransformer(nn.Module):
    """Tokenise patches, prepend the cls/img/text queries, run the ReCon blocks, normalise.

    Args:
        config: model sizes (trans_dim, depth, num_heads, drop_path_rate, ...).
        stop_grad: detach the patch tokens seen by the queries' cross-attention (pretraining);
            False for the downstream models (full gradient).
    """

    official_name: str | None = None  # the official model NAME a subclass implements

    def __init__(self, config: ReConConfig, *, stop_grad: bool):
        super().__init__()
        check_attention_backend(config.attention_backend)
        if self.official_name is not None and config.name != self.official_name:
            # Record what this model is, so that a saved config rebuilds the same class.
            config = dataclasses.replace(config, name=self.official_name)
        self.config = config
        dim = config.trans_dim
        self.encoder = PatchEncoder(config.encoder_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.img_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.text_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.img_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.text_pos = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = position_mlp(dim)
        self.blocks = ReConEncoder(dim, config.depth, config.num_heads, config.mlp_ratio,
                                   config.drop_path_rate, stop_grad, config.attention_backend)
        self.norm = nn.LayerNorm(dim)

    def init_global_tokens(self, include_cls_token: bool = True) -> None:
        """Truncated-normal(0.02) queries and their positions (the official models leave
        cls_token at zero in the classifier and zero-shot models)."""
        names = ["img_token", "text_token", "cls_pos", "img_pos", "text_pos"]
        for name in (["cls_token"] if include_cls_token else []) + names:
            nn.init.trunc_normal_(getattr(self, name), std=0.02)

    def forward(self, neighborhood: torch.Tensor, center: torch.Tensor,
                visible_idx: torch.Tensor | None = None) -> torch.Tensor:
        """See :meth:`encode_patches` (the downstream subclasses take clouds instead)."""
        return self.encode_patches(neighborhood, center, visible_idx)

    def encode_patches(self, neighborhood: torch.Tensor, center: torch.Tensor,
                       visible_idx: torch.Tensor | None = None) -> torch.Tensor:
        """Encode the patches and run the transformer.

        Args:
            neighborhood: (B, G, K, 3) centred patches; center: (B, G, 3).
            visible_idx: optional (B, V) indices of the patches to keep (pretraining); every
                patch is encoded first (the BatchNorm statistics cover all of them, as in the
                official code) and then the visible ones are selected.

        Returns:
            (B, 3 + T, C) normalised tokens: [cls, img, text, patch tokens...].
        """
        tokens = self.encoder(neighborhood)  # (B, G, C)
        if visible_idx is not None:
            tokens = gather_rows(tokens, visible_idx)  # (B, V, C)
            center = gather_rows(center, visible_idx)  # (B, V, 3)
        B = tokens.shape[0]
        queries = torch.cat([self.cls_token, self.img_token, self.text_token], dim=1)  # (1, 3, C)
        query_pos = torch.cat([self.cls_pos, self.img_pos, self.text_pos], dim=1)  # (1, 3, C)
        x = torch.cat([queries.expand(B, -1, -1), tokens], dim=1)  # (B, 3 + T, C)
        pos = torch.cat([query_pos.expand(B, -1, -1), self.pos_embed(center)], dim=1)
        return self.norm(self.blocks(x, pos))

    def group(self, points: torch.Tensor) -> ops.Group:
        """Validate the clouds and split them into patches: (neighborhood, center)."""
        check_points(points, self.config)
        points = points.to(self.cls_token.dtype)
        return ops.group(points, self.config.num_group, self.config.group_size)

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3) -> (B, 3 + G, C) normalised tokens of every patch."""
        neighborhood, center = self.group(points)
        return self.encode_patches(neighborhood, center)
