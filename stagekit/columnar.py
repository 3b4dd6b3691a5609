"""Columnar helpers shared by the Beam stages: stable id hashing and sharding without per-row Python.

Shuffles in this project move whole column batches keyed by a hash shard instead of one Beam
element per row (per-element overhead is what makes naive Beam jobs slow); these two helpers
compute the shards and split a batch by them.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def shard_indices(shard: np.ndarray):
    """Yields (shard, row indices) with one stable sort, no per-row Python."""
    order = np.argsort(shard, kind="stable")
    cuts = np.flatnonzero(np.diff(shard[order])) + 1
    for rows in np.split(order, cuts):
        if len(rows):
            yield int(shard[rows[0]]), rows


def list_column(values: pa.Array) -> pa.ListArray:
    """A dense scalar feature as TFXIO wants it: one-element lists, built without Python loops."""
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def id_shards(ids: pa.Array, num_shards: int) -> np.ndarray:
    """Shard (0..num_shards-1) of each binary id: a polynomial hash of its bytes mod 2^32, mixed,
    computed on arrow's buffers without making a Python object per id. Stable across processes
    and machines (no per-process hash seed), as a shuffle key must be."""
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[ids.offset:ids.offset + len(ids) + 1]
    data = ids.buffers()[2]
    data = np.frombuffer(data, np.uint8) if data is not None else np.empty(0, np.uint8)
    data = data[offsets[0]:offsets[-1]]
    starts, lengths = offsets[:-1] - offsets[0], np.diff(offsets)
    hashes = np.zeros(len(ids), np.uint32)
    if len(data):
        powers = np.cumprod(np.full(int(lengths.max()), 16777619, np.uint32))  # wraps mod 2^32
        position = np.arange(len(data), dtype=np.int32) - np.repeat(starts, lengths)
        nonempty = lengths > 0
        hashes[nonempty] = np.add.reduceat(powers[position] * data, starts[nonempty], dtype=np.uint32)
    hashes ^= hashes >> np.uint32(16)  # murmur3 finaliser: the low bits depend on every byte
    hashes *= np.uint32(0x85EBCA6B)
    hashes ^= hashes >> np.uint32(13)
    hashes *= np.uint32(0xC2B2AE35)
    hashes ^= hashes >> np.uint32(16)
    return (hashes % np.uint32(num_shards)).astype(np.int64)
