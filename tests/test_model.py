"""recon_fast.model against an independent restatement of the official forward, plus properties.

The restatement (tests/official_restatement.py) shares no code with recon_fast.model; both get
the same weights (moved with load_state_dict(strict=True), which also checks that the parameter
names agree) and the same random streams, then outputs and gradients must match in float32.
"""

from __future__ import annotations

import math

import pytest
import torch

from official_restatement import RefDownstream, RefReCon
from recon_fast.model import (ReCon, ReConClassifier, ReConConfig, ReConSVMFeatures, ReConZeroShot,
                              build_model)
from recon_fast.model.layers import ReConBlock, TransformerDecoder
from recon_fast.model.recon import split_by_mask

TINY = dict(trans_dim=48, encoder_dims=48, depth=2, num_heads=3, decoder_depth=2,
            decoder_num_heads=3, num_group=16, group_size=8, img_feature_dim=20,
            text_feature_dim=12)
N_POINTS, BATCH = 96, 3


def tiny_config(**overrides) -> ReConConfig:
    return ReConConfig(**{**TINY, **overrides})


def assert_matches(actual, expected, what, tol=1e-5):
    """max |actual - expected| <= tol * max(1, max |expected|): float32 agreement."""
    scale = max(1.0, expected.abs().max().item())
    err = (actual - expected).abs().max().item()
    assert err <= tol * scale, f"{what}: max abs diff {err:.3e} (scale {scale:.3e})"


def assert_grads_match(ours, ref, tol=1e-5):
    """Every parameter gradient agrees to tol x the largest gradient entry of the model.

    One scale for all: some gradients are zero in exact arithmetic (a bias right before a
    BatchNorm) and come out as the rounding left after cancelling large terms.
    """
    ref_params = dict(ref.named_parameters())
    grads = {name: (p.grad, ref_params[name].grad) for name, p in ours.named_parameters()}
    for name, (mine, other) in grads.items():
        assert (mine is None) == (other is None), f"{name}: gradient present on one side only"
    scale = max(1.0, max(other.abs().max().item() for _, other in grads.values()
                         if other is not None))
    for name, (mine, other) in grads.items():
        if mine is not None:
            err = (mine - other).abs().max().item()
            assert err <= tol * scale, f"grad of {name}: max abs diff {err:.3e} (scale {scale:.3e})"


def random_mask(batch, G, num_masked):
    mask = torch.zeros(batch, G, dtype=torch.bool)
    for b in range(batch):
        mask[b, torch.randperm(G)[:num_masked]] = True
    return mask


def clouds(batch=BATCH, n=N_POINTS, requires_grad=False):
    return (torch.rand(batch, n, 3) * 2 - 1).requires_grad_(requires_grad)


def pretrain_pair(**overrides):
    cfg = tiny_config(**overrides)
    ours = ReCon(cfg)
    ref = RefReCon(cfg.trans_dim, cfg.depth, cfg.num_heads, cfg.num_group, cfg.group_size,
                   cfg.decoder_depth, cfg.decoder_num_heads, cfg.drop_path_rate,
                   cfg.img_feature_dim, cfg.text_feature_dim, cfg.loss)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


DOWNSTREAM = {
    "classifier-full": (ReConClassifier, dict(head_type="full", cls_dim=7)),
    "classifier-mlp3": (ReConClassifier, dict(head_type="mlp3", cls_dim=7)),
    "classifier-linear": (ReConClassifier, dict(head_type="linear", cls_dim=7)),
    "zeroshot-full": (ReConZeroShot, dict(zeroshot_type="full", img_feature_dim=12)),
    "zeroshot-text": (ReConZeroShot, dict(zeroshot_type="text")),
    "zeroshot-image": (ReConZeroShot, dict(zeroshot_type="image")),
    "svm": (ReConSVMFeatures, dict()),
}


def downstream_pair(kind, **overrides):
    cls, extra = DOWNSTREAM[kind]
    cfg = tiny_config(**{**extra, **overrides})
    ours = cls(cfg)
    ref = RefDownstream(cfg.trans_dim, cfg.depth, cfg.num_heads, cfg.num_group, cfg.group_size,
                        kind.split("-")[0], cfg.drop_path_rate, head_type=cfg.head_type,
                        cls_dim=cfg.cls_dim, zeroshot_type=cfg.zeroshot_type,
                        ratio=cfg.zeroshot_ratio, img_dim=cfg.img_feature_dim,
                        text_dim=cfg.text_feature_dim)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ours, ref


