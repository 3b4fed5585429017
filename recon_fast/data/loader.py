"""The one DataLoader builder: the official split rules, and items that draw the same random
choices whichever worker loads them and wherever a resumed run restarts.

Each item's RNGs are seeded from (seed, epoch, index) (:class:`SeededItems`) and the sampler
yields (index, epoch) keys from a permutation drawn from (seed, epoch) (:class:`EpochSampler`),
so an epoch can restart at any item and give the same batches as an uninterrupted run.
"""

from __future__ import annotations

import hashlib
import random
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from recon_fast.errors import DataError, InputError
from recon_fast.ops.validate import is_int


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one item of one epoch (blake2b of "seed/epoch/index")."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class SeededItems(Dataset):
    """Seeds every RNG from (seed, epoch, index) before loading an item, so each item's random
    choices (point subset, image augmentation, prompt) do not depend on which worker loads it or
    on where a resumed run restarts. Keys are (index, epoch) pairs from :class:`EpochSampler`."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, epoch = key
        seed = item_seed(self.seed, epoch, index)
        # fork_rng + saved states: in the main process (workers=0) the training RNG must not move.
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class EpochSampler(Sampler):
    """Yields (index, epoch): a permutation drawn from (seed, epoch), this rank's shard of it
    (padded like DistributedSampler so every rank gets the same count), from item `start` on."""

    def __init__(self, size: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.size, self.shuffle, self.seed, self.rank, self.world = size, shuffle, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _shard(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        per_rank = -(-self.size // self.world) if self.size else 0
        order += order[: per_rank * self.world - len(order)]
        return order[self.rank::self.world]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for index in self._shard()[self.start:]:
            yield index, self.epoch

    def __len__(self) -> int:
        return max(0, len(self._shard()) - self.start)


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a DataLoader worker from the worker's torch seed (code that
    draws outside an item, e.g. in a collate function, still gets distinct streams)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def distributed_active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _rank_and_world(distributed: Optional[bool]) -> tuple[int, int]:
    if distributed is None:
        distributed = distributed_active()
    if not distributed:
        return 0, 1
    if not distributed_active():
        raise InputError("distributed=True but torch.distributed is not initialised")
    return dist.get_rank(), dist.get_world_size()


def build_loader(dataset: Dataset, batch_size: int, train: bool, workers: int = 4,
                 distributed: Optional[bool] = None, *, seed: int = 0,
                 rank: Optional[int] = None, world: Optional[int] = None,
                 persistent_workers: bool = False) -> DataLoader:
    """A DataLoader that shuffles and drops the last partial batch only when `train`.

    Args:
        dataset: any map-style dataset of this package.
        batch_size: per-process batch size (divide the total by the world size under DDP).
        train: shuffle + drop_last (the official rule: only for the train split).
        workers: worker processes (0 loads in the main process).
        distributed: shard over the torch.distributed ranks; None = when it is initialised.
        seed: fixes the shuffle order and every item's random choices.
        rank, world: this process's shard (default: from `distributed`).
        persistent_workers: keep workers alive across epochs (ignored with 0 workers).

    The sampler is ``loader.batch_sampler.sampler`` (an :class:`EpochSampler`): call its
    ``set_epoch(epoch, start)`` every epoch so shuffles differ, and to restart mid-epoch.
    Memory is pinned when CUDA is available.
    """
    if not is_int(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    if not is_int(workers) or workers < 0:
        raise InputError(f"workers must be a non-negative int, got {workers!r}")
    batch_size, workers = int(batch_size), int(workers)  # numpy integers: DataLoader wants ints
    if len(dataset) == 0:
        raise DataError("the dataset is empty: check the dataset paths and split lists")
    if rank is None or world is None:
        rank, world = _rank_and_world(distributed)
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, rank=rank, world=world)
    batches = BatchSampler(sampler, batch_size, drop_last=train)
    return DataLoader(SeededItems(dataset, seed), batch_sampler=batches, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), worker_init_fn=seed_worker,
                      persistent_workers=persistent_workers and workers > 0,
                      generator=torch.Generator().manual_seed(seed))


def to_device(batch: dict, device: torch.device) -> dict:
    """The batch's tensors on `device` (non-blocking copies from pinned memory)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}
