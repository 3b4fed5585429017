"""Optimizer and learning-rate schedule exactly as the official runners build them."""

from __future__ import annotations

import math

import torch

from recon_fast.train.config import Config, ConfigError


def param_groups(model: torch.nn.Module, lr: float, weight_decay: float, *,
                 finetune: bool) -> list[dict]:
    """Official grouping (tools/builder.py): in finetuning every parameter whose name contains
    'cls' (cls token/pos and the classification head) gets 10x the learning rate; 1-D
    parameters, biases and tokens get no weight decay."""
    head, no_decay, decay = [], [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if finetune and "cls" in name:
            head.append(param)
        elif param.ndim == 1 or name.endswith(".bias") or "token" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    # Same group order as the official code, so optimizer state dicts line up.
    return [
        {"params": head, "lr": lr * 10, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
    ]


def build_optimizer(model: torch.nn.Module, config: Config, *, finetune: bool,
                    fused: bool | None = None) -> torch.optim.Optimizer:
    opt = config.optimizer
    kwargs = dict(opt.get("kwargs", {}))
    if "lr" not in kwargs:
        raise ConfigError("optimizer.kwargs.lr is required")
    lr = float(kwargs.pop("lr"))
    weight_decay = float(kwargs.pop("weight_decay", 0.0))
    groups = param_groups(model, lr, weight_decay, finetune=finetune)
    kind = opt.get("type", "AdamW")
    extra = {} if fused is None else {"fused": fused}
    if kind == "AdamW":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **kwargs, **extra)
    if kind == "Adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **kwargs, **extra)
    if kind == "SGD":
        return torch.optim.SGD(groups, lr=lr, weight_decay=weight_decay, nesterov=True, **kwargs)
    raise ConfigError(f"optimizer.type {kind!r} is not supported (AdamW, Adam, SGD)")


class OfficialCosineSchedule:
    """The official CosLR: timm's CosineLRScheduler(t_initial=epochs, lr_min=1e-6,
    warmup_lr_init=1e-6, warmup_t=initial_epochs, cycle_limit=1, t_in_epochs=True), stepped with
    `scheduler.step(epoch)` at the *end* of each epoch. The rate used during epoch e is therefore
    the schedule's value at e - 1 (and warmup_lr_init during epoch 0): a one-epoch lag that we keep
    so runs reproduce the reference exactly."""

    def __init__(self, base_lrs: list[float], epochs: int, warmup_epochs: int,
                 lr_min: float = 1e-6, warmup_lr_init: float = 1e-6):
        if epochs <= 0:
            raise ConfigError(f"scheduler.kwargs.epochs must be positive, got {epochs}")
        self.base_lrs = list(base_lrs)
        self.epochs, self.warmup = int(epochs), int(warmup_epochs)
        self.lr_min, self.warmup_lr_init = lr_min, warmup_lr_init

    def value_at(self, t: int, base: float) -> float:
        """timm's value at schedule time t (an epoch index)."""
        if t < self.warmup:
            return self.warmup_lr_init + t * (base - self.warmup_lr_init) / self.warmup
        if t >= self.epochs:
            return self.lr_min
        return self.lr_min + 0.5 * (base - self.lr_min) * (1 + math.cos(math.pi * t / self.epochs))

    def lrs_for_epoch(self, epoch: int) -> list[float]:
        if epoch == 0:
            return [self.warmup_lr_init if self.warmup else base for base in self.base_lrs]
        return [self.value_at(epoch - 1, base) for base in self.base_lrs]

    def apply(self, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        for group, lr in zip(optimizer.param_groups, self.lrs_for_epoch(epoch)):
            group["lr"] = lr


def build_schedule(optimizer: torch.optim.Optimizer, config: Config) -> OfficialCosineSchedule:
    sched = config.get("scheduler", {})
    kind = sched.get("type", "CosLR")
    if kind != "CosLR":
        raise ConfigError(f"scheduler.type {kind!r} is not supported (CosLR)")
    kwargs = sched.get("kwargs", {})
    return OfficialCosineSchedule([g["lr"] for g in optimizer.param_groups],
                                  epochs=int(kwargs.get("epochs", config.get("max_epoch", 300))),
                                  warmup_epochs=int(kwargs.get("initial_epochs", 0)))
