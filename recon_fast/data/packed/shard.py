"""The shard file: a small JSON header followed by raw, aligned arrays that are memory-mapped.

Layout of ``shard-<id>.rfshard``::

    8 bytes   magic b"RFSHARD1"
    8 bytes   little-endian uint64: header length H
    H bytes   UTF-8 JSON: {"count": n, "fields": {name: {"dtype", "shape", "offset", "crc32"}}}
    ...       each field's C-ordered bytes at its offset (64-byte aligned), first axis = sample

Why this and not a tar/zip container: a reader maps each field with one ``np.memmap`` call and
gathers rows without copying whole records, the OS page cache is the only cache, and nothing
beyond numpy is needed. Every field has a CRC-32 of its bytes (checked by :func:`verify_shard`),
and the ``crc32`` field holds one CRC-32 per sample over that sample's rows of all other fields,
so a reader can check each sample it returns without reading the rest of the shard.
A shard is written to a temporary name, flushed to disk and renamed: it exists whole or not at all.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from typing import Mapping

import numpy as np

from recon_fast.errors import DatasetFileError

MAGIC = b"RFSHARD1"
SUFFIX = ".rfshard"
ALIGN = 64
SAMPLE_CRC = "crc32"  # per-sample checksum field (over that sample's rows of the other fields)


class ShardError(DatasetFileError):
    """A shard is missing, truncated or fails its checksums; the message names the shard."""


def shard_name(shard_id: int) -> str:
    return f"shard-{shard_id:06d}{SUFFIX}"


def sample_crcs(fields: Mapping[str, np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
    """CRC-32 of each sample's rows over `fields` in name order -> (n,) uint32.

    `rows` picks which samples (default: all); fields may be memory maps.
    """
    names = sorted(name for name in fields if name != SAMPLE_CRC)
    count = len(fields[names[0]]) if rows is None else len(rows)
    out = np.empty(count, dtype=np.uint32)
    for i in range(count):
        row = i if rows is None else int(rows[i])
        crc = 0
        for name in names:
            crc = zlib.crc32(np.ascontiguousarray(fields[name][row]).data, crc)
        out[i] = crc
    return out


def encode_shard(fields: Mapping[str, np.ndarray]) -> bytes:
    """The bytes of a shard holding `fields` (same first dimension), with checksums added."""
    fields = {name: np.ascontiguousarray(array) for name, array in fields.items()}
    counts = {len(array) for array in fields.values()}
    if len(counts) != 1:
        raise ValueError(f"shard fields differ in sample count: "
                         f"{ {k: len(v) for k, v in fields.items()} }")
    fields[SAMPLE_CRC] = sample_crcs(fields)
    layout, offset = {}, 0
    for name in sorted(fields):
        array = fields[name]
        layout[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset,
                        "crc32": zlib.crc32(array.data)}
        offset += -(-array.nbytes // ALIGN) * ALIGN
    header = {"count": counts.pop(), "fields": layout}
    # Offsets in the header are relative to the data start, which follows the padded header.
    head = json.dumps(header, sort_keys=True).encode()
    data_start = -(-(16 + len(head)) // ALIGN) * ALIGN
    parts = [MAGIC, struct.pack("<Q", len(head)), head, b"\0" * (data_start - 16 - len(head))]
    for name in sorted(fields):
        array = fields[name]
        parts.append(array.tobytes())
        parts.append(b"\0" * (-array.nbytes % ALIGN))
    return b"".join(parts)


def write_shard_atomic(path: str, fields: Mapping[str, np.ndarray]) -> dict:
    """Write a shard to `path` (temporary name, fsync, rename); returns its index entry."""
    data = encode_shard(fields)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return shard_entry(path, len(next(iter(fields.values()))), len(data), zlib.crc32(data))


def shard_entry(path: str, count: int, nbytes: int, crc32: int) -> dict:
    """What the pack index records of a shard: name, sample count, size, CRC-32 of the file."""
    return {"file": os.path.basename(path), "count": int(count), "bytes": int(nbytes),
            "crc32": int(crc32)}


def file_crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _header_span(path: str, data: bytes) -> int:
    if len(data) < 16 or data[:8] != MAGIC:
        raise ShardError(path, "not a recon_fast shard (bad magic bytes)")
    return 16 + struct.unpack("<Q", data[8:16])[0]


def read_header(path: str, head: bytes | None = None) -> dict:
    """Parse a shard's header (reading it from `path` unless given); ShardError if malformed."""
    if head is None:
        try:
            with open(path, "rb") as f:
                start = f.read(16)
                span = _header_span(path, start)
                head = start + f.read(span - 16)
        except OSError as e:
            raise ShardError(path, f"cannot be read ({e})") from e
    span = _header_span(path, head)
    if len(head) < span:
        raise ShardError(path, "truncated inside its header")
    try:
        header = json.loads(head[16:span].decode())
        header["data_start"] = -(-span // ALIGN) * ALIGN
        header["count"] = int(header["count"])
        header["fields"] = dict(header["fields"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ShardError(path, f"has a corrupt header ({e})") from e
    return header


def expected_size(header: dict) -> int:
    """File size a complete shard with this header has."""
    end = header["data_start"]
    for spec in header["fields"].values():
        nbytes = int(np.dtype(spec["dtype"]).itemsize * np.prod(spec["shape"], dtype=np.int64))
        end = max(end, header["data_start"] + spec["offset"] + -(-nbytes // ALIGN) * ALIGN)
    return end


class Shard:
    """A shard opened for reading: each field is a read-only memory map, nothing is loaded.

    Opening checks the magic bytes, the header and the file size (a truncated or partly written
    shard fails here, naming the file).
    """

    def __init__(self, path: str):
        self.path = path
        self.header = read_header(path)
        size = os.path.getsize(path)
        want = expected_size(self.header)
        if size < want:
            raise ShardError(path, f"is truncated: {size} bytes, its header describes {want}")
        self.count = self.header["count"]
        self.fields: dict[str, np.ndarray] = {}
        for name, spec in self.header["fields"].items():
            shape = tuple(int(s) for s in spec["shape"])
            if shape[0] != self.count:
                raise ShardError(path, f"field {name!r} has {shape[0]} rows, the header says "
                                       f"{self.count}")
            self.fields[name] = np.memmap(path, dtype=np.dtype(spec["dtype"]), mode="r",
                                          offset=self.header["data_start"] + int(spec["offset"]),
                                          shape=shape)

    def rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Copy of field `name` at `rows` (sorted rows read the file front to back)."""
        return self.fields[name][rows]

    def check_samples(self, rows: np.ndarray) -> None:
        """Recompute the per-sample CRC-32 of `rows`; ShardError naming shard and row if one
        differs."""
        stored = self.fields[SAMPLE_CRC][rows]
        actual = sample_crcs(self.fields, rows)
        bad = np.flatnonzero(stored != actual)
        if bad.size:
            raise ShardError(self.path, f"sample row {int(rows[bad[0]])} fails its checksum "
                                        f"({bad.size} of {len(rows)} rows read are corrupt)")


def verify_shard(path: str, entry: Mapping | None = None) -> None:
    """Full check of one shard: header, size, every field's CRC-32, and the file's CRC-32 and
    size recorded in the pack index (`entry`). Raises ShardError naming the shard."""
    shard = Shard(path)
    for name, spec in shard.header["fields"].items():
        if zlib.crc32(np.ascontiguousarray(shard.fields[name]).data) != int(spec["crc32"]):
            raise ShardError(path, f"field {name!r} fails its checksum (corrupt data)")
    if entry is not None:
        size = os.path.getsize(path)
        if size != int(entry["bytes"]) or int(entry["count"]) != shard.count:
            raise ShardError(path, f"does not match the pack index ({size} bytes and "
                                   f"{shard.count} samples; index: {entry['bytes']} bytes, "
                                   f"{entry['count']} samples)")
        if file_crc32(path) != int(entry["crc32"]):
            raise ShardError(path, "file checksum differs from the pack index (corrupt data)")
