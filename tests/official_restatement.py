"""An independent plain-PyTorch restatement of the official ReCon forward passes.

Written from the paper's equations and the official models/ReCon.py + models/transformer.py
(qizekun/ReCon @ 51a8be0), sharing no code with recon_fast.model: its own modules with the
official parameter names (so a state dict moves between the two with strict=True), eager
attention written with einsum, the official boolean-mask indexing, grouping through
reference.group_reference and the Chamfer loss through reference.chamfer_l2_reference.
Slow and simple on purpose; used only by the tests to check recon_fast.model.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from reference import chamfer_l1_reference, chamfer_l2_reference, group_reference

NUM_QUERIES = 3  # cls, img, text


def stochastic_depth(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Zero the branch for a Bernoulli(p) subset of samples and scale the rest by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype).bernoulli_(1 - p)
    return x * (keep / (1 - p))


def heads_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v per head; q (B, Tq, C), k/v (B, T, C) -> (B, Tq, C)."""
    B, Tq, C = q.shape
    d = C // heads
    qh = q.view(B, Tq, heads, d)
    kh = k.view(B, k.shape[1], heads, d)
    vh = v.view(B, v.shape[1], heads, d)
    weights = torch.softmax(torch.einsum("bqhd,bkhd->bhqk", qh, kh) / d ** 0.5, dim=-1)
    return torch.einsum("bhqk,bkhd->bqhd", weights, vh).reshape(B, Tq, C)


class RefAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(heads_attention(q, k, v, self.heads))


class RefCrossAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y):
        k, v = self.kv(y).chunk(2, dim=-1)
        return self.proj(heads_attention(self.q(x), k, v, self.heads))


class RefMlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class RefContrastBlock(nn.Module):
    """g = LN1c(g); v = LN1(v); g += DP(CA(g, sg(v))); v += DP(SA(v));
    g = LN2c(g); v = LN2(v); g += DP(MLPc(g)); v += DP(MLP(v))."""

    def __init__(self, dim, heads, drop_path, detach_context):
        super().__init__()
        self.p = drop_path
        self.detach_context = detach_context
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = RefMlp(dim, 4 * dim)
        self.attn = RefAttention(dim, heads)
        self.norm1_contrast = nn.LayerNorm(dim)
        self.norm2_contrast = nn.LayerNorm(dim)
        self.mlp_contrast = RefMlp(dim, 4 * dim)
        self.attn_contrast = RefCrossAttention(dim, heads)

    def forward(self, x):
        g, v = x[:, :NUM_QUERIES], x[:, NUM_QUERIES:]
        g = self.norm1_contrast(g)
        v = self.norm1(v)
        g = g + stochastic_depth(self.attn_contrast(g, v.detach() if self.detach_context else v),
                                 self.p, self.training)
        v = v + stochastic_depth(self.attn(v), self.p, self.training)
        g = self.norm2_contrast(g)
        v = self.norm2(v)
        g = g + stochastic_depth(self.mlp_contrast(g), self.p, self.training)
        v = v + stochastic_depth(self.mlp(v), self.p, self.training)
        return torch.cat((g, v), dim=1)


class RefPreNormBlock(nn.Module):
    def __init__(self, dim, heads, drop_path):
        super().__init__()
        self.p = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = RefMlp(dim, 4 * dim)
        self.attn = RefAttention(dim, heads)

    def forward(self, x):
        x = x + stochastic_depth(self.attn(self.norm1(x)), self.p, self.training)
        return x + stochastic_depth(self.mlp(self.norm2(x)), self.p, self.training)


