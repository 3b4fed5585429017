"""Reading packed shards for pretraining: a batched dataset over memory-mapped shards and the
sampler that streams them in a shard-local, seeded, resumable order.

Why memory-mapped shards of our own format rather than litdata or webdataset: the clouds are
fixed-size arrays, so a shard is a handful of dense arrays and a batch is one fancy-indexing
gather per field, with no decoding and no per-sample objects; the page cache does the caching.
Exact mid-epoch resume, also with another number of DataLoader workers, falls out of keeping the
order in the sampler (main process) and loading by position: workers only fetch, so their number
never changes what is read. Tar-stream loaders (webdataset) iterate inside the workers, and
their order and resume state depend on the worker count; litdata resumes per worker in its
own state format. Neither adds anything for local disks or mounted paths, and both are
dependencies.

Items are produced a batch at a time (``__getitems__``), already collated::

    index         int64 (B,)            sample id in the pack (shard * shard_size + row)
    points        float32 (B, npoints, 3)  random npoints of the stored cloud, then pc_norm
    rgb           float32 (B, npoints, 3)  the same points' colour (packs with rgb, if asked)
    label         int64 (B,)            class row (-1 where the source has no classes)
    prefix_id, suffix_id  int64 (B,)    the text prompt drawn (class-table packs)
    img_feature   float32 (B, D)        one stored view's teacher feature, drawn uniformly
    text_feature  float32 (B, D)        the class prompt's feature, or one stored text's
    has_text      bool (B,)             False where a shape has no text (its row is zeros)

With ``sample_on_device=True``, "points" / "rgb" are replaced by the stored clouds
("raw_xyz" float16 (B, P, 3), "raw_rgb") and "point_seed" (B,) int64; :func:`sample_on_device`
then draws the same points on the training device, so the loader only copies rows.

Every random choice is drawn from (seed, epoch, sample id), so a sample is the same whichever
worker loads it and wherever a run resumes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from recon_fast.data.packed.draws import (SALT_PREFIX, SALT_SUFFIX, SALT_TEXT, SALT_VIEW,
                                          draw_below, gather_rows, normalize_clouds,
                                          point_seeds, point_subsets, sample_hashes)
from recon_fast.data.packed.order import EpochOrder, rank_range
from recon_fast.data.packed.pack import TEXT_TABLE, read_index
from recon_fast.data.packed.shard import Shard, ShardError, verify_shard
from recon_fast.data.prompts import NUM_PREFIXES, NUM_SUFFIXES
from recon_fast.errors import InputError
from recon_fast.ops.validate import is_int


def _check_entry_on_disk(path: str, entry: dict) -> None:
    if not os.path.isfile(path):
        raise ShardError(path, "is missing (listed in the pack index)")
    size = os.path.getsize(path)
    if size != int(entry["bytes"]):
        raise ShardError(path, f"has {size} bytes, the pack index says {entry['bytes']} "
                               "(truncated or replaced)")


class PackedDataset(Dataset):
    """Pretraining samples from a folder written by `recon-fast pack`.

    Args:
        root: the pack folder (holds index.json).
        npoints: points per sample (random subset of the stored cloud, official sampler).
        seed: base of every sample's random choices.
        skip_bad_shards: check every shard fully at start (CRC-32 of all bytes) and leave out
            those that fail; ``self.skipped`` lists (file, problem). Without it a shard whose size
            does not match the index fails here, and a corrupt sample fails when read; both
            errors name the shard.
        verify_samples: check each sample's CRC-32 as it is read (cheap: ~25 us per 8192-point
            float16 cloud), so a damaged byte is an error, never a silently wrong sample.
        with_rgb: add the points' colour (the pack must hold rgb).
        sample_on_device: leave the point sampling to :func:`sample_on_device` after the
            batch reaches the training device: batches then carry the stored clouds
            ("raw_xyz" float16 (B, P, 3), "raw_rgb") and "point_seed" instead of "points" (and
            "rgb"); the loader only copies rows, the device draws the same subsets.
    """

    def __init__(self, root: str, npoints: int = 1024, *, seed: int = 0,
                 skip_bad_shards: bool = False, verify_samples: bool = True,
                 with_rgb: bool = False, sample_on_device: bool = False,
                 verify_threads: int = 4):
        self.root = root
        self.index = read_index(root)
        stored = int(self.index["settings"]["points"])
        if not is_int(npoints) or not 0 < npoints <= stored:
            raise InputError(f"npoints must be in [1, {stored}] (points stored in {root}), "
                             f"got {npoints!r}")
        npoints = int(npoints)
        if with_rgb and not self.index.get("has_rgb"):
            raise InputError(f"with_rgb: {root} was packed without rgb (pack with --rgb)")
        self.npoints, self.seed, self.with_rgb = npoints, seed, with_rgb
        self.sample_on_device = sample_on_device
        self.verify_samples = verify_samples
        self.shard_size = int(self.index["settings"]["shard_size"])
        self.skipped: list[tuple[str, str]] = []
        good = self._usable_shards(skip_bad_shards, verify_threads)
        if not good:
            raise ShardError(root, "no usable shard (all failed their checks)")
        self.shard_ids = np.asarray(good, dtype=np.int64)  # pack shard id of each usable shard
        self.shard_counts = np.asarray([self.index["shards"][i]["count"] for i in good], np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self.shard_counts)])
        self.text_table = self._load_text_table()
        self._shards: dict[int, Shard] = {}
        self._pid = os.getpid()

    # ---------------------------------------------------------------------------- set-up

    def _usable_shards(self, skip_bad: bool, threads: int) -> list[int]:
        entries = self.index["shards"]
        paths = [os.path.join(self.root, e["file"]) for e in entries]
        if not skip_bad:
            for path, entry in zip(paths, entries):
                _check_entry_on_disk(path, entry)
            return list(range(len(entries)))

        def problem(i: int) -> Optional[str]:
            try:
                _check_entry_on_disk(paths[i], entries[i])
                verify_shard(paths[i], entries[i])
            except ShardError as e:
                return str(e)
            return None

        with ThreadPoolExecutor(max(1, threads)) as pool:
            problems = list(pool.map(problem, range(len(entries))))
        self.skipped = [(entries[i]["file"], p) for i, p in enumerate(problems) if p is not None]
        return [i for i, p in enumerate(problems) if p is None]

    def _load_text_table(self) -> Optional[np.ndarray]:
        info = self.index.get("text_table")
        if not info:
            return None
        from recon_fast.data.packed.shard import file_crc32

        path = os.path.join(self.root, info["file"])
        if not os.path.isfile(path) or file_crc32(path) != int(info["crc32"]):
            raise ShardError(path, "is missing or fails its checksum (text feature table)")
        return np.load(path, mmap_mode="r")  # (C, 20, 3, D)

    @property
    def class_texts(self) -> Optional[list[str]]:
        return self.index.get("class_texts")

    @property
    def image_dim(self) -> Optional[int]:
        return self.index.get("image_dim")

    @property
    def text_dim(self) -> Optional[int]:
        return self.index.get("text_dim")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _shard(self, k: int) -> Shard:
        if os.getpid() != self._pid:  # a forked worker opens its own maps
            self._shards, self._pid = {}, os.getpid()
        if k not in self._shards:
            path = os.path.join(self.root, self.index["shards"][int(self.shard_ids[k])]["file"])
            self._shards[k] = Shard(path)
        return self._shards[k]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_shards"] = {}
        return state

    # ---------------------------------------------------------------------------- reading

    def __getitem__(self, key) -> dict:
        batch = self.__getitems__([key])
        return {k: v[0] for k, v in batch.items()}

    def __getitems__(self, keys) -> dict:
        """keys: (position, epoch) pairs -> one collated batch (see the module docstring)."""
        positions = np.asarray([int(k[0]) for k in keys], dtype=np.int64)
        epochs = [int(k[1]) for k in keys]
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"position out of range [0, {len(self)}): {positions.tolist()[:8]}")
        shard_k = np.searchsorted(self._starts, positions, side="right") - 1
        rows = positions - self._starts[shard_k]
        sample_ids = self.shard_ids[shard_k] * self.shard_size + rows
        hashes = sample_hashes(self.seed, np.asarray(epochs), sample_ids)
        stored = self._read_rows(shard_k, rows, hashes)
        return self._assemble(stored, sample_ids, hashes)

    def _read_rows(self, shard_k: np.ndarray, rows: np.ndarray,
                   hashes: np.ndarray) -> dict[str, np.ndarray]:
        """Gather the stored fields of each (shard, row), one sorted gather per shard; of the
        per-shape feature slots only the one each sample draws is copied."""
        out: dict[str, np.ndarray] = {}
        for k in np.unique(shard_k):
            where = np.flatnonzero(shard_k == k)
            order = np.argsort(rows[where], kind="stable")
            where, shard_rows = where[order], rows[where][order]
            shard = self._shard(int(k))
            if self.verify_samples:
                shard.check_samples(shard_rows)
            for name, array in shard.fields.items():
                if name in _SLOTS:
                    count, salt = _SLOTS[name]
                    counts = np.maximum(shard.fields[count][shard_rows], 1)
                    slot = draw_below(hashes[where], salt, counts)
                    picked = array[shard_rows, slot]
                else:
                    picked = array[shard_rows]
                if name not in out:
                    out[name] = np.empty((len(rows),) + picked.shape[1:], array.dtype)
                out[name][where] = picked
        return out

    def _assemble(self, stored: dict, sample_ids: np.ndarray, hashes: np.ndarray) -> dict:
        prefix = draw_below(hashes, SALT_PREFIX, NUM_PREFIXES)
        suffix = draw_below(hashes, SALT_SUFFIX, NUM_SUFFIXES)
        labels = stored["label"].astype(np.int64)
        batch = {"index": torch.from_numpy(sample_ids.astype(np.int64)),
                 "label": torch.from_numpy(labels),
                 "prefix_id": torch.from_numpy(prefix), "suffix_id": torch.from_numpy(suffix)}
        batch.update(self._points(stored, point_seeds(hashes)))
        if "image_feat" in stored:  # (B, D): the drawn view (see _read_rows)
            batch["img_feature"] = torch.from_numpy(stored["image_feat"].astype(np.float32))
        if "text_feat" in stored:
            batch["text_feature"] = torch.from_numpy(stored["text_feat"].astype(np.float32))
            batch["has_text"] = torch.from_numpy(stored["text_count"] > 0)
        elif self.text_table is not None:
            batch["text_feature"] = torch.from_numpy(
                np.asarray(self.text_table[labels, prefix, suffix], dtype=np.float32))
        return batch

    def _points(self, stored: dict, seeds: torch.Tensor) -> dict:
        """Sampled clouds, or (sample_on_device) the stored ones and the seeds that
        :func:`sample_on_device` turns into the same samples after the transfer."""
        raw = {"xyz": torch.from_numpy(stored["xyz"])}
        if self.with_rgb:
            raw["rgb"] = torch.from_numpy(stored["rgb"])
        if self.sample_on_device:
            out = {f"raw_{k}": v for k, v in raw.items()}
            out["point_seed"] = seeds
            return out
        return sample_stored(raw, seeds, self.npoints)


# Per-shape feature slots: (count field, draw salt). One slot is drawn uniformly per sample.
_SLOTS = {"image_feat": ("image_count", SALT_VIEW), "text_feat": ("text_count", SALT_TEXT)}


def sample_stored(raw: dict, seeds: torch.Tensor, npoints: int) -> dict:
    chosen = point_subsets(seeds.to(raw["xyz"].device), raw["xyz"].shape[1], npoints)
    out = {"points": normalize_clouds(gather_rows(raw["xyz"], chosen))}
    if "rgb" in raw:
        out["rgb"] = gather_rows(raw["rgb"], chosen)
    return out


def sample_on_device(batch: dict, npoints: int) -> dict:
    """A sample_on_device batch (moved to the device) -> "points" (and "rgb") as the loader
    would have made them: the same points, computed where the batch is."""
    raw = {k[4:]: batch[k] for k in ("raw_xyz", "raw_rgb") if k in batch}
    return sample_stored(raw, batch["point_seed"], npoints)


class PackedSampler(Sampler):
    """(position, epoch) keys of this rank's part of the epoch stream (see order.py), from
    `start` on. ``set_epoch(epoch, start)`` selects the epoch and where in it to begin."""

    def __init__(self, dataset: PackedDataset, *, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world: int = 1, shuffle_buffer: int = 16384):
        if not 0 <= rank < world:
            raise InputError(f"rank must be in [0, world={world}), got {rank}")
        self.shard_counts = dataset.shard_counts
        self.size = int(self.shard_counts.sum())
        self.shuffle, self.seed, self.rank, self.world = shuffle, seed, rank, world
        self.shuffle_buffer = shuffle_buffer
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        lo, hi = rank_range(self.size, self.rank, self.world)
        return max(0, hi - lo - self.start)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = EpochOrder(self.shard_counts, seed=self.seed, epoch=self.epoch,
                           shuffle=self.shuffle, shuffle_buffer=self.shuffle_buffer)
        lo, hi = rank_range(self.size, self.rank, self.world)
        for block in order.positions(lo + self.start, hi):
            for position in block.tolist():
                yield position, self.epoch


def _collated(batch: dict) -> dict:
    return batch  # __getitems__ already returns a collated batch


def packed_loader(dataset: PackedDataset, batch_size: int, *, train: bool, seed: int,
                  workers: int, rank: int = 0, world: int = 1, shuffle_buffer: int = 16384,
                  prefetch_factor: int = 4) -> tuple[DataLoader, PackedSampler]:
    """Loader over `dataset`: shuffled and last partial batch dropped only when `train`."""
    if not is_int(batch_size) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    batch_size = int(batch_size)
    sampler = PackedSampler(dataset, shuffle=train, seed=seed, rank=rank, world=world,
                            shuffle_buffer=shuffle_buffer)
    batches = BatchSampler(sampler, batch_size, drop_last=train)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers,
                        collate_fn=_collated, pin_memory=torch.cuda.is_available(),
                        prefetch_factor=prefetch_factor if workers > 0 else None,
                        persistent_workers=False,
                        # Its own generator: creating an iterator must not draw from the global
                        # RNG, or a resumed run's training randomness would shift by one draw.
                        generator=torch.Generator().manual_seed(seed))
    return loader, sampler