# ---------------------------------------------------------------- parity with the restatement
@pytest.mark.parametrize("backend", ["eager", "sdpa"])
@pytest.mark.parametrize("drop_path_rate", [0.0, 0.3])
@pytest.mark.parametrize("loss", ["cdl2", "cdl1"])
def test_pretraining_matches_restatement(backend, drop_path_rate, loss):
    ours, ref = pretrain_pair(attention_backend=backend, drop_path_rate=drop_path_rate, loss=loss)
    pts = clouds()
    pts_ref = pts.clone().requires_grad_()
    pts.requires_grad_()
    img, text = torch.randn(BATCH, 20), torch.randn(BATCH, 12)
    mask = random_mask(BATCH, 16, ours.num_masked)
    torch.manual_seed(1)  # the same drop-path draws on both sides
    loss_ours, parts = ours(pts, img, text, mask=mask)
    torch.manual_seed(1)
    loss_ref, parts_ref = ref(pts_ref, img, text, mask)
    assert set(parts) == {"mdm", "csc_img", "csc_text"} == set(parts_ref)
    for key in parts:
        assert_matches(parts[key], parts_ref[key], key)
    assert_matches(loss_ours, loss_ref, "total loss")
    loss_ours.backward()
    loss_ref.backward()
    assert_grads_match(ours, ref)
    assert_matches(pts.grad, pts_ref.grad, "grad of points")


def downstream_cases():
    """(kind, training, dtype). In training mode the MLP head's BatchNorms normalise over a
    batch of 3, which amplifies float32 rounding (1/sqrt(var + eps) up to ~300x, twice), so
    those two heads are compared in float64 there; everything else in float32 as well."""
    for kind in DOWNSTREAM:
        for training in (True, False):
            yield kind, training, torch.float64
            if not (training and kind in ("classifier-full", "classifier-mlp3")):
                yield kind, training, torch.float32


@pytest.mark.parametrize("kind,training,dtype", list(downstream_cases()))
def test_downstream_matches_restatement(kind, training, dtype):
    ours, ref = downstream_pair(kind, drop_path_rate=0.2)
    ours.to(dtype).train(training)
    ref.to(dtype).train(training)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    pts = clouds().to(dtype)
    pts_ref = pts.clone().requires_grad_()
    pts.requires_grad_()
    torch.manual_seed(3)  # the same drop-path and dropout draws
    out = ours(pts)
    torch.manual_seed(3)
    out_ref = ref(pts_ref)
    assert out.shape == out_ref.shape and out.dtype == dtype
    assert_matches(out, out_ref, f"{kind} output", tol)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (out_ref * weights).sum().backward()
    assert_grads_match(ours, ref, tol)
    assert_matches(pts.grad, pts_ref.grad, "grad of points", tol)


def test_downstream_sdpa_backend_matches_restatement():
    ours, ref = downstream_pair("classifier-full", attention_backend="sdpa")
    ours.eval()
    ref.eval()
    pts = clouds()
    assert_matches(ours(pts), ref(pts), "sdpa classifier output")


@pytest.mark.parametrize("batch,n", [(1, 16), (2, 250)])
def test_odd_sizes_and_non_contiguous_clouds(batch, n):
    ours, ref = downstream_pair("svm")
    ours.eval()
    ref.eval()
    pts = torch.rand(batch, n, 4)[..., :3]  # a non-contiguous view
    assert not pts.is_contiguous()
    assert_matches(ours(pts), ref(pts.contiguous()), "features")


def test_float64_gradcheck_of_the_blocks():
    # The smooth parts; the patch encoder's max pooling and the point grouping are piecewise,
    # so their gradients are checked against the restatement above instead. (With stop_grad
    # the block's gradient is deliberately not the derivative: see the stop-gradient test.)
    block = ReConBlock(12, 3, stop_grad=False).double()
    x = torch.randn(2, 3 + 4, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))
    decoder = TransformerDecoder(12, 1, 3).double()
    pos = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: decoder(a, b, 2), (x[:, :5].detach(), pos))


