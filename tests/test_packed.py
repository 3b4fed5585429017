"""Packed shards: pack (ShapeNet-55 and OpenShape layouts), streaming order over ranks and
workers, exact resume, a killed pack, damaged shards, and pretraining from a pack."""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_fixtures import write_shapenet
from packed_fixtures import write_openshape
from recon_fast.data.packed import (PackedDataset, PackedSampler, PackSettings, ShardError, pack,
                                    packed_loader, read_index, verify_pack)
from recon_fast.data.packed.shard import Shard, encode_shard


def small_pack(tmp_path, count=23, shard_size=5, **settings):
    src = tmp_path / "openshape"
    shapes = write_openshape(str(src), count, n_points=80, dim=8)
    out = tmp_path / "pack"
    pack(f"openshape:{src}", str(out), PackSettings(points=64, shard_size=shard_size, **settings),
         progress=False)
    return str(out), shapes


def keys_of(sampler):
    return [position for position, _ in sampler]


# ------------------------------------------------------------------------------ packing


def test_openshape_pack_holds_the_source_values(tmp_path):
    out, shapes = small_pack(tmp_path, count=7, shard_size=3, rgb=True, xyz_dtype="float32",
                             feature_dtype="float32")
    index = read_index(out)
    assert index["count"] == 7 and [s["count"] for s in index["shards"]] == [3, 3, 1]
    assert index["image_dim"] == 8 and index["text_dim"] == 8
    shard = Shard(os.path.join(out, index["shards"][1]["file"]))
    shape = shapes["uid00004"]  # shard 1, row 1 (split order)
    xyz = shard.fields["xyz"][1]
    # 64 of the 80 source points, each one a row of the source cloud, none twice.
    matches = [np.flatnonzero((shape["xyz"] == p).all(axis=1)) for p in xyz]
    rows = [int(m[0]) for m in matches if m.size]
    assert len(rows) == 64 and len(set(rows)) == 64
    np.testing.assert_allclose(shard.fields["rgb"][1], shape["rgb"][rows], atol=1e-3)
    # Image features: the thumbnail, then the 12 views.
    assert shard.fields["image_count"][1] == 13
    np.testing.assert_array_equal(shard.fields["image_feat"][1][0], shape["thumbnail_feat"])
    np.testing.assert_array_equal(shard.fields["image_feat"][1][1:13], shape["image_feat"])
    # Texts: prompt_avg of each text, the non-empty caption, each retrieval text's original.
    texts = shard.fields["text_feat"][1]
    assert shard.fields["text_count"][1] == 4
    np.testing.assert_array_equal(texts[0], shape["text_feat"][0]["prompt_avg"][0])
    np.testing.assert_array_equal(texts[1], shape["blip_caption_feat"]["prompt_avg"][0])
    assert not (texts[:4] == shape["msft_caption_feat"]["prompt_avg"][0]).all(axis=1).any(), \
        "an empty caption's feature must not be packed"
    np.testing.assert_array_equal(texts[2], shape["retrieval_text_feat"][0]["original"][0])
    np.testing.assert_array_equal(texts[3], shape["retrieval_text_feat"][1]["original"][0])
    np.testing.assert_array_equal(texts[4:], 0)
    assert verify_pack(out) == []


