"""Classification finetuning (tools/runner_finetune.py): FPS-then-random subsampling, the
dataset's train augmentation, cross-entropy, gradient clipping; plain-FPS validation every epoch
with the best checkpoint kept; the test at the end, under the official or the strict protocol
(recon_fast.eval.protocol)."""

from __future__ import annotations

import os
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from recon_fast.data import (check_point_all, dataset_from_config, fps_then_random,
                             train_augmentation, vote_augmentation)
from recon_fast.data.loader import build_loader
from recon_fast.eval.batchnorm import recompute_bn_statistics, should_recompute
from recon_fast.eval.classification import accuracy, round_reporter, vote_accuracy
from recon_fast.eval.protocol import (DEFAULT_PROTOCOL, EVAL_SEED, VALIDATION_FRACTION,
                                      VALIDATION_SEED, carve_validation, check_voting,
                                      seeded)
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


def run_finetune(config: Config, opts: RunOptions, *, protocol: str = DEFAULT_PROTOCOL,
                 vote_rounds: int = 1, votes: int = 10, select_on: str = "validation",
                 stop_after_steps: Optional[int] = None,
                 on_validated: Optional[Callable[[int, torch.nn.Module], None]] = None) -> dict:
    """Finetune a classifier and measure it under `protocol` (recon_fast.eval.protocol).

    official: validate on dataset.val (the test split in the official configs) every epoch,
    'best' is the best of those; 'vote' is the best of `vote_rounds` voting rounds with the
    best checkpoint. strict: select_on="validation" validates every epoch on a split carved from
    dataset.train (the rest trains) and keeps the best checkpoint; select_on="last" skips
    validation and keeps the last epoch; that model is then measured once on the test split:
    'test_accuracy' (plain FPS) and 'vote' (one voting pass, fixed seed). `on_validated(epoch,
    model)` runs after each validation, with the model as its checkpoint will hold it."""
    check_voting(protocol, votes, vote_rounds, minimum_rounds=0)
    strict = protocol == "strict"
    if select_on not in ("validation", "last"):
        raise ConfigError(f"select_on must be 'validation' or 'last', got {select_on!r}")
    config = apply_epoch_override(config, opts.epochs)
    check_point_all(int(config.npoints))
    with Trainer(config, opts, task="finetune",
                 identity={"protocol": protocol, "select_on": select_on}) as trainer:
        log = trainer.logger
        train_set = barrier_first(trainer.dist, lambda: split_dataset(config, "train", opts, log.progress))
        seeds = {"run": opts.seed, "eval": EVAL_SEED}
        if not strict:
            val_set = split_dataset(config, "val", opts)
        elif select_on == "validation":
            train_set, val_set = carve_validation(train_set)
            seeds["validation_split"] = VALIDATION_SEED
        else:
            val_set = None
        test_set = split_dataset(config, test_split_of(config), opts) if strict or vote_rounds > 0 \
            else None
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
        sizes = {"train": len(train_set), "val": len(val_set) if val_set is not None else 0,
                 "test": len(test_set) if test_set is not None else
                 len(val_set) if val_is_test(config) else None}
        log.info(f"finetuning on {name} (--protocol {protocol}): {sizes['train']} train / "
                 f"{sizes['val']} {_validation_words(strict, select_on)} / {sizes['test']} test "
                 f"clouds, {npoints} points, batch {batch_size} x {trainer.dist.world}, "
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

        epoch_metrics: dict[int, float] = {}

        def evaluate(epoch: int) -> Optional[float]:
            if not trainer.dist.main:
                return None
            # Validation draws nothing from the training RNG streams (loaders seed from them),
            # so a run trains the same with or without it (few-shot: official vs strict).
            with seeded(EVAL_SEED, trainer.device):
                return validate(epoch)

        def validate(epoch: int) -> float:
            refresh_bn()  # saved with the checkpoint that follows, so voting sees the same
            acc = accuracy(trainer.raw_model, plain_batches(val_set, batch_size, opts.workers),
                           npoints, trainer.device, trainer.autocast)
            epoch_metrics[epoch + 1] = acc
            log.info(f"[validation] epoch {epoch + 1}: accuracy {acc * 100:.2f}% "
                     f"(best {max(acc, trainer.best or 0) * 100:.2f}%)")
            log.scalars({"val/acc_percent": acc * 100}, trainer.global_step)
            if on_validated is not None:
                on_validated(epoch + 1, trainer.raw_model)
            return acc

        summary = trainer.fit(loader, sampler, step, evaluate=evaluate if val_set is not None else None,
                              stop_after_steps=stop_after_steps)
        summary.update(protocol=protocol, split_sizes=sizes, seeds=seeds,
                       epoch_metrics=epoch_metrics)
        if not trainer.dist.main or summary["interrupted"]:
            return summary
        if strict:  # validation numbers here, named so (the last one stays in epoch_metrics)
            summary["val_accuracy"] = summary.pop("best")
            summary.pop("last_metric")
            summary.update(_measure_once(config, opts, trainer, test_set, name, votes, vote_rounds,
                                         refresh_bn, last_epoch=summary["epoch"] + 1))
        else:
            if val_is_test(config):
                summary["test_accuracy"] = summary["best"]
            if vote_rounds > 0:
                summary["vote"], summary["vote_rounds"] = test_with_voting(
                    config, opts, trainer, name, votes, vote_rounds, test_set)
        return summary


def test_split_of(config: Config) -> str:
    return "test" if "test" in config.dataset else "val"


def val_is_test(config: Config) -> bool:
    """Whether dataset.val is the test split (as in every official finetune config)."""
    if "test" not in config.dataset:
        return True
    as_dict = lambda entry: entry.to_dict() if isinstance(entry, Config) else dict(entry)  # noqa: E731
    return as_dict(config.dataset.val) == as_dict(config.dataset.test)


def _validation_words(strict: bool, select_on: str) -> str:
    if not strict:
        return "val (dataset.val: selects the best epoch)"
    if select_on == "validation":
        return (f"val (carved from train: {VALIDATION_FRACTION:.0%} per class, seed "
                f"{VALIDATION_SEED}; selects the epoch)")
    return "val (none: the last epoch is tested)"


def _load_selected(opts: RunOptions, trainer: Trainer) -> Optional[int]:
    """Load ckpt-best.pth into the model when there is one; returns its epoch (from 1)."""
    from recon_fast.train.state import load_checkpoint_file

    best_path = os.path.join(opts.out_dir, BEST)
    if not os.path.isfile(best_path):
        return None
    state = load_checkpoint_file(best_path)
    trainer.raw_model.load_state_dict(state["base_model"])
    return int(state["epoch"]) + 1


def _measure_once(config: Config, opts: RunOptions, trainer: Trainer, test_set, name: str,
                  votes: int, vote_rounds: int, refresh_bn: Callable[[], None], *,
                  last_epoch: int) -> dict:
    """strict: the selected model (best on validation, else the last epoch) on the test split,
    once: plain-FPS accuracy and one seeded voting pass."""
    selected = _load_selected(opts, trainer)
    if selected is None:  # no validation: the last epoch, with the statistics validation would use
        refresh_bn()
        selected = last_epoch
    batch_size, npoints = int(config.total_bs), int(config.npoints)
    test_acc = accuracy(trainer.raw_model, plain_batches(test_set, batch_size, opts.workers),
                        npoints, trainer.device, trainer.autocast)
    out = {"test_accuracy": test_acc, "selected_epoch": selected}
    message = f"[test] epoch {selected}'s model, once: accuracy {test_acc * 100:.2f}%"
    if vote_rounds > 0:
        out["vote"], _ = vote_accuracy(
            trainer.raw_model, lambda: plain_batches(test_set, batch_size, opts.workers), npoints,
            trainer.device, vote_augmentation(name), votes=votes, rounds=1,
            autocast=trainer.autocast, seed=EVAL_SEED)
        message += f", voting ({votes} votes, one pass, seed {EVAL_SEED}) {out['vote'] * 100:.2f}%"
    trainer.logger.info(message)
    return out


def test_with_voting(config: Config, opts: RunOptions, trainer: Trainer, name: str, votes: int,
                     rounds: int, test_set=None) -> tuple[float, list[float]]:
    """official: load the best checkpoint and run the voting test on the test split; returns
    the best round and every round's accuracy."""
    _load_selected(opts, trainer)
    if test_set is None:
        test_set = split_dataset(config, test_split_of(config), opts)
    batch_size = int(config.total_bs)
    best, per_round = vote_accuracy(
        trainer.raw_model, lambda: plain_batches(test_set, batch_size, opts.workers),
        int(config.npoints), trainer.device, vote_augmentation(name), votes=votes, rounds=rounds,
        autocast=trainer.autocast, seed=EVAL_SEED,
        on_round=round_reporter(trainer.logger.info, "test", rounds, votes))
    trainer.logger.info(f"[test] voting ({votes} votes, best of {rounds} rounds): {best * 100:.2f}%")
    return best, per_round
