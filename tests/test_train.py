"""Trainer: learning signal on the embedded shapes, exact resume, checkpoints, errors.

Tiny models and a 4-class embedded subset keep these runs to seconds on two CPU cores; the teacher
is CLIP ViT-B/32 with random weights (cached once per session).
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from recon_fast.train.config import ConfigError, load_config
from recon_fast.train.finetune import run_finetune
from recon_fast.train.pretrain import run_pretrain
from recon_fast.train.runtime import EpochSampler, RunOptions
from recon_fast.train.state import load_checkpoint_file

CLASSES = "[sphere, cube, torus, chair]"
EMBEDDED = [f"_base_.CLASSES={CLASSES}", "_base_.SHAPES_PER_CLASS=12", "_base_.TEST_PER_CLASS=4"]
TINY_RECON = [
    "model.transformer_config.trans_dim=48", "model.transformer_config.encoder_dims=48",
    "model.transformer_config.depth=2", "model.transformer_config.num_heads=4",
    "model.transformer_config.decoder_depth=1", "model.transformer_config.decoder_num_heads=4",
    "model.num_group=16", "model.group_size=16", "total_bs=8",
]
TINY_CLASSIFIER = ["model.trans_dim=48", "model.encoder_dims=48", "model.depth=2",
                   "model.num_heads=4", "model.num_group=16", "model.group_size=16",
                   "model.cls_dim=4", "model.drop_path_rate=0.0", "total_bs=8"]


def pretrain_config(*extra):
    splits = ("train", "extra_train", "extra_val")
    return load_config("embedded", [f"dataset.{s}.{o}" for s in splits for o in EMBEDDED] +
                       TINY_RECON + list(extra))


def finetune_config(*extra):
    splits = ("train", "val", "test")
    return load_config("embedded_finetune", [f"dataset.{s}.{o}" for s in splits for o in EMBEDDED] +
                       TINY_CLASSIFIER + list(extra))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("recon_cache"))


def options(out_dir, cache_dir, **kw):
    base = dict(out_dir=str(out_dir), cache_dir=cache_dir, workers=0, progress=False,
                tensorboard=False, log_every=1000, record_losses=True, teacher_weights="random")
    base.update(kw)
    return RunOptions(**base)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_pretraining_lowers_losses_and_resumes_exactly(tmp_path, cache_dir):
    config = pretrain_config("validate=none")
    full = run_pretrain(config, options(tmp_path / "full", cache_dir, epochs=3))
    losses = full["losses"]
    steps_per_epoch = len(losses) // 3
    assert len(losses) == 3 * steps_per_epoch and steps_per_epoch >= 4
    first, last = losses[:steps_per_epoch], losses[-steps_per_epoch:]
    assert sum(last) / len(last) < 0.85 * sum(first) / len(first), losses

    # Interrupt mid-epoch 1: checkpoints every 3 steps, killed 2 steps after the last one.
    saved_at = 3 * ((steps_per_epoch + 1) // 3 + 1)
    assert steps_per_epoch < saved_at < 2 * steps_per_epoch
    part = run_pretrain(config, options(tmp_path / "part", cache_dir, epochs=3, checkpoint_every=3),
                        stop_after_steps=saved_at + 2)
    assert part["interrupted"]
    ckpt = load_checkpoint_file(str(tmp_path / "part" / "ckpt-last.pth"))
    assert ckpt["global_step"] == saved_at
    assert (ckpt["next_epoch"], ckpt["next_batch"]) == (1, saved_at - steps_per_epoch)
    rest = run_pretrain(config, options(tmp_path / "part", cache_dir, epochs=3, resume=True))
    replayed = part["losses"][:saved_at] + rest["losses"]
    assert replayed == losses, "the resumed run diverged from the uninterrupted one"
    # Training switches the ops' data checks off inside its steps and restores them after.
    from recon_fast.ops.validate import data_checks_enabled

    assert data_checks_enabled()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_resume_is_independent_of_worker_count(tmp_path, cache_dir):
    config = pretrain_config("validate=none")
    one = run_pretrain(config, options(tmp_path / "a", cache_dir, epochs=1, workers=0))["losses"]
    two = run_pretrain(config, options(tmp_path / "b", cache_dir, epochs=1, workers=2))["losses"]
    assert one == two


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_finetune_from_pretraining_beats_chance_on_held_out_shapes(tmp_path, cache_dir):
    pre = run_pretrain(pretrain_config("validate=none"),
                       options(tmp_path / "pre", cache_dir, epochs=2))
    assert not pre["interrupted"]
    # BatchNorm running statistics need a few hundred steps to settle (the patch encoder's
    # activations have a variance ~1e-5 against the initial running variance of 1), so the
    # finetune runs 30 small-batch epochs.
    summary = run_finetune(finetune_config("total_bs=4"),
                           options(tmp_path / "ft", cache_dir, epochs=30,
                                   init_ckpt=str(tmp_path / "pre" / "ckpt-last.pth")),
                           protocol="official", vote_rounds=1, votes=2)
    chance = 1 / 4
    assert summary["best"] >= 2.5 * chance, summary
    assert summary["vote"] >= 2 * chance, summary
    assert os.path.isfile(tmp_path / "ft" / "ckpt-best.pth")


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_checkpoint_has_the_official_layout_and_loads_into_a_classifier(tmp_path, cache_dir):
    from recon_fast.model import build_model, load_official_checkpoint

    run_pretrain(pretrain_config("validate=none"),
                 options(tmp_path / "run", cache_dir, epochs=1, max_steps=2))
    ckpt = load_checkpoint_file(str(tmp_path / "run" / "ckpt-last.pth"))
    for key in ("base_model", "optimizer", "epoch", "metrics", "best_metrics"):
        assert key in ckpt
    assert any(k.startswith("MAE_encoder.blocks.blocks.0.attn_contrast") for k in ckpt["base_model"])
    classifier = build_model(finetune_config().model.to_dict())
    report = load_official_checkpoint(str(tmp_path / "run" / "ckpt-last.pth"), classifier)
    assert all(k.startswith("cls_head_finetune") for k in report.missing)


def test_max_steps_counts_optimizer_steps_not_batches(tmp_path, cache_dir):
    # step_per_update=2: two batches per optimizer step, so --max-steps 2 trains four batches.
    summary = run_finetune(finetune_config("step_per_update=2"),
                           options(tmp_path / "run", cache_dir, epochs=1, max_steps=2),
                           protocol="official", vote_rounds=0)  # all 32 train shapes: 4 batches
    assert (summary["optimizer_steps"], summary["global_step"]) == (2, 4)
    ckpt = load_checkpoint_file(str(tmp_path / "run" / "ckpt-last.pth"))
    assert (ckpt["optimizer_steps"], ckpt["global_step"], ckpt["next_batch"]) == (2, 4, 4)


def test_resume_refuses_an_incompatible_checkpoint(tmp_path, cache_dir):
    os.makedirs(tmp_path / "run")
    torch.save({"base_model": {"nope": torch.zeros(1)}}, tmp_path / "run" / "ckpt-last.pth")
    with pytest.raises(ValueError, match="cannot be resumed"):
        run_pretrain(pretrain_config("validate=none"),
                     options(tmp_path / "run", cache_dir, epochs=1, resume=True))


def test_missing_init_checkpoint_is_named(tmp_path, cache_dir):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        run_finetune(finetune_config(), options(tmp_path / "ft", cache_dir, epochs=1,
                                                init_ckpt=str(tmp_path / "missing.pth")))


def test_epoch_sampler_shards_and_restarts_deterministically():
    full = list(EpochSampler(10, shuffle=True, seed=3))
    again = EpochSampler(10, shuffle=True, seed=3)
    again.set_epoch(0, start=4)
    assert list(again) == full[4:]
    other_epoch = EpochSampler(10, shuffle=True, seed=3)
    other_epoch.set_epoch(1)
    assert [i for i, _ in other_epoch] != [i for i, _ in full]
    shards = [list(EpochSampler(10, shuffle=True, seed=3, rank=r, world=3)) for r in range(3)]
    assert all(len(s) == 4 for s in shards)  # padded like DistributedSampler
    assert {i for s in shards for i, _ in s} == set(range(10))


def test_epochs_override_scales_the_schedule():
    from recon_fast.train.loop import apply_epoch_override

    config = apply_epoch_override(load_config("embedded", ["scheduler.kwargs.epochs=4",
                                                       "scheduler.kwargs.initial_epochs=1"]), 8)
    assert config.max_epoch == 7 and config.scheduler.kwargs.epochs == 8
    assert config.scheduler.kwargs.initial_epochs == 2
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        apply_epoch_override(config, 0)


def test_cli_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "recon_fast.cli", "pretrain", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--config", "--set", "--resume", "--amp", "--compile", "--teacher-weights",
                 "--image-teacher", "--max-steps", "--checkpoint-every", "--attention-backend"):
        assert flag in out


def test_cli_reports_config_typos_without_a_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "recon_fast.cli", "pretrain", "--config",
                             "embedded", "--set", "max_epochs=3", "--out", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown config key 'max_epochs'" in result.stderr and "max_epoch" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "recon_fast.cli", "finetune", "--config",
                             str(tmp_path / "nope.yaml")], capture_output=True, text=True)
    assert result.returncode == 2 and "nope.yaml" in result.stderr


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_ddp_with_two_processes_on_cpu(tmp_path, cache_dir):
    """The same script under torchrun (gloo on the CPU): both ranks train, rank 0 checkpoints."""
    if shutil.which("torchrun") is None:
        pytest.skip("torchrun is not on PATH")
    # Warm the caches in this process so the two ranks only read them.
    run_pretrain(pretrain_config("validate=none"), options(tmp_path / "warm", cache_dir, epochs=1,
                                                           max_steps=1))
    cmd = ["torchrun", "--nproc-per-node", "2", "--master-port", "29517", "-m", "recon_fast.cli",
           "pretrain", "--config", "embedded", "--out", str(tmp_path / "ddp"), "--cache-dir",
           cache_dir, "--teacher-weights", "random", "--workers", "0", "--no-progress",
           "--no-tensorboard", "--max-steps", "2"]
    cmd += [arg for o in [f"dataset.{s}.{e}" for s in ("train", "extra_train", "extra_val")
                          for e in EMBEDDED] + TINY_RECON + ["validate=none"] for arg in ("--set", o)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch 4 x 2" in result.stdout
    assert load_checkpoint_file(str(tmp_path / "ddp" / "ckpt-last.pth"))["global_step"] == 2
