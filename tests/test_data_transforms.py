"""Augmentations, image pipeline, prompts, device-side subsampling and the loader builder."""

import math

import numpy as np
import PIL.Image
import pytest
import torch
import torch.distributed as dist

from reference import fps_reference
from recon_fast.data import (NUM_PROMPTS, PROMPT_PREFIXES, PROMPT_SUFFIXES, ImageTransform,
                             PointcloudRotate, PointcloudScale, PointcloudScaleAndTranslate,
                             RandAugmentMC, all_prompts, build_loader, build_prompt, fps_indices,
                             fps_sample, fps_then_random, point_all_for, prompt_ids,
                             random_subset, rotate_y, scale, scale_and_translate,
                             train_augmentation, vote_augmentation)
from recon_fast.data.image import RANDAUGMENT_POOL, cutout
from recon_fast.errors import ConfigError, DataError

# Typed from the official TextTransformer (models/CrossModal.py), independently of the package.
OFFICIAL_PREFIXES = [
    "", "A ", "A model of ", "A model of a ", "A image of ", "A image of a ", "A 3D model of ",
    "A 3D model of a ", "A rendering model of ", "A rendering model of a ", "A point cloud of ",
    "A point cloud of a ", "A point cloud model of ", "A point cloud model of a ",
    "A 3D rendering model of ", "A 3D rendering model of a ", "A rendering image of ",
    "A rendering image of a ", "A 3D rendering image of ", "A 3D rendering image of a "]
OFFICIAL_SUFFIXES = [".", " with white background.", " with black context."]


# ---------------------------------------------------------------------------- point augmentations

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_rotate_y_is_a_rotation_about_y(dtype):
    points = torch.randn(6, 100, 3, dtype=torch.float64)
    out = rotate_y(points.to(dtype)).double()
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(out[..., 1], points[..., 1], atol=tol)              # y unchanged
    assert torch.allclose(out.norm(dim=-1), points.norm(dim=-1), atol=tol)    # norms kept
    # One angle per cloud with x' = x cos - z sin, z' = x sin + z cos (points @ R).
    theta = torch.atan2(out[:, 0, 2], out[:, 0, 0]) - torch.atan2(points[:, 0, 2],
                                                                  points[:, 0, 0])
    c, s = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    x, z = points[..., 0], points[..., 2]
    assert torch.allclose(out[..., 0], x * c - z * s, atol=tol * 3)
    assert torch.allclose(out[..., 2], x * s + z * c, atol=tol * 3)


def test_rotate_y_angles_cover_the_circle_and_follow_the_generator():
    points = torch.tensor([[[1.0, 0.0, 0.0]]]).repeat(4000, 1, 1)
    out = rotate_y(points)
    angles = torch.atan2(out[:, 0, 2], out[:, 0, 0]) % (2 * math.pi)
    counts = torch.histc(angles, bins=8, min=0, max=2 * math.pi)
    assert counts.min() > 400  # ~500 expected per eighth of the circle
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(rotate_y(points[:5], g1), rotate_y(points[:5], g2))
    rotated = PointcloudRotate()(points[:2])
    assert rotated.shape == (2, 1, 3) and torch.allclose(rotated.norm(dim=-1), torch.ones(2, 1))


def test_scale_and_translate_ranges_and_extra_channels():
    points = torch.randn(500, 20, 6)
    out = scale_and_translate(points)
    assert torch.equal(out[..., 3:], points[..., 3:])
    # Recover each cloud's per-axis affine map from two points, then check every point.
    d_in = points[:, 1, :3] - points[:, 0, :3]
    factor = (out[:, 1, :3] - out[:, 0, :3]) / d_in
    shift = out[:, 0, :3] - factor * points[:, 0, :3]
    assert torch.allclose(out[..., :3], points[..., :3] * factor[:, None] + shift[:, None],
                          atol=1e-4)
    assert factor.min() >= 2 / 3 - 1e-4 and factor.max() <= 1.5 + 1e-4
    assert shift.abs().max() <= 0.2 + 1e-4 and shift.abs().max() > 0.15
    assert (factor[:, 0] != factor[:, 1]).all()  # per-axis factors
    pure = scale(points)
    ratio = pure[..., :3] / points[..., :3]
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)  # no translation
    assert ratio.min() >= 2 / 3 - 1e-4 and ratio.max() <= 1.5 + 1e-4
    assert not torch.equal(points, out) and points.shape == out.shape  # input left untouched


def test_augmentation_choice_follows_the_official_runners():
    assert isinstance(train_augmentation("ModelNet"), PointcloudScaleAndTranslate)
    for name in ("ShapeNet", "ScanObjectNN", "ScanObjectNN_hardest", "ModelNetFewShot"):
        assert isinstance(train_augmentation(name), PointcloudRotate)
    assert isinstance(vote_augmentation("ModelNet"), PointcloudScale)
    assert isinstance(vote_augmentation("ScanObjectNN_hardest"), PointcloudRotate)
    x = torch.randn(2, 5, 3)
    assert vote_augmentation("ScanObjectNN")(x) is x


