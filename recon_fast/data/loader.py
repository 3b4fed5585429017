"""DataLoader construction with the official split rules and correct worker seeding."""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a DataLoader worker from the worker's torch seed.

    Every worker gets a distinct torch seed (``base_seed + worker_id``, base drawn anew each
    epoch). The datasets here draw all their randomness from torch, so this only matters for
    user code that uses numpy or `random` in a worker: the official ``worker_init_fn`` reseeds
    numpy from numpy's own state, which repeats the same streams every epoch.
    """
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def distributed_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def build_loader(dataset: Dataset, batch_size: int, train: bool, workers: int = 4,
                 distributed: Optional[bool] = None, *, seed: Optional[int] = None,
                 persistent_workers: bool = True) -> DataLoader:
    """A DataLoader that shuffles and drops the last partial batch only when `train`.

    Args:
        dataset: any map-style dataset of this package.
        batch_size: per-process batch size (divide the total by the world size under DDP).
        train: shuffle + drop_last (the official rule: only for the train split).
        workers: worker processes (0 loads in the main process).
        distributed: use a DistributedSampler; None = when torch.distributed is initialised.
            Call ``loader.sampler.set_epoch(epoch)`` every epoch so shuffles differ.
        seed: fixes the shuffle order and worker seeds (default: drawn from torch's RNG).
        persistent_workers: keep workers alive across epochs (ignored with 0 workers).
    Memory is pinned when CUDA is available.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be a non-negative int, got {workers!r}")
    if distributed is None:
        distributed = distributed_active()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    sampler = None
    if distributed:
        if not distributed_active():
            raise ValueError("distributed=True but torch.distributed is not initialised")
        sampler = DistributedSampler(dataset, shuffle=train, drop_last=False,
                                     seed=seed if seed is not None else 0)
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=train if sampler is None else False,
        sampler=sampler, drop_last=train, num_workers=workers,
        pin_memory=torch.cuda.is_available(), worker_init_fn=seed_worker, generator=generator,
        persistent_workers=persistent_workers and workers > 0,
    )