def test_float64_gradcheck_of_the_distillation_terms():
    model = ReCon(tiny_config(num_group=4, group_size=4, depth=1, decoder_depth=1)).double()
    pts = clouds(2, 10).double()
    mask = random_mask(2, 4, model.num_masked)
    img = torch.randn(2, 20, dtype=torch.float64, requires_grad=True)
    text = torch.randn(2, 12, dtype=torch.float64, requires_grad=True)
    model.eval()  # no drop path: a deterministic function of the features
    assert torch.autograd.gradcheck(lambda i, t: model(pts, i, t, mask=mask)[0], (img, text))


# ---------------------------------------------------------------- ReCon block properties
def test_pretraining_cross_attention_stops_gradient_to_patch_tokens():
    x = torch.randn(2, 3 + 5, 24, requires_grad=True)
    for stop_grad, expect_zero in ((True, True), (False, False)):
        block = ReConBlock(24, 4, stop_grad=stop_grad)
        x.grad = None
        block(x)[:, :3].sum().backward()  # only the global queries' outputs
        patch_grad = x.grad[:, 3:]
        assert bool((patch_grad == 0).all()) == expect_zero


def test_recon_block_adds_residuals_to_the_normalised_tensor():
    block = ReConBlock(16, 2, stop_grad=True)
    branches = (block.attn.proj, block.attn_contrast.proj, block.mlp.fc2, block.mlp_contrast.fc2)
    for branch in branches:
        torch.nn.init.zeros_(branch.weight)
        torch.nn.init.zeros_(branch.bias)
    x = torch.randn(2, 7, 16) * 3 + 1
    ln = torch.nn.functional.layer_norm
    # With every branch zero the block is norm2(norm1(x)) == norm(x) (not x + 0 as pre-norm).
    torch.testing.assert_close(block(x), ln(ln(x, (16,)), (16,)))


# ---------------------------------------------------------------- masking
def test_random_mask_masks_exactly_int_ratio_times_g_per_cloud():
    model = ReCon(tiny_config(num_group=20, mask_ratio=0.6))
    mask = model.random_mask(torch.rand(64, 20, 3))
    assert mask.dtype == torch.bool and mask.shape == (64, 20)
    assert (mask.sum(1) == int(0.6 * 20)).all()
    assert len({tuple(row.tolist()) for row in mask}) > 60  # drawn per cloud
    # Every patch is masked about 60% of the time.
    assert (mask.float().mean(0) - 0.6).abs().max() < 0.25


def test_block_mask_masks_the_patches_nearest_to_one_centre():
    model = ReCon(tiny_config(num_group=16, mask_type="block"))
    center = torch.rand(8, 16, 3)
    mask = model.random_mask(center)
    for b in range(8):
        d = torch.cdist(center[b], center[b])  # (G, G)
        nearest = [set(torch.argsort(d[g])[:model.num_masked].tolist()) for g in range(16)]
        assert set(torch.nonzero(mask[b]).flatten().tolist()) in nearest


def test_forward_uses_the_random_mask_when_none_is_given():
    model = ReCon(tiny_config(drop_path_rate=0.0)).eval()
    pts, img, text = clouds(), torch.randn(BATCH, 20), torch.randn(BATCH, 12)
    torch.manual_seed(11)
    loss_random, _ = model(pts, img, text)
    center = model.MAE_encoder.group(pts).center
    torch.manual_seed(11)
    drawn = model.random_mask(center)
    loss_given, _ = model(pts, img, text, mask=drawn)
    assert torch.equal(loss_random, loss_given)