def linear_rates(rate, depth):
    """0 .. rate in equal steps, rounded to float32 as the official torch.linspace gives them."""
    exact = [rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
    return [float(torch.tensor(r, dtype=torch.float32)) for r in exact]


class RefStack(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)


class RefMiniPointNet(nn.Module):
    def __init__(self, out_dim):
        super().__init__()
        self.first_conv = nn.Sequential(nn.Conv1d(3, 128, 1), nn.BatchNorm1d(128), nn.ReLU(),
                                        nn.Conv1d(128, 256, 1))
        self.second_conv = nn.Sequential(nn.Conv1d(512, 512, 1), nn.BatchNorm1d(512), nn.ReLU(),
                                         nn.Conv1d(512, out_dim, 1))

    def forward(self, patches):
        B, G, K, _ = patches.shape
        f = self.first_conv(patches.flatten(0, 1).transpose(1, 2))
        f = torch.cat([f.amax(dim=2, keepdim=True).repeat(1, 1, K), f], dim=1)
        return self.second_conv(f).amax(dim=2).view(B, G, -1)


class RefTrunk(nn.Module):
    """Official MaskTransformer / PointTransformer trunk with its parameter names."""

    def __init__(self, dim, depth, heads, drop_path_rate, detach_context):
        super().__init__()
        self.encoder = RefMiniPointNet(dim)
        for name in ("cls_token", "cls_pos", "img_token", "text_token", "img_pos", "text_pos"):
            setattr(self, name, nn.Parameter(torch.zeros(1, 1, dim)))
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.blocks = RefStack([RefContrastBlock(dim, heads, r, detach_context)
                                for r in linear_rates(drop_path_rate, depth)])
        self.norm = nn.LayerNorm(dim)

    def run(self, tokens, centers):
        """tokens (B, T, C) of patches at centers (B, T, 3) -> normalised (B, 3 + T, C)."""
        B = tokens.shape[0]
        q = [getattr(self, n).expand(B, -1, -1) for n in ("cls_token", "img_token", "text_token")]
        p = [getattr(self, n).expand(B, -1, -1) for n in ("cls_pos", "img_pos", "text_pos")]
        x = torch.cat(q + [tokens], dim=1)
        pos = torch.cat(p + [self.pos_embed(centers)], dim=1)
        for block in self.blocks.blocks:
            x = block(x + pos)
        return self.norm(x)


class RefDecoder(nn.Module):
    def __init__(self, dim, depth, heads, drop_path_rate):
        super().__init__()
        self.blocks = nn.ModuleList([RefPreNormBlock(dim, heads, r)
                                     for r in linear_rates(drop_path_rate, depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x, pos, n_last):
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x[:, x.shape[1] - n_last:])


def smooth_l1(a, b):
    d = (a - b).abs()
    return torch.where(d < 1, 0.5 * d * d, d - 0.5).mean()


class RefReCon(nn.Module):
    """Official ReCon pretraining forward with an explicit (B, G) mask (True = masked)."""

    def __init__(self, dim, depth, heads, num_group, group_size, decoder_depth, decoder_heads,
                 drop_path_rate=0.0, img_dim=None, text_dim=None, loss="cdl2"):
        super().__init__()
        self.num_group, self.group_size, self.loss = num_group, group_size, loss
        self.MAE_encoder = RefTrunk(dim, depth, heads, drop_path_rate, detach_context=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.MAE_decoder = RefDecoder(dim, decoder_depth, decoder_heads, drop_path_rate)
        self.increase_dim = nn.Sequential(nn.Conv1d(dim, 3 * group_size, 1))
        if img_dim:
            self.img_proj = nn.Linear(dim, img_dim)
        if text_dim:
            self.text_proj = nn.Linear(dim, text_dim)

    def forward(self, points, img_feature, text_feature, mask):
        neighborhood, center = group_reference(points, self.num_group, self.group_size)
        B, G = mask.shape
        tokens = self.MAE_encoder.encoder(neighborhood)
        C = tokens.shape[-1]
        x_vis = tokens[~mask].reshape(B, -1, C)
        x = self.MAE_encoder.run(x_vis, center[~mask].reshape(B, -1, 3))
        img_token, text_token, x_vis = x[:, 1], x[:, 2], x[:, 3:]
        pos_vis = self.decoder_pos_embed(center[~mask]).reshape(B, -1, C)
        pos_mask = self.decoder_pos_embed(center[mask]).reshape(B, -1, C)
        M = pos_mask.shape[1]
        x_full = torch.cat([x_vis, self.mask_token.expand(B, M, -1)], dim=1)
        x_rec = self.MAE_decoder(x_full, torch.cat([pos_vis, pos_mask], dim=1), M)
        pred = self.increase_dim(x_rec.transpose(1, 2)).transpose(1, 2).reshape(B * M, -1, 3)
        gt = neighborhood[mask].reshape(B * M, -1, 3)
        chamfer = chamfer_l2_reference if self.loss == "cdl2" else chamfer_l1_reference
        losses = {"mdm": chamfer(pred, gt)}
        if hasattr(self, "img_proj"):
            losses["csc_img"] = smooth_l1(img_feature, self.img_proj(img_token))
        if hasattr(self, "text_proj"):
            losses["csc_text"] = smooth_l1(text_feature, self.text_proj(text_token))
        return sum(losses.values()), losses


class RefDownstream(RefTrunk):
    """Official PointTransformer / PointTransformerZeroShot / PointTransformerSVM.

    kind: "classifier" (head_type full|mlp3|linear), "zeroshot" (zeroshot_type full|text|image)
    or "svm".
    """

    def __init__(self, dim, depth, heads, num_group, group_size, kind, drop_path_rate=0.0,
                 head_type="full", cls_dim=10, zeroshot_type="full", ratio=0.25, img_dim=None,
                 text_dim=None):
        super().__init__(dim, depth, heads, drop_path_rate, detach_context=False)
        self.num_group, self.group_size, self.kind = num_group, group_size, kind
        self.head_type, self.zeroshot_type, self.ratio = head_type, zeroshot_type, ratio
        if kind == "classifier":
            if head_type == "linear":
                self.cls_head_finetune = nn.Sequential(nn.Linear(4 * dim, cls_dim))
            else:
                self.cls_head_finetune = nn.Sequential(
                    nn.Linear(4 * dim, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
                    nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
                    nn.Linear(256, cls_dim))
        elif kind == "zeroshot":
            if zeroshot_type in ("full", "text"):
                self.text_proj = nn.Linear(dim, text_dim)
            if zeroshot_type in ("full", "image"):
                self.img_proj = nn.Linear(dim, img_dim)

    def forward(self, points):
        neighborhood, center = group_reference(points, self.num_group, self.group_size)
        x = self.run(self.encoder(neighborhood), center)
        if self.kind == "classifier":
            feats = torch.cat([x[:, 0], x[:, 1], x[:, 2], x[:, 3:].amax(dim=1)], dim=-1)
            return self.cls_head_finetune(feats)
        if self.kind == "zeroshot":
            if self.zeroshot_type == "text":
                return self.text_proj(x[:, 2])
            if self.zeroshot_type == "image":
                return self.img_proj(x[:, 1])
            return self.ratio * self.text_proj(x[:, 2]) + self.img_proj(x[:, 1])
        patches = x[:, 3:]
        return torch.cat([x[:, :3].amax(dim=1), patches.amax(dim=1) + patches.mean(dim=1)], dim=-1)