def test_augmentation_input_errors():
    with pytest.raises(ValueError, match=r"rotate_y: points must have 3 channels.*\(2, 5, 6\)"):
        rotate_y(torch.randn(2, 5, 6))
    with pytest.raises(ValueError, match=r"scale: points must be a float tensor of shape"):
        scale(torch.randn(5, 3))


# ---------------------------------------------------------------------------------- images

def test_cutout_draws_one_grey_square():
    img = PIL.Image.new("RGB", (64, 48), (10, 20, 30))
    for seed in range(20):
        torch.manual_seed(seed)
        grey = (np.asarray(cutout(img)) == 127).all(axis=2)
        rows, cols = np.flatnonzero(grey.any(axis=1)), np.flatnonzero(grey.any(axis=0))
        assert 1 <= len(rows) <= 17 and 1 <= len(cols) <= 17
        assert grey.sum() == len(rows) * len(cols)  # a filled axis-aligned rectangle
        assert (np.diff(rows) == 1).all() and (np.diff(cols) == 1).all()


def test_randaugment_pool_and_magnitudes():
    names = [n for n, _ in RANDAUGMENT_POOL]
    assert names == ["AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity",
                     "Posterize", "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize",
                     "TranslateX", "TranslateY"]
    ops = dict(RANDAUGMENT_POOL)
    ramp = PIL.Image.fromarray(np.tile(np.arange(256, dtype=np.uint8), (4, 1))[..., None]
                               .repeat(3, axis=2))
    # Solarize at v: threshold 256 - int(25.6 v); v=5 -> 128: values >= 128 are inverted.
    out = np.asarray(ops["Solarize"](ramp, 5))[0, :, 0]
    assert out[127] == 127 and out[128] == 255 - 128
    # Posterize at v=9 keeps 4 + int(3.6) = 7 bits.
    assert np.asarray(ops["Posterize"](ramp, 9))[0, 255, 0] == 254
    # Brightness factor 0.05 + 0.09 v: v=5 -> 0.5.
    assert abs(int(np.asarray(ops["Brightness"](ramp, 5))[0, 200, 0]) - 100) <= 1
    with pytest.raises(ValueError, match="RandAugmentMC needs"):
        RandAugmentMC(0, 10)


def test_randaugment_keeps_size_and_is_seeded():
    img = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (224, 224, 3), np.uint8))
    aug = RandAugmentMC(2, 10)
    torch.manual_seed(7)
    a = np.asarray(aug(img))
    torch.manual_seed(7)
    assert np.array_equal(a, np.asarray(aug(img))) and a.shape == (224, 224, 3)


def test_image_transform_input_checks():
    with pytest.raises(ValueError, match="image mode must be one of"):
        ImageTransform("random")
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\) array, got float32"):
        ImageTransform("center")(np.zeros((8, 8, 3), np.float32))


# ---------------------------------------------------------------------------------- prompts

def test_prompts_match_the_official_lists():
    assert list(PROMPT_PREFIXES) == OFFICIAL_PREFIXES
    assert list(PROMPT_SUFFIXES) == OFFICIAL_SUFFIXES
    assert NUM_PROMPTS == 60
    assert build_prompt("chair", 3, 1) == "A model of a chair with white background."
    table = all_prompts(["cat", "dog"])
    assert len(table) == 120
    assert table[60 + 7 * 3 + 2] == "A 3D model of a dog with black context."
    # Zero-shot id j: prefix j % 20, suffix j // 20.
    assert [prompt_ids(j) for j in (0, 19, 20, 59)] == [(0, 0), (19, 0), (0, 1), (19, 2)]
    with pytest.raises(ValueError, match=r"prefix_id must be an int in \[0, 19\], got 20"):
        build_prompt("x", 20, 0)


# ---------------------------------------------------------------------------------- subsampling

def test_point_all_table():
    assert [point_all_for(n, 10000) for n in (1024, 2048, 4096, 8192)] == [1200, 2400, 4800, 8192]
    assert point_all_for(2048, 2048) == 2048  # ScanObjectNN: only a permutation
    with pytest.raises(ConfigError, match="npoints must be one of"):
        point_all_for(1000, 5000)
    with pytest.raises(DataError, match="cannot draw npoints=2048 from clouds of 1500"):
        point_all_for(2048, 1500)


