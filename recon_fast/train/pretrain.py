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
        model = initial_model(config, opts).to(trainer.device)
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

        measured: dict = {}

        def evaluate(epoch: int) -> Optional[float]:
            return validate_svm(config, opts, trainer, epoch, measured)

        summary = trainer.fit(loader, sampler, step, evaluate=evaluate,
                              stop_after_steps=stop_after_steps)
        return {**summary, **measured}


def initial_model(config: Config, opts: RunOptions) -> torch.nn.Module:
    """The pretraining model at its initialisation, drawn from a generator seeded by opts.seed
    alone: the same weights whatever ran before it (dataset generation, teacher caches), so the
    untrained baseline of the SVM check is this run's own starting point, resumed runs included."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(opts.seed)
        return build_model_from_config(config.model, opts)


def validate_svm(config: Config, opts: RunOptions, trainer: Trainer, epoch: int,
                 measured: dict) -> Optional[float]:
    """config.validate == 'svm': linear-SVM accuracy of the current encoder's features on the
    extra_train / extra_val classification sets (the official pretraining validation).

    With config.run.compare_untrained, the last epoch also measures the same architecture at its
    initialisation (initial_model: same seed, same BatchNorm recompute, same clouds), so the log
    and results show what pretraining added; both numbers go into `measured`."""
    if config.get("validate", "none") != "svm" or not trainer.dist.main:
        return None
    last = epoch == config.max_epoch
    every = int(config.get("run", {}).get("val_freq", 1))
    if not last and (epoch + 1) % every:
        return None
    from recon_fast.eval.svm import svm_accuracies_of_pretrained

    models = {"pretrained": trainer.raw_model}
    if last and config.get("run", {}).get("compare_untrained", False):
        models["untrained"] = initial_model(config, opts)
    with ops.checks(data=True):  # evaluation reads new data: validate it
        accs = svm_accuracies_of_pretrained(models, config, opts, trainer.device)
    acc = accs["pretrained"]
    note = " (BatchNorm statistics recomputed on the SVM's training clouds)" \
        if config.get("run", {}).get("precise_bn", False) else ""
    where = svm_set_name(config)
    if "untrained" in accs:
        untrained = accs["untrained"]
        trainer.logger.info(
            f"[validation] epoch {epoch + 1}: linear SVM accuracy on {where}: pretrained "
            f"{acc * 100:.2f}% vs untrained {untrained * 100:.2f}% (margin "
            f"{(acc - untrained) * 100:+.2f} points; untrained: the same model at its seed-"
            f"{opts.seed} initialisation){note}")
        measured["learning_signal"] = {"set": where, "pretrained": acc, "untrained": untrained,
                                       "margin": acc - untrained}
        measured["svm_accuracy_untrained"] = untrained
        trainer.logger.scalars({"val/svm_acc_untrained_percent": untrained * 100},
                               trainer.global_step)
    else:
        trainer.logger.info(f"[validation] epoch {epoch + 1}: linear SVM accuracy on {where} "
                            f"{acc * 100:.2f}%{note}")
    measured["svm_accuracy"] = acc
    trainer.logger.scalars({"val/svm_acc_percent": acc * 100}, trainer.global_step)
    return acc


def svm_set_name(config: Config) -> str:
    """"EmbeddedProbe/test" and the like: the set the SVM check scores."""
    val = config.dataset.extra_val
    return f"{val._base_.get('NAME', '?')}/{val.get('others', {}).get('subset', '?')}"
