"""Counter-based random draws: every choice a packed sample makes is a hash of (seed, epoch,
sample id), computed for a whole batch at once, on the CPU in the loader or on the training
device, with the same result wherever and in whichever batch the sample is drawn.

The hash is SplitMix64's finaliser (Steele, Lea and Flood, 2014), a bijection of 64-bit words
whose outputs pass BigCrush for consecutive inputs. numpy computes it on uint64; torch, which
lacks full uint64 arithmetic, on int64 with masked right shifts (the same bits: two's-complement
multiplication and xor do not depend on signedness).
"""

from __future__ import annotations

import numpy as np
import torch

_M1, _M2, _GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15
SALT_POINTS, SALT_PREFIX, SALT_SUFFIX, SALT_VIEW, SALT_TEXT = 1, 2, 3, 4, 5


def _mix_np(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(_M1)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(_M2)
    return x ^ (x >> np.uint64(31))


def sample_hashes(seed: int, epochs: np.ndarray, sample_ids: np.ndarray) -> np.ndarray:
    """(B,) uint64: one well-mixed word per (seed, epoch, sample id)."""
    with np.errstate(over="ignore"):
        h = _mix_np(np.uint64(seed % 2**64) * np.uint64(_GOLDEN) + np.uint64(1))
        h = _mix_np(h ^ np.asarray(epochs, np.uint64) * np.uint64(_M1))
        return _mix_np(h ^ np.asarray(sample_ids, np.uint64) * np.uint64(_M2))


def draw_below(hashes: np.ndarray, salt: int, bound) -> np.ndarray:
    """(B,) int64 in [0, bound) from each sample's hash (bound: int or (B,) array, >= 1)."""
    with np.errstate(over="ignore"):
        word = _mix_np(hashes ^ np.uint64(salt) * np.uint64(_GOLDEN))
    return (word % np.asarray(bound, np.uint64)).astype(np.int64)


def point_seeds(hashes: np.ndarray) -> torch.Tensor:
    """(B,) int64 seeds of the point subsets (the bits of each sample's point hash)."""
    with np.errstate(over="ignore"):
        word = _mix_np(hashes ^ np.uint64(SALT_POINTS) * np.uint64(_GOLDEN))
    return torch.from_numpy(word.view(np.int64).copy())


def _signed(c: int) -> int:
    return c - 2**64 if c >= 2**63 else c


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    return (x >> s) & ((1 << (64 - s)) - 1)  # logical shift on int64


def _mix_torch(x: torch.Tensor) -> torch.Tensor:
    x = (x ^ _shr(x, 30)) * _signed(_M1)
    x = (x ^ _shr(x, 27)) * _signed(_M2)
    return x ^ _shr(x, 31)


def point_subsets(seeds: torch.Tensor, total: int, npoints: int) -> torch.Tensor:
    """(B, npoints) int64: a uniformly random `npoints` of `total` point indices per sample (no
    repeats, in random order), from (B,) int64 seeds made by :func:`point_seeds`."""
    columns = torch.arange(total, device=seeds.device, dtype=torch.int64) * _signed(_GOLDEN)
    keys = _mix_torch(seeds[:, None] ^ columns[None])                    # (B, total)
    return keys.argsort(dim=1)[:, :npoints]


def gather_rows(clouds: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """(B, P, C) clouds at (B, M) indices -> float32 (B, M, C)."""
    B, M = chosen.shape
    return clouds.gather(1, chosen[:, :, None].expand(B, M, clouds.shape[2])).float()


def normalize_clouds(points: torch.Tensor) -> torch.Tensor:
    """pc_norm per cloud of (B, N, 3): centre on the centroid, scale into the unit sphere."""
    centred = points - points.mean(dim=1, keepdim=True)
    radius = centred.square().sum(dim=2).sqrt().amax(dim=1)              # (B,)
    return centred / radius[:, None, None]