def test_finetune_refuses_npoints_without_a_pool_before_training(tmp_path, capsys):
    from recon_fast.cli import main

    out = tmp_path / "run"
    assert main(["finetune", "--config", "embedded_finetune", "--set", "npoints=512",
                 "--out", str(out), "--no-progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "npoints must be one of [1024, 2048, 4096, 8192]" in err and "512" in err
    assert "Traceback" not in err and not out.exists()  # refused before the run folder


def test_fps_sample_and_fps_then_random_against_reference():
    points = torch.randn(3, 1500, 3)
    expected_idx = fps_reference(points, 1200, min_norm_sq=1e-3)  # pointnet2_ops semantics
    assert torch.equal(fps_indices(points, 1200), expected_idx)
    plain = fps_sample(points, 256)
    ref_idx = fps_reference(points, 256, min_norm_sq=1e-3)
    assert torch.equal(plain, torch.stack([points[b, ref_idx[b]] for b in range(3)]))
    assert torch.equal(fps_sample(points, 64, pointnet2_compat=False),
                       torch.stack([points[b, i] for b, i in
                                    enumerate(fps_reference(points, 64))]))
    torch.manual_seed(0)
    sub = fps_then_random(points, 1024)
    torch.manual_seed(0)
    columns = torch.randperm(1200)[:1024]
    assert sub.shape == (3, 1024, 3) and columns.unique().numel() == 1024
    for b in range(3):  # the same FPS columns for every cloud of the batch
        assert torch.equal(sub[b], points[b, expected_idx[b, columns]])


def test_random_subset_is_without_replacement():
    points = torch.arange(2 * 50 * 3, dtype=torch.float32).reshape(2, 50, 3)
    pool = torch.arange(50).repeat(2, 1)
    out = random_subset(points, pool, 50)
    assert torch.equal(out[:, :, 0].sort(dim=1).values, points[:, :, 0])
    with pytest.raises(ValueError, match="npoints=60 exceeds the pool of 50"):
        random_subset(points, pool, 60)


# ---------------------------------------------------------------------------------- loaders

class _Numbers(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"i": i, "np": float(np.random.random()), "seed": torch.initial_seed()}


def test_build_loader_train_and_eval_rules():
    train = build_loader(_Numbers(), 4, train=True, workers=0, seed=0)
    batches = list(train)
    assert len(batches) == 2 and all(len(b["i"]) == 4 for b in batches)  # last partial dropped
    order = torch.cat([b["i"] for b in batches]).tolist()
    assert order != list(range(8))  # shuffled
    again = build_loader(_Numbers(), 4, train=True, workers=0, seed=0)
    assert torch.cat([b["i"] for b in again]).tolist() == order  # a seed fixes the order
    test = build_loader(_Numbers(), 4, train=False, workers=0)
    assert torch.cat([b["i"] for b in test]).tolist() == list(range(10))
    assert test.pin_memory == torch.cuda.is_available()
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        build_loader(_Numbers(), 0, train=True)
    with pytest.raises(ValueError, match="torch.distributed is not initialised"):
        build_loader(_Numbers(), 2, train=True, distributed=True)


def _restated_item_seed(seed, epoch, index):
    """The documented item seed: blake2b-64 of "seed/epoch/index", top bit cleared."""
    import hashlib

    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def test_build_loader_items_draw_the_same_in_any_worker():
    in_main = list(build_loader(_Numbers(), 1, train=False, workers=0, seed=5))
    in_workers = list(build_loader(_Numbers(), 1, train=False, workers=2, seed=5))
    assert [float(b["np"]) for b in in_main] == [float(b["np"]) for b in in_workers]
    for batch in in_main:
        index = int(batch["i"])
        expected = np.random.RandomState(_restated_item_seed(5, 0, index) % 2**32).random_sample()
        assert float(batch["np"]) == expected
        assert int(batch["seed"]) == _restated_item_seed(5, 0, index)
    assert len({float(b["np"]) for b in in_main}) == len(in_main)


def test_build_loader_resumes_mid_epoch():
    loader = build_loader(_Numbers(), 2, train=True, workers=0, seed=1)
    sampler = loader.batch_sampler.sampler
    sampler.set_epoch(3)
    whole = [b["i"].tolist() for b in loader]
    sampler.set_epoch(3, start=4)  # two batches of 2 already seen
    assert [b["i"].tolist() for b in loader] == whole[2:]
    sampler.set_epoch(4)
    assert [b["i"].tolist() for b in loader] != whole  # a new order each epoch


def test_build_loader_shards_over_ranks(tmp_path):
    shards = [list(build_loader(_Numbers(), 1, train=False, workers=0, rank=r, world=3))
              for r in range(3)]
    seen = sorted(int(b["i"]) for shard in shards for b in shard)
    assert seen == sorted(list(range(10)) + [0, 1])  # padded to 4 per rank like DistributedSampler
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        loader = build_loader(_Numbers(), 3, train=True, workers=0)
        sampler = loader.batch_sampler.sampler
        assert (sampler.rank, sampler.world, sampler.shuffle) == (0, 1, True)
        assert loader.batch_sampler.drop_last and len(list(loader)) == 3
    finally:
        dist.destroy_process_group()
