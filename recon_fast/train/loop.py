"""The epoch loop shared by pretraining and finetuning: optimizer, schedule, mixed precision,
compile/DDP wrapping, logging, and checkpoints that resume exactly where a run stopped."""

from __future__ import annotations

import copy
import os
from typing import Callable, Optional

import torch

from recon_fast import ops
from recon_fast.errors import CheckpointError
from recon_fast.train.config import Config, ConfigError
from recon_fast.train.optim import build_optimizer, build_schedule
from recon_fast.train.rundir import BEST, LAST, check_resumable, claim_run_dir, drop_backups
from recon_fast.train.runtime import (Dist, Logger, Meter, RunOptions, autocast_context,
                                      grad_scaler, resolve_device, setup_distributed, unwrap)
from recon_fast.train.state import (capture_rng, load_checkpoint_file, restore_rng, save_atomic,
                                    seed_everything)


def apply_epoch_override(config: Config, epochs: Optional[int]) -> Config:
    """`--epochs N`: run epochs 0..N-1 with the cosine schedule (and its warm-up) scaled to N."""
    if epochs is None:
        return config
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    config = copy.deepcopy(config)
    kwargs = config.setdefault("scheduler", Config({"type": "CosLR", "kwargs": Config()})).kwargs
    old = int(kwargs.get("epochs", config.get("max_epoch", epochs)))
    kwargs.epochs = epochs
    kwargs.initial_epochs = int(round(int(kwargs.get("initial_epochs", 0)) * epochs / max(old, 1)))
    config.max_epoch = epochs - 1
    return config


def check_run_options(opts: RunOptions) -> None:
    """Step counts that would train nothing or something else than asked."""
    for flag, value, low in (("--max-steps", opts.max_steps, 1),
                             ("--checkpoint-every", opts.checkpoint_every, 0),
                             ("--log-every", opts.log_every, 1)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < low):
            raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")


def barrier_first(dist_info: Dist, fn: Callable):
    """Run `fn` on rank 0 first (downloads-free caches: generation, teacher features), then on
    the others, which then find the cache ready."""
    if not dist_info.active:
        return fn()
    import torch.distributed as dist

    if dist_info.main:
        result = fn()
        dist.barrier()
    else:
        dist.barrier()
        result = fn()
    return result


def build_model_from_config(model_cfg: Config, opts: RunOptions) -> torch.nn.Module:
    from recon_fast.model import build_model

    overrides = {}
    if opts.attention_backend:
        overrides["attention_backend"] = opts.attention_backend
    try:
        return build_model(model_cfg.to_dict() if isinstance(model_cfg, Config) else dict(model_cfg),
                           **overrides)
    except (KeyError, TypeError) as err:
        raise ConfigError(f"invalid model section: {err}") from err