@pytest.mark.parametrize("loss", ["cdl2", "cdl1"])
def test_reconstruct_returns_what_the_reconstruction_loss_compares(loss):
    """Chamfer(predicted, masked) of reconstruct() is the forward's mdm on the same mask; the
    patches are the input's own points (clouds' coordinates), split as the mask says."""
    from reference import chamfer_l1_reference, chamfer_l2_reference

    model = ReCon(tiny_config(loss=loss)).eval()
    pts, img, text = clouds(), torch.randn(BATCH, 20), torch.randn(BATCH, 12)
    patches = model.reconstruct(pts, generator=torch.Generator().manual_seed(3))
    again = model.reconstruct(pts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(patches.mask, again.mask) and torch.equal(patches.predicted, again.predicted)
    G, K, M = 16, TINY["group_size"], model.num_masked
    assert patches.mask.shape == (BATCH, G) and (patches.mask.sum(1) == M).all()
    assert patches.visible.shape == (BATCH, G - M, K, 3)
    assert patches.masked.shape == patches.predicted.shape == (BATCH, M, K, 3)

    _, losses = model(pts, img, text, mask=patches.mask)
    chamfer = chamfer_l2_reference if loss == "cdl2" else chamfer_l1_reference
    expected = chamfer(patches.predicted.reshape(-1, K, 3), patches.masked.reshape(-1, K, 3))
    assert_matches(losses["mdm"], expected, "mdm vs Chamfer of reconstruct()")

    def farthest_from(a, b):  # max over a's points of the distance to the nearest point of b
        exact = torch.cdist(a.reshape(-1, 3), b.reshape(-1, 3),
                            compute_mode="donot_use_mm_for_euclid_dist")
        return exact.min(dim=1).values.max().item()

    for b in range(BATCH):  # patches hold input points; each masked patch holds its centre
        assert farthest_from(patches.visible[b], pts[b]) < 1e-6
        assert farthest_from(patches.masked[b], pts[b]) < 1e-6
        for centre, patch in zip(patches.center[b][patches.mask[b]], patches.masked[b]):
            assert farthest_from(centre, patch) < 1e-6
        for centre, patch in zip(patches.center[b][~patches.mask[b]], patches.visible[b]):
            assert farthest_from(centre, patch) < 1e-6


def test_split_by_mask_orders_like_boolean_indexing():
    mask = random_mask(5, 11, 6)
    visible, masked = split_by_mask(mask, 6)
    positions = torch.arange(11).expand(5, 11)
    assert torch.equal(visible, positions[~mask].reshape(5, -1))
    assert torch.equal(masked, positions[mask].reshape(5, -1))


# ---------------------------------------------------------------- precision and compilation
def test_bf16_autocast_pretraining_and_finetuning():
    model = ReCon(tiny_config())
    pts, img, text = clouds(), torch.randn(BATCH, 20), torch.randn(BATCH, 12)
    mask = random_mask(BATCH, 16, model.num_masked)
    loss32, parts32 = model(pts, img, text, mask=mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss16, parts16 = model(pts, img, text, mask=mask)
    assert loss16.dtype == torch.float32 and torch.isfinite(loss16)
    for key in parts32:
        assert math.isclose(parts16[key].item(), parts32[key].item(), rel_tol=0.05,
                            abs_tol=1e-3), key
    loss16.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.parameters() if p.requires_grad)

    classifier = ReConClassifier(tiny_config(cls_dim=5)).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits16 = classifier(pts)
    torch.testing.assert_close(logits16.float(), classifier(pts), atol=0.1, rtol=0.05)


def test_training_forward_compiles_into_one_graph():
    model = ReCon(tiny_config(depth=1, decoder_depth=1))
    pts, img, text = clouds(), torch.randn(BATCH, 20), torch.randn(BATCH, 12)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    mask = random_mask(BATCH, 16, model.num_masked)
    loss_c, parts_c = compiled(pts, img, text, mask=mask)
    loss_e, parts_e = model(pts, img, text, mask=mask)
    assert_matches(loss_c, loss_e, "compiled loss")
    loss_c.backward()
    loss_random, _ = compiled(pts, img, text)  # mask drawn inside the graph
    assert torch.isfinite(loss_random)


def test_finetuning_forward_compiles_into_one_graph():
    model = ReConClassifier(tiny_config(depth=1, cls_dim=5)).eval()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    pts = clouds()
    assert_matches(compiled(pts), model(pts), "compiled logits")


# ---------------------------------------------------------------- configs and construction
def test_downstream_models_build_from_official_sections():
    model = build_model({"NAME": "PointTransformer", "trans_dim": 48, "depth": 1,
                         "drop_path_rate": 0.2, "cls_dim": 15, "num_heads": 3, "group_size": 8,
                         "num_group": 16, "encoder_dims": 48, "type": "linear"})
    assert isinstance(model, ReConClassifier)
    assert model.cls_head_finetune[0].out_features == 15 and len(model.cls_head_finetune) == 1
    assert model(clouds()).shape == (BATCH, 15)


def test_freeze_as_official_trains_only_cls_parameters():
    for head_type, frozen_any in (("linear", True), ("mlp3", True), ("full", False)):
        model = ReConClassifier(tiny_config(head_type=head_type))
        trainable = model.freeze_as_official()
        assert all("cls" in n for n in trainable) == frozen_any
        if frozen_any:
            assert {"cls_token", "cls_pos"} <= set(trainable)
            assert not model.encoder.first_conv[0].weight.requires_grad


def test_initialisation_follows_the_official_schemes():
    torch.manual_seed(0)
    model = ReCon(ReConConfig.small(depth=2))
    enc = model.MAE_encoder
    qkv = enc.blocks.blocks[0].attn.qkv.weight
    assert abs(qkv.std().item() - 0.02) < 0.002 and qkv.abs().max() <= 2.0
    assert torch.equal(enc.blocks.blocks[0].mlp.fc1.bias, torch.zeros(1024))
    assert torch.equal(enc.norm.weight, torch.ones(256))
    conv = enc.encoder.second_conv[0].weight
    assert abs(conv.std().item() - 0.02) < 0.002
    assert abs(enc.cls_token.std().item() - 0.02) < 0.01
    dec = model.MAE_decoder.blocks[0].mlp.fc1.weight  # Xavier uniform: bound sqrt(6/(in+out))
    bound = math.sqrt(6 / (256 + 1024))
    assert dec.abs().max() <= bound and dec.abs().max() > 0.9 * bound
    proj = model.img_proj.weight  # N(0.02, 0.01)
    assert abs(proj.mean().item() - 0.02) < 0.002 and abs(proj.std().item() - 0.01) < 0.001
    assert torch.equal(model.img_proj.bias, torch.zeros(768))
    assert abs(model.mask_token.std().item() - 0.02) < 0.01
    classifier = ReConClassifier(tiny_config())
    assert torch.equal(classifier.cls_token, torch.zeros(1, 1, 48))  # left at zero officially
    assert classifier.img_token.abs().sum() > 0
    assert ReConSVMFeatures(tiny_config()).cls_token.abs().sum() > 0


OFFICIAL_PRETRAIN_BASE_YAML = """
model : {
  NAME: ReCon,
  group_size: 32,
  num_group: 64,
  loss: cdl2,
  transformer_config: {
    mask_ratio: 0.6,
    mask_type: 'rand',
    trans_dim: 384,
    encoder_dims: 384,
    depth: 12,
    drop_path_rate: 0.1,
    num_heads: 6,
    decoder_depth: 4,
    decoder_num_heads: 6,
  },
  img_encoder: 'vit_base_patch16_224_in21k',
  text_encoder: 'ViT-B/32',
  self_contrastive: FALSE,
  }
npoints: 1024
"""


def test_config_reads_the_official_pretraining_yaml(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(OFFICIAL_PRETRAIN_BASE_YAML)
    cfg = ReConConfig.from_yaml(path, attention_backend="eager")
    assert cfg == ReConConfig.base(attention_backend="eager")
    sizes = (cfg.trans_dim, cfg.num_heads, cfg.depth, cfg.decoder_depth, cfg.num_masked)
    assert sizes == (384, 6, 12, 4, 38)
    assert (cfg.img_feature_dim, cfg.text_feature_dim) == (768, 512)
    small = dict(trans_dim=256, encoder_dims=256, num_heads=4, decoder_num_heads=4)
    tiny = dict(trans_dim=192, encoder_dims=192, num_heads=3, decoder_num_heads=3)
    for preset, sizes in ((ReConConfig.small(), small), (ReConConfig.tiny(), tiny)):
        section = {"NAME": "ReCon", "group_size": 32, "num_group": 64, "loss": "cdl2",
                   "transformer_config": {"mask_ratio": 0.6, "mask_type": "rand", "depth": 12,
                                          "drop_path_rate": 0.1, "decoder_depth": 4, **sizes},
                   "img_encoder": "vit_base_patch16_224_in21k", "text_encoder": "ViT-B/32",
                   "self_contrastive": False}
        assert ReConConfig.from_official(section) == preset


@pytest.mark.parametrize("section,cls,expect", [
    ({"NAME": "PointTransformer", "trans_dim": 384, "depth": 12, "drop_path_rate": 0.2,
      "cls_dim": 15, "num_heads": 6, "group_size": 32, "num_group": 128, "encoder_dims": 384,
      "type": "mlp3"}, ReConClassifier, dict(head_type="mlp3", cls_dim=15, num_group=128)),
    ({"NAME": "PointTransformerZeroShot", "trans_dim": 384, "depth": 12, "drop_path_rate": 0.1,
      "num_heads": 6, "group_size": 32, "num_group": 64, "encoder_dims": 384, "type": "full",
      "ratio": 0.25, "img_encoder": "ViT-B/32", "text_encoder": "ViT-B/32"}, ReConZeroShot,
     dict(zeroshot_type="full", zeroshot_ratio=0.25, img_feature_dim=512, text_feature_dim=512)),
    ({"NAME": "PointTransformerSVM", "trans_dim": 384, "depth": 12, "drop_path_rate": 0.1,
      "cls_dim": 40, "num_heads": 6, "group_size": 32, "num_group": 64, "encoder_dims": 384},
     ReConSVMFeatures, dict(cls_dim=40)),
])
def test_config_reads_official_downstream_sections(section, cls, expect):
    cfg = ReConConfig.from_official(section)
    for key, value in expect.items():
        assert getattr(cfg, key) == value, key
    assert cfg.name == section["NAME"]
    model = build_model(section, depth=1)  # overrides keep the test small
    assert type(model) is cls and len(model.blocks.blocks) == 1
    assert type(build_model(model.config)) is cls  # the config remembers the model


@pytest.mark.parametrize("overrides,match", [
    (dict(encoder_dims=32), "encoder_dims .* must equal trans_dim"),
    (dict(num_heads=5), r"trans_dim \(48\) must be divisible by num_heads \(5\)"),
    (dict(mask_ratio=0.0), "at least one masked"),
    (dict(mask_ratio=1.0), "at least one masked and one visible"),
    (dict(head_type="mlp"), "head_type must be one of"),
    (dict(depth=0), "depth must be a positive int"),
    (dict(drop_path_rate=1.0), "drop_path_rate"),
])
def test_invalid_configs_raise(overrides, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(**overrides)


def test_official_sections_with_unsupported_options_raise():
    with pytest.raises(ValueError, match="unknown image teacher 'my_vit'.*img_feature_dim"):
        ReConConfig.from_official({"NAME": "ReCon", "img_encoder": "my_vit"})
    assert ReConConfig.from_official({"NAME": "ReCon", "img_encoder": "my_vit",
                                      "img_feature_dim": 1024}).img_feature_dim == 1024
    with pytest.raises(ValueError, match="self_contrastive"):
        ReConConfig.from_official({"NAME": "ReCon", "self_contrastive": True})
    with pytest.raises(ValueError, match="name must be one of"):
        ReConConfig.from_official({"NAME": "TwoTower"})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        ReConConfig.from_yaml("/nonexistent/base.yaml")


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize("points,match", [
    (torch.rand(2, 96, 2), r"points must have shape \(B, N, 3\)"),
    (torch.rand(96, 3), r"points must have shape \(B, N, 3\)"),
    (torch.rand(2, 10, 3), r"N = 10 points .* num_group=16 .* N >= 16"),
    (torch.randint(0, 5, (2, 96, 3)), "floating point"),
    ([[0.0, 0.0, 0.0]], "torch.Tensor"),
])
def test_bad_points_raise_clear_errors(points, match):
    with pytest.raises(ValueError, match=match):
        ReConSVMFeatures(tiny_config())(points)
    with pytest.raises(ValueError, match=match):
        ReCon(tiny_config())(points, torch.randn(2, 20), torch.randn(2, 12))


def test_too_few_points_for_group_size():
    with pytest.raises(ValueError, match=r"group_size=40 .* N >= 40"):
        ReConClassifier(tiny_config(group_size=40))(clouds(n=30))


def test_nan_points_raise():
    pts = clouds()
    pts[1, 5, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ReCon(tiny_config())(pts, torch.randn(BATCH, 20), torch.randn(BATCH, 12))


@pytest.mark.parametrize("img,text,match", [
    (torch.randn(BATCH, 21), torch.randn(BATCH, 12),
     r"img_feature must .* \(3, 20\), got shape \(3, 21\)"),
    (torch.randn(BATCH, 20), torch.randn(BATCH, 13), r"text_feature must .* \(3, 12\)"),
    (torch.randn(BATCH + 1, 20), torch.randn(BATCH, 12), r"img_feature must .* \(3, 20\)"),
    (None, torch.randn(BATCH, 12), "img_feature is required"),
])
def test_bad_teacher_features_raise(img, text, match):
    with pytest.raises(ValueError, match=match):
        ReCon(tiny_config())(clouds(), img, text)


def test_teacher_feature_without_projection_head_raises():
    model = ReCon(tiny_config(text_feature_dim=None))
    assert not hasattr(model, "text_proj")
    loss, parts = model(clouds(), torch.randn(BATCH, 20))
    assert set(parts) == {"mdm", "csc_img"}
    with pytest.raises(ValueError, match="no text_proj"):
        model(clouds(), torch.randn(BATCH, 20), torch.randn(BATCH, 12))


def test_bad_masks_raise():
    model = ReCon(tiny_config())
    args = (clouds(), torch.randn(BATCH, 20), torch.randn(BATCH, 12))
    with pytest.raises(ValueError, match=r"exactly int\(mask_ratio \* num_group\) = 9"):
        model(*args, mask=random_mask(BATCH, 16, 8))
    with pytest.raises(ValueError, match=r"bool tensor of shape \(B, num_group\) = \(3, 16\)"):
        model(*args, mask=torch.zeros(BATCH, 15, dtype=torch.bool))


def test_unknown_attention_backend_raises():
    with pytest.raises(ValueError, match="attention_backend must be one of"):
        ReCon(tiny_config(attention_backend="flash9"))


# ---------------------------------------------------------------- the real size, once
@pytest.mark.slow
def test_base_config_matches_restatement():
    cfg = ReConConfig.base()
    ours = ReCon(cfg)
    ref = RefReCon(384, 12, 6, 64, 32, 4, 6, 0.1, 768, 512)
    ref.load_state_dict(ours.state_dict(), strict=True)
    pts = torch.rand(2, 1024, 3) * 2 - 1
    img, text = torch.randn(2, 768), torch.randn(2, 512)
    mask = random_mask(2, 64, 38)
    torch.manual_seed(0)
    loss, parts = ours(pts, img, text, mask=mask)
    torch.manual_seed(0)
    loss_ref, parts_ref = ref(pts, img, text, mask)
    for key in parts:
        assert_matches(parts[key], parts_ref[key], key)


def test_recon_blocks_run_both_attentions_in_one_triton_launch(monkeypatch):
    """With the Triton backend each ReCon block runs its self- and cross-attention as one fused
    launch forward and one backward, and the model still matches the official restatement (same
    state_dict keys, same drop-path draws) in loss and every gradient."""
    from recon_fast import attention

    monkeypatch.setenv("TRITON_INTERPRET", "1")  # Triton on CPU tensors: the interpreter
    reason = attention.triton_unavailable_reason(torch.device("cpu"))
    if reason is not None:
        pytest.skip(reason)
    kernels = attention._load_kernels()
    launched = []
    run = kernels.Launch.run

    def recording_run(launch):
        launched.append((launch.kernel, launch.kwargs["HAS_B"]))
        run(launch)

    monkeypatch.setattr(kernels.Launch, "run", recording_run)
    ours, ref = pretrain_pair(attention_backend="triton", drop_path_rate=0.3)
    pts = clouds()
    pts_ref = pts.clone().requires_grad_()
    pts.requires_grad_()
    img, text = torch.randn(BATCH, 20), torch.randn(BATCH, 12)
    mask = random_mask(BATCH, 16, ours.num_masked)
    torch.manual_seed(1)
    loss_ours, _ = ours(pts, img, text, mask=mask)
    torch.manual_seed(1)
    loss_ref, _ = ref(pts_ref, img, text, mask)
    assert_matches(loss_ours, loss_ref, "total loss", tol=1e-4)
    loss_ours.backward()
    loss_ref.backward()
    assert_grads_match(ours, ref, tol=1e-4)
    assert_matches(pts.grad, pts_ref.grad, "grad of points", tol=1e-4)
    fused = {kernel: sum(1 for k, two_roles in launched if k is kernel and two_roles)
             for kernel in (kernels._attention_fwd_kernel, kernels._attention_bwd_kernel)}
    depth = ours.config.depth
    assert list(fused.values()) == [depth, depth], f"fused launches {fused}, depth {depth}"
