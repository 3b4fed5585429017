"""Packed shards for pretraining at scale: pack a dataset once, stream it with exact resume.

* :func:`pack` (``recon-fast pack``): ShapeNet-55 or OpenShape/ReCon++ files -> shards of
  fixed-size clouds, labels, teacher features and an index with counts and checksums.
* :class:`PackedDataset`, :class:`PackedSampler`, :func:`packed_loader`: memory-mapped reading
  in a seeded, shard-local order, split exactly over ranks, resumable mid-epoch.
* :func:`verify_pack`: full checksum pass over a pack.
"""

from recon_fast.data.packed.pack import (PackSettings, Teachers, pack, read_index,
                                         verify_pack)
from recon_fast.data.packed.shard import ShardError
from recon_fast.data.packed.stream import PackedDataset, PackedSampler, packed_loader

__all__ = ["PackSettings", "Teachers", "pack", "read_index", "verify_pack", "ShardError",
           "PackedDataset", "PackedSampler", "packed_loader"]