def test_shapenet_pack_keeps_the_first_rows_and_the_labels(tmp_path):
    content = write_shapenet(str(tmp_path / "sn"), n_points=100, per_split=3)
    out = str(tmp_path / "pack")
    index = pack(f"shapenet:{tmp_path / 'sn'}", out,
                 PackSettings(points=96, shard_size=4, xyz_dtype="float32"), progress=False)
    assert index["count"] == 6 and index["class_texts"][0].startswith("airplane")
    # whole=True: the test list first, then train (the official pretraining set).
    test_list = (tmp_path / "sn" / "ShapeNet-55" / "test.txt").read_text().split()
    shard = Shard(os.path.join(out, index["shards"][0]["file"]))
    points, _ = content[test_list[1]]
    np.testing.assert_array_equal(shard.fields["xyz"][1], points[:96].astype(np.float32))
    assert shard.fields["label"].tolist() == [0, 1, 0, 0]  # synset 02691156 is row 0


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_shapenet_pack_holds_the_teachers_features(tmp_path):
    from data_fixtures import SHAPENET_TABLE
    from recon_fast import teachers
    from recon_fast.data.image import ImageTransform
    from recon_fast.data.io import read_bgr_image
    from recon_fast.data.packed import Teachers
    from recon_fast.data.prompts import build_prompt

    root, cache, out = tmp_path / "sn", str(tmp_path / "cache"), str(tmp_path / "pack")
    write_shapenet(str(root), n_points=64, per_split=2)
    pack(f"shapenet:{root}", out, PackSettings(points=64, shard_size=3, feature_dtype="float32"),
         teachers=Teachers("ViT-B/32", "ViT-B/32", "random", cache_dir=cache), progress=False)
    batch = PackedDataset(out, 32, seed=4).__getitems__([(1, 0), (2, 5)])
    text_teacher, image_teacher = teachers.build_clip_teachers("ViT-B-32", "random",
                                                               cache_dir=cache)
    text_teacher.autocast = image_teacher.autocast = False
    names = (root / "ShapeNet-55" / "test.txt").read_text().split() + \
        (root / "ShapeNet-55" / "train.txt").read_text().split()  # whole: test list first
    for i, position in enumerate((1, 2)):
        label = int(batch["label"][i])
        prompt = build_prompt(SHAPENET_TABLE["describe"][str(label)], int(batch["prefix_id"][i]),
                              int(batch["suffix_id"][i]))
        with torch.no_grad():
            text = text_teacher([prompt])[0]
            view = ImageTransform("center")(read_bgr_image(
                str(root / "shapenet_img" / names[position].replace(".npy", ".png"))))
            image = image_teacher(view[None])[0]
        torch.testing.assert_close(batch["text_feature"][i], text, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(batch["img_feature"][i], image, atol=1e-4, rtol=1e-4)


def test_pack_refuses_a_folder_packed_with_other_settings(tmp_path):
    out, _ = small_pack(tmp_path, count=4, shard_size=2)
    with pytest.raises(ValueError, match="different settings.*settings"):
        pack(f"openshape:{tmp_path / 'openshape'}", out, PackSettings(points=32, shard_size=2),
             progress=False)


# Runs `recon-fast pack` and kills the process (SIGKILL, no clean-up) inside its sixth shard write:
# the temporary file is complete, the rename to the shard name has not happened. Killing at a
# counted write, not after a wait, makes the test independent of the machine's speed.
KILL_IN_SIXTH_SHARD_WRITE = """
import os, signal, sys
from recon_fast.cli import main
real_replace, renamed = os.replace, []
def replace_or_die(src, dst, *args, **kwargs):
    if str(dst).endswith(".rfshard"):
        if len(renamed) == 5:
            os.kill(os.getpid(), signal.SIGKILL)
        renamed.append(dst)
    return real_replace(src, dst, *args, **kwargs)
os.replace = replace_or_die
sys.exit(main(sys.argv[1:]))
"""


def test_a_killed_pack_resumes_to_identical_shards(tmp_path):
    src = tmp_path / "openshape"
    write_openshape(str(src), 12, n_points=512, dim=64)
    reference = tmp_path / "reference"
    pack(f"openshape:{src}", str(reference), PackSettings(points=512, shard_size=1), progress=False)
    out = tmp_path / "killed"
    args = ["pack", "--source", f"openshape:{src}", "--out", str(out), "--points", "512",
            "--shard-size", "1", "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", KILL_IN_SIXTH_SHARD_WRITE] + args,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "index.json").exists()
    assert len([n for n in os.listdir(out) if n.endswith(".rfshard")]) == 5
    assert [n for n in os.listdir(out) if ".tmp" in n], "the kill left no temporary shard"
    result = subprocess.run([sys.executable, "-m", "recon_fast.cli"] + args, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    names = sorted(n for n in os.listdir(reference) if n.endswith(".rfshard"))
    assert names == sorted(n for n in os.listdir(out) if n.endswith(".rfshard"))
    for name in names:
        assert (reference / name).read_bytes() == (out / name).read_bytes(), name
    assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_parallel_pack_writes_the_same_shards(tmp_path):
    src = tmp_path / "openshape"
    write_openshape(str(src), 9, n_points=40, dim=4)
    one, two = tmp_path / "one", tmp_path / "two"
    pack(f"openshape:{src}", str(one), PackSettings(points=32, shard_size=2), progress=False)
    pack(f"openshape:{src}", str(two), PackSettings(points=32, shard_size=2), progress=False,
         workers=2)
    for entry in read_index(str(one))["shards"]:
        assert (one / entry["file"]).read_bytes() == (two / entry["file"]).read_bytes()


# ------------------------------------------------------------------------------ order


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_every_sample_once_per_epoch_over_ranks(tmp_path, world):
    out, _ = small_pack(tmp_path, count=23, shard_size=5)  # 23 samples, shards 5,5,5,5,3
    dataset = PackedDataset(out, 16)
    seen = []
    for rank in range(world):
        sampler = PackedSampler(dataset, seed=3, rank=rank, world=world, shuffle_buffer=7)
        sampler.set_epoch(2)
        part = keys_of(sampler)
        assert len(part) == len(sampler) == -(-23 // world)
        seen += part
    # Padding: world * ceil(23 / world) - 23 samples repeat (the epoch's first ones), no other.
    pad = world * -(-23 // world) - 23
    assert sorted(set(seen)) == list(range(23))
    assert len(seen) == 23 + pad


def test_order_is_a_function_of_seed_and_epoch(tmp_path):
    out, _ = small_pack(tmp_path)
    dataset = PackedDataset(out, 16)

    def order(seed, epoch):
        sampler = PackedSampler(dataset, seed=seed, shuffle_buffer=8)
        sampler.set_epoch(epoch)
        return keys_of(sampler)

    assert order(0, 1) == order(0, 1)
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    assert sorted(order(0, 1)) == list(range(23))
    unshuffled = PackedSampler(dataset, shuffle=False)
    assert keys_of(unshuffled) == list(range(23))


def test_shuffle_buffer_keeps_reads_shard_local(tmp_path):
    out, _ = small_pack(tmp_path, count=40, shard_size=10)
    dataset = PackedDataset(out, 16)
    sampler = PackedSampler(dataset, seed=0, shuffle_buffer=10)
    order = keys_of(sampler)
    # Buffer = one shard: each run of 10 draws from at most 2 shards (a block straddles one border).
    for start in range(0, 40, 10):
        assert len({p // 10 for p in order[start:start + 10]}) <= 2


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_reads_the_same_samples(tmp_path, workers):
    out, _ = small_pack(tmp_path)
    dataset = PackedDataset(out, 16, seed=5)
    loader, sampler = packed_loader(dataset, 4, train=True, seed=5, workers=0, shuffle_buffer=6)
    sampler.set_epoch(1)
    full = list(loader)
    resumed_loader, resumed = packed_loader(PackedDataset(out, 16, seed=5), 4, train=True, seed=5,
                                            workers=workers, shuffle_buffer=6)
    resumed.set_epoch(1, start=2 * 4)  # after two batches
    rest = list(resumed_loader)
    assert len(full) == 5 and len(rest) == 3  # drop_last: 23 samples -> 5 batches of 4
    for a, b in zip(full[2:], rest):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_samples_are_normalised_subsets_with_their_features(tmp_path):
    out, shapes = small_pack(tmp_path, count=6, shard_size=6, xyz_dtype="float32",
                             feature_dtype="float32")
    dataset = PackedDataset(out, 16, seed=1)
    batch = dataset.__getitems__([(4, 0), (4, 1)])
    points = batch["points"]
    assert points.shape == (2, 16, 3)
    assert torch.allclose(points.mean(dim=1), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(points.norm(dim=2).max(dim=1).values, torch.ones(2))
    assert not torch.equal(points[0], points[1]), "epochs must draw different subsets"
    shape = shapes["uid00004"]
    views = np.concatenate([shape["thumbnail_feat"][None], shape["image_feat"]])
    for feature in batch["img_feature"].numpy():
        assert (views == feature).all(axis=1).any()
    assert batch["has_text"].all()


def test_device_sampling_gives_the_loaders_points(tmp_path):
    from recon_fast.data.packed.stream import sample_on_device

    out, _ = small_pack(tmp_path, count=9, shard_size=4, rgb=True)
    keys = [(p, 3) for p in (8, 0, 5, 2)]
    loaded = PackedDataset(out, 24, seed=2, with_rgb=True).__getitems__(keys)
    raw = PackedDataset(out, 24, seed=2, with_rgb=True, sample_on_device=True).__getitems__(keys)
    assert "points" not in raw and raw["raw_xyz"].dtype == torch.float16
    drawn = sample_on_device(raw, 24)
    assert torch.equal(drawn["points"], loaded["points"])
    assert torch.equal(drawn["rgb"], loaded["rgb"])
    # A sample's points do not depend on its batch: drawn alone, the same.
    alone = PackedDataset(out, 24, seed=2, with_rgb=True).__getitems__([keys[2]])
    assert torch.equal(alone["points"][0], loaded["points"][2])


def test_point_subsets_are_uniform_without_repeats():
    from recon_fast.data.packed.draws import point_subsets

    seeds = torch.arange(4000, dtype=torch.int64) * 7919
    chosen = point_subsets(seeds, 10, 3)
    assert all(len(set(row)) == 3 for row in chosen.tolist())
    counts = torch.bincount(chosen.flatten(), minlength=10).float()
    assert counts.min() > 0.9 * 1200 and counts.max() < 1.1 * 1200  # 4000 * 3 / 10 each
    first = torch.bincount(chosen[:, 0], minlength=10).float()
    assert first.min() > 0.8 * 400 and first.max() < 1.2 * 400  # the order is random too


# ------------------------------------------------------------------------------ damage


def test_truncated_shard_is_named_and_can_be_skipped(tmp_path):
    out, _ = small_pack(tmp_path)
    bad = os.path.join(out, read_index(out)["shards"][2]["file"])
    with open(bad, "r+b") as f:
        f.truncate(os.path.getsize(bad) - 100)
    with pytest.raises(ShardError, match="shard-000002"):
        PackedDataset(out, 16)
    dataset = PackedDataset(out, 16, skip_bad_shards=True)
    assert [name for name, _ in dataset.skipped] == ["shard-000002.rfshard"]
    assert len(dataset) == 23 - 5
    assert [f for f, _ in verify_pack(out)] == ["shard-000002.rfshard"]


def test_corrupt_sample_is_an_error_never_a_wrong_sample(tmp_path):
    out, _ = small_pack(tmp_path)
    entry = read_index(out)["shards"][1]
    path = os.path.join(out, entry["file"])
    shard = Shard(path)
    offset = shard.header["data_start"] + shard.header["fields"]["xyz"]["offset"]
    row_bytes = shard.fields["xyz"][0].nbytes
    del shard
    with open(path, "r+b") as f:  # flip one byte of row 3's coordinates, size unchanged
        f.seek(offset + 3 * row_bytes + 10)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    dataset = PackedDataset(out, 16)  # sizes match: opening succeeds
    dataset.__getitems__([(5, 0), (7, 0)])  # rows 0 and 2 of shard 1 are intact
    with pytest.raises(ShardError, match=r"shard-000001.*row 3"):
        dataset.__getitems__([(8, 0)])
    skipping = PackedDataset(out, 16, skip_bad_shards=True)
    assert skipping.skipped[0][0] == "shard-000001.rfshard" and len(skipping) == 18


def test_garbage_file_is_not_a_shard(tmp_path):
    path = tmp_path / "x.rfshard"
    path.write_bytes(b"not a shard at all" * 10)
    with pytest.raises(ShardError, match="x.rfshard.*magic"):
        Shard(str(path))
    data = encode_shard({"a": np.arange(6, dtype=np.int32)})
    path.write_bytes(data[:40])
    with pytest.raises(ShardError, match="truncated"):
        Shard(str(path))


def test_unfinished_pack_is_named(tmp_path):
    out, _ = small_pack(tmp_path, count=4, shard_size=2)
    os.remove(os.path.join(out, "index.json"))
    with pytest.raises(FileNotFoundError, match="unfinished pack"):
        PackedDataset(out, 16)


# ------------------------------------------------------------------------------ training

TINY_RECON = [
    "model.transformer_config.trans_dim=48", "model.transformer_config.encoder_dims=48",
    "model.transformer_config.depth=2", "model.transformer_config.num_heads=4",
    "model.transformer_config.decoder_depth=1", "model.transformer_config.decoder_num_heads=4",
    "model.num_group=16", "model.group_size=16", "total_bs=4", "validate=none",
    "dataset.train.others.npoints=64",
]


def _options(out_dir, data, **kw):
    from recon_fast.train.runtime import RunOptions

    base = dict(out_dir=str(out_dir), workers=0, progress=False, tensorboard=False,
                log_every=1000, record_losses=True, data=f"packed:{data}")
    base.update(kw)
    return RunOptions(**base)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pretraining_from_a_pack_resumes_exactly(tmp_path):
    from recon_fast.train.config import load_config
    from recon_fast.train.pretrain import run_pretrain
    from recon_fast.train.state import load_checkpoint_file

    src = tmp_path / "openshape"
    write_openshape(str(src), 20, n_points=96, dim=512)  # CLIP ViT-B/32 widths (the preset's heads)
    data = tmp_path / "pack"
    pack(f"openshape:{src}", str(data), PackSettings(points=96, shard_size=6), progress=False)
    config = load_config("embedded", TINY_RECON)
    full = run_pretrain(config, _options(tmp_path / "full", data, epochs=1))
    losses = full["losses"]
    assert len(losses) == 20 // 4 and all(np.isfinite(losses))
    # Killed one step after the checkpoint at step 3, resumed with another worker count.
    part = run_pretrain(config, _options(tmp_path / "part", data, epochs=1, checkpoint_every=3,
                                         workers=2), stop_after_steps=4)
    assert load_checkpoint_file(str(tmp_path / "part" / "ckpt-last.pth"))["global_step"] == 3
    rest = run_pretrain(config, _options(tmp_path / "part", data, epochs=1, resume=True))
    assert part["losses"][:3] + rest["losses"] == losses


def test_pretraining_names_a_pack_without_the_models_features(tmp_path):
    from recon_fast.train.config import ConfigError, load_config
    from recon_fast.train.pretrain import run_pretrain

    out, _ = small_pack(tmp_path, count=8, shard_size=4)  # 8-dim features, the preset wants 512
    with pytest.raises(ConfigError, match="image features have 8 dims.*expects 512"):
        run_pretrain(load_config("embedded", TINY_RECON), _options(tmp_path / "run", out))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cli_pretrain_skips_and_reports_bad_shards(tmp_path):
    src = tmp_path / "openshape"
    write_openshape(str(src), 12, n_points=64, dim=512)
    data = tmp_path / "pack"
    pack(f"openshape:{src}", str(data), PackSettings(points=64, shard_size=4), progress=False)
    with open(data / "shard-000001.rfshard", "r+b") as f:
        f.truncate(1000)
    cmd = [sys.executable, "-m", "recon_fast.cli", "pretrain", "--config", "embedded",
           "--data", f"packed:{data}", "--out", str(tmp_path / "run"), "--workers", "0",
           "--no-progress", "--no-tensorboard", "--max-steps", "2"]
    cmd += [arg for o in TINY_RECON for arg in ("--set", o)]
    failed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert failed.returncode != 0 and "shard-000001.rfshard" in failed.stderr
    result = subprocess.run(cmd + ["--skip-bad-shards"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped shard-000001.rfshard" in result.stdout
    assert "on 8 shapes" in result.stdout


def test_cli_pack_and_verify(tmp_path, capsys):
    from recon_fast.cli import main

    assert main(["pack", "--source", "objaverse:/nowhere", "--out", str(tmp_path / "p")]) == 2
    assert "--source 'objaverse:/nowhere'" in capsys.readouterr().err
    src = tmp_path / "openshape"
    write_openshape(str(src), 5, n_points=40, dim=4)
    out = str(tmp_path / "pack")
    assert main(["pack", "--source", f"openshape:{src}", "--out", out, "--points", "32",
                 "--shard-size", "2", "--no-progress"]) == 0
    assert '"count": 5' in capsys.readouterr().out
    assert main(["pack", "--verify", out]) == 0
    with open(os.path.join(out, "shard-000002.rfshard"), "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x01")  # last byte of the last field
    assert main(["pack", "--verify", out]) == 1
    assert "shard-000002.rfshard" in capsys.readouterr().out
    assert main(["pack", "--source", f"openshape:{src}", "--out", out, "--points", "16"]) == 2
    assert "different settings" in capsys.readouterr().err
