"""ReCon pretraining: group -> encode -> mask -> ReCon blocks -> decode / distil.

The masked-point reconstruction (Chamfer L2 between predicted and true masked patches) trains
the patch tokens; the img/text global queries are projected to the teachers' feature widths and
pulled to the teacher features (SmoothL1). Teachers are not part of the model: their features
come in as tensors, so they can be cached or computed elsewhere.

The mask is drawn on the device (one argsort of uniform noise per cloud, exactly
int(mask_ratio * G) patches masked), so the step has no host synchronisation and compiles into
one graph.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from recon_fast import ops
from recon_fast.errors import InputError
from recon_fast.model.backbone import ReConTransformer, gather_rows
from recon_fast.model.config import ReConConfig
from recon_fast.model.layers import TransformerDecoder, init_student_weights, position_mlp
from recon_fast.ops.validate import data_checks_enabled

# Official loss names: reconstruction, image distillation, text distillation.
LOSS_KEYS = ("mdm", "csc_img", "csc_text")


def split_by_mask(mask: torch.Tensor, num_masked: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, G) bool mask (True = masked) -> visible (B, G - M) and masked (B, M) patch indices,
    each in ascending order (the order boolean indexing ``x[~mask]`` / ``x[mask]`` gives)."""
    order = torch.sort(mask.to(torch.uint8), dim=1, stable=True).indices  # (B, G): visible first
    num_visible = mask.shape[1] - num_masked
    return order[:, :num_visible], order[:, num_visible:]


class Reconstruction(NamedTuple):
    """One batch as the model sees and rebuilds it, in the clouds' own coordinates.

    G patches of K points per cloud, M = ``num_masked`` of them masked, V = G - M visible;
    patches keep the order of their indices in ``mask`` (ascending)."""
    center: torch.Tensor  # (B, G, 3) patch centres
    mask: torch.Tensor  # (B, G) bool, True = masked
    visible: torch.Tensor  # (B, V, K, 3) the patches the encoder sees
    masked: torch.Tensor  # (B, M, K, 3) the hidden patches (ground truth)
    predicted: torch.Tensor  # (B, M, K, 3) the decoder's reconstruction of the hidden patches


