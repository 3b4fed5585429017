"""ReCon pretraining: reconstruct masked patches and distil teacher features into the global
queries. Official semantics (tools/runner_pretrain.py) with a fast runtime: bf16 autocast,
cached teacher features, optional torch.compile, DDP via torchrun, no host sync inside a step,
exactly resumable checkpoints."""

from __future__ import annotations

import os
from typing import Optional

import torch

from recon_fast import ops
from recon_fast.data import dataset_from_config, rotate_y
from recon_fast.train.config import Config, save_config
from recon_fast.train.loop import (Trainer, apply_epoch_override, barrier_first,
                                   build_model_from_config)
from recon_fast.train.runtime import RunOptions, make_loader, to_device
from recon_fast.train.packed import packed_pretrain_data, packed_targets
from recon_fast.train.teachers import build_teacher_targets


def pretrain_dataset(config: Config, opts: RunOptions, progress: bool):
    train = config.dataset.train
    others = dict(train.get("others", {}))
    # The official pretraining sets whole=True (test + train lists) for ShapeNet-55.
    others.setdefault("whole", train._base_.get("NAME") == "ShapeNet")
    image_mode = "augment" if opts.image_teacher == "online" else "none"
    return dataset_from_config(train._base_, others, opts.data_root, image=image_mode,
                               cache_dir=opts.cache_dir, progress=progress)


def run_pretrain(config: Config, opts: RunOptions, *, stop_after_steps: Optional[int] = None) -> dict:
    """Pretrain as `config` says; returns a summary (epoch, global_step, best/last validation
    metric, the per-step losses when opts.record_losses).

    `stop_after_steps` ends the run after that many optimizer steps *without* a final
    checkpoint (a simulated interruption, used to test resuming).
    """
    config = apply_epoch_override(config, opts.epochs)
    with Trainer(config, opts, task="pretrain") as trainer:
        log = trainer.logger
        batch_size = trainer.per_rank_batch(config.total_bs)
        if opts.data is not None:  # packed shards: cached teacher features, streamed order
            dataset, loader, sampler = packed_pretrain_data(config, opts, trainer.dist,
                                                            batch_size, log)
        else:
            dataset = barrier_first(trainer.dist,
                                    lambda: pretrain_dataset(config, opts, log.progress))
            loader, sampler = make_loader(dataset, batch_size, train=True, seed=opts.seed,
                                          workers=opts.workers, dist_info=trainer.dist)
        model = build_model_from_config(config.model, opts).to(trainer.device)
        if opts.data is not None:
            targets = packed_targets(dataset, model, opts)
        else:
            targets = barrier_first(trainer.dist, lambda: build_teacher_targets(
                config.model, opts, dataset, trainer.device, log))
        # Packed batches carry the stored clouds: their points are drawn on the device.
        points_of = targets.points if opts.data is not None else (lambda b: b["points"])
        trainer.setup(model, finetune=False)
        if trainer.dist.main:
            save_config(config, os.path.join(opts.out_dir, "config.yaml"))
        millions = sum(p.numel() for p in model.parameters()) / 1e6
        log.info(f"pretraining {type(model).__name__} ({millions:.1f} M parameters) on "
                 f"{len(dataset)} shapes, batch {batch_size} x {trainer.dist.world}, "
                 f"epochs {trainer.start_epoch + 1}..{config.max_epoch + 1}, device {trainer.device}")

        def step(batch: dict) -> dict[str, torch.Tensor]:
            """One batch's loss (fit does the backward pass and the optimizer step)."""
            batch = to_device(batch, trainer.device)
            points = rotate_y(points_of(batch))  # official PointcloudRotate on the batch
            img_feature, text_feature = targets(batch)
            with trainer.autocast():
                loss, losses = trainer.model(points, img_feature, text_feature)
            return {"loss": loss, **losses}

        def evaluate(epoch: int) -> Optional[float]:
            return validate_svm(config, opts, trainer, epoch)

        return trainer.fit(loader, sampler, step, evaluate=evaluate,
                           stop_after_steps=stop_after_steps)


def validate_svm(config: Config, opts: RunOptions, trainer: Trainer, epoch: int) -> Optional[float]:
    """config.validate == 'svm': linear-SVM accuracy of the current encoder's features on the
    extra_train / extra_val classification sets (the official pretraining validation)."""
    if config.get("validate", "none") != "svm" or not trainer.dist.main:
        return None
    last = epoch == config.max_epoch
    every = int(config.get("run", {}).get("val_freq", 1))
    if not last and (epoch + 1) % every:
        return None
    from recon_fast.eval.svm import svm_accuracy_of_pretrained

    with ops.checks(data=True):  # evaluation reads new data: validate it
        acc = svm_accuracy_of_pretrained(trainer.raw_model, config, opts, trainer.device)
    note = " (BatchNorm statistics recomputed on the SVM's training clouds)" \
        if config.get("run", {}).get("precise_bn", False) else ""
    trainer.logger.info(f"[validation] epoch {epoch + 1}: linear SVM accuracy {acc * 100:.2f}%{note}")
    trainer.logger.scalars({"val/svm_acc_percent": acc * 100}, trainer.global_step)
    return acc
