"""Classification finetuning (tools/runner_finetune.py): FPS-then-random subsampling, the
dataset's train augmentation, cross-entropy, gradient clipping; plain-FPS validation every epoch
with the best checkpoint kept; test-time voting at the end."""

from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F

from recon_fast.data import dataset_from_config, fps_then_random, train_augmentation, vote_augmentation
from recon_fast.data.loader import build_loader
from recon_fast.eval.batchnorm import recompute_bn_statistics, should_recompute
from recon_fast.eval.classification import accuracy, vote_accuracy
from recon_fast.train.config import Config, ConfigError, save_config
from recon_fast.train.loop import (BEST, Trainer, apply_epoch_override, barrier_first,
                                   build_model_from_config)
from recon_fast.train.runtime import RunOptions, make_loader, to_device


def split_dataset(config: Config, split: str, opts: RunOptions, progress: bool = False):
    if split not in config.dataset:
        raise ConfigError(f"the config has no dataset.{split} section")
    entry = config.dataset[split]
    return dataset_from_config(entry._base_, entry.get("others", {}), opts.data_root,
                               cache_dir=opts.cache_dir, progress=progress)


def dataset_name(dataset) -> str:
    """The official NAME that picks augmentations (ScanObjectNN_hardest, ModelNet, ...)."""
    return getattr(dataset, "name", type(dataset).__name__)


def plain_batches(dataset, batch_size: int, workers: int):
    """Every item once, in order, on this process (validation and voting run on rank 0)."""
    return build_loader(dataset, batch_size, False, workers, distributed=False)


def freeze_for_protocol(model: torch.nn.Module) -> int:
    """The official finetuning rule (runner_finetune): when model.type is not "full" (linear,
    mlp3), only parameters whose name contains "cls" (the head, cls_token, cls_pos) train. The
    frozen encoder still runs in train mode, so its BatchNorm statistics keep updating and
    drop-path stays on, as in the reference. Returns the number of trainable parameters."""
    freeze = getattr(model, "freeze_as_official", None)
    if freeze is not None:
        freeze()
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run_finetune(config: Config, opts: RunOptions, *, vote_rounds: int = 1, votes: int = 10,
                 stop_after_steps: Optional[int] = None) -> dict:
    """Finetune a classifier; returns the summary with 'best' (validation accuracy) and
    'vote' (test-time voting accuracy of the best checkpoint, when vote_rounds > 0)."""
    config = apply_epoch_override(config, opts.epochs)
    with Trainer(config, opts, task="finetune") as trainer:
        log = trainer.logger
        train_set = barrier_first(trainer.dist, lambda: split_dataset(config, "train", opts, log.progress))
        val_set = split_dataset(config, "val", opts)
        name = dataset_name(train_set)
        batch_size = trainer.per_rank_batch(config.total_bs)
        loader, sampler = make_loader(train_set, batch_size, train=True, seed=opts.seed,
                                      workers=opts.workers, dist_info=trainer.dist)
        model = build_model_from_config(config.model, opts).to(trainer.device)
        trainable = freeze_for_protocol(model)  # before the optimizer sees the parameters
        log.info(f"model type {config.model.get('type', 'full')}: {trainable:,} of "
                 f"{sum(p.numel() for p in model.parameters()):,} parameters train")
        trainer.setup(model, finetune=True)
        if trainer.dist.main:
            save_config(config, os.path.join(opts.out_dir, "config.yaml"))
        npoints = int(config.npoints)
        augment = train_augmentation(name)
        total_steps = (int(config.max_epoch) + 1) * len(loader)
        recompute_bn = should_recompute(opts.recompute_bn, total_steps)
        log.info(f"finetuning on {name}: {len(train_set)} train / {len(val_set)} val clouds, "
                 f"{npoints} points, batch {batch_size} x {trainer.dist.world}, "
                 f"epochs {trainer.start_epoch + 1}..{config.max_epoch + 1}; BatchNorm statistics "
                 f"{'recomputed on the train clouds' if recompute_bn else 'as trained'} "
                 f"for validation and voting (--recompute-bn {opts.recompute_bn})")

        def refresh_bn() -> None:
            if recompute_bn:
                recompute_bn_statistics(trainer.raw_model, plain_batches(train_set, batch_size,
                                                                         opts.workers),
                                        npoints, trainer.device)

        def step(batch: dict) -> dict[str, torch.Tensor]:
            """One batch's loss and accuracy (fit does the backward pass and the optimizer step)."""
            batch = to_device(batch, trainer.device)
            points = augment(fps_then_random(batch["points"], npoints))
            with trainer.autocast():
                logits = trainer.model(points)
            loss = F.cross_entropy(logits.float(), batch["label"].long())
            acc = (logits.argmax(-1) == batch["label"]).float().mean() * 100
            return {"loss": loss, "acc": acc}

        def evaluate(epoch: int) -> Optional[float]:
            if not trainer.dist.main:
                return None
            refresh_bn()  # saved with the checkpoint that follows, so voting sees the same
            acc = accuracy(trainer.raw_model, plain_batches(val_set, batch_size, opts.workers),
                           npoints, trainer.device, trainer.autocast)
            log.info(f"[validation] epoch {epoch + 1}: accuracy {acc * 100:.2f}% "
                     f"(best {max(acc, trainer.best or 0) * 100:.2f}%)")
            log.scalars({"val/acc_percent": acc * 100}, trainer.global_step)
            return acc

        summary = trainer.fit(loader, sampler, step, evaluate=evaluate,
                              stop_after_steps=stop_after_steps)
        if vote_rounds > 0 and trainer.dist.main and not summary["interrupted"]:
            summary["vote"] = test_with_voting(config, opts, trainer, name, votes, vote_rounds)
        return summary


def test_with_voting(config: Config, opts: RunOptions, trainer: Trainer, name: str, votes: int,
                     rounds: int) -> float:
    """Load the best checkpoint and run the official voting test on dataset.test."""
    from recon_fast.train.state import load_checkpoint_file

    best_path = os.path.join(opts.out_dir, BEST)
    if os.path.isfile(best_path):
        trainer.raw_model.load_state_dict(load_checkpoint_file(best_path)["base_model"])
    test_set = split_dataset(config, "test" if "test" in config.dataset else "val", opts)
    batch_size = int(config.total_bs)
    best, per_round = vote_accuracy(
        trainer.raw_model, lambda: plain_batches(test_set, batch_size, opts.workers),
        int(config.npoints), trainer.device, vote_augmentation(name), votes=votes, rounds=rounds,
        autocast=trainer.autocast)
    trainer.logger.info(f"[test] voting ({votes} votes, {rounds} rounds): {best * 100:.2f}%")
    return best