class ReCon(nn.Module):
    """The ReCon pretraining model (official ``ReCon`` without its teacher encoders).

    Submodules keep the official names: ``MAE_encoder`` (the student), ``mask_token``,
    ``decoder_pos_embed``, ``MAE_decoder``, ``increase_dim``, ``img_proj``, ``text_proj``.
    """

    def __init__(self, config: ReConConfig | None = None):
        super().__init__()
        config = config or ReConConfig()
        if config.name != "ReCon":
            config = dataclasses.replace(config, name="ReCon")
        self.config = config
        dim = config.trans_dim
        self.MAE_encoder = ReConTransformer(config, stop_grad=True)
        self.MAE_encoder.apply(init_student_weights)
        self.MAE_encoder.init_global_tokens()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = position_mlp(dim)
        self.MAE_decoder = TransformerDecoder(dim, config.decoder_depth, config.decoder_num_heads,
                                              config.mlp_ratio, config.drop_path_rate,
                                              config.attention_backend)
        self.increase_dim = nn.Sequential(nn.Conv1d(dim, 3 * config.group_size, 1))
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        if config.img_feature_dim is not None:
            self.img_proj = nn.Linear(dim, config.img_feature_dim)
            _init_projection(self.img_proj)
        if config.text_feature_dim is not None:
            self.text_proj = nn.Linear(dim, config.text_feature_dim)
            _init_projection(self.text_proj)

    @property
    def num_masked(self) -> int:
        return self.config.num_masked

    def random_mask(self, center: torch.Tensor,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """(B, G, 3) centres -> (B, G) bool mask with exactly int(mask_ratio * G) True per cloud.

        "rand": a uniformly random subset per cloud. "block": the patches nearest to a random
        centre (the official alternative). Built on the centres' device, no host round trip;
        drawn from `generator` (on that device) when given, else from the global stream.
        """
        B, G, _ = center.shape
        if self.config.mask_type == "rand":
            scores = torch.rand(B, G, device=center.device, generator=generator)
        else:
            anchor = torch.randint(G, (B, 1, 1), device=center.device,
                                   generator=generator).expand(B, 1, 3)
            anchor_xyz = torch.gather(center.detach(), 1, anchor)  # (B, 1, 3)
            scores = (center.detach() - anchor_xyz).norm(dim=-1)  # (B, G)
        masked = scores.argsort(dim=1)[:, :self.num_masked]  # (B, M)
        return torch.zeros(B, G, dtype=torch.bool, device=center.device).scatter_(1, masked, True)

    def forward(self, points: torch.Tensor, img_feature: torch.Tensor | None = None,
                text_feature: torch.Tensor | None = None, *,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One pretraining step's losses.

        Args:
            points: (B, N, 3) clouds, N >= num_group and >= group_size.
            img_feature: (B, img_feature_dim) image-teacher features (needed when the model has
                ``img_proj``, i.e. ``config.img_feature_dim`` is set).
            text_feature: (B, text_feature_dim) text-teacher features (likewise for text_proj).
            mask: optional (B, G) bool, True = masked, exactly ``num_masked`` per cloud; drawn
                at random (:meth:`random_mask`) when omitted. Given for tests and analyses.

        Returns:
            (loss, losses): the total (sum of the terms; float32 under autocast) and the terms by
            official name: "mdm" (Chamfer reconstruction), "csc_img", "csc_text".
        """
        neighborhood, center, mask = self._patches_and_mask(points, mask)
        B = points.shape[0]
        self._check_teacher_feature("img_feature", img_feature, B, "img_proj",
                                    self.config.img_feature_dim)
        self._check_teacher_feature("text_feature", text_feature, B, "text_proj",
                                    self.config.text_feature_dim)
        tokens, predicted, _, masked_idx = self._predict_masked(neighborhood, center, mask)
        losses = {"mdm": self._reconstruction_loss(predicted, gather_rows(neighborhood, masked_idx))}
        if img_feature is not None:
            losses["csc_img"] = _distillation_loss(self.img_proj(tokens[:, 1]), img_feature)
        if text_feature is not None:
            losses["csc_text"] = _distillation_loss(self.text_proj(tokens[:, 2]), text_feature)
        return sum(losses.values()), losses

    @torch.no_grad()
    def reconstruct(self, points: torch.Tensor, *, mask: torch.Tensor | None = None,
                    generator: Optional[torch.Generator] = None) -> Reconstruction:
        """The masked-patch reconstruction behind the "mdm" loss, for pictures and analyses.

        The same grouping, masking and decoding as :meth:`forward` (so the Chamfer distance
        between ``predicted`` and ``masked`` is the forward's "mdm" for the same mask), without
        gradients. Call ``model.eval()`` first for a deterministic pass (no drop-path).

        Args:
            points: (B, N, 3) clouds, as for :meth:`forward`.
            mask: optional (B, G) bool, True = masked; else drawn by :meth:`random_mask` from
                `generator` (a seeded generator on the points' device gives the same mask on
                every call).
        """
        neighborhood, center, mask = self._patches_and_mask(points, mask, generator)
        _, predicted, visible_idx, masked_idx = self._predict_masked(neighborhood, center, mask)
        cloud = neighborhood + center[:, :, None]  # patches back in the clouds' coordinates
        masked_center = gather_rows(center, masked_idx)[:, :, None]  # (B, M, 1, 3)
        return Reconstruction(center=center, mask=mask, visible=gather_rows(cloud, visible_idx),
                              masked=gather_rows(cloud, masked_idx),
                              predicted=predicted.to(center.dtype) + masked_center)

    def _patches_and_mask(self, points, mask, generator=None):
        """Group the clouds into centred patches (B, G, K, 3) and centres (B, G, 3); draw the
        mask (or check the given one)."""
        neighborhood, center = self.MAE_encoder.group(points)
        mask = (self.random_mask(center, generator) if mask is None
                else self._check_mask(mask, center))
        return neighborhood, center, mask

    def _predict_masked(self, neighborhood, center, mask):
        """Encode the visible patches, decode [visible tokens, mask tokens]: the encoder's
        tokens (B, 3 + V, C), the predicted masked patches (B, M, K, 3), centred as
        `neighborhood` is, and the visible / masked patch indices."""
        visible_idx, masked_idx = split_by_mask(mask, self.num_masked)
        tokens = self.MAE_encoder(neighborhood, center, visible_idx)  # (B, 3 + V, C)
        B, M = masked_idx.shape
        pos_visible = self.decoder_pos_embed(gather_rows(center, visible_idx))  # (B, V, C)
        pos_masked = self.decoder_pos_embed(gather_rows(center, masked_idx))  # (B, M, C)
        x = torch.cat([tokens[:, 3:], self.mask_token.expand(B, M, -1)], dim=1)  # (B, G, C)
        decoded = self.MAE_decoder(x, torch.cat([pos_visible, pos_masked], dim=1), M)  # (B, M, C)
        predicted = self.increase_dim(decoded.transpose(1, 2)).transpose(1, 2)  # (B, M, 3K)
        return tokens, predicted.reshape(B, M, self.config.group_size, 3), visible_idx, masked_idx

    def _reconstruction_loss(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Chamfer distance between predicted and true masked patches, both (B, M, K, 3)."""
        K = self.config.group_size
        distance = "squared" if self.config.loss == "cdl2" else "euclidean"
        # The prediction may be bf16 under autocast; the loss is taken in the targets' precision.
        return ops.chamfer_distance(predicted.reshape(-1, K, 3).to(target.dtype),
                                    target.reshape(-1, K, 3), distance=distance)

    def _check_mask(self, mask, center: torch.Tensor) -> torch.Tensor:
        B, G = center.shape[:2]
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (B, G):
            seen = (f"shape {tuple(mask.shape)}, dtype {mask.dtype}"
                    if isinstance(mask, torch.Tensor) else type(mask).__name__)
            raise InputError(f"mask must be a bool tensor of shape (B, num_group) = ({B}, {G}), "
                             f"got {seen}")
        mask = mask.to(center.device)
        if data_checks_enabled():
            counts = mask.sum(dim=1)
            if not bool((counts == self.num_masked).all()):
                raise InputError(f"mask must mask exactly int(mask_ratio * num_group) = "
                                 f"{self.num_masked} patches per cloud, got counts "
                                 f"{counts.tolist()}")
        return mask

    def _check_teacher_feature(self, name: str, feature, batch: int, head: str, width) -> None:
        has_head = hasattr(self, head)
        if feature is None:
            if has_head:
                raise InputError(f"{name} is required: the model distils into {head} "
                                 f"(config.{name}_dim = {width}); pass the teacher features "
                                 f"or build the model with {name}_dim=None")
            return
        if not has_head:
            raise InputError(f"{name} was given but the model has no {head} "
                             f"(config.{name}_dim is None)")
        if (not isinstance(feature, torch.Tensor) or not feature.dtype.is_floating_point
                or feature.dim() != 2 or feature.shape != (batch, width)):
            seen = (f"shape {tuple(feature.shape)}, dtype {feature.dtype}"
                    if isinstance(feature, torch.Tensor) else type(feature).__name__)
            raise InputError(f"{name} must be a float tensor of shape (B, {name}_dim) = "
                             f"({batch}, {width}), got {seen}")


def _distillation_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """SmoothL1 (beta 1, mean) between projected student token and teacher feature, computed in
    float32 at least (float64 when either side is float64)."""
    dtype = torch.promote_types(torch.promote_types(student.dtype, teacher.dtype), torch.float32)
    return F.smooth_l1_loss(student.to(dtype), teacher.to(dtype))


def _init_projection(layer: nn.Linear) -> None:
    """Official projection-head init: weights ~ N(mean 0.02, std 0.01), zero bias."""
    nn.init.normal_(layer.weight, mean=0.02, std=0.01)
    nn.init.zeros_(layer.bias)