class Trainer:
    """The run state, used as ``with Trainer(config, opts, task=...) as trainer:``.

    ``setup(model)`` builds the optimizer and schedule (resuming when asked); ``fit`` runs the
    epochs: it calls ``step(batch)`` for each batch, which returns the loss and the values to
    log, and itself does the backward pass, clipping, the optimizer step, logging, validation
    and checkpoints (the nanoGPT split). Leaving the ``with`` block closes the logs."""

    def __init__(self, config: Config, opts: RunOptions, *, task: str,
                 identity: Optional[dict] = None):
        # identity: what defines the run besides its config (finetune: the protocol and how the
        # checkpoint is selected); stored in every checkpoint, a resume must match it.
        self.config, self.opts, self.task = config, opts, task
        self.identity = dict(identity or {})
        self.device = resolve_device(opts.device)
        self.dist = setup_distributed(self.device)
        check_run_options(opts)
        # Before anything is written into the run folder (log.txt included).
        events = claim_run_dir(opts.out_dir, resume=opts.resume, overwrite=opts.overwrite,
                               prepare=self.dist.main)
        self._backups_pending = opts.overwrite
        seed_everything(opts.seed + self.dist.rank)
        self.logger = Logger(opts.out_dir, self.dist, tensorboard=opts.tensorboard,
                             progress=opts.progress)
        for line in events:
            self.logger.info(line)
        self.amp = opts.amp
        self.scaler = grad_scaler(opts.amp, self.device)
        self.start_epoch, self.start_batch = 0, 0
        # Two counters: batches trained (the data position; "global_step" in checkpoints and
        # summaries) and optimizer steps (fewer when step_per_update > 1; --max-steps counts these).
        self.batches_trained, self.optimizer_steps = 0, 0
        self.best: Optional[float] = None
        self.last_metric: Optional[float] = None
        self.loss_history: list[torch.Tensor] = []
        self._accumulated = 0
        self.meter = Meter()

    # -------------------------------------------------------------------------------- setup

    def per_rank_batch(self, total: int) -> int:
        total = int(total)
        if total % self.dist.world:
            raise ConfigError(f"total_bs={total} is not divisible by the {self.dist.world} processes")
        return total // self.dist.world

    def setup(self, model: torch.nn.Module, *, finetune: bool) -> None:
        """Optimizer, schedule, resume or initial weights, then compile/DDP wrapping."""
        self.raw_model = model
        self.optimizer = build_optimizer(model, self.config, finetune=finetune,
                                         fused=True if self.device.type == "cuda" else None)
        self.schedule = build_schedule(self.optimizer, self.config)
        last = os.path.join(self.opts.out_dir, LAST)
        rank_state = None
        if self.opts.resume and os.path.isfile(last):
            rank_state = self._resume(last)
            if self.opts.init_ckpt:
                self.logger.info(f"--init-ckpt {self.opts.init_ckpt} not used: resuming {last}")
        else:
            if self.opts.resume:
                start = f"from the initial weights of {self.opts.init_ckpt}" \
                    if self.opts.init_ckpt else "from a random initialisation"
                self.logger.info(f"--resume: nothing to resume (no {last} yet), starting a new "
                                 f"run {start}")
            if self.opts.init_ckpt:
                from recon_fast.model import load_official_checkpoint

                report = load_official_checkpoint(self.opts.init_ckpt, model)
                self.logger.info(f"initial weights from {self.opts.init_ckpt}: {report}")
        wrapped = model
        if self.dist.active:
            # cls_token/cls_pos get no gradient in pretraining (nothing reads the cls output),
            # as in the official run, which also needs find_unused_parameters.
            wrapped = torch.nn.parallel.DistributedDataParallel(
                wrapped, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        if self.opts.compile:
            wrapped = torch.compile(wrapped)
        self.model = wrapped
        self._resume_state = rank_state

    def _resume(self, path: str) -> dict:
        ckpt = load_checkpoint_file(path, map_location=self.device)
        missing = [k for k in ("base_model", "optimizer", "next_epoch", "rng") if k not in ckpt]
        if missing:
            raise CheckpointError(f"{path} cannot be resumed: it lacks {missing} (not a recon_fast run "
                             "checkpoint; use --init-ckpt to start from its weights instead)")
        check_resumable(path, ckpt, self.config.to_dict(), self.dist.world, self.identity)
        try:
            self.raw_model.load_state_dict(ckpt["base_model"], strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path} does not fit this model/config: {err}") from err
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.start_epoch, self.start_batch = int(ckpt["next_epoch"]), int(ckpt["next_batch"])
        self.batches_trained = int(ckpt.get("global_step", 0))
        self.optimizer_steps = int(ckpt.get("optimizer_steps", self.batches_trained //
                                            int(self.config.get("step_per_update", 1))))
        self.best = ckpt.get("best_metrics", {}).get("acc")
        self.logger.info(f"resuming {path}: epoch {self.start_epoch}, batch {self.start_batch}, "
                         f"step {self.global_step}")
        # This rank's own random state and unlogged averages (older checkpoints: rank 0's RNG).
        per_rank = ckpt.get("rank_states")
        return per_rank[self.dist.rank] if per_rank else {"rng": ckpt["rng"]}

    # -------------------------------------------------------------------------------- steps

    @property
    def global_step(self) -> int:
        """Batches trained so far (the name checkpoints and summaries use)."""
        return self.batches_trained

    def autocast(self):
        return autocast_context(self.amp, self.device)

    def _update(self, loss: torch.Tensor) -> bool:
        """Backward, and every `step_per_update` batches: clip, optimizer step, zero grads.
        Returns whether the optimizer stepped."""
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss
        scaled.backward()
        self._accumulated += 1
        if self._accumulated < int(self.config.get("step_per_update", 1)):
            return False
        self._accumulated = 0
        clip = self.config.get("grad_norm_clip")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if clip:
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), float(clip), norm_type=2)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.optimizer_steps += 1
        return True

    # -------------------------------------------------------------------------------- loop

    def fit(self, loader, sampler, step: Callable[[dict], dict],
            evaluate: Optional[Callable[[int], Optional[float]]] = None,
            stop_after_steps: Optional[int] = None) -> dict:
        """Train: `step(batch)` returns {"loss": the loss to minimise, **values to log}; fit does
        the backward pass, clipping, the optimizer step, logging, validation (`evaluate(epoch)`)
        and checkpoints. `stop_after_steps` ends after that many optimizer steps without a
        final checkpoint (a simulated interruption, for resume tests)."""
        # Data checks cost a host sync per op call on CUDA: off inside training steps unless
        # asked for (the loaders validate what they read).
        with ops.checks(self.opts.validate_data):
            return self._fit(loader, sampler, step, evaluate, stop_after_steps)

    def _fit(self, loader, sampler, step, evaluate, stop_after_steps) -> dict:
        opts, log = self.opts, self.logger
        # The training RNG stream starts here, independent of what set-up drew (model init,
        # cache computation that may or may not run): a fresh run reseeds, a resumed run restores.
        if self._resume_state is not None:
            restore_rng(self._resume_state["rng"])
            if self.start_batch and self._resume_state.get("meter"):
                self.meter.load_state_dict(self._resume_state["meter"])
        else:
            seed_everything(opts.seed * 7919 + self.dist.rank + 1)
        batch_size = loader.batch_sampler.batch_size
        max_epoch = int(self.config.max_epoch)
        finished = self.start_epoch > max_epoch
        if not finished:
            self._check_batches(loader, sampler, batch_size)
        for epoch in range(self.start_epoch, max_epoch + 1):
            self.schedule.apply(self.optimizer, epoch)
            first = self.start_batch if epoch == self.start_epoch else 0
            sampler.set_epoch(epoch, start=first * batch_size)
            self.model.train()
            bar = log.bar(first + len(loader), f"{self.task} epoch {epoch + 1}/{max_epoch + 1}", first)
            for index, batch in enumerate(loader, start=first):
                values = step(batch)
                stepped = self._update(values["loss"])
                self.batches_trained += 1
                self.meter.add(values, batch_size)
                if opts.record_losses:
                    self.loss_history.append(values["loss"].detach().float().cpu())
                bar.update()
                if not stepped:  # mid-accumulation: no log, stop or checkpoint
                    continue
                steps = self.optimizer_steps
                if steps % max(opts.log_every, 1) == 0:
                    self._log_progress(self.meter, bar, epoch)
                if stop_after_steps is not None and steps >= stop_after_steps:
                    bar.close()
                    return self._summary(epoch, interrupted=True)
                if opts.checkpoint_every and steps % opts.checkpoint_every == 0:
                    self.save(epoch, index + 1)
                if opts.max_steps is not None and steps >= opts.max_steps:
                    bar.close()
                    self.save(epoch, index + 1)
                    log.info(f"stopping after max_steps={opts.max_steps}")
                    return self._summary(epoch, interrupted=False)
            bar.close()
            self._log_progress(self.meter, None, epoch, end_of_epoch=True)
            metric = evaluate(epoch) if evaluate is not None else None
            self.last_metric = metric
            improved = metric is not None and (self.best is None or metric > self.best)
            if improved:
                self.best = metric
            self.save(epoch + 1, 0, completed_epoch=epoch)
            if improved and self.dist.main:
                self.save(epoch + 1, 0, completed_epoch=epoch, name=BEST)
            finished = epoch == max_epoch
        return self._summary(max_epoch, interrupted=not finished)

    def _check_batches(self, loader, sampler, batch_size: int) -> None:
        """An epoch without a full batch would train nothing and still "succeed"."""
        sampler.set_epoch(self.start_epoch, start=0)
        try:
            batches = len(loader)
        except TypeError:  # a streamed loader of unknown length
            return
        if batches == 0:
            raise ConfigError(f"total_bs={batch_size * self.dist.world} is larger than the "
                              f"{len(loader.dataset)} training shapes ({batch_size} per process "
                              f"x {self.dist.world}): no full batch to train on; lower total_bs")

    def _log_progress(self, meter: Meter, bar, epoch: int, end_of_epoch: bool = False) -> None:
        values, rate = meter.read(self.dist)
        if not values:
            return
        lr = self.optimizer.param_groups[-1]["lr"]
        text = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        if bar is not None:
            bar.set_postfix_str(f"{text} | {rate:.0f} samples/s")
        # Epochs are counted from 1 in what users read (epoch 1/5 ... 5/5); checkpoints keep the
        # official 0-based numbers.
        prefix = f"[{self.task}] epoch {epoch + 1} " + ("done" if end_of_epoch else f"step {self.global_step}")
        self.logger.info(f"{prefix}: {text} | lr {lr:.3g} | {rate:.1f} samples/s")
        # One x axis (optimizer steps) for every scalar; units in the names.
        self.logger.scalars({f"train/{k}_percent" if k == "acc" else f"train/{k}": v
                             for k, v in values.items()} |
                            {"train/lr": lr, "train/samples_per_s": rate}, self.global_step)

    # -------------------------------------------------------------------------------- checkpoints

    def save(self, next_epoch: int, next_batch: int, *, completed_epoch: Optional[int] = None,
             name: str = LAST) -> None:
        """Official layout ({'base_model', 'optimizer', 'epoch', 'metrics', 'best_metrics'}) plus
        what an exact resume needs: position in the data order, step, config, and every rank's
        RNG state and unlogged loss sums (gathered to rank 0; all ranks call this for LAST)."""
        rank_states = self._gather_rank_states() if name == LAST else [self._rank_state()]
        if not self.dist.main:
            return
        state = {
            "base_model": unwrap(self.raw_model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": completed_epoch if completed_epoch is not None else next_epoch - 1,
            "metrics": {"acc": self.last_metric} if self.last_metric is not None else {},
            "best_metrics": {"acc": self.best} if self.best is not None else {},
            "next_epoch": next_epoch,
            "next_batch": next_batch,
            "global_step": self.batches_trained,
            "optimizer_steps": self.optimizer_steps,
            "rng": rank_states[0]["rng"],
            "rank_states": rank_states,
            "world_size": self.dist.world,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "config": self.config.to_dict(),
            "task": self.task,
            "identity": self.identity,
        }
        path = os.path.join(self.opts.out_dir, name)
        save_atomic(state, path)
        self.logger.info(f"checkpoint {path}: step {self.global_step}, next epoch {next_epoch} "
                         f"batch {next_batch}")
        if self._backups_pending:
            self._backups_pending = False
            for backup in drop_backups(self.opts.out_dir):
                self.logger.info(f"removed {backup}: this run has written its own checkpoint")

    def _rank_state(self) -> dict:
        return {"rng": capture_rng(), "meter": self.meter.state_dict()}

    def _gather_rank_states(self) -> list[dict]:
        """Every rank's _rank_state(), in rank order (on every rank)."""
        if not self.dist.active:
            return [self._rank_state()]
        import torch.distributed as dist

        states: list = [None] * self.dist.world
        dist.all_gather_object(states, self._rank_state())
        return states

    def _summary(self, epoch: int, *, interrupted: bool) -> dict:
        summary = {"epoch": epoch, "global_step": self.batches_trained,
                   "optimizer_steps": self.optimizer_steps, "best": self.best,
                   "last_metric": self.last_metric, "interrupted": interrupted,
                   "out_dir": self.opts.out_dir}
        if self.opts.record_losses:
            summary["losses"] = [float(x) for x in self.loss_history]
        return summary

    def close(self) -> None:
        self.logger.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
