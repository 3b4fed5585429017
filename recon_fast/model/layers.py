"""Building blocks of ReCon: patch encoder, attention, MLP, ReCon blocks, encoder/decoder stacks.

Module and parameter names follow the official code (models/transformer.py) so that state dicts
are interchangeable: ``first_conv.0``, ``attn.qkv``, ``attn_contrast.q`` / ``.kv``,
``norm1_contrast``, ``mlp_contrast.fc1``, ``blocks.<i>`` and so on. Dropout rates are zero in
every official config, so the zero-rate dropouts of the official modules are left out.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from recon_fast import attention


class PatchEncoder(nn.Module):
    """Mini-PointNet: each patch of K points -> one feature vector (official ``Encoder``).

    Conv1d(3,128) BN ReLU Conv1d(128,256) -> max over the patch, concatenated to every point ->
    Conv1d(512,512) BN ReLU Conv1d(512,C) -> max over the patch.
    """

    def __init__(self, encoder_channel: int):
        super().__init__()
        self.encoder_channel = encoder_channel
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(inplace=True),
            nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(inplace=True),
            nn.Conv1d(512, encoder_channel, 1))

    def forward(self, point_groups: torch.Tensor) -> torch.Tensor:
        """point_groups (B, G, K, 3) -> patch features (B, G, C)."""
        B, G, K, _ = point_groups.shape
        points = point_groups.reshape(B * G, K, 3).transpose(1, 2)  # (BG, 3, K)
        feature = self.first_conv(points)  # (BG, 256, K)
        patch_max = feature.max(dim=2, keepdim=True).values  # (BG, 256, 1)
        feature = torch.cat([patch_max.expand(-1, -1, K), feature], dim=1)  # (BG, 512, K)
        feature = self.second_conv(feature)  # (BG, C, K)
        return feature.max(dim=2).values.reshape(B, G, self.encoder_channel)  # (B, G, C)


def position_mlp(dim: int) -> nn.Sequential:
    """Centre coordinates -> token positions: Linear(3,128) GELU Linear(128,dim)."""
    return nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))


class Mlp(nn.Module):
    """Transformer feed-forward: fc1 GELU fc2."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention: packed qkv projection (no bias), attention, output projection."""

    def __init__(self, dim: int, num_heads: int, backend: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, C) -> (B, T, C)."""
        heads = attention.self_attention(self.qkv(x), self.num_heads, backend=self.backend)
        return self.proj(heads)


class CrossAttention(nn.Module):
    """Queries from x attend to keys/values from y: q and packed kv projections (no bias), proj."""

    def __init__(self, dim: int, num_heads: int, backend: str = "auto"):
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, dim * 2, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B, Tq, C) queries, y (B, T, C) context -> (B, Tq, C)."""
        heads = attention.cross_attention(self.q(x), self.kv(y), self.num_heads,
                                          backend=self.backend)
        return self.proj(heads)


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of samples while training.

    Draws one Bernoulli(keep) per sample with ``bernoulli_`` and rescales by 1/keep, exactly as
    timm's DropPath that the official code uses (same random stream consumption).
    """

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * x.new_empty(shape).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class ReConBlock(nn.Module):
    """ReCon block: the 3 global queries and the patch tokens take separate paths.

    Patch tokens: self-attention + MLP. Global queries: cross-attention to the patch tokens +
    their own MLP. As in the official code the residual is added to the *normalised* tensor
    (x = norm(x); x = x + f(x)), not to the block input. With ``stop_grad`` (pretraining) the
    cross-attention sees detached patch tokens, so the global queries do not steer them.
    """

    num_global = 3

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 stop_grad: bool = True, backend: str = "auto"):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.stop_grad = stop_grad
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)
        self.attn = SelfAttention(dim, num_heads, backend)
        self.norm1_contrast = nn.LayerNorm(dim)
        self.norm2_contrast = nn.LayerNorm(dim)
        self.mlp_contrast = Mlp(dim, hidden)
        self.attn_contrast = CrossAttention(dim, num_heads, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3 + T, C) -> (B, 3 + T, C)."""
        queries, patches = x[:, :self.num_global], x[:, self.num_global:]
        queries = self.norm1_contrast(queries)
        patches = self.norm1(patches)
        context = patches.detach() if self.stop_grad else patches
        cross_heads, self_heads = self._attend(queries, patches, context)
        # Branch order matters for the random draws of drop path: it is the official order.
        queries = queries + self.drop_path(self.attn_contrast.proj(cross_heads))
        patches = patches + self.drop_path(self.attn.proj(self_heads))
        queries = self.norm2_contrast(queries)
        patches = self.norm2(patches)
        queries = queries + self.drop_path(self.mlp_contrast(queries))
        patches = patches + self.drop_path(self.mlp(patches))
        return torch.cat([queries, patches], dim=1)

    def _attend(self, queries: torch.Tensor, patches: torch.Tensor, context: torch.Tensor):
        """The heads of the queries' cross-attention to `context` and of the patches'
        self-attention, before the output projections: one call, so that the Triton backend runs
        both in one launch forward and one backward. Attention draws no random numbers, so drop
        path's draws keep the official order."""
        self_heads, cross_heads = attention.recon_attention(
            self.attn.qkv(patches), self.attn_contrast.q(queries), self.attn_contrast.kv(context),
            self.attn.num_heads, backend=self.attn.backend)
        return cross_heads, self_heads


class Block(nn.Module):
    """Standard pre-norm block (the decoder's): x + attn(norm1 x), then x + mlp(norm2 x)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 backend: str = "auto"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.attn = SelfAttention(dim, num_heads, backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def drop_path_schedule(rate: float, depth: int) -> list[float]:
    """Linearly increasing drop path rates 0 .. rate over the blocks, as the official code."""
    return [float(r) for r in torch.linspace(0, rate, depth)]


class ReConEncoder(nn.Module):
    """The student's stack of ReCon blocks; positions are re-added before every block."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, stop_grad: bool = True, backend: str = "auto"):
        super().__init__()
        self.blocks = nn.ModuleList([
            ReConBlock(dim, num_heads, mlp_ratio, rate, stop_grad, backend)
            for rate in drop_path_schedule(drop_path_rate, depth)])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return x


class TransformerDecoder(nn.Module):
    """Pretraining decoder: pre-norm blocks over [visible, mask] tokens; returns the normalised
    last ``return_token_num`` tokens (the masked patches' predictions)."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0, backend: str = "auto"):
        super().__init__()
        self.blocks = nn.ModuleList([
            Block(dim, num_heads, mlp_ratio, rate, backend)
            for rate in drop_path_schedule(drop_path_rate, depth)])
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_decoder_weights)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, return_token_num: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x[:, -return_token_num:])


def _init_decoder_weights(module: nn.Module) -> None:
    """Official decoder init: Xavier-uniform Linear weights, zero biases, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_student_weights(module: nn.Module) -> None:
    """Official student init: truncated-normal(0.02) Linear/Conv1d weights, zero biases, unit
    LayerNorms (BatchNorm keeps PyTorch's defaults)."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
