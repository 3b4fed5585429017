"""What every training loop shares: run options, devices and DDP, mixed precision, deterministic
and resumable data order, logging (tqdm, TensorBoard) and run checkpoints."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from contextlib import nullcontext
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

# Re-exported for the training code (their homes are the data and model layers).
from recon_fast.data.loader import EpochSampler, SeededItems, build_loader, item_seed, to_device  # noqa: F401
from recon_fast.errors import ConfigError, DeviceError
from recon_fast.model.checkpoint import unwrap  # noqa: F401

log = logging.getLogger("recon_fast")

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
# Image distillation targets: cached centre-view features, the online teacher on augmented
# renders (official), or none.
IMAGE_TEACHER_MODES = ("cache", "online", "off")


def default_workers() -> int:
    """DataLoader workers for this machine: one core stays with the training process, at most 8
    (the loaders are light); 1 on a 2-core machine, so torch never warns about too many."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


@dataclasses.dataclass
class RunOptions:
    """Runtime options of a training/evaluation run (the command line's flags)."""

    out_dir: str = "runs/recon"
    device: str = "auto"  # "auto" (cuda if available), "cpu", "cuda", "cuda:1", ...
    amp: str = "auto"  # bf16 autocast on CUDA, off on the CPU
    compile: bool = False  # torch.compile the model
    attention_backend: Optional[str] = None  # overrides the model config ("auto", "triton", ...)
    workers: int = dataclasses.field(default_factory=default_workers)
    seed: int = 0
    resume: bool = False  # continue from <out_dir>/ckpt-last.pth
    overwrite: bool = False  # start over in an out_dir that holds a run (see train.rundir)
    init_ckpt: Optional[str] = None  # start from these weights (pretrained checkpoint)
    epochs: Optional[int] = None  # overrides max_epoch
    max_steps: Optional[int] = None  # stop after this many optimizer steps (smoke runs)
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0: epoch ends)
    log_every: int = 20
    data_root: str = "."  # prefix of the relative dataset paths in official configs
    cache_dir: Optional[str] = None  # embedded set + teacher features (default RECON_FAST_CACHE)
    teacher_weights: Optional[str] = None  # CLIP weights file, "random", or None (local cache)
    image_teacher_weights: Optional[str] = None  # timm ViT teacher weights (default: as above)
    image_teacher: str = "cache"  # "cache" (centre-view features), "online" (official), "off"
    data: Optional[str] = None  # "packed:<dir>": pretrain from packed shards (cached features)
    skip_bad_shards: bool = False  # packed data: leave out shards that fail their checksums
    progress: bool = True
    tensorboard: bool = True
    validate_data: bool = False  # keep the ops' NaN/range checks on inside the step (host syncs)
    # BatchNorm statistics recomputed before validation/voting/eval: "auto" (short runs),
    # "on", "off" (recon_fast.eval.batchnorm)
    recompute_bn: str = "auto"
    record_losses: bool = False  # keep every step's loss (tests of exact resume)


# ----------------------------------------------------------------------------- devices and DDP


@dataclasses.dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group that torchrun describes (WORLD_SIZE/RANK/LOCAL_RANK); a plain
    `python` run is a group of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine "
                              "(torch.cuda.is_available() is False); use --device cpu")
        if device.index is None and "LOCAL_RANK" in os.environ:
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return device


def autocast_context(amp: str, device: torch.device):
    """bf16 (or fp16) autocast for the forward pass; fp32 when off."""
    if amp not in AMP_CHOICES:
        raise ConfigError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" else "off"
    if amp == "off":
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(amp: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """fp16 needs loss scaling; bf16 and fp32 do not."""
    if amp == "fp16":
        return torch.amp.GradScaler(device.type)
    return None


# ------------------------------------------------------------------------ the training loader


def make_loader(dataset: Dataset, batch_size: int, *, train: bool, seed: int, workers: int,
                dist_info: Dist) -> tuple[DataLoader, EpochSampler]:
    """The training loader (:func:`recon_fast.data.loader.build_loader`, this rank's shard) and
    its sampler, which :meth:`Trainer.fit` moves from epoch to epoch."""
    loader = build_loader(dataset, batch_size, train, workers, seed=seed, rank=dist_info.rank,
                          world=dist_info.world)
    return loader, loader.batch_sampler.sampler


# ------------------------------------------------------------------------------------ logging


class Logger:
    """One-line logs on the main rank, a progress bar and TensorBoard scalars."""

    def __init__(self, out_dir: str, dist_info: Dist, *, tensorboard: bool, progress: bool):
        self.main = dist_info.main
        self.progress = progress and self.main
        self.writer = None
        if self.main:
            os.makedirs(out_dir, exist_ok=True)
            handler = logging.FileHandler(os.path.join(out_dir, "log.txt"))
            handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
            log.addHandler(handler)
            self._handler = handler
            # log.txt gets the info lines too (losses, lr, resume and checkpoint events), not
            # only the warnings that the default WARNING level lets through.
            self._previous_level = log.level
            if log.getEffectiveLevel() > logging.INFO:
                log.setLevel(logging.INFO)
            if tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))
                except ImportError:
                    self.info("tensorboard is not installed: no TensorBoard scalars")

    def info(self, message: str) -> None:
        if self.main:
            log.info(message)
            print(message, flush=True)

    def scalars(self, values: dict, step: int) -> None:
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def bar(self, total: int, desc: str, initial: int = 0):
        from tqdm import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=not self.progress,
                    dynamic_ncols=True, leave=False)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.main:
            log.removeHandler(self._handler)
            self._handler.close()
            log.setLevel(self._previous_level)


class Meter:
    """Sums losses on the device; reading them (one host sync) happens only at log time."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0
        self.samples = 0
        self.started = time.perf_counter()

    def state_dict(self) -> dict:
        """The unlogged window (for checkpoints: a resumed run logs the same averages)."""
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()},
                "count": self.count, "samples": self.samples}

    def load_state_dict(self, state: dict) -> None:
        # 0-d CPU sums: adding the next step's device values moves them to the device.
        self.sums = dict(state["sums"])
        self.count, self.samples = int(state["count"]), int(state["samples"])

    def add(self, values: dict[str, torch.Tensor], batch_size: int) -> None:
        for name, value in values.items():
            value = value.detach().float()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.count += 1
        self.samples += batch_size

    def read(self, dist_info: Dist) -> tuple[dict[str, float], float]:
        """Mean of each value (averaged over ranks) and samples/s since the last read."""
        names = sorted(self.sums)
        if not names:
            return {}, 0.0
        stacked = torch.stack([self.sums[n] for n in names]) / max(self.count, 1)
        if dist_info.active:
            dist.all_reduce(stacked)
            stacked /= dist_info.world
        values = dict(zip(names, stacked.tolist()))
        rate = self.samples * dist_info.world / max(time.perf_counter() - self.started, 1e-9)
        self.sums, self.count, self.samples, self.started = {}, 0, 0, time.perf_counter()
        return values, rate
