"""The sample order of one epoch over packed shards, computed block by block.

Epoch `e` with seed `s`:

1. the shards are permuted by (s, e), giving a stream of (shard, row) in shard order;
2. the stream is cut into blocks of `shuffle_buffer` consecutive samples and each block is
   permuted by (s, e, block). A block mixes about ``shuffle_buffer / shard_size + 1`` shards, as
   a streaming shuffle buffer of that size does, but any position's sample is computable on its
   own: a resumed run or another rank starts at its position without replaying the stream;
3. the stream is padded to ``world * ceil(n / world)`` samples by repeating its start (the
   DistributedSampler rule: with n not divisible by the world size, ``pad`` samples are seen
   twice in that epoch, every other sample exactly once), and rank ``r`` reads the contiguous
   range ``[r * per_rank, (r + 1) * per_rank)``, so each rank touches only its own shards.

Memory is O(number of shards + shuffle_buffer), whatever the number of samples.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from recon_fast.errors import InputError


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


class EpochOrder:
    """Positions (into the dataset's sample numbering) of an epoch's stream."""

    def __init__(self, shard_counts: np.ndarray, *, seed: int, epoch: int, shuffle: bool,
                 shuffle_buffer: int):
        if shuffle_buffer < 1:
            raise InputError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}")
        counts = np.asarray(shard_counts, dtype=np.int64)
        self.size = int(counts.sum())
        self.seed, self.epoch, self.shuffle, self.buffer = seed, epoch, shuffle, shuffle_buffer
        first_position = np.concatenate([[0], np.cumsum(counts)[:-1]])
        shard_order = (_rng(seed, epoch).permutation(len(counts)) if shuffle
                       else np.arange(len(counts)))
        self._counts = counts[shard_order]
        self._ends = np.cumsum(self._counts)           # stream end of each shard in order
        self._firsts = first_position[shard_order]     # dataset position of each one's row 0

    def _unshuffled(self, lo: int, hi: int) -> np.ndarray:
        """Dataset positions of stream positions [lo, hi) before the block shuffle."""
        stream = np.arange(lo, hi, dtype=np.int64)
        k = np.searchsorted(self._ends, stream, side="right")
        starts = self._ends[k] - self._counts[k]
        return self._firsts[k] + (stream - starts)

    def block(self, b: int) -> np.ndarray:
        lo, hi = b * self.buffer, min((b + 1) * self.buffer, self.size)
        positions = self._unshuffled(lo, hi)
        if self.shuffle:
            positions = positions[_rng(self.seed, self.epoch, b, 1).permutation(len(positions))]
        return positions

    def positions(self, lo: int, hi: int) -> Iterator[np.ndarray]:
        """Stream positions [lo, hi) (may run past `size`: wraps to the start, the padding),
        as arrays of at most one block each."""
        pos = lo
        while pos < hi:
            wrapped = pos % self.size
            b = wrapped // self.buffer
            block = self.block(b)
            offset = wrapped - b * self.buffer
            take = min(len(block) - offset, hi - pos)
            yield block[offset:offset + take]
            pos += take


def rank_range(size: int, rank: int, world: int) -> tuple[int, int]:
    """Padded stream range of `rank`: every rank gets ceil(size / world) positions."""
    per_rank = -(-size // world)
    return rank * per_rank, (rank + 1) * per_rank
